//! The `difftune` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use models::parity::{check_fixture, reference_model};
use tensor::DType;
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
    /// Run a reference fixture (DiT, UNet2DModel or AutoencoderKL: model and config from its
    /// metadata) forward and backward and print the relative error of every output and gradient.
    /// Exits non-zero above tolerance.
    Parity {
        /// The fixture: a safetensors file with param/, input/, out/, cot/ and grad/ tensors.
        file: PathBuf,
        /// The dtype the model runs in.
        #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
        dtype: String,
        /// Tolerance of the outputs' relative error (default: 1e-4 in f32, 1e-9 in f64).
        #[arg(long)]
        forward_tol: Option<f64>,
        /// Tolerance of the gradients' relative error (default: 1e-3 in f32, 1e-7 in f64).
        #[arg(long)]
        grad_tol: Option<f64>,
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
        Command::Parity {
            file,
            dtype,
            forward_tol,
            grad_tol,
        } => parity(&file, &dtype, forward_tol, grad_tol),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parity(
    file: &Path,
    dtype: &str,
    forward_tol: Option<f64>,
    grad_tol: Option<f64>,
) -> tensor::Result<()> {
    let dtype = if dtype == "f64" {
        DType::F64
    } else {
        DType::F32
    };
    let mut report = check_fixture(file, dtype, reference_model)?;
    for row in &mut report.rows {
        let custom = if row.name.starts_with("out/") {
            forward_tol
        } else {
            grad_tol
        };
        row.tolerance = custom.unwrap_or(row.tolerance);
    }
    print!("{report}");
    let failed = report
        .rows
        .iter()
        .filter(|r| r.rel_err > r.tolerance)
        .count();
    if failed > 0 {
        return Err(tensor::Error::msg(format!(
            "{}: {failed} of {} tensors above tolerance",
            file.display(),
            report.rows.len()
        )));
    }
    println!("all {} tensors within tolerance", report.rows.len());
    Ok(())
}
