//! `difftune eval`: FD, KID, IS, precision/recall and class accuracy of generated images against
//! a reference data set, in the features of a difftune classifier.

use std::path::PathBuf;

use clap::{ArgGroup, Args};
use rand::seq::SliceRandom;
use tensor::{DType, Device, Error, Generator, Tensor};
use train::data::save_image_folder;
use train::data::DataSource;
use train::eval::data::read_image_folder;
use train::eval::protocol::{Judge, Protocol};
use train::files::write_atomic;
use train::methods::merge::ensemble;
use train::run::{load_model, Weights};

use crate::sample::SamplerFlags;

/// Evaluate generated images against a reference data set.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["images", "checkpoint", "ensemble", "dataset", "noise"])))]
pub struct EvalArgs {
    /// Folder of generated images: flat, or one sub-folder per requested class (named by class
    /// index or class name), which adds the class accuracy.
    #[arg(long)]
    images: Option<PathBuf>,
    /// A run or checkpoint folder: sample `--samples` images, the same number of each class.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// DeMe's ensemble before merging: the `deme` runs of every range of one split, each
    /// timestep denoised by its range's run (samples as --checkpoint).
    #[arg(long, num_args = 1..)]
    ensemble: Vec<PathBuf>,
    /// A data set's own images (`--samples` of them, drawn at random): the scale's good end.
    #[arg(long)]
    dataset: Option<String>,
    /// Uniform noise images: the scale's bad end.
    #[arg(long)]
    noise: bool,
    /// Images to sample or draw (checkpoint, dataset, noise).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Also save the sampled images here, a sub-folder per class.
    #[arg(long)]
    save_images: Option<PathBuf>,
    /// Write the report as JSON to this file (else it is printed before the table).
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    protocol: ProtocolFlags,
    /// Seed of the KID subsets and of the precision/recall subset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Where the evaluated images come from (one variant per source flag).
enum Source {
    /// A folder of image files.
    Images(PathBuf),
    /// Samples of a checkpoint.
    Checkpoint(PathBuf),
    /// Samples of DeMe's ensemble of range runs.
    Ensemble(Vec<PathBuf>),
    /// A data set's images.
    Dataset(DataSource),
    /// Uniform noise.
    Noise,
}

impl Source {
    fn from_args(args: &EvalArgs) -> tensor::Result<Source> {
        if let Some(dir) = &args.images {
            return Ok(Source::Images(dir.clone()));
        }
        if let Some(dir) = &args.checkpoint {
            return Ok(Source::Checkpoint(dir.clone()));
        }
        if !args.ensemble.is_empty() {
            return Ok(Source::Ensemble(args.ensemble.clone()));
        }
        if let Some(name) = &args.dataset {
            return Ok(Source::Dataset(DataSource::parse(name, "--dataset")?));
        }
        if args.noise {
            return Ok(Source::Noise);
        }
        Err(Error::msg(
            "give the images to evaluate with --images, --checkpoint, --dataset or --noise",
        ))
    }

