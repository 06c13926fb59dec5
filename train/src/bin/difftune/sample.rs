//! `difftune sample`: images from a checkpoint, as a grid and optionally one file each.

use std::path::PathBuf;

use clap::Args;
use tensor::{Error, Result, Tensor};
use train::data::{save_grid, save_image_folder};
use train::run::{generate, grid_labels, load_model, repeat_labels, Weights};

/// Draw samples from a checkpoint: a grid with one row per class.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A run folder (its latest checkpoint) or a checkpoint folder.
    checkpoint: PathBuf,
    /// The grid PNG.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write every image as a PNG under this folder, a sub-folder per class.
    #[arg(long)]
    images: Option<PathBuf>,
    /// The classes to draw, e.g. `0,3,7` (default: all).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<i64>,
    /// Images per class.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    per_class: u64,
    /// A respacing: `ddim50` (DDIM, 50 steps), `250` (ancestral DDPM, 250 steps), ...
    #[arg(long)]
    sampler: Option<String>,
    /// DDIM's eta.
    #[arg(long)]
    eta: Option<f64>,
    /// Classifier-free guidance scale (1: none).
    #[arg(long)]
    cfg_scale: Option<f64>,
    /// The seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `ema` (the moving average) or `raw` weights.
    #[arg(long, default_value = "ema", value_parser = ["ema", "raw"])]
    weights: String,
}

/// Runs `difftune sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    let weights = if args.weights == "raw" {
        Weights::Raw
    } else {
        Weights::Ema
    };
    let model = load_model(&args.checkpoint, weights)?;
    let config = &model.state.config;
    let mut settings = config.sample.clone();
    if let Some(s) = args.sampler {
        settings.sampler = s;
    }
    if let Some(e) = args.eta {
        if e.is_nan() || e < 0.0 {
            return Err(Error::msg(format!("--eta {e}: expected a value >= 0")));
        }
        settings.eta = e;
    }
    if let Some(s) = args.cfg_scale {
        settings.cfg_scale = s;
    }
    let classes = &model.state.classes;
    let per_class = usize::try_from(args.per_class).unwrap_or(usize::MAX);
    let labels: Vec<i64> = if args.classes.is_empty() {
        grid_labels(classes.len(), per_class)?
    } else {
        if let Some(bad) = args
            .classes
            .iter()
            .find(|&&c| c < 0 || c as usize >= classes.len())
        {
            return Err(Error::msg(format!(
                "--classes: {bad} is not a class of this model (0..{})",
                classes.len()
            )));
        }
        repeat_labels(&args.classes, per_class)?
    };
    let process = config.diffusion_config()?;
    eprintln!(
        "sampling {} images with {} (eta {}, guidance {})",
        labels.len(),
        settings.sampler,
        settings.eta,
        settings.cfg_scale
    );
    let images = generate(
        &model.dit,
        &model.params,
        &process,
        &settings,
        &labels,
        args.seed,
    )?;
    let n = labels.len();
    save_grid(
        &args.out,
        &images,
        Some(&Tensor::from_vec(labels.clone(), &[n])?),
        2,
    )?;
    println!("grid: {}", args.out.display());
    if let Some(dir) = args.images {
        save_image_folder(&dir, &images, &labels, classes)?;
        println!("images: {}", dir.display());
    }
    Ok(())
}
