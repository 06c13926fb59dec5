//! The `difftune` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use train::toy::{self, ToyConfig};

#[derive(Parser)]
#[command(
    name = "difftune",
    version,
    about = "Pretrain diffusion models and transfer them to new domains."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small diffusion model on a 2-D ring of Gaussians and sample from it (seconds on a CPU).
    Demo {
        /// Optimisation steps.
        #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Points per batch.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Seed of everything random.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder for samples.png and metrics.json.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            steps,
            batch,
            seed,
            out,
        } => {
            let config = ToyConfig {
                steps: steps as usize,
                batch: batch as usize,
                seed,
                out,
                ..Default::default()
            };
            toy::run(&config).map(|r| {
                println!("loss (mean of first / last 100 steps): {:.4} -> {:.4}", r.loss_start, r.loss_end);
                println!(
                    "share of points on one of the 8 modes: samples {:.3}, data {:.3}, noise {:.3}; modes covered {}/8",
                    r.on_mode_samples, r.on_mode_data, r.on_mode_noise, r.modes_covered
                );
                println!("picture: {}", r.picture.display());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
