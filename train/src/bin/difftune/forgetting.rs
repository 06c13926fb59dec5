//! `difftune forgetting`: Diff-Tuning's chain of forgetting, scored at each switch point.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map};
use tensor::{Error, Result};
use train::methods::forgetting::{chain_of_forgetting, write_report};
use train::run::{load_model, Weights};

use crate::eval::ProtocolFlags;

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
    protocol: ProtocolFlags,
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
    let protocol = args.protocol.protocol(args.samples, 0);
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
