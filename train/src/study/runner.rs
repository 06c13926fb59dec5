//! Running a study: every (variant, seed) trained into its run folder (resumed when a previous
//! invocation was interrupted), then evaluated once into `eval.json`; finished and evaluated runs
//! are skipped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tensor::{Error, Result};

use super::spec::{MergeSpec, Study, Variant, VariantKind};
use crate::data::save_grid;
use crate::eval::protocol::{Judge, Protocol};
use crate::eval::EvalReport;
use crate::files::write_atomic;
use crate::methods::merge::{ensemble, Merge, MergeWeights};
use crate::run::{
    checkpoint, folder, load_model, snapshot_path, train, RunConfig, TrainOptions, Weights,
};

/// A run's evaluation, beside it as `eval.json`.
pub const EVAL_FILE: &str = "eval.json";

/// The grid of a run's evaluation samples, a row per class.
pub const EVAL_GRID: &str = "eval-samples.png";

/// Samples of each class in [`EVAL_GRID`].
const GRID_PER_CLASS: usize = 4;

/// What `eval.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The step of the weights evaluated: a trained run's last, an `at_step` variant's
    /// snapshot's, 0 for another variant that is not trained.
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
    if let Some(c) = &report.copying {
        m.insert("copy_ratio".into(), c.ratio.into());
    }
    if let Some(leakage) = &report.leakage {
        let (accuracy, shift) = leakage.summary();
        m.insert("leak_accuracy".into(), accuracy.into());
        m.insert("leak_shift".into(), shift.into());
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

/// Whether the run of `config` is finished and evaluated under `protocol` (`None`: only
/// finished, for a hidden variant): its saved config is this one and its `eval.json` is of its
/// last step under this protocol (or its latest checkpoint is of its last step).
fn done(config: &RunConfig, protocol: Option<&Protocol>) -> Result<bool> {
    let saved = config.out.join("config.json");
    if !saved.is_file() || RunConfig::from_file(&saved)? != *config {
        return Ok(false);
    }
    match protocol {
        Some(protocol) => Ok(read_record(&config.out)?
            .is_some_and(|r| r.step == config.steps && r.protocol == *protocol)),
        None => Ok(match checkpoint::latest(&config.out)? {
            Some(dir) => checkpoint::load_state(&dir)?.step == config.steps,
            None => false,
        }),
    }
}

/// The file a variant that is not trained keeps its definition in, to tell when it changed.
const VARIANT_FILE: &str = "variant.json";

/// Whether a variant that is not trained is evaluated in `dir` under `protocol` as it is
/// defined now (at the step it names).
fn derived_done(variant: &Variant, dir: &Path, protocol: &Protocol) -> Result<bool> {
    let same = std::fs::read_to_string(dir.join(VARIANT_FILE))
        .is_ok_and(|text| text == variant_json(variant));
    let step = derived_step(variant);
    Ok(same && read_record(dir)?.is_some_and(|r| r.protocol == *protocol && r.step == step))
}

/// The step a variant that is not trained records: its `at_step`, else 0.
fn derived_step(variant: &Variant) -> u64 {
    variant.at_step.unwrap_or(0)
}

fn variant_json(variant: &Variant) -> String {
    serde_json::to_string_pretty(variant).expect("a variant is plain JSON")
}

/// How one invocation of [`run_all`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Runs trained (or resumed) and evaluated now.
    pub ran: usize,
    /// Runs already finished and evaluated.
    pub skipped: usize,
    /// Runs left to another process running the same study: being trained there, or made from
    /// runs that are.
    pub busy: usize,
}

