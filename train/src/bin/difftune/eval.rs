//! `difftune eval`: FD, KID, IS, precision/recall and class accuracy of generated images against
//! a reference data set, in the features of a difftune classifier.

use std::path::PathBuf;

use clap::{ArgGroup, Args};
use models::classifier::Classifier;
use tensor::{Error, Tensor};
use train::eval::data::{read_image_folder, DataSource};
use train::eval::{evaluate_with, EvalOptions, KidConfig, ReferenceStats};
use train::files::write_atomic;

/// Evaluate generated images against a reference data set.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["images"])))]
pub struct EvalArgs {
    /// Folder of generated images: flat, or one sub-folder per requested class (named by class
    /// index or class name), which adds the class accuracy.
    #[arg(long)]
    images: Option<PathBuf>,
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
}

impl Source {
    fn from_args(args: &EvalArgs) -> tensor::Result<Source> {
        match &args.images {
            Some(dir) => Ok(Source::Images(dir.clone())),
            None => Err(Error::msg("give the images to evaluate with --images")),
        }
    }

    /// The images (`f32 [N, C, H, W]` in `[-1, 1]`) and the classes they were asked for.
    fn load(&self, model: &Classifier) -> tensor::Result<(Tensor, Option<Vec<i64>>)> {
        match self {
            Source::Images(dir) => {
                let folder = read_image_folder(dir, model.config.input, &model.config.classes)?;
                Ok((folder.images, folder.labels))
            }
        }
    }
}

pub fn run(args: EvalArgs) -> tensor::Result<()> {
    if !args.classifier.is_file() {
        return Err(Error::msg(format!(
            "--classifier {}: no such file",
            args.classifier.display()
        )));
    }
    let source = Source::from_args(&args)?;
    let reference_source = DataSource::parse(&args.reference, "--reference")?;
    let model = Classifier::load(&args.classifier)?;
    let (images, labels) = source.load(&model)?;
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
