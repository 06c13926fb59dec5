//! Running a study: every (variant, seed) trained into its run folder (resumed when a previous
//! invocation was interrupted), then evaluated once into `eval.json`; finished and evaluated runs
//! are skipped.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tensor::{Error, Result};

use super::spec::Study;
use crate::data::save_grid;
use crate::eval::protocol::{Judge, Protocol};
use crate::eval::EvalReport;
use crate::files::write_atomic;
use crate::run::{train, RunConfig, TrainOptions};

/// A run's evaluation, beside it as `eval.json`.
pub const EVAL_FILE: &str = "eval.json";

/// The grid of a run's evaluation samples, a row per class.
pub const EVAL_GRID: &str = "eval-samples.png";

/// Samples of each class in [`EVAL_GRID`].
const GRID_PER_CLASS: usize = 4;

/// What `eval.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The step of the checkpoint evaluated.
    pub step: u64,
    /// The protocol it was evaluated under.
    pub protocol: Protocol,
    /// The seed of its sampling noise and metric subsets: the protocol's plus the run's.
    pub eval_seed: u64,
    /// The headline numbers by metric name (`FD-<classifier>`, `KID-<classifier>` (its mean),
    /// `IS-<classifier>`, `precision`, `recall`, `class_accuracy`).
    pub metrics: Map<String, Value>,
    /// The whole report ([`EvalReport::to_json`]).
    pub report: Value,
}

/// The headline numbers of a report, by metric name.
pub fn headline(report: &EvalReport) -> Map<String, Value> {
    let name = &report.classifier;
    let mut m = Map::new();
    m.insert(format!("FD-{name}"), report.fd.into());
    m.insert(format!("KID-{name}"), report.kid.mean.into());
    m.insert(format!("IS-{name}"), report.inception_score.mean.into());
    m.insert("precision".into(), report.precision_recall.precision.into());
    m.insert("recall".into(), report.precision_recall.recall.into());
    if let Some(a) = report.class_accuracy {
        m.insert("class_accuracy".into(), a.into());
    }
    m
}

/// Reads a run's `eval.json` (`None` when there is none).
pub fn read_record(run: &Path) -> Result<Option<EvalRecord>> {
    let path = run.join(EVAL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Format {
                path,
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// Whether the run of `config` is finished and evaluated under `protocol`: its saved config is
/// this one and its `eval.json` is of its last step under this protocol.
fn done(config: &RunConfig, protocol: &Protocol) -> Result<bool> {
    let saved = config.out.join("config.json");
    if !saved.is_file() {
        return Ok(false);
    }
    let same = RunConfig::from_file(&saved)? == *config;
    Ok(same
        && read_record(&config.out)?
            .is_some_and(|r| r.step == config.steps && r.protocol == *protocol))
}

/// How one invocation of [`run_all`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Runs trained (or resumed) and evaluated now.
    pub ran: usize,
    /// Runs already finished and evaluated.
    pub skipped: usize,
}

/// Trains and evaluates every run of the study not yet done, variant by variant, seed by seed.
/// `progress`: one bar over the whole study on standard error.
pub fn run_all(study: &Study, progress: bool) -> Result<RunCounts> {
    let configs = study.configs()?;
    let runs: Vec<RunConfig> = study
        .variants
        .iter()
        .zip(&configs)
        .flat_map(|(v, c)| study.seeds.iter().map(|&s| study.run_config(c, &v.name, s)))
        .collect();
    let pending: Vec<bool> = runs
        .iter()
        .map(|c| done(c, &study.eval).map(|d| !d))
        .collect::<Result<_>>()?;
    let mut counts = RunCounts {
        skipped: pending.iter().filter(|p| !**p).count(),
        ..Default::default()
    };
    if counts.skipped == runs.len() {
        return Ok(counts);
    }
    let judge = study.eval.judge()?;
    let bar = progress.then(|| crate::progress::bar(runs.len() as u64, "study"));
    if let Some(bar) = &bar {
        bar.set_position(counts.skipped as u64);
    }
    for (config, _) in runs.iter().zip(&pending).filter(|(_, p)| **p) {
        if let Some(bar) = &bar {
            bar.set_message(config.out.display().to_string());
        }
        let err = |e: Error| Error::msg(format!("study run {}: {e}", config.out.display()));
        let options = TrainOptions {
            resume: true,
            progress: false,
        };
        train(config, &options).map_err(err)?;
        evaluate_run(config, &judge).map_err(err)?;
        counts.ran += 1;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(counts)
}

/// Evaluates a finished run under the judge's protocol, writing `eval.json` and a grid of its
/// first samples of each class.
fn evaluate_run(config: &RunConfig, judge: &Judge) -> Result<()> {
    let seed = judge.protocol.seed.wrapping_add(config.seed);
    let run = &config.out;
    let (images, labels) = judge.sample(run, seed, false)?;
    let report = judge.evaluate(&images, labels.as_deref())?;
    // Image i is of class i % classes: the first images hold as many of each class.
    let n = images.shape()[0].min(GRID_PER_CLASS * judge.classifier.config.classes.len());
    let picked = images.narrow(0, 0, n)?;
    let grid_labels = labels
        .map(|l| tensor::Tensor::from_vec(l[..n].to_vec(), &[n]))
        .transpose()?;
    save_grid(run.join(EVAL_GRID), &picked, grid_labels.as_ref(), 2)?;
    let record = EvalRecord {
        step: config.steps,
        protocol: judge.protocol.clone(),
        eval_seed: seed,
        metrics: headline(&report),
        report: report.to_json(),
    };
    let json = serde_json::to_string_pretty(&record).expect("plain JSON");
    write_atomic(&run.join(EVAL_FILE), json.as_bytes())
}
