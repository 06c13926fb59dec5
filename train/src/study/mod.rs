//! Studies: a grid of config variants times seeds, every run evaluated under one protocol, the
//! results reported with 95% confidence intervals over the seeds (`difftune study STUDY.json`).
//!
//! # The study file
//!
//! JSON, unknown keys refused; paths are relative to the working directory, as in run configs.
//!
//! ```json
//! {
//!   "base": "configs/finetune-animal.json",
//!   "variants": [
//!     { "name": "full", "overrides": { "trainable": { "kind": "full" } } },
//!     { "name": "lora-4", "overrides": { "trainable": { "kind": "lora", "rank": 4 } }, "x": 4 },
//!     { "name": "scratch", "overrides": { "init": null, "lr": 0.001 } }
//!   ],
//!   "seeds": [0, 1, 2],
//!   "x_label": "LoRA rank",
//!   "eval": { "samples": 1000, "sampler": "ddim50", "cfg_scale": 2, "reference": "animal-mnist",
//!             "classifier": "data/classifiers/animal-mnist.safetensors" },
//!   "out": "runs/studies/peft"
//! }
//! ```
//!
//! - `base`: a run config ([`crate::run::RunConfig`]): a file's path or an inline object.
//! - `variants`: in the order tables and plots show them. `overrides` is a JSON merge onto the
//!   base config's JSON: objects merge key by key, anything else replaces (`"init": null` trains
//!   from scratch); an object naming another `kind` or `name` (another trainable kind or method)
//!   replaces the base's object, so the old kind's options do not carry over. An unknown key, an
//!   option the variant's kind does not have, a bad value, or `seed`/`out` (set by the study) is
//!   an error naming the variant and the key, before anything runs.
//! - Variants that are not trained (no `overrides`), made once per seed instead:
//!   `"model": PATH` evaluates a model as it is (e.g. the pretrained one, with each seed's
//!   sampling noise); `"merge": {"runs": [...], "weights": "uniform" | "grid" | "w1,...,wN",
//!   "grid": [...], "validation": {...}}` merges the named trained variants' runs of the seed onto
//!   their `init` (DeMe, see [`crate::methods::merge`]; `grid` scores every combination on the
//!   validation protocol, the `eval` with `validation`'s keys, whose `reference` must differ from
//!   the evaluation's); `"ensemble": [...]` samples with the named `deme` runs, each timestep by
//!   its range's run; `"of": NAME` evaluates the trained variant's runs again, and with
//!   `"at_step": N` the snapshot they wrote at step N instead of their final weights (N must be
//!   in that variant's `snapshots`, see [`crate::run::RunConfig::snapshots`]; its `eval.json`
//!   records step N), e.g. a metric against training steps. Such a variant may carry
//!   `"eval": {...}`, keys merged onto the study's `eval` for it alone (e.g. ANL's `mask`). `"hidden": true` trains a variant without evaluating or reporting it (the range
//!   runs of a merge).
//! - `x` and `x_label`: a swept number, plotted on the horizontal axis (the variants that set
//!   one; the others are in the tables only). `"curve": NAME` (with `x`): the line of the plot
//!   the variant is a point of, one per name with a legend; the variants with `x` and no
//!   `curve` make one line.
//! - `seeds`: every variant trains once per seed.
//! - `eval`: the protocol ([`crate::eval::protocol::Protocol`]: `samples`, `sampler`,
//!   `cfg_scale`, `reference`, `classifier`, `kid_subsets`, `kid_subset_size`, `is_splits`,
//!   `seed`, `cache`; for ANL models `mask` and `condition`; `copying`: the training images of
//!   the copying check); an absent `sampler` or `cfg_scale` is each run's own. A run is sampled
//!   from its moving average with noise seeded by `eval.seed` plus its seed, so the intervals
//!   cover the sampling noise as well as the training's.
//! - `paired_with` (optional): a variant every other is also compared with seed by seed (each
//!   metric's table gains the interval of the per-seed differences: runs of one seed are sampled
//!   from the same noise, so this interval is the tighter one).
//! - `out`: the study folder.
//!
//! # The study folder
//!
//! `out/<variant>/seed-<s>/` is a run folder ([`crate::run`]) with `eval.json` (see
//! [`runner::EvalRecord`]) and `eval-samples.png` beside it. An invocation trains what is not
//! finished (resuming an interrupted run) and evaluates what is not evaluated; a run finished and
//! evaluated under the same config and protocol is skipped. Several processes may run one study
//! at once (one per core): each claims a run folder before it starts on it (`study.lock`), and
//! the last to finish writes the results. Then [`summary`] writes
//! `results.json` and `results.md` (per metric, each variant's per-seed values, mean and 95%
//! Student-t interval, the best variant marked; its trainable parameters and steps/s),
//! `metrics.png` (bars with error bars) and, with `x`, `sweep.png` (each metric against `x` with
//! its band, a line per `curve`); `samples.png` shows the first seed's evaluation samples of every variant side by
//! side (a column block per variant, in the study's order).

pub mod results;
pub mod runner;
pub mod spec;
pub mod summary;

use std::path::PathBuf;

use tensor::Result;

pub use results::{gather, VariantResult};
pub use runner::{run_all, RunCounts};
pub use spec::{merge, Study, Variant};

/// What [`run`] did and wrote.
#[derive(Clone, Debug)]
pub struct StudyOutcome {
    /// Runs done now and runs skipped.
    pub counts: RunCounts,
    /// Every variant's numbers.
    pub results: Vec<VariantResult>,
    /// The files written into the study folder.
    pub written: Vec<PathBuf>,
}

/// Runs what is left of `study` and writes its results; `command` (how it was run) heads the
/// report. With runs left to another process on the same study, nothing is written: the last
/// process to finish writes the results. `progress`: a bar over the whole study.
pub fn run(study: &Study, command: &str, progress: bool) -> Result<StudyOutcome> {
    let counts = run_all(study, progress)?;
    if counts.busy > 0 {
        // Another process is still at work on this study: it (or the next run) reports.
        return Ok(StudyOutcome {
            counts,
            results: Vec::new(),
            written: Vec::new(),
        });
    }
    let results = gather(study)?;
    let mut written = summary::write(study, &results, command)?;
    let samples = study.out.join("samples.png");
    results::save_samples(study, &samples)?;
    written.push(samples);
    Ok(StudyOutcome {
        counts,
        results,
        written,
    })
}
