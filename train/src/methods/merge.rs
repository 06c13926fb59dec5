//! DeMe's second half: the runs fine-tuned on each timestep range, combined.
//!
//! - [`Merge::set_weights`]: one model, `theta = theta0 + sum_i w_i (theta_i - theta0)` over the
//!   moving-average weights (task arithmetic), `theta0` the base the runs started from with
//!   identity projections where the runs have them (so task vectors are defined for them);
//!   the weights uniform, given, or chosen by [`Merge::grid_search`] on a validation set;
//! - [`ensemble`]: no merge at all, each timestep denoised by its range's model (the paper's
//!   "before merging" reference).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tensor::{Error, Result, Tensor};

use super::{deme_range, Method};
use crate::eval::protocol::Judge;
use crate::run::export::{plain_weights, write_weights, ExportReport};
use crate::run::{load_init_store, load_model, LoadedModel, Stage, Weights};

/// The metadata key of a merged model's [`MergeRecord`] (JSON).
pub const MERGE_KEY: &str = "difftune.merge";

/// How the merge weights are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeWeights {
    /// 1 / N each.
    Uniform,
    /// One per run.
    Given(Vec<f64>),
    /// Every combination of these values, one per run, scored by FD on a validation set.
    Grid(Vec<f64>),
}

impl MergeWeights {
    /// `uniform`, `grid` (over `grid`'s values) or `w1,...,wN`; errors name `flag`.
    pub fn parse(text: &str, grid: &[f64], flag: &str) -> Result<MergeWeights> {
        let finite = |values: &[f64], what: &str| match values.iter().find(|v| !v.is_finite()) {
            Some(bad) => Err(Error::msg(format!("{what}: {bad} is not a finite number"))),
            None => Ok(()),
        };
        match text {
            "uniform" => Ok(MergeWeights::Uniform),
            "grid" => {
                if grid.is_empty() {
                    return Err(Error::msg(format!("{flag} grid: the grid has no values")));
                }
                finite(grid, &format!("{flag} grid"))?;
                Ok(MergeWeights::Grid(grid.to_vec()))
            }
            list => {
                let values = list
                    .split(',')
                    .map(|v| v.trim().parse::<f64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        Error::msg(format!(
                            "{flag} `{list}`: expected uniform, grid, or one number per run \
                             separated by commas"
                        ))
                    })?;
                finite(&values, &format!("{flag} `{list}`"))?;
                Ok(MergeWeights::Given(values))
            }
        }
    }
}

/// How a merged model was made, saved in its metadata under [`MERGE_KEY`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The base model.
    pub base: PathBuf,
    /// The runs, in the order of `weights`.
    pub runs: Vec<PathBuf>,
    /// The weights used.
    pub weights: Vec<f64>,
    /// `uniform`, `given` or `grid`.
    pub chosen_by: String,
    /// For `grid`: every combination tried with its validation FD, in the order tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid: Vec<GridPoint>,
    /// For `grid`: the validation protocol's reference set and images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
}

/// One combination of a grid search and its validation FD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    /// The weights.
    pub weights: Vec<f64>,
    /// FD on the validation set.
    pub fd: f64,
}

/// The base and the runs' weights, under one set of names and shapes.
pub struct Merge {
    /// The base model, as the first run's config builds it (with its method's additions at
    /// their initial values, e.g. identity projections); its weights are what
    /// [`Merge::set_weights`] last set.
    pub model: LoadedModel,
    base: PathBuf,
    theta0: Vec<(String, Tensor)>,
    runs: Vec<(PathBuf, Vec<Tensor>)>,
}

