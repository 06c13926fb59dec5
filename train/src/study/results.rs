//! A study's numbers gathered from its run folders (`eval.json`, `trainable.json`,
//! `metrics.jsonl`), and its side-by-side sample picture.

use std::path::Path;

use tensor::{Error, Result};

use super::runner::{read_record, EVAL_GRID};
use super::spec::Study;
use crate::data::folder::{decode, save_png};
use crate::data::ColorMode;
use crate::methods::TrainableReport;
use crate::run::{metrics, TRAINABLE_FILE};

/// One variant's numbers over the study's seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantResult {
    /// The variant's name.
    pub name: String,
    /// Its swept number, if the study has one.
    pub x: Option<f64>,
    /// The line of `sweep.png` its `x` is a point of (`None`: the unnamed line).
    pub curve: Option<String>,
    /// Per metric (in the order `eval.json` lists them) the value of each seed, in seed order.
    pub metrics: Vec<(String, Vec<f64>)>,
    /// Which parameters train (the first seed's run; the seed does not change it); `None` for a
    /// variant that is not trained (a model, merge or ensemble).
    pub trainable: Option<TrainableReport>,
    /// Optimisation steps per second, averaged over every logged line of every seed; `None`
    /// for a variant that is not trained.
    pub steps_per_sec: Option<f64>,
}

/// The place of a metric in tables and plots: FD, KID, IS, precision, recall, class accuracy.
pub(crate) fn metric_rank(metric: &str) -> usize {
    let order = [
        "FD-",
        "KID-",
        "IS-",
        "precision",
        "recall",
        "class_accuracy",
    ];
    order
        .iter()
        .position(|p| metric.starts_with(p))
        .unwrap_or(order.len())
}

/// Whether a larger value of the metric is better (accuracy, precision, recall, the
/// Inception-style score, the copy ratio); FD, KID and the leakage check's feature shift are
/// distances, smaller is better.
pub fn higher_is_better(metric: &str) -> bool {
    !(metric.starts_with("FD-") || metric.starts_with("KID-") || metric == "leak_shift")
}

fn read_trainable(run: &Path) -> Result<TrainableReport> {
    let path = run.join(TRAINABLE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path,
        msg: e.to_string(),
    })
}

/// The numbers of every variant but the hidden ones, read from its evaluated runs; a run
/// without `eval.json` is an error naming it.
pub fn gather(study: &Study) -> Result<Vec<VariantResult>> {
    study
        .variants
        .iter()
        .filter(|v| !v.hidden)
        .map(|v| {
            let mut metrics: Vec<(String, Vec<f64>)> = Vec::new();
            let (mut rate_sum, mut rate_count) = (0.0, 0usize);
            for &seed in &study.seeds {
                let run = study.run_dir(&v.name, seed);
                let record = read_record(&run)?.ok_or_else(|| {
                    Error::msg(format!("{}: not evaluated (no eval.json)", run.display()))
                })?;
                for (name, value) in &record.metrics {
                    let value = value.as_f64().ok_or_else(|| Error::Format {
                        path: run.join(super::runner::EVAL_FILE),
                        msg: format!("metric `{name}` is {value}, not a number"),
                    })?;
                    match metrics.iter_mut().find(|(m, _)| m == name) {
                        Some((_, values)) => values.push(value),
                        None => metrics.push((name.clone(), vec![value])),
                    }
                }
                if v.is_trained() {
                    for line in metrics::read(&run.join("metrics.jsonl"))? {
                        (rate_sum, rate_count) = (rate_sum + line.steps_per_sec, rate_count + 1);
                    }
                }
            }
            metrics.sort_by_key(|(name, _)| metric_rank(name));
            if let Some((name, values)) = metrics.iter().find(|(_, v)| v.len() != study.seeds.len())
            {
                return Err(Error::msg(format!(
                    "study variant `{}`: metric `{name}` is in {} of its {} runs' eval.json",
                    v.name,
                    values.len(),
                    study.seeds.len()
                )));
            }
            Ok(VariantResult {
                name: v.name.clone(),
                x: v.x,
                curve: v.curve.clone(),
                metrics,
                trainable: match v.is_trained() {
                    true => Some(read_trainable(&study.run_dir(&v.name, study.seeds[0]))?),
                    false => None,
                },
                steps_per_sec: v.is_trained().then(|| rate_sum / rate_count.max(1) as f64),
            })
        })
        .collect()
}

/// Gap between the variants' blocks of `samples.png`, in pixels.
const BLOCK_GAP: usize = 8;

/// Writes the first seed's evaluation grid of every variant side by side to `path` (a column
/// block per variant, in the study's order, white between blocks).
pub fn save_samples(study: &Study, path: &Path) -> Result<()> {
    let grids = study
        .variants
        .iter()
        .filter(|v| !v.hidden)
        .map(|v| {
            decode(
                &study.run_dir(&v.name, study.seeds[0]).join(EVAL_GRID),
                ColorMode::Rgb,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let height = grids.iter().map(|g| g.height).max().unwrap_or(1);
    let width = grids.iter().map(|g| g.width).sum::<usize>() + BLOCK_GAP * (grids.len() - 1);
    let mut pixels = vec![255u8; width * height * 3];
    let mut left = 0;
    for g in &grids {
        for y in 0..g.height {
            let row = &g.pixels[y * g.width * 3..(y + 1) * g.width * 3];
            let at = (y * width + left) * 3;
            pixels[at..at + row.len()].copy_from_slice(row);
        }
        left += g.width + BLOCK_GAP;
    }
    save_png(path, width, height, 3, &pixels)
}
