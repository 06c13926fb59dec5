//! `difftune sample`: images from a checkpoint, as a grid and optionally one file each.

use std::path::PathBuf;

use clap::Args;
use tensor::{Error, Result, Tensor};
use train::data::{folder, save_grid, save_image_folder, transform};
use train::diffusion::{check_eta, Respacing};
use train::run::{
    generate_in_stages, grid_labels, load_model, repeat_labels, ConditionImages, LoadedModel,
    SampleSettings, Stage, Weights,
};

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
    #[command(flatten)]
    sampling: SamplerFlags,
    /// The seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `ema` (the moving average) or `raw` weights.
    #[arg(long, default_value = "ema", value_parser = ["ema", "raw"])]
    weights: String,
    #[command(flatten)]
    condition: ConditionFlags,
}

/// What an ANL model's samples are conditioned on.
#[derive(Args, Debug)]
pub struct ConditionFlags {
    /// ANL models: the data the condition images are drawn from, an image of the asked class
    /// per sample (`animal-mnist-test`, a folder of class folders, ...; default: the run's
    /// training data).
    #[arg(long)]
    pub condition: Option<String>,
    /// ANL models: one image (PNG or JPEG, the model's size and channels) that conditions every
    /// sample, instead of `--condition`.
    #[arg(long, conflicts_with = "condition")]
    pub condition_image: Option<PathBuf>,
    /// ANL models: the fraction of condition tokens masked, in [0, 1]; several (`0,0.5,1`)
    /// draw the grid once per value, a row block each, from the same noise and conditions.
    #[arg(long, value_delimiter = ',', default_value = "0", value_parser = parse_mask)]
    pub mask: Vec<f64>,
}

/// A clap parser of a masking fraction in [0, 1].
pub fn parse_mask(s: &str) -> std::result::Result<f64, String> {
    number(|m| {
        models::anl::check_mask(m, "--mask")
            .map(|_| m)
            .map_err(|e| e.to_string())
    })(s)
}

impl ConditionFlags {
    /// The condition images of `labels` for `model` (unmasked; each `--mask` value is set on a
    /// copy), or `None` for a model that reads none (then a condition flag is an error).
    pub fn images(
        &self,
        model: &LoadedModel,
        labels: &[i64],
        seed: u64,
    ) -> Result<Option<ConditionImages>> {
        let given = self.condition.is_some() || self.condition_image.is_some();
        if !model.network.needs_condition() {
            return match given || self.mask != [0.0] {
                true => Err(Error::msg(
                    "--condition, --condition-image and --mask apply to ANL models with an \
                     encoder; this model reads no condition image",
                )),
                false => Ok(None),
            };
        }
        if let Some(file) = &self.condition_image {
            let shape = model.state.image_shape;
            let one = transform::scale(&folder::read_exact(file, shape)?)?;
            let n = labels.len();
            let images = one
                .broadcast_as(&[n, shape[0], shape[1], shape[2]])?
                .contiguous()?;
            return Ok(Some(ConditionImages { images, mask: 0.0 }));
        }
        let source = self.condition.as_deref().map(|c| (c, "--condition"));
        ConditionImages::of_source(source, &model.state, labels, 0.0, seed).map(Some)
    }
}

/// The sampler flags of `sample` and `eval`, over the run's own settings. Each is checked as it is
/// parsed, and the error names the flag and the accepted values.
#[derive(Args, Debug)]
pub struct SamplerFlags {
    /// A respacing: `ddim50` (DDIM, 50 steps), `250` (ancestral DDPM, 250 steps), ... (default:
    /// the run's).
    #[arg(long)]
    pub sampler: Option<Respacing>,
    /// DDIM's eta, in [0, 1] (default: the run's).
    #[arg(long, value_parser = number(check_eta))]
    pub eta: Option<f64>,
    /// Classifier-free guidance scale, 1 for none, within ±100 (default: the run's).
    #[arg(long, value_parser = number(SampleSettings::check_cfg_scale))]
    pub cfg_scale: Option<f64>,
    /// A DiT with control metadata: the control guidance scale, 1 for none, within ±100
    /// (default: the run's).
    #[arg(long, value_parser = number(SampleSettings::check_cfg_scale))]
    pub control_scale: Option<f64>,
    /// A DiT with control metadata: the control to sample with, a value per kind (scale,
    /// crop_top, crop_left, flip), e.g. `0.6,0.2,0.2,0` (default: the run's, else no crop and no
    /// flip).
    #[arg(long, value_delimiter = ',')]
    pub control: Option<Vec<f64>>,
}

