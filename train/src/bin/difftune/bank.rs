//! `difftune bank`: Diff-Tuning's knowledge bank, sampled once from a pretrained model.

use std::path::PathBuf;

use clap::Args;
use tensor::Result;
use train::methods::bank::{make_bank, MANIFEST};
use train::run::{load_model, Weights};

use crate::sample::SamplerFlags;

/// Sample a knowledge bank from a pretrained model: an image folder (a sub-folder per class, the
/// classes drawn at random) with a manifest of how it was made, for `"method": {"name":
/// "diff-tuning", "bank": DIR}`.
#[derive(Args, Debug)]
pub struct BankArgs {
    /// The pretrained model: a run folder, a checkpoint folder or an exported `.safetensors` file.
    #[arg(long)]
    init: PathBuf,
    /// How many images.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    size: u64,
    /// The bank folder to create (never an existing one).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    sampling: SamplerFlags,
    /// The seed of the class draws and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `difftune bank`.
pub fn run(args: BankArgs) -> Result<()> {
    let model = load_model(&args.init, Weights::Ema)?;
    let mut settings = model.state.config.sample.clone();
    let steps = model.state.config.diffusion_config()?.steps;
    args.sampling.apply(&mut settings, steps)?;
    let size = usize::try_from(args.size).unwrap_or(usize::MAX);
    let init = args.init.display().to_string();
    let bank = make_bank(&model, &init, &settings, size, args.seed, &args.out, true)?;
    println!(
        "bank: {} ({} images of {} classes; {})",
        args.out.display(),
        bank.size,
        bank.classes.len(),
        args.out.join(MANIFEST).display()
    );
    Ok(())
}