    /// The images (`f32 [N, C, H, W]` in `[-1, 1]`) and the classes they were asked for.
    fn load(&self, judge: &Judge, args: &EvalArgs) -> tensor::Result<(Tensor, Option<Vec<i64>>)> {
        let model = &judge.classifier;
        let n = args.samples as usize;
        let mut gen = Generator::new(args.seed);
        match self {
            Source::Images(dir) => {
                let folder = read_image_folder(dir, model.config.input, &model.config.classes)?;
                Ok((folder.images, folder.labels))
            }
            Source::Checkpoint(dir) => {
                let sampled = judge
                    .sample(dir, args.seed, true)
                    .map_err(|e| Error::msg(format!("--checkpoint {e}")))?;
                save_samples(args, judge, sampled)
            }
            Source::Ensemble(runs) => {
                let models = runs
                    .iter()
                    .map(|run| Ok((run.clone(), load_model(run, Weights::Ema)?)))
                    .collect::<tensor::Result<Vec<_>>>()?;
                let stages =
                    ensemble(&models).map_err(|e| Error::msg(format!("--ensemble: {e}")))?;
                let state = &models[0].1.state;
                let sampled =
                    judge.sample_in_stages(&stages, state, "ensemble", args.seed, true)?;
                save_samples(args, judge, sampled)
            }
            Source::Dataset(data) => {
                let data = data.held_out(model.config.input)?;
                let mut order: Vec<usize> = (0..data.len()).collect();
                order.shuffle(gen.rng());
                order.truncate(n);
                let picked = data.subset(&order)?;
                let images = train::data::transform::scale(&picked.images_tensor()?)?;
                Ok((images, Some(picked.labels().to_vec())))
            }
            Source::Noise => {
                let [c, h, w] = model.config.input;
                let images =
                    Tensor::rand(&[n, c, h, w], -1.0, 1.0, DType::F32, Device::Cpu, &mut gen)?;
                Ok((images, None))
            }
        }
    }
}

/// How samples are drawn (for a model) and judged: the flags of an evaluation protocol, shared
/// by `eval` and `forgetting`.
#[derive(Args, Debug)]
pub struct ProtocolFlags {
    /// How a model is sampled.
    #[command(flatten)]
    pub sampling: SamplerFlags,
    /// fashion-mnist (its training images), fashion-mnist-test, animal-mnist, or a folder of
    /// <class>/<image> files.
    #[arg(long)]
    pub reference: String,
    /// The classifier file (see `difftune classifier train`).
    #[arg(long)]
    pub classifier: PathBuf,
    /// Folder of cached reference statistics.
    #[arg(long, default_value = "runs/cache")]
    pub cache: PathBuf,
    /// KID: number of random subsets.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub kid_subsets: u64,
    /// KID: images per subset (capped by the smaller set).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    pub kid_subset_size: u64,
    /// Splits of the Inception-style score.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub is_splits: u64,
    /// ANL models: the fraction of condition tokens masked (masked sampling), in [0, 1].
    #[arg(long, default_value_t = 0.0, value_parser = crate::sample::parse_mask)]
    pub mask: f64,
    /// ANL models: the data condition images are drawn from, one of the asked class per sample
    /// (default: the run's training data).
    #[arg(long)]
    pub condition: Option<String>,
    /// The copying check: the training images (e.g. `animal-mnist-train`) whose nearest
    /// distance to each sample is compared with the reference images' (ratio below 1: copying).
    #[arg(long)]
    pub copying: Option<String>,
}

impl ProtocolFlags {
    /// The protocol of `samples` images the flags describe, `seed` its seed.
    pub fn protocol(&self, samples: u64, seed: u64) -> Protocol {
        Protocol {
            samples: usize::try_from(samples).unwrap_or(usize::MAX),
            sampler: self.sampling.sampler.as_ref().map(|r| r.to_string()),
            eta: self.sampling.eta,
            cfg_scale: self.sampling.cfg_scale,
            reference: self.reference.clone(),
            classifier: self.classifier.clone(),
            cache: self.cache.clone(),
            kid_subsets: self.kid_subsets as usize,
            kid_subset_size: self.kid_subset_size as usize,
            is_splits: self.is_splits as usize,
            seed,
            mask: self.mask,
            condition: self.condition.clone(),
            copying: self.copying.clone(),
            leakage: None,
        }
    }
}

/// Saves sampled images to `--save-images` when asked, a sub-folder per class (one for an
/// unconditional model's samples), and hands them on.
fn save_samples(
    args: &EvalArgs,
    judge: &Judge,
    sampled: (Tensor, Option<Vec<i64>>),
) -> tensor::Result<(Tensor, Option<Vec<i64>>)> {
    if let Some(out) = &args.save_images {
        let (images, labels) = &sampled;
        let unconditional = (vec![0; images.shape()[0]], vec!["samples".to_string()]);
        let (labels, classes) = match labels {
            Some(labels) => (labels, &judge.classifier.config.classes),
            None => (&unconditional.0, &unconditional.1),
        };
        save_image_folder(out, images, labels, classes)?;
    }
    Ok(sampled)
}

pub fn run(args: EvalArgs) -> tensor::Result<()> {
    if !args.protocol.classifier.is_file() {
        return Err(Error::msg(format!(
            "--classifier {}: no such file",
            args.protocol.classifier.display()
        )));
    }
    let source = Source::from_args(&args)?;
    tensor::limits::SAMPLES.check(args.samples.into(), "--samples")?;
    let name = DataSource::parse(&args.protocol.reference, "--reference")?.to_string();
    let judge = args.protocol.protocol(args.samples, args.seed).judge()?;
    eprintln!(
        "reference statistics of {name}: {} (in {})",
        if judge.cached {
            "from the cache"
        } else {
            "computed and cached"
        },
        args.protocol.cache.display()
    );
    let (images, labels) = source.load(&judge, &args)?;
    let report = judge.evaluate(&images, labels.as_deref())?;
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| Error::msg(format!("eval report: {e}")))?;
    match &args.json {
        Some(path) => write_atomic(path, json.as_bytes())?,
        None => println!("{json}"),
    }
    print!("{report}");
    Ok(())
}
