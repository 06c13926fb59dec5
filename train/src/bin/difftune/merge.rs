//! `difftune merge`: DeMe's merge of the runs fine-tuned on each timestep range.

use std::path::PathBuf;

use clap::Args;
use tensor::{Error, Result};
use train::methods::merge::{grid_size, Merge, MergeWeights};

use train::eval::protocol::Protocol;

use crate::sample::SamplerFlags;

/// Merge fine-tuned runs into one model: theta0 + sum_i w_i (theta_i - theta0) over their
/// moving-average weights, theta0 the base they started from (DeMe's task arithmetic). With
/// `--weights grid`, every combination of the `--grid` values is scored by FD on the validation
/// set `--reference` and the best kept; evaluate the result on a separate test set with
/// `difftune eval --checkpoint OUT`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The model the runs started from (run folder, checkpoint folder or exported file).
    #[arg(long)]
    base: PathBuf,
    /// The runs to merge (run or checkpoint folders, or exported files).
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// `uniform` (1/N each), `w1,...,wN`, or `grid`.
    #[arg(long, default_value = "uniform")]
    weights: String,
    /// The values each weight takes in the grid search.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.4")]
    grid: Vec<f64>,
    /// Validation images sampled per combination of the grid.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Seed of the validation samples' noise (the same for every combination).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `--weights grid`: the validation set the merges are scored against (a data set or
    /// folder, as `eval --reference`; keep the test set apart).
    #[arg(long)]
    reference: Option<String>,
    /// `--weights grid`: the classifier whose features FD is computed in.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Folder of cached reference statistics.
    #[arg(long, default_value = "runs/cache")]
    cache: PathBuf,
    /// How the validation images are sampled.
    #[command(flatten)]
    sampling: SamplerFlags,
    /// The merged model's file (a new file; `sample`, `eval` and `--init` take it).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `difftune merge`.
pub fn run(args: MergeArgs) -> Result<()> {
    train::run::export::refuse_existing(&args.out)
        .map_err(|e| Error::msg(format!("--out: {e}")))?;
    let how = MergeWeights::parse(&args.weights, &args.grid, "--weights")?;
    let n = args.runs.len();
    let judge = match (&how, &args.reference, &args.classifier) {
        (MergeWeights::Grid(values), Some(reference), Some(classifier)) => {
            grid_size(values.len(), n)?;
            let protocol = Protocol {
                samples: usize::try_from(args.samples).unwrap_or(usize::MAX),
                sampler: args.sampling.sampler.as_ref().map(|r| r.to_string()),
                eta: args.sampling.eta,
                cfg_scale: args.sampling.cfg_scale,
                reference: reference.clone(),
                classifier: classifier.clone(),
                cache: args.cache.clone(),
                seed: args.seed,
                ..Protocol::default()
            };
            protocol.validate("merge validation:")?;
            Some(protocol.judge()?)
        }
        (MergeWeights::Grid(_), ..) => {
            return Err(Error::msg(
                "--weights grid scores the merges on a validation set: give --reference and \
                 --classifier",
            ))
        }
        _ => None,
    };
    if let MergeWeights::Given(w) = &how {
        if w.len() != n {
            return Err(Error::msg(format!(
                "--weights: {} weights for {n} runs; give one per run",
                w.len()
            )));
        }
    }
    let mut merge = Merge::load(&args.base, &args.runs)?;
    let bar = match (&how, &judge) {
        (MergeWeights::Grid(values), Some(judge)) => {
            let count = grid_size(values.len(), n)?;
            eprintln!(
                "grid search: {count} combinations of {values:?}, each scored on {} images of {}",
                judge.protocol.samples, judge.protocol.reference
            );
            Some(train::progress::bar(count as u64, "grid"))
        }
        _ => None,
    };
    let record = merge.choose(how, judge.as_ref().map(|j| (j, args.seed)), |p| {
        if let Some(bar) = &bar {
            bar.set_message(format!("{:?}: FD {:.2}", p.weights, p.fd));
            bar.inc(1);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish();
    }
    let report = merge.save(&args.out, &record)?;
    println!(
        "merged {n} runs into {} ({} tensors), weights {:?} ({})",
        args.out.display(),
        report.tensors,
        record.weights,
        record.chosen_by
    );
    if let Some(best) = record.grid.iter().find(|p| p.weights == record.weights) {
        println!("validation FD of the chosen weights: {:.3}", best.fd);
    }
    Ok(())
}
