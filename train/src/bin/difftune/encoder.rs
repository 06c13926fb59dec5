//! `difftune encoder train|probe`: the image encoders of the ANL transfer method.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use models::encoder::{EncoderKind, ImageEncoder};
use tensor::{Device, Error};
use train::data::DataSource;
use train::encoders::{linear_probe, pooled_features, train_encoder, EncoderTraining};

/// Train an image encoder or measure one with a linear probe.
#[derive(Args)]
pub struct EncoderArgs {
    #[command(subcommand)]
    command: EncoderCommand,
}

#[derive(Subcommand)]
enum EncoderCommand {
    /// Train an encoder (cnn and vit supervised on the classes, clip contrastively between two
    /// augmented views) and save it (safetensors, config in the metadata).
    Train(TrainArgs),
    /// Fit a linear probe on a saved encoder's frozen pooled features (the data set's training
    /// split) and print its accuracy on the held-out split.
    Probe(ProbeArgs),
}

/// `difftune encoder train`.
#[derive(Args)]
struct TrainArgs {
    /// clip, vit or cnn.
    #[arg(long, value_parser = parse_kind)]
    kind: EncoderKind,
    /// fashion-mnist, animal-mnist or a folder of <class>/<image> files (its training split).
    #[arg(long)]
    data: String,
    /// Where to write the encoder (an existing file is refused).
    #[arg(long)]
    out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Images per batch (for clip: positive pairs, at least 2).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the weights, the batch order and the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `difftune encoder probe`.
#[derive(Args)]
struct ProbeArgs {
    /// The encoder file.
    #[arg(long)]
    encoder: PathBuf,
    /// animal-mnist, fashion-mnist or a folder: the probe trains on its training split and is
    /// measured on its held-out split.
    #[arg(long)]
    data: String,
    /// Full-batch optimizer steps of the probe.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
}

fn parse_kind(s: &str) -> Result<EncoderKind, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

pub fn run(args: EncoderArgs) -> tensor::Result<()> {
    match args.command {
        EncoderCommand::Train(a) => train(a),
        EncoderCommand::Probe(a) => probe(a),
    }
}

fn train(args: TrainArgs) -> tensor::Result<()> {
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Error::msg(format!(
            "--lr {}: expected a positive number",
            args.lr
        )));
    }
    if args.out.exists() {
        return Err(Error::msg(format!(
            "--out {}: the file exists; choose another path (it is never overwritten)",
            args.out.display()
        )));
    }
    let source = DataSource::parse(&args.data, "--data")?;
    let (train_set, _) = source.train_and_held_out([1, 28, 28])?;
    let cfg = EncoderTraining {
        kind: args.kind,
        steps: args.steps as usize,
        batch: args.batch_size as usize,
        lr: args.lr,
        seed: args.seed,
        ..Default::default()
    };
    println!(
        "training a {} encoder on {} images of {source}",
        cfg.kind,
        train_set.len()
    );
    let start = Instant::now();
    let (encoder, ps, report) = train_encoder(&train_set, &cfg, Device::Cpu)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    encoder.save(&ps, &args.out)?;
    let (first, last) = report.first_and_last(50);
    println!(
        "loss {first:.4} (first 50 steps) -> {last:.4} (last 50); {} parameters; {:.0} s; saved {}",
        ps.param_count(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn probe(args: ProbeArgs) -> tensor::Result<()> {
    if !args.encoder.is_file() {
        return Err(Error::msg(format!(
            "--encoder {}: no such file",
            args.encoder.display()
        )));
    }
    let (encoder, ps) = ImageEncoder::load(&args.encoder, Device::Cpu)?;
    let source = DataSource::parse(&args.data, "--data")?;
    let (train_set, held_out) = source.train_and_held_out(encoder.config().image)?;
    let start = Instant::now();
    let (ft, fh) = (
        pooled_features(&encoder, &ps, &train_set)?,
        pooled_features(&encoder, &ps, &held_out)?,
    );
    let report = linear_probe(
        (&ft, train_set.labels()),
        (&fh, held_out.labels()),
        train_set.classes().len(),
        args.steps as usize,
    )?;
    println!(
        "{} encoder {}: linear probe on {} pooled features of {source}: trained on {} images \
         (accuracy {:.4}), held-out accuracy {:.4} on {} images ({:.0} s)",
        encoder.config().kind,
        args.encoder.display(),
        encoder.pooled_dim(),
        train_set.len(),
        report.train_accuracy,
        report.held_out_accuracy,
        held_out.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
