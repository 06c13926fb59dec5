//! `difftune forgetting`: Diff-Tuning's chain of forgetting, scored at each switch point.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map};
use tensor::{Error, Result};
use train::eval::protocol::Protocol;
use train::methods::forgetting::{chain_of_forgetting, write_report};
use train::run::{load_model, Weights};

use crate::sample::SamplerFlags;

/// Sample with a fine-tuned model for t >= t_switch and its pretrained model (unconditionally)
/// for t < t_switch, and score the samples at each switch point over several seeds: a table
/// (`forgetting.md`, `forgetting.json`) and a curve with 95% bands (`forgetting.png`).
#[derive(Args, Debug)]
pub struct ForgettingArgs {
    /// The pretrained model (run folder, checkpoint folder or exported file).
    #[arg(long)]
    pretrained: PathBuf,
    /// The model fine-tuned from it (its classes are the classifier's).
    #[arg(long)]
    finetuned: PathBuf,
    /// The switch points, e.g. `0,250,500,750,1000` (0: the fine-tuned model alone).
    #[arg(long, value_delimiter = ',', required = true)]
    switch: Vec<usize>,
    /// Seeds of the sampling noise: each switch point is scored once per seed.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Images per switch point and seed, the same number of each class.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    #[command(flatten)]
    sampling: SamplerFlags,
    /// The reference data set (see `difftune eval`).
    #[arg(long)]
    reference: String,
    /// The classifier file (see `difftune classifier train`).
    #[arg(long)]
    classifier: PathBuf,
    /// KID: number of random subsets.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    kid_subsets: u64,
    /// KID: images per subset (capped by the smaller set).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(2..))]
    kid_subset_size: u64,
    /// Folder of cached reference statistics.
    #[arg(long, default_value = "runs/cache")]
    cache: PathBuf,
    /// The folder to write the report into (a new one, or one without a report).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `difftune forgetting`.
pub fn run(args: ForgettingArgs) -> Result<()> {
    if args.out.join("forgetting.json").exists() {
        return Err(Error::msg(format!(
            "--out {}: holds a report already; choose another folder",
            args.out.display()
        )));
    }
    let protocol = Protocol {
        samples: usize::try_from(args.samples).unwrap_or(usize::MAX),
        sampler: args.sampling.sampler.as_ref().map(|r| r.to_string()),
        eta: args.sampling.eta,
        cfg_scale: args.sampling.cfg_scale,
        reference: args.reference.clone(),
        classifier: args.classifier.clone(),
        cache: args.cache.clone(),
        kid_subsets: args.kid_subsets as usize,
        kid_subset_size: args.kid_subset_size as usize,
        ..Protocol::default()
    };
    protocol.validate("forgetting:")?;
    let pretrained = load_model(&args.pretrained, Weights::Ema)?;
    let finetuned = load_model(&args.finetuned, Weights::Ema)?;
    let judge = protocol.judge()?;
    eprintln!(
        "chain of forgetting: {} switch points x {} seeds, {} images each",
        args.switch.len(),
        args.seeds.len(),
        protocol.samples
    );
    let table = chain_of_forgetting(
        &pretrained,
        &finetuned,
        &judge,
        &args.switch,
        &args.seeds,
        true,
    )?;
    let about: Map<String, serde_json::Value> = json!({
        "pretrained": args.pretrained.display().to_string(),
        "finetuned": args.finetuned.display().to_string(),
        "seeds": args.seeds,
        "protocol": protocol,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let md = write_report(&args.out, &table, about)?;
    print!("{md}");
    println!("report: {}/forgetting.{{md,json,png}}", args.out.display());
    Ok(())
}
