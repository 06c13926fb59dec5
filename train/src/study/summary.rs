//! A study's report: `results.json` and `results.md` (per metric, each variant's mean and 95%
//! interval over the seeds, the best marked), `metrics.png` (bars with error bars, a panel per
//! metric) and, when the variants set `x`, `sweep.png` (each metric against x, with its band,
//! a line per `curve`).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use tensor::{Error, Result};

use super::results::{higher_is_better, VariantResult};
use super::spec::{Study, Variant, VariantKind};
use crate::eval::interval::{markdown_table, Interval};
use crate::files::write_atomic;
use crate::plot::{colour, interval_line, Axis, Figure, Panel};

/// One metric over the variants that report it (an unconditional model has no class
/// accuracy): its name, those variants and each one's interval, in study order.
struct MetricRow {
    name: String,
    /// The variants (indices into the results) that report the metric.
    variants: Vec<usize>,
    /// Their intervals, in the order of `variants`.
    intervals: Vec<Interval>,
    /// The variant (an index into the results) with the best mean; `None` when several share it.
    best: Option<usize>,
    /// With the study's `paired_with` (when it reports the metric): each variant's per-seed
    /// differences from that variant, and their interval, in the order of `variants`.
    paired: Option<Vec<(Vec<f64>, Interval)>>,
}

impl MetricRow {
    /// Where variant `v` (an index into the results) stands in the row, if it reports the metric.
    fn position(&self, v: usize) -> Option<usize> {
        self.variants.iter().position(|&w| w == v)
    }
}