impl Merge {
    /// Reads `base` (a run, checkpoint or exported file) and the moving-average weights of each
    /// of `runs`. Runs whose parameter names, shapes or classes differ from the base's (as the
    /// first run's config builds it) are refused, naming the run and the parameter.
    pub fn load(base: &Path, runs: &[PathBuf]) -> Result<Merge> {
        let mut models = runs
            .iter()
            .map(|run| load_model(run, Weights::Ema))
            .collect::<Result<Vec<_>>>()?;
        let Some(state) = models.first().map(|m| m.state.clone()) else {
            return Err(Error::msg("merge: name at least one run"));
        };
        let model = load_init_store(base, &state)
            .map_err(|e| Error::msg(format!("merge: base {}: {e}", base.display())))?;
        let theta0: Vec<(String, Tensor)> = crate::run::export::plain_names(&state)?
            .into_iter()
            .map(|name| Ok((name.clone(), model.params.tensor(&name)?)))
            .collect::<Result<_>>()?;
        let mut loaded = Vec::new();
        for (run, m) in runs.iter().zip(&mut models) {
            let what = format!("merge: run {}", run.display());
            if m.state.classes != state.classes || m.state.image_shape != state.image_shape {
                return Err(Error::msg(format!(
                    "{what}: its classes or image shape differ from those of {}",
                    runs[0].display()
                )));
            }
            let weights = plain_weights(m)?;
            for (name, _) in &weights {
                if !theta0.iter().any(|(n, _)| n == name) {
                    return Err(Error::msg(format!(
                        "{what}: parameter `{name}` is not in the base model"
                    )));
                }
            }
            let values = theta0
                .iter()
                .map(|(name, base_value)| {
                    let value = weights
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| {
                            Error::msg(format!("{what}: it lacks the base's parameter `{name}`"))
                        })?;
                    if value.shape() != base_value.shape() {
                        return Err(Error::msg(format!(
                            "{what}: parameter `{name}` is {:?}, the base's {:?}",
                            value.shape(),
                            base_value.shape()
                        )));
                    }
                    Ok(value)
                })
                .collect::<Result<Vec<_>>>()?;
            loaded.push((run.clone(), values));
        }
        Ok(Merge {
            model,
            base: base.to_path_buf(),
            theta0,
            runs: loaded,
        })
    }

    /// The number of runs.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether there are no runs (never: [`Merge::load`] needs one).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Sets the model's weights to `theta0 + sum_i w_i (theta_i - theta0)`; `weights` holds
    /// one finite number per run.
    pub fn set_weights(&mut self, weights: &[f64]) -> Result<()> {
        if weights.len() != self.runs.len() {
            return Err(Error::msg(format!(
                "merge: {} weights for {} runs; give one per run",
                weights.len(),
                self.runs.len()
            )));
        }
        if let Some(bad) = weights.iter().find(|w| !w.is_finite()) {
            return Err(Error::msg(format!("merge: weight {bad} is not finite")));
        }
        for (k, (name, base)) in self.theta0.iter().enumerate() {
            let mut merged = base.clone();
            for ((_, values), &w) in self.runs.iter().zip(weights) {
                merged = merged.add(&values[k].sub(base)?.mul_scalar(w)?)?;
            }
            self.model.params.set(name, merged)?;
        }
        Ok(())
    }

    /// The validation FD of the merged model with `weights` under `judge`, noise seeded by
    /// `seed`.
    pub fn score(&mut self, weights: &[f64], judge: &Judge, seed: u64) -> Result<f64> {
        self.set_weights(weights)?;
        let stage = Stage::new(&self.model.network, &self.model.params);
        let what = format!("merge with weights {weights:?}");
        let (images, labels) =
            judge.sample_in_stages(&[stage], &self.model.state, &what, seed, false)?;
        Ok(judge.evaluate(&images, labels.as_deref())?.fd)
    }

    /// Scores every combination of `values` (one per run; `values.len()^N` of them) on
    /// `judge`'s validation set with the same noise, and returns them in the order tried
    /// (the first run's value varying slowest). `tick` is called after each.
    pub fn grid_search(
        &mut self,
        values: &[f64],
        judge: &Judge,
        seed: u64,
        mut tick: impl FnMut(&GridPoint),
    ) -> Result<Vec<GridPoint>> {
        let n = self.runs.len();
        let count = grid_size(values.len(), n)?;
        let mut points = Vec::with_capacity(count);
        for index in 0..count {
            // Digit k (base values.len()) of the index: run k's value.
            let weights: Vec<f64> = (0..n)
                .map(|k| values[index / values.len().pow((n - 1 - k) as u32) % values.len()])
                .collect();
            let fd = self.score(&weights, judge, seed)?;
            let point = GridPoint { weights, fd };
            tick(&point);
            points.push(point);
        }
        Ok(points)
    }

    /// Chooses the weights as `how` says: 1/N each, the given ones, or the combination of a grid
    /// search with the lowest FD on `validation` (a judge and the noise seed; needed for a grid),
    /// `tick` called after each combination. The record says how.
    pub fn choose(
        &mut self,
        how: MergeWeights,
        validation: Option<(&Judge, u64)>,
        tick: impl FnMut(&GridPoint),
    ) -> Result<MergeRecord> {
        let n = self.runs.len();
        let mut record = MergeRecord {
            base: self.base.clone(),
            runs: self.runs.iter().map(|(path, _)| path.clone()).collect(),
            weights: vec![1.0 / n as f64; n],
            chosen_by: "uniform".into(),
            grid: Vec::new(),
            validation: None,
        };
        match (how, validation) {
            (MergeWeights::Uniform, _) => {}
            (MergeWeights::Given(w), _) => (record.weights, record.chosen_by) = (w, "given".into()),
            (MergeWeights::Grid(values), Some((judge, seed))) => {
                let points = self.grid_search(&values, judge, seed, tick)?;
                let best = points
                    .iter()
                    .min_by(|a, b| a.fd.total_cmp(&b.fd))
                    .expect("a grid has a point");
                record.weights = best.weights.clone();
                record.chosen_by = "grid".into();
                record.validation = Some(format!(
                    "{} images against {}, noise seed {seed}",
                    judge.protocol.samples, judge.protocol.reference
                ));
                record.grid = points;
            }
            (MergeWeights::Grid(_), None) => {
                return Err(Error::msg(
                    "merge: a grid search needs a validation set to score the merges on",
                ))
            }
        }
        Ok(record)
    }

    /// Writes the model with `record.weights` to `out` (a new file) as `difftune export` writes
    /// a model, with `record` in its metadata.
    pub fn save(&mut self, out: &Path, record: &MergeRecord) -> Result<ExportReport> {
        self.set_weights(&record.weights)?;
        let values: Vec<(String, Tensor)> = (self.theta0.iter())
            .map(|(name, _)| Ok((name.clone(), self.model.params.tensor(name)?)))
            .collect::<Result<_>>()?;
        let json = serde_json::to_string(record).expect("a merge record is plain JSON");
        write_weights(out, self.model.state.clone(), &values, &[(MERGE_KEY, json)])
    }

    /// The base model's path.
    pub fn base(&self) -> &Path {
        &self.base
    }
}