/// A clap parser of a number that `check` accepts.
fn number(
    check: fn(f64) -> std::result::Result<f64, String>,
) -> impl Fn(&str) -> std::result::Result<f64, String> + Clone {
    move |s: &str| {
        s.parse::<f64>()
            .map_err(|_| format!("`{s}` is not a number"))
            .and_then(check)
    }
}

impl SamplerFlags {
    /// Sets the flags given in `settings`, for a process of `steps` steps.
    pub fn apply(&self, settings: &mut SampleSettings, steps: usize) -> Result<()> {
        if let Some(r) = &self.sampler {
            r.timesteps(steps)
                .map_err(|e| Error::msg(format!("--sampler {r}: {e}")))?;
            settings.sampler = r.to_string();
        }
        settings.eta = self.eta.unwrap_or(settings.eta);
        settings.cfg_scale = self.cfg_scale.unwrap_or(settings.cfg_scale);
        settings.control_scale = self.control_scale.unwrap_or(settings.control_scale);
        if let Some(control) = &self.control {
            settings.control = control.clone();
        }
        settings.validate(steps)
    }
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
    let process = config.diffusion_config()?;
    let mut settings = config.sample.clone();
    args.sampling.apply(&mut settings, process.steps)?;
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
    eprintln!(
        "sampling {} images with {} (eta {}, guidance {})",
        labels.len(),
        settings.sampler,
        settings.eta,
        settings.cfg_scale
    );
    if args.images.is_some() && args.condition.mask.len() > 1 {
        return Err(Error::msg(
            "--images writes the samples of one --mask value; give one",
        ));
    }
    // One block of rows per masking fraction (a single block without an ANL model).
    let mut blocks = Vec::new();
    let unmasked = args.condition.images(&model, &labels, args.seed)?;
    for &mask in &args.condition.mask {
        let condition = unmasked.clone().map(|c| ConditionImages { mask, ..c });
        let stage = Stage {
            condition: condition.as_ref(),
            ..Stage::new(&model.network, &model.params)
        };
        blocks.push(generate_in_stages(
            &[stage],
            &process,
            &settings,
            &labels,
            args.seed,
        )?);
    }
    let images = Tensor::cat(&blocks.iter().collect::<Vec<_>>(), 0)?;
    let n = labels.len();
    let rows: Vec<i64> = (0..blocks.len() as i64)
        .flat_map(|b| labels.iter().map(move |&l| b * classes.len() as i64 + l))
        .collect();
    save_grid(
        &args.out,
        &images,
        Some(&Tensor::from_vec(rows, &[n * blocks.len()])?),
        2,
    )?;
    if blocks.len() > 1 {
        println!(
            "rows: one block per --mask value ({}), each a row per class",
            args.condition
                .mask
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let images = blocks.swap_remove(0);
    println!("grid: {}", args.out.display());
    if let Some(dir) = args.images {
        save_image_folder(&dir, &images, &labels, classes)?;
        println!("images: {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: SamplerFlags,
    }

    fn parse(args: &[&str]) -> std::result::Result<SamplerFlags, String> {
        let all = std::iter::once("sample").chain(args.iter().copied());
        Cli::try_parse_from(all)
            .map(|c| c.flags)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sampler_flags_out_of_range_are_refused_naming_flag_and_range() {
        for (args, needles) in [
            (
                &["--cfg-scale=NaN"][..],
                &["--cfg-scale", "[-100, 100]", "NaN"][..],
            ),
            (&["--cfg-scale=inf"], &["--cfg-scale", "[-100, 100]"]),
            (&["--cfg-scale=1e30"], &["--cfg-scale", "[-100, 100]"]),
            (&["--cfg-scale=two"], &["--cfg-scale", "not a number"]),
            (&["--eta=1.5"], &["--eta", "[0, 1]"]),
            (&["--eta=-0.5"], &["--eta", "[0, 1]"]),
            (&["--eta=NaN"], &["--eta", "[0, 1]"]),
            (
                &["--sampler= ddim5 "],
                &["--sampler", "\" ddim5 \"", "without spaces"],
            ),
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            for needle in needles {
                assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
            }
        }
        // A sampler that parses but does not fit the process names the flag too.
        let mut settings = SampleSettings::default();
        let err = parse(&["--sampler=ddim999"])
            .unwrap()
            .apply(&mut settings, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--sampler ddim999"), "{err}");
        parse(&["--sampler=ddim5", "--eta=1", "--cfg-scale=-100"])
            .unwrap()
            .apply(&mut settings, 1000)
            .unwrap();
        assert_eq!(
            (settings.sampler.as_str(), settings.eta, settings.cfg_scale),
            ("ddim5", 1.0, -100.0)
        );
    }
}