/// The metrics the variants report (each with the variants that report it), with their
/// intervals and the best variant of each, and with `paired_with` (a variant's index) each
/// variant's seed-by-seed difference from it.
fn metric_rows(results: &[VariantResult], paired_with: Option<usize>) -> Result<Vec<MetricRow>> {
    let mut names: Vec<&String> = Vec::new();
    for (name, _) in results.iter().flat_map(|r| &r.metrics) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let values = |r: &VariantResult, name: &str| {
        r.metrics
            .iter()
            .find(|(m, _)| m == name)
            .map(|(_, v)| v.clone())
    };
    names
        .into_iter()
        .map(|name| {
            let variants: Vec<usize> = (0..results.len())
                .filter(|&v| values(&results[v], name).is_some())
                .collect();
            let intervals = variants
                .iter()
                .map(|&v| {
                    let r = &results[v];
                    Interval::of(&values(r, name).unwrap_or_default()).map_err(|e| {
                        Error::msg(format!("study variant `{}` `{name}`: {e}", r.name))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let sign = if higher_is_better(name) { -1.0 } else { 1.0 };
            let score = |i: usize| sign * intervals[i].mean;
            let top = (0..intervals.len()).min_by(|&a, &b| score(a).total_cmp(&score(b)));
            let best = top
                .filter(|&t| (0..intervals.len()).all(|i| i == t || score(i) > score(t)))
                .map(|t| variants[t]);
            let paired = paired_with
                .and_then(|p| values(&results[p], name))
                .map(|reference| {
                    variants
                        .iter()
                        .map(|&v| {
                            let own = values(&results[v], name).unwrap_or_default();
                            let gaps: Vec<f64> =
                                own.iter().zip(&reference).map(|(a, b)| a - b).collect();
                            Ok((gaps.clone(), Interval::of(&gaps)?))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            Ok(MetricRow {
                name: name.clone(),
                variants,
                intervals,
                best,
                paired,
            })
        })
        .collect()
}

fn interval_json(values: &[f64], i: &Interval) -> Value {
    json!({
        "values": values,
        "mean": i.mean,
        "std": i.std,
        "half_width": i.half_width,
        "lo": i.lo(),
        "hi": i.hi(),
        "n": i.n,
    })
}

/// Writes `results.json`, `results.md`, `metrics.png` and (with `x`) `sweep.png` into the study
/// folder; `command` is how the study was run, for the report's header. Returns the paths.
pub fn write(study: &Study, results: &[VariantResult], command: &str) -> Result<Vec<PathBuf>> {
    let paired_with =
        (study.paired_with.as_ref()).and_then(|name| results.iter().position(|r| &r.name == name));
    let rows = metric_rows(results, paired_with)?;
    let out = &study.out;
    let paths = [
        out.join("results.json"),
        out.join("results.md"),
        out.join("metrics.png"),
    ];
    write_json(study, results, &rows, command, &paths[0])?;
    write_markdown(study, results, &rows, command, &paths[1])?;
    let mut written = paths.to_vec();
    write_bars(results, &rows, &paths[2])?;
    if results.iter().filter(|r| r.x.is_some()).count() >= 2 {
        let path = out.join("sweep.png");
        write_sweep(study, results, &rows, &path)?;
        written.push(path);
    }
    Ok(written)
}

fn write_json(
    study: &Study,
    results: &[VariantResult],
    rows: &[MetricRow],
    command: &str,
    path: &Path,
) -> Result<()> {
    let variants: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(v, r)| {
            let metrics: Map<String, Value> = r
                .metrics
                .iter()
                .map(|(name, values)| {
                    let row = rows
                        .iter()
                        .find(|row| &row.name == name)
                        .expect("every metric");
                    let at = row.position(v).expect("the variant reports it");
                    let mut cell = interval_json(values, &row.intervals[at]);
                    if let Some(paired) = &row.paired {
                        let (gaps, interval) = &paired[at];
                        cell["paired_difference"] = interval_json(gaps, interval);
                    }
                    (name.clone(), cell)
                })
                .collect();
            json!({
                "name": r.name,
                "x": r.x,
                "curve": r.curve,
                "trainable": r.trainable.as_ref().map(|t| t.trainable),
                "total": r.trainable.as_ref().map(|t| t.total),
                "steps_per_sec": r.steps_per_sec,
                "metrics": metrics,
            })
        })
        .collect();
    let best: Map<String, Value> = rows
        .iter()
        .map(|row| {
            let best = row.best.map(|b| results[b].name.clone());
            (row.name.clone(), best.into())
        })
        .collect();
    let report = json!({
        "command": command,
        "seeds": study.seeds,
        "x_label": study.x_label,
        "eval": study.eval,
        "confidence": crate::eval::interval::CONFIDENCE,
        "best": best,
        "variants": variants,
    });
    let text = serde_json::to_string_pretty(&report).expect("plain JSON");
    write_atomic(path, text.as_bytes())
}

/// What a variant that is not trained is made of, for the table.
fn made_of(v: &Variant) -> String {
    match v.kind() {
        VariantKind::Model(path) => format!("the model {}", path.display()),
        VariantKind::Merge(spec) => format!(
            "merge of {}, weights {}",
            spec.runs.join(", "),
            spec.weights
        ),
        VariantKind::Ensemble(parts) => format!("ensemble of {}", parts.join(", ")),
        VariantKind::Of(of) => format!(
            "the runs of {of}{}{}",
            v.at_step.map_or(String::new(), |s| format!(" at step {s}")),
            match v.eval.is_empty() {
                true => String::new(),
                false => format!(", evaluated with {}", Value::Object(v.eval.clone())),
            }
        ),
        VariantKind::Trained => String::new(),
    }
}

fn write_markdown(
    study: &Study,
    results: &[VariantResult],
    rows: &[MetricRow],
    command: &str,
    path: &Path,
) -> Result<()> {
    let e = &study.eval;
    let seeds: Vec<String> = study.seeds.iter().map(u64::to_string).collect();
    let mut md = format!("# Study `{}`\n\n", study.out.display());
    md += &format!("`{command}`\n\n");
    md += &format!(
        "{} variants x {} seeds (seeds {}); each run evaluated on {} samples (sampler {}, \
         guidance {}) against `{}` in the features of `{}`. Cells: mean ± half-width of the 95% \
         Student-t interval over the seeds; **best** marks the best mean (none on a tie).\n\n",
        results.len(),
        study.seeds.len(),
        seeds.join(", "),
        e.samples,
        e.sampler.as_deref().unwrap_or("each run's"),
        e.cfg_scale.map_or("each run's".into(), |c| c.to_string()),
        e.reference,
        e.classifier.display(),
    );
    // The swept number gets a column only in a sweep, the curve only when one is named.
    let swept = results.iter().any(|r| r.x.is_some());
    let curved = results.iter().any(|r| r.curve.is_some());
    let x_label = study.x_label.as_deref().unwrap_or("x");
    let columns: Vec<&str> = std::iter::once("variant")
        .chain(swept.then_some(x_label))
        .chain(curved.then_some("curve"))
        .chain(["trainable parameters", "steps/s"])
        .collect();
    md += &format!(
        "| {} |\n|{}\n",
        columns.join(" | "),
        " --- |".repeat(columns.len())
    );
    let cell = |value: Option<String>, shown: bool| match (value, shown) {
        (Some(v), _) => format!(" {v} |"),
        (None, true) => " — |".into(),
        (None, false) => String::new(),
    };
    for (r, v) in results
        .iter()
        .zip(study.variants.iter().filter(|v| !v.hidden))
    {
        let x = cell(r.x.map(|x| x.to_string()), swept) + &cell(r.curve.clone(), curved);
        let trainable = match &r.trainable {
            Some(t) => format!("{} of {} ({:.2}%)", t.trainable, t.total, 100.0 * t.share()),
            None => format!("— ({})", made_of(v)),
        };
        let rate = r.steps_per_sec.map_or("—".into(), |s| format!("{s:.2}"));
        md += &format!("| {} |{x} {trainable} | {rate} |\n", r.name);
    }
    for row in rows {
        let direction = if higher_is_better(&row.name) {
            "higher is better"
        } else {
            "lower is better"
        };
        md += &format!("\n## {} ({direction})\n\n", row.name);
        if row.variants.len() < results.len() {
            md += "Only the variants that report it.\n\n";
        }
        let labels: Vec<String> = row
            .variants
            .iter()
            .map(|&v| match row.best == Some(v) {
                true => format!("**{}** (best)", results[v].name),
                false => results[v].name.clone(),
            })
            .collect();
        let cells: Vec<Vec<Interval>> = (0..row.variants.len())
            .map(|at| {
                let own = row.intervals[at];
                std::iter::once(own)
                    .chain(row.paired.as_ref().map(|p| p[at].1))
                    .collect()
            })
            .collect();
        let rows: Vec<(&str, &[Interval])> = labels
            .iter()
            .zip(&cells)
            .map(|(label, c)| (label.as_str(), &c[..]))
            .collect();
        let paired_column = study
            .paired_with
            .as_ref()
            .filter(|_| row.paired.is_some())
            .map(|p| format!("minus {p}, seed by seed"));
        let columns: Vec<&str> = ["variant", row.name.as_str()]
            .into_iter()
            .chain(paired_column.as_deref())
            .collect();
        md += &markdown_table(&columns, &rows)?;
    }
    let order: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    md += &format!(
        "\n`samples.png`: the first seed's evaluation samples, a column block per variant, left to \
         right: {}.\n",
        order.join(", ")
    );
    write_atomic(path, md.as_bytes())
}

/// Panels of this size keep a figure of every metric readable.
const PANEL: (u32, u32) = (420, 360);

fn write_bars(results: &[VariantResult], rows: &[MetricRow], path: &Path) -> Result<()> {
    let panels = rows
        .iter()
        .map(|row| {
            let variants: Vec<(&str, &[Interval])> = row
                .variants
                .iter()
                .zip(&row.intervals)
                .map(|(&v, i)| (results[v].name.as_str(), std::slice::from_ref(i)))
                .collect();
            Panel::grouped_bars(&row.name, "", &row.name, &[row.name.as_str()], &variants)
        })
        .collect::<Result<Vec<_>>>()?;
    Figure::new(panels).size(PANEL.0, PANEL.1).save(path)
}

/// Each metric against `x`, a panel per metric: a line with its band per curve name (in the
/// order the curves first appear), the variants without a curve making one line labelled with
/// the metric.
fn write_sweep(
    study: &Study,
    results: &[VariantResult],
    rows: &[MetricRow],
    path: &Path,
) -> Result<()> {
    let x_label = study.x_label.as_deref().unwrap_or("x");
    let mut curves: Vec<Option<&str>> = Vec::new();
    for r in results.iter().filter(|r| r.x.is_some()) {
        if !curves.contains(&r.curve.as_deref()) {
            curves.push(r.curve.as_deref());
        }
    }
    let panels = rows
        .iter()
        .map(|row| {
            let panel = Panel::new(&row.name, Axis::new(x_label), Axis::new(&row.name));
            let lines = curves.iter().enumerate().filter_map(|(c, &curve)| {
                let mut points: Vec<(f64, Interval)> = (row.variants.iter().zip(&row.intervals))
                    .filter(|(&v, _)| results[v].curve.as_deref() == curve)
                    .filter_map(|(&v, i)| Some((results[v].x?, *i)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let label = curve.unwrap_or(&row.name);
                (!points.is_empty()).then(|| interval_line(label, colour(c), &points))
            });
            panel.with(lines.flatten())
        })
        .collect();
    Figure::new(panels).size(PANEL.0, PANEL.1).save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, fd: [f64; 2], accuracy: [f64; 2]) -> VariantResult {
        VariantResult {
            name: name.into(),
            x: None,
            curve: None,
            metrics: vec![
                ("FD-c".into(), fd.to_vec()),
                ("class_accuracy".into(), accuracy.to_vec()),
            ],
            trainable: Default::default(),
            steps_per_sec: Some(1.0),
        }
    }

    #[test]
    fn the_best_mean_is_lowest_for_distances_highest_otherwise_and_none_on_a_tie() {
        let results = [
            variant("a", [1.0, 3.0], [0.5, 0.5]),
            variant("b", [2.0, 4.0], [0.5, 0.5]),
            variant("c", [5.0, 1.0], [0.4, 0.6]),
        ];
        let rows = metric_rows(&results, None).unwrap();
        assert_eq!((rows[0].name.as_str(), rows[0].best), ("FD-c", Some(0)));
        assert_eq!(rows[0].intervals[1].mean, 3.0);
        assert_eq!(rows[1].best, None);
        let higher = [
            variant("a", [1.0, 1.0], [0.2, 0.4]),
            variant("b", [1.0, 1.0], [0.5, 0.7]),
        ];
        assert_eq!(metric_rows(&higher, None).unwrap()[1].best, Some(1));
    }

    /// A variant without a metric (an unconditional model's class accuracy) leaves that row
    /// to the others; the best and the paired differences index the variants that have it.
    #[test]
    fn a_metric_some_variants_lack_is_reported_for_the_others() {
        let mut unconditional = variant("u", [0.5, 0.5], [0.0, 0.0]);
        unconditional.metrics.pop();
        let results = [
            variant("a", [1.0, 3.0], [0.5, 0.5]),
            unconditional,
            variant("c", [5.0, 1.0], [0.6, 0.8]),
        ];
        let rows = metric_rows(&results, Some(0)).unwrap();
        assert_eq!(
            (rows[0].variants.clone(), rows[0].best),
            (vec![0, 1, 2], Some(1))
        );
        let accuracy = &rows[1];
        assert_eq!(accuracy.variants, [0, 2]);
        assert_eq!(accuracy.best, Some(2));
        let paired = accuracy.paired.as_ref().unwrap();
        let gaps = &paired[1].0;
        assert!(
            (gaps[0] - 0.1).abs() < 1e-12 && (gaps[1] - 0.3).abs() < 1e-12,
            "{gaps:?}"
        );
        assert_eq!(accuracy.position(2), Some(1));
        assert_eq!(accuracy.position(1), None);
    }
}
