//! `difftune eval`: FD, KID, IS, precision/recall and class accuracy of generated images against
//! a reference data set, in the features of a difftune classifier.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use models::classifier::Classifier;
use rand::seq::SliceRandom;
use tensor::{DType, Device, Error, Generator, Tensor};
use train::data::save_image_folder;
use train::data::DataSource;
use train::eval::data::read_image_folder;
use train::eval::{evaluate_with, EvalOptions, KidConfig, ReferenceStats};
use train::files::write_atomic;
use train::run::{generate, load_model, Weights};

use crate::sample::SamplerFlags;

/// Evaluate generated images against a reference data set.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["images", "checkpoint", "dataset", "noise"])))]
pub struct EvalArgs {
    /// Folder of generated images: flat, or one sub-folder per requested class (named by class
    /// index or class name), which adds the class accuracy.
    #[arg(long)]
    images: Option<PathBuf>,
    /// A run or checkpoint folder: sample `--samples` images, the same number of each class.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A data set's own images (`--samples` of them, drawn at random): the scale's good end.
    #[arg(long)]
    dataset: Option<String>,
    /// Uniform noise images: the scale's bad end.
    #[arg(long)]
    noise: bool,
    /// Images to sample or draw (checkpoint, dataset, noise).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// How --checkpoint samples.
    #[command(flatten)]
    sampling: SamplerFlags,
    /// Also save the sampled images here, a sub-folder per class.
    #[arg(long)]
    save_images: Option<PathBuf>,
    /// fashion-mnist (its training images), fashion-mnist-test, animal-mnist, or a folder of
    /// <class>/<image> files.
    #[arg(long)]
    reference: String,
    /// The classifier file (see `difftune classifier train`).
    #[arg(long)]
    classifier: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Folder of cached reference statistics.
    #[arg(long, default_value = "runs/cache")]
    cache: PathBuf,
    /// KID: number of random subsets.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    kid_subsets: u64,
    /// KID: images per subset (capped by the smaller set).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    kid_subset_size: u64,
    /// Splits of the Inception-style score.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    is_splits: u64,
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
    fn load(
        &self,
        model: &Classifier,
        args: &EvalArgs,
    ) -> tensor::Result<(Tensor, Option<Vec<i64>>)> {
        let n = args.samples as usize;
        let mut gen = Generator::new(args.seed);
        match self {
            Source::Images(dir) => {
                let folder = read_image_folder(dir, model.config.input, &model.config.classes)?;
                Ok((folder.images, folder.labels))
            }
            Source::Checkpoint(dir) => sample_checkpoint(dir, model, args),
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

/// Samples `--samples` images of a checkpoint, as evenly over its classes as the count allows.
fn sample_checkpoint(
    dir: &Path,
    model: &Classifier,
    args: &EvalArgs,
) -> tensor::Result<(Tensor, Option<Vec<i64>>)> {
    let loaded = load_model(dir, Weights::Ema)?;
    let classes = &loaded.state.classes;
    if classes != &model.config.classes {
        return Err(Error::msg(format!(
            "--checkpoint {}: its classes ({}) are not the classifier's ({})",
            dir.display(),
            classes.join(", "),
            model.config.classes.join(", ")
        )));
    }
    let process = loaded.state.config.diffusion_config()?;
    let mut settings = loaded.state.config.sample.clone();
    args.sampling.apply(&mut settings, process.steps)?;
    let labels: Vec<i64> = (0..args.samples as usize)
        .map(|i| (i % classes.len()) as i64)
        .collect();
    eprintln!(
        "sampling {} images from {} ({}, guidance {})",
        labels.len(),
        dir.display(),
        settings.sampler,
        settings.cfg_scale
    );
    let bar = train::progress::bar(labels.len() as u64, "sample");
    let mut chunks = Vec::new();
    for (i, chunk) in labels.chunks(SAMPLE_CHUNK).enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        chunks.push(generate(
            &loaded.dit,
            &loaded.params,
            &process,
            &settings,
            chunk,
            seed,
        )?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let refs: Vec<&Tensor> = chunks.iter().collect();
    let images = Tensor::cat(&refs, 0)?;
    if let Some(out) = &args.save_images {
        save_image_folder(out, &images, &labels, classes)?;
    }
    Ok((images, Some(labels)))
}

/// Images per call of the sampler: the progress bar's grain.
const SAMPLE_CHUNK: usize = 100;

pub fn run(args: EvalArgs) -> tensor::Result<()> {
    if !args.classifier.is_file() {
        return Err(Error::msg(format!(
            "--classifier {}: no such file",
            args.classifier.display()
        )));
    }
    let source = Source::from_args(&args)?;
    tensor::limits::SAMPLES.check(args.samples.into(), "--samples")?;
    let reference_source = DataSource::parse(&args.reference, "--reference")?;
    let model = Classifier::load(&args.classifier)?;
    let (images, labels) = source.load(&model, &args)?;
    let data = reference_source.reference(model.config.input)?;
    let name = reference_source.to_string();
    let (reference, cached) = ReferenceStats::cached(&args.cache, &name, &data, &model)?;
    eprintln!(
        "reference statistics of {name}: {} (in {})",
        if cached {
            "from the cache"
        } else {
            "computed and cached"
        },
        args.cache.display()
    );
    let options = EvalOptions {
        kid: KidConfig {
            subsets: args.kid_subsets as usize,
            subset_size: args.kid_subset_size as usize,
            seed: args.seed,
        },
        is_splits: args.is_splits as usize,
        ..Default::default()
    };
    let report = evaluate_with(&images, labels.as_deref(), &reference, &model, &options)?;
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| Error::msg(format!("eval report: {e}")))?;
    println!("{json}");
    print!("{report}");
    if let Some(path) = &args.json {
        write_atomic(path, json.as_bytes())?;
    }
    Ok(())
}
