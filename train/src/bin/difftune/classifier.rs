//! `difftune classifier train|eval`: the small CNN whose features the evaluation metrics use.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use models::classifier::Classifier;
use tensor::Error;
use train::data::DataSource;
use train::eval::classifier::{accuracy, train_classifier, ClassifierTraining};

/// Train or measure an evaluation classifier.
#[derive(Args)]
pub struct ClassifierArgs {
    #[command(subcommand)]
    command: ClassifierCommand,
}

#[derive(Subcommand)]
enum ClassifierCommand {
    /// Train a classifier and save it (safetensors, config in the metadata).
    Train(TrainArgs),
    /// Measure a saved classifier's accuracy on a data set's held-out images.
    Eval(EvalArgs),
}

/// `difftune classifier train`.
#[derive(Args)]
struct TrainArgs {
    /// fashion-mnist, animal-mnist, or a folder of <class>/<image> files (20% held out, seed 0).
    #[arg(long)]
    data: String,
    /// Where to write the classifier.
    #[arg(long)]
    out: PathBuf,
    /// Name stored in the file (metrics are called FD-<name>); defaults to the data set's.
    #[arg(long)]
    name: Option<String>,
    /// Passes over the training images.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Random horizontal flips of the training images.
    #[arg(long)]
    hflip: bool,
    /// Side of the square images (folder images and the named sets are resized to it).
    #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u64).range(8..))]
    size: u64,
    /// Read folder images as RGB (default gray).
    #[arg(long)]
    rgb: bool,
    /// Seed of the weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `difftune classifier eval`.
#[derive(Args)]
struct EvalArgs {
    /// The classifier file.
    #[arg(long)]
    classifier: PathBuf,
    /// fashion-mnist (its test images), animal-mnist (the held-out 20%), or a folder.
    #[arg(long)]
    data: String,
}

pub fn run(args: ClassifierArgs) -> tensor::Result<()> {
    match args.command {
        ClassifierCommand::Train(a) => train(a),
        ClassifierCommand::Eval(a) => eval(a),
    }
}

fn train(args: TrainArgs) -> tensor::Result<()> {
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Error::msg(format!(
            "--lr {}: expected a positive number",
            args.lr
        )));
    }
    let source = DataSource::parse(&args.data, "--data")?;
    let channels = if args.rgb { 3 } else { 1 };
    let size = args.size as usize;
    let (train_set, held_out) = source.train_and_held_out([channels, size, size])?;
    let name = args.name.unwrap_or_else(|| match &source {
        DataSource::Folder(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "folder".into()),
        other => other.to_string(),
    });
    let cfg = ClassifierTraining {
        name,
        epochs: args.epochs as usize,
        batch: args.batch as usize,
        lr: args.lr,
        hflip: args.hflip,
        seed: args.seed,
        ..Default::default()
    };
    println!(
        "training `{}` on {} images of {source} ({} held out)",
        cfg.name,
        train_set.len(),
        held_out.len()
    );
    let start = Instant::now();
    let (model, report) = train_classifier(&train_set, &held_out, &cfg)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    model.save(&args.out)?;
    let losses: Vec<String> = report
        .epoch_losses
        .iter()
        .map(|l| format!("{l:.4}"))
        .collect();
    println!("epoch losses: {}", losses.join(" "));
    println!(
        "held-out accuracy: {:.4} ({} images); {} parameters; {:.0} s; saved {}",
        report.held_out_accuracy,
        held_out.len(),
        model.params.param_count(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn eval(args: EvalArgs) -> tensor::Result<()> {
    if !args.classifier.is_file() {
        return Err(Error::msg(format!(
            "--classifier {}: no such file",
            args.classifier.display()
        )));
    }
    let model = Classifier::load(&args.classifier)?;
    let source = DataSource::parse(&args.data, "--data")?;
    let held_out = source.held_out(model.config.input)?;
    let acc = accuracy(&model, &held_out)?;
    println!(
        "classifier `{}` on {} held-out images of {source}: accuracy {acc:.4}",
        model.config.name,
        held_out.len()
    );
    Ok(())
}
