//! `difftune demo`: a 2-D DDPM on a ring of Gaussians, trained in seconds.

use std::path::PathBuf;

use clap::Args;
use train::toy::{self, ToyConfig};

/// Train a small diffusion model on a 2-D ring of Gaussians and sample from it (seconds on a CPU).
#[derive(Args)]
pub struct DemoArgs {
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
}

pub fn run(args: DemoArgs) -> tensor::Result<()> {
    let config = ToyConfig {
        steps: args.steps as usize,
        batch: args.batch as usize,
        seed: args.seed,
        out: args.out,
        ..Default::default()
    };
    let r = toy::run(&config)?;
    println!(
        "loss (mean of first / last 100 steps): {:.4} -> {:.4}",
        r.loss_start, r.loss_end
    );
    println!(
        "share of points on one of the 8 modes: samples {:.3}, data {:.3}, noise {:.3}; modes covered {}/8",
        r.on_mode_samples, r.on_mode_data, r.on_mode_noise, r.modes_covered
    );
    println!("picture: {}", r.picture.display());
    Ok(())
}