/// Combinations of a grid of `values` per weight for `runs` runs, at most [`GRID_LIMIT`].
pub fn grid_size(values: usize, runs: usize) -> Result<usize> {
    let count = (values as u128)
        .checked_pow(runs as u32)
        .unwrap_or(u128::MAX);
    if count > GRID_LIMIT as u128 {
        return Err(Error::msg(format!(
            "merge grid: {values} values for each of {runs} weights make {count} combinations, \
             more than {GRID_LIMIT}; use fewer values"
        )));
    }
    Ok(count as usize)
}

/// The most combinations a grid search scores.
pub const GRID_LIMIT: usize = 10_000;

/// The stages of DeMe's ensemble of `models`, the runs of every range of one split: each
/// timestep denoised by the model of its range. Each model must be a `deme` run, all of the
/// same number of ranges N, and each range present exactly once.
pub fn ensemble<'a>(models: &'a [(PathBuf, LoadedModel)]) -> Result<Vec<Stage<'a>>> {
    let mut placed = Vec::new();
    for (path, model) in models {
        let config = &model.state.config;
        let Method::Deme { ranges, range, .. } = config.method else {
            return Err(Error::msg(format!(
                "ensemble: {} is a `{}` run, not a `deme` run of one timestep range",
                path.display(),
                config.method.name()
            )));
        };
        let steps = config.diffusion_config()?.steps;
        placed.push((path, ranges, range, deme_range(ranges, range, steps).0));
    }
    let n = placed.first().map_or(0, |p| p.1);
    let mut seen: Vec<usize> = placed.iter().map(|p| p.2).collect();
    seen.sort_unstable();
    if n == 0 || placed.iter().any(|p| p.1 != n) || seen != (0..n).collect::<Vec<_>>() {
        let have: Vec<String> = placed
            .iter()
            .map(|p| format!("{} (range {} of {})", p.0.display(), p.2, p.1))
            .collect();
        return Err(Error::msg(format!(
            "ensemble: needs one run of each range of one split into N ranges; got {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )));
    }
    let mut stages: Vec<(usize, Stage)> = models
        .iter()
        .zip(&placed)
        .map(|((_, model), p)| {
            let stage = Stage {
                from: p.3,
                ..Stage::new(&model.network, &model.params)
            };
            (p.3, stage)
        })
        .collect();
    stages.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(stages.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_grids_are_bounded() {
        let grid = [0.5, 1.0];
        assert_eq!(
            MergeWeights::parse("uniform", &grid, "w").unwrap(),
            MergeWeights::Uniform
        );
        assert_eq!(
            MergeWeights::parse("grid", &grid, "w").unwrap(),
            MergeWeights::Grid(grid.to_vec())
        );
        assert_eq!(
            MergeWeights::parse("0.5, 0.25", &grid, "w").unwrap(),
            MergeWeights::Given(vec![0.5, 0.25])
        );
        for bad in ["0.5,nan", "half", ""] {
            let err = MergeWeights::parse(bad, &grid, "--weights")
                .unwrap_err()
                .to_string();
            assert!(err.contains("--weights"), "{bad}: {err}");
        }
        assert!(MergeWeights::parse("grid", &[], "w").is_err());
        assert_eq!(grid_size(3, 4).unwrap(), 81);
        let err = grid_size(10, 5).unwrap_err().to_string();
        assert!(err.contains("100000 combinations"), "{err}");
        assert!(
            grid_size(3, 200).is_err(),
            "overflow is refused, not wrapped"
        );
    }
}
