//! Diff-Tuning's chain of forgetting, measured: sample with the fine-tuned model for the steps
//! `t >= t_switch` (far from the data) and hand the steps `t < t_switch` (near it) to the
//! pretrained model, denoising unconditionally (its null class: its own classes are another
//! domain's). If fine-tuning forgot little near the data, the scores stay flat for small
//! `t_switch` and degrade as it grows.

use std::path::Path;

use serde_json::{json, Map, Value};
use tensor::{Error, Result};

use crate::eval::interval::{markdown_table, Interval};
use crate::eval::protocol::Judge;
use crate::files::write_atomic;
use crate::plot::{colour, interval_line, Axis, Figure, Panel};
use crate::run::{LoadedModel, Stage};
use crate::study::results::{higher_is_better, metric_rank};
use crate::study::runner::headline;

/// The scores of one switch point: per metric, one value per seed.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchScores {
    /// The first timestep the fine-tuned model denoises (0: it denoises every step).
    pub switch: usize,
    /// Per metric (FD, KID, IS, precision, recall, class accuracy) the value of each seed.
    pub metrics: Vec<(String, Vec<f64>)>,
}

/// Samples [`Judge`]'s protocol from the two models at every switch point and seed (the same
/// noise at every switch point for a seed: the points are compared on the same draws) and
/// scores each. The models must share their image shape and number of timesteps; the fine-tuned
/// model's classes are the classifier's, and the pretrained one needs a null class.
pub fn chain_of_forgetting(
    pretrained: &LoadedModel,
    finetuned: &LoadedModel,
    judge: &Judge,
    switches: &[usize],
    seeds: &[u64],
    progress: bool,
) -> Result<Vec<SwitchScores>> {
    let steps = |m: &LoadedModel| m.state.config.diffusion_config().map(|d| d.steps);
    let (t_pre, t_fine) = (steps(pretrained)?, steps(finetuned)?);
    if t_pre != t_fine {
        return Err(Error::msg(format!(
            "the pretrained model's process has {t_pre} steps, the fine-tuned one's {t_fine}"
        )));
    }
    if let Some(bad) = switches.iter().find(|&&s| s > t_fine) {
        return Err(Error::msg(format!(
            "--switch {bad}: beyond the process's {t_fine} steps"
        )));
    }
    if switches.is_empty() || seeds.is_empty() {
        return Err(Error::msg("--switch and --seeds: name at least one each"));
    }
    let bar = progress.then(|| crate::progress::bar((switches.len() * seeds.len()) as u64, "eval"));
    let mut table = Vec::new();
    for &switch in switches {
        let fine = Stage {
            from: switch,
            ..Stage::new(&finetuned.network, &finetuned.params)
        };
        let pre = Stage {
            null_labels: true,
            ..Stage::new(&pretrained.network, &pretrained.params)
        };
        let stages = if switch == 0 {
            vec![fine]
        } else {
            vec![fine, pre]
        };
        let mut metrics: Vec<(String, Vec<f64>)> = Vec::new();
        for &seed in seeds {
            let what = format!("t_switch {switch}");
            let noise_seed = judge.protocol.seed.wrapping_add(seed);
            let (images, labels) =
                judge.sample_in_stages(&stages, &finetuned.state, &what, noise_seed, false)?;
            let report = judge.evaluate(&images, labels.as_deref())?;
            for (name, value) in headline(&report) {
                let value = value.as_f64().unwrap_or(f64::NAN);
                match metrics.iter_mut().find(|(m, _)| *m == name) {
                    Some((_, values)) => values.push(value),
                    None => metrics.push((name, vec![value])),
                }
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        metrics.sort_by_key(|(name, _)| metric_rank(name));
        table.push(SwitchScores { switch, metrics });
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(table)
}

/// Each metric's intervals over the seeds, switch point by switch point.
fn intervals(table: &[SwitchScores]) -> Result<Vec<(String, Vec<Interval>)>> {
    let names: Vec<String> = table
        .first()
        .map(|p| p.metrics.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            let per_switch = table
                .iter()
                .map(|p| {
                    let values = p.metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
                    Interval::of(values.map_or(&[][..], |v| &v[..]))
                        .map_err(|e| Error::msg(format!("t_switch {} `{name}`: {e}", p.switch)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((name, per_switch))
        })
        .collect()
}

/// Writes `forgetting.json` (per switch point and metric: the seeds' values, mean and 95%
/// interval, with `about`'s fields), `forgetting.md` (the table) and `forgetting.png` (each
/// metric against t_switch with its band) into `dir`; the table's markdown.
pub fn write_report(
    dir: &Path,
    table: &[SwitchScores],
    about: Map<String, Value>,
) -> Result<String> {
    let rows = intervals(table)?;
    let points: Vec<Value> = table
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let metrics: Map<String, Value> = rows
                .iter()
                .zip(&p.metrics)
                .map(|((name, per_switch), (_, values))| {
                    let i = &per_switch[k];
                    let cell = json!({"values": values, "mean": i.mean, "std": i.std,
                        "half_width": i.half_width, "lo": i.lo(), "hi": i.hi(), "n": i.n});
                    (name.clone(), cell)
                })
                .collect();
            json!({"t_switch": p.switch, "metrics": metrics})
        })
        .collect();
    let mut json = about;
    json.insert("switches".into(), Value::Array(points));
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&dir.join("forgetting.json"), text.as_bytes())?;

    let labels: Vec<String> = table.iter().map(|p| p.switch.to_string()).collect();
    let columns: Vec<&str> = std::iter::once("metric \\ t_switch")
        .chain(labels.iter().map(String::as_str))
        .collect();
    let md_rows: Vec<(&str, &[Interval])> =
        rows.iter().map(|(n, i)| (n.as_str(), &i[..])).collect();
    let md = markdown_table(&columns, &md_rows)?;
    write_atomic(&dir.join("forgetting.md"), md.as_bytes())?;

    let x = Axis::new("t_switch (the pretrained model denoises t < t_switch)");
    let panels = rows
        .iter()
        .map(|(name, per_switch)| {
            let points: Vec<(f64, Interval)> = table
                .iter()
                .zip(per_switch)
                .map(|(p, i)| (p.switch as f64, *i))
                .collect();
            let better = if higher_is_better(name) {
                "higher"
            } else {
                "lower"
            };
            let title = format!("{name} ({better} is better)");
            Panel::new(&title, x.clone(), Axis::new(name)).with(interval_line(
                name,
                colour(0),
                &points,
            ))
        })
        .collect();
    Figure::new(panels)
        .size(460, 360)
        .save(&dir.join("forgetting.png"))?;
    Ok(md)
}