/// One thing a study does for one seed.
enum Job<'a> {
    /// Train a run, then evaluate it unless its variant is hidden.
    Train(&'a Variant, Box<RunConfig>),
    /// Make and evaluate a variant that is not trained.
    Derive(&'a Variant, u64),
}

/// Trains and evaluates every run of the study not yet done, and makes and evaluates the
/// variants that are not trained (models, merges, ensembles), variant by variant in the
/// study's order, seed by seed (a merge whose runs are not finished waits for the next pass
/// over what is left). Several processes may run the
/// same study: each claims a run before it starts it and leaves those claimed by another, and
/// the variants made of runs not yet finished (see [`RunCounts::busy`]). `progress`: one bar
/// over the whole study on standard error.
pub fn run_all(study: &Study, progress: bool) -> Result<RunCounts> {
    let configs = study.configs()?;
    // In the study's order: a merge listed after its parts runs as soon as they are done.
    let jobs: Vec<Job> = (study.variants.iter())
        .flat_map(|v| {
            let config = configs.iter().find(|(t, _)| t.name == v.name);
            study.seeds.iter().map(move |&s| match config {
                Some((_, c)) => Job::Train(v, Box::new(study.run_config(c, &v.name, s))),
                None => Job::Derive(v, s),
            })
        })
        .collect();
    let is_done = |job: &Job| match job {
        Job::Train(v, c) => done(c, (!v.hidden).then_some(&study.eval)),
        Job::Derive(v, s) => {
            derived_done(v, &study.run_dir(&v.name, *s), &v.protocol(&study.eval)?)
        }
    };
    let mut finished: Vec<bool> = jobs.iter().map(is_done).collect::<Result<_>>()?;
    let mut counts = RunCounts {
        skipped: finished.iter().filter(|d| **d).count(),
        ..Default::default()
    };
    if counts.skipped == jobs.len() {
        return Ok(counts);
    }
    let judge = study.eval.judge()?;
    let bar = progress.then(|| crate::progress::bar(jobs.len() as u64, "study"));
    if let Some(bar) = &bar {
        bar.set_position(counts.skipped as u64);
    }
    // Passes over what is left until one does nothing: runs another process held in one pass
    // may be done (or free) in the next.
    loop {
        let (mut ran, mut busy) = (0, 0);
        for (job, finished) in jobs.iter().zip(&mut finished) {
            if *finished || is_done(job)? {
                *finished = true;
                continue;
            }
            match run_job(study, &configs, job, &judge, bar.as_ref())? {
                true => (ran, *finished) = (ran + 1, true),
                false => busy += 1,
            }
            if let Some(bar) = &bar {
                bar.set_position(counts.skipped as u64 + counts.ran as u64 + ran as u64);
            }
        }
        counts.ran += ran;
        counts.busy = busy;
        if busy == 0 || ran == 0 {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(counts)
}

/// Runs one job unless another process holds it (or, for a merge or ensemble, the runs it is
/// made of are not finished): whether it ran.
fn run_job(
    study: &Study,
    configs: &[(&Variant, RunConfig)],
    job: &Job,
    judge: &Judge,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<bool> {
    let (variant, seed) = match job {
        Job::Train(v, c) => (v, c.seed),
        Job::Derive(v, s) => (v, *s),
    };
    let dir = study.run_dir(&variant.name, seed);
    if let Some(bar) = bar {
        bar.set_message(dir.display().to_string());
    }
    let err = |e: Error| Error::msg(format!("study run {}: {e}", dir.display()));
    let Some(_claim) = folder::claim(&dir).map_err(err)? else {
        return Ok(false);
    };
    match job {
        Job::Train(v, config) => {
            let options = TrainOptions {
                resume: true,
                progress: false,
            };
            train(config, &options).map_err(err)?;
            if !v.hidden {
                let noise = eval_seed(judge, seed);
                let (images, labels) = judge.sample(&config.out, noise, false).map_err(err)?;
                let samples = (images, labels, Some(config.out.clone()));
                evaluate(&dir, judge, seed, config.steps, samples).map_err(err)?;
            }
        }
        Job::Derive(v, seed) => {
            for part in v.parts() {
                let (_, config) = configs
                    .iter()
                    .find(|(t, _)| &t.name == part)
                    .expect("checked");
                if !done(&study.run_config(config, part, *seed), None)? {
                    return Ok(false);
                }
            }
            derive(study, v, *seed, judge).map_err(err)?;
        }
    }
    Ok(true)
}

/// The seed of a run's evaluation samples: the protocol's plus the run's.
fn eval_seed(judge: &Judge, seed: u64) -> u64 {
    judge.protocol.seed.wrapping_add(seed)
}

/// The merged model's file in a merge variant's folder.
pub const MERGED_FILE: &str = "merged.safetensors";

/// Makes the variant `v` (a model, merge or ensemble) for `seed` in its folder and evaluates
/// it. A merged model already there from an interrupted invocation of the same definition is
/// evaluated as it is; one made for another definition is made again.
fn derive(study: &Study, v: &Variant, seed: u64, judge: &Judge) -> Result<()> {
    let dir = study.run_dir(&v.name, seed);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    // The folder records what it is being made for before anything is made: a merged model
    // left by an interrupted invocation of the same variant is reused, one made for an earlier
    // definition of the variant (and its evaluation) is not.
    let definition = variant_json(v);
    let recorded = std::fs::read_to_string(dir.join(VARIANT_FILE)).ok();
    if recorded.as_deref() != Some(definition.as_str()) {
        for stale in [MERGED_FILE, EVAL_FILE] {
            match std::fs::remove_file(dir.join(stale)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io {
                        path: dir.join(stale),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        write_atomic(&dir.join(VARIANT_FILE), definition.as_bytes())?;
    }
    // A variant with its own `eval` is judged under it.
    let own = match v.eval.is_empty() {
        true => None,
        false => Some(v.protocol(&study.eval)?.judge()?),
    };
    let judge = own.as_ref().unwrap_or(judge);
    let noise = eval_seed(judge, seed);
    let parts = |names: &[String]| -> Vec<PathBuf> {
        names.iter().map(|n| study.run_dir(n, seed)).collect()
    };
    // The samples, and the model they came from (for the leakage check; an ensemble is none).
    let sampled = |path: PathBuf| -> Result<Samples> {
        let (images, labels) = judge.sample(&path, noise, false)?;
        Ok((images, labels, Some(path)))
    };
    let samples = match v.kind() {
        VariantKind::Model(path) => sampled(path.to_path_buf())?,
        VariantKind::Merge(spec) => {
            let file = dir.join(MERGED_FILE);
            if !file.is_file() {
                merge_runs(study, spec, &parts(&spec.runs), seed, &file)?;
            }
            sampled(file)?
        }
        VariantKind::Ensemble(names) => {
            let models = parts(names)
                .into_iter()
                .map(|run| Ok((run.clone(), load_model(&run, Weights::Ema)?)))
                .collect::<Result<Vec<_>>>()?;
            let stages = ensemble(&models)?;
            let state = &models[0].1.state;
            let (images, labels) = judge.sample_in_stages(&stages, state, &v.name, noise, false)?;
            (images, labels, None)
        }
        VariantKind::Of(of) => {
            let run = study.run_dir(of, seed);
            match v.at_step {
                Some(step) => sampled(snapshot_path(&run, step))?,
                None => sampled(run)?,
            }
        }
        VariantKind::Trained => unreachable!("trained variants are not derived"),
    };
    evaluate(&dir, judge, seed, derived_step(v), samples)
}

/// A run's evaluation samples, their requested labels and the model they came from.
type Samples = (tensor::Tensor, Option<Vec<i64>>, Option<PathBuf>);

/// Merges the `runs` of one seed as `spec` says into `out`; a grid search scores on the
/// validation protocol with that seed's noise.
fn merge_runs(
    study: &Study,
    spec: &MergeSpec,
    runs: &[PathBuf],
    seed: u64,
    out: &Path,
) -> Result<()> {
    let config = RunConfig::from_file(&runs[0].join("config.json"))?;
    let base = config
        .init
        .ok_or_else(|| Error::msg("the runs have no `init` to merge onto"))?;
    let mut merge = Merge::load(&base, runs)?;
    let how = spec.weights()?;
    let judge = match how {
        MergeWeights::Grid(_) => Some(spec.validation(&study.eval)?.judge()?),
        _ => None,
    };
    let validation = judge.as_ref().map(|j| (j, eval_seed(j, seed)));
    let record = merge.choose(how, validation, |_| {})?;
    merge.save(out, &record)?;
    Ok(())
}

/// Scores a run's evaluation samples under the judge's protocol (and its model's control
/// leakage, where the protocol asks), writing `eval.json` (`step`: the run's last step; for a
/// variant that is not trained its `at_step`, else 0) and a grid of the first samples of each
/// class into `dir`.
fn evaluate(dir: &Path, judge: &Judge, seed: u64, step: u64, samples: Samples) -> Result<()> {
    let (images, labels, model) = samples;
    let mut report = judge.evaluate(&images, labels.as_deref())?;
    if let Some(model) = model {
        report.leakage = judge.leakage(&model, eval_seed(judge, seed))?;
    }
    // Image i is of class i % classes: the first images hold as many of each class.
    let n = images.shape()[0].min(GRID_PER_CLASS * judge.classifier.config.classes.len());
    let picked = images.narrow(0, 0, n)?;
    let grid_labels = labels
        .map(|l| tensor::Tensor::from_vec(l[..n].to_vec(), &[n]))
        .transpose()?;
    save_grid(dir.join(EVAL_GRID), &picked, grid_labels.as_ref(), 2)?;
    let record = EvalRecord {
        step,
        protocol: judge.protocol.clone(),
        eval_seed: eval_seed(judge, seed),
        metrics: headline(&report),
        report: report.to_json(),
    };
    let json = serde_json::to_string_pretty(&record).expect("plain JSON");
    write_atomic(&dir.join(EVAL_FILE), json.as_bytes())
}
