//! The study file: its JSON form, and the run configs of its variants (base config with each
//! variant's overrides merged on), all checked before anything runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tensor::{Error, Result};

use crate::eval::protocol::Protocol;
use crate::methods::merge::{grid_size, MergeWeights};
use crate::run::RunConfig;

/// A study: variants of a base run config, each trained with every seed and evaluated under one
/// protocol. See the [module docs](super) for the format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    /// The base run config: a path to a run config file, or an inline config object.
    pub base: Value,
    /// The variants, in the order tables and plots show them.
    pub variants: Vec<Variant>,
    /// The seeds each variant is trained with.
    pub seeds: Vec<u64>,
    /// What a variant's `x` measures (the swept number), for the plots.
    #[serde(default)]
    pub x_label: Option<String>,
    /// How every run is evaluated.
    pub eval: Protocol,
    /// A variant every other is also compared with seed by seed: the runs of one seed are
    /// sampled from the same noise, so the per-seed differences have a tighter interval than
    /// the difference of the means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_with: Option<String>,
    /// The study folder: a run folder per variant and seed, the results.
    pub out: PathBuf,
}

/// One variant: a name (its folder) and the overrides that make it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The variant's name: a folder name and a table row.
    pub name: String,
    /// A JSON merge onto the base config (see [`merge`]).
    #[serde(default)]
    pub overrides: Map<String, Value>,
    /// The swept number this variant sets, if the study sweeps one: the variants with one are
    /// drawn as a curve (`sweep.png`), the others only in the tables.
    #[serde(default)]
    pub x: Option<f64>,
    /// Instead of training: this model (an exported file, a run or checkpoint folder),
    /// evaluated as it is once per seed with that seed's sampling noise (e.g. the pretrained
    /// model a study starts from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Instead of training: DeMe's merge of trained variants' runs of the same seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeSpec>,
    /// Instead of training: DeMe's ensemble of these trained `deme` variants' runs of the same
    /// seed, one per timestep range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Vec<String>>,
    /// Instead of training: the runs of this trained variant (of the same seed), evaluated
    /// again under this variant's `eval` (e.g. ANL's masked sampling at another fraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// With `of`: the snapshot those runs wrote at this step (their config lists it in
    /// `snapshots`) is evaluated instead of their final weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_step: Option<u64>,
    /// The line of `sweep.png` this variant's `x` is a point of: one line per curve name, with
    /// a legend; the variants with `x` and no `curve` make one line of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
    /// Keys merged onto the study's `eval` for this variant (a variant that is not trained).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub eval: Map<String, Value>,
    /// Trained, but neither evaluated nor reported (the range runs a merge is made of).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// A study variant that merges trained variants (see [`crate::methods::merge`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// The trained variants whose runs (of each seed) are merged, in order.
    pub runs: Vec<String>,
    /// `uniform`, `grid`, or one weight per run, `w1,...,wN`.
    #[serde(default = "MergeSpec::uniform")]
    pub weights: String,
    /// `grid`: the values each weight takes.
    #[serde(default = "MergeSpec::grid")]
    pub grid: Vec<f64>,
    /// `grid`: the validation protocol, as keys merged onto the study's `eval`; its
    /// `reference` must be set, and differ from the evaluation's.
    #[serde(default)]
    pub validation: Map<String, Value>,
}

impl MergeSpec {
    fn uniform() -> String {
        "uniform".into()
    }
    fn grid() -> Vec<f64> {
        vec![0.1, 0.25, 0.4]
    }

    /// How the weights are chosen, checked against the number of runs.
    pub fn weights(&self) -> Result<MergeWeights> {
        let how = MergeWeights::parse(&self.weights, &self.grid, "`merge.weights`")?;
        if let MergeWeights::Given(w) = &how {
            if w.len() != self.runs.len() {
                return Err(Error::msg(format!(
                    "`merge.weights`: {} weights for {} runs",
                    w.len(),
                    self.runs.len()
                )));
            }
        }
        if let MergeWeights::Grid(values) = &how {
            grid_size(values.len(), self.runs.len())?;
        }
        Ok(how)
    }

    /// The validation protocol of a grid search: `eval` with `validation`'s keys.
    pub fn validation(&self, eval: &Protocol) -> Result<Protocol> {
        let protocol = with_overrides(eval, &self.validation, "`merge.validation`")?;
        if protocol.reference == eval.reference {
            return Err(Error::msg(format!(
                "`merge.validation`: set a `reference` other than the evaluation's ({}): \
                 weights are never chosen on the evaluation set",
                eval.reference
            )));
        }
        protocol.validate("`merge.validation`")?;
        Ok(protocol)
    }
}

/// `eval` with the keys of `overrides` merged on, checked; `what` names the overrides in errors.
fn with_overrides(eval: &Protocol, overrides: &Map<String, Value>, what: &str) -> Result<Protocol> {
    let mut json = serde_json::to_value(eval).expect("a protocol is plain JSON");
    merge(&mut json, &Value::Object(overrides.clone()));
    serde_json::from_value(json).map_err(|e| Error::msg(format!("{what}: {e}")))
}

/// What a variant is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VariantKind<'a> {
    /// Trained from the base config with its overrides.
    Trained,
    /// A model evaluated as it is.
    Model(&'a Path),
    /// A merge of trained variants.
    Merge(&'a MergeSpec),
    /// An ensemble of trained variants.
    Ensemble(&'a [String]),
    /// A trained variant's runs, evaluated again.
    Of(&'a String),
}

impl Variant {
    /// What the variant is (checked by [`Study::validate`] to be one thing only).
    pub fn kind(&self) -> VariantKind<'_> {
        match (&self.model, &self.merge, &self.ensemble, &self.of) {
            (Some(m), ..) => VariantKind::Model(m),
            (_, Some(m), ..) => VariantKind::Merge(m),
            (_, _, Some(e), _) => VariantKind::Ensemble(e),
            (.., Some(of)) => VariantKind::Of(of),
            _ => VariantKind::Trained,
        }
    }

    /// The protocol this variant is evaluated under: the study's `eval` with the variant's.
    pub fn protocol(&self, eval: &Protocol) -> Result<Protocol> {
        if self.eval.is_empty() {
            return Ok(eval.clone());
        }
        let protocol = with_overrides(eval, &self.eval, "`eval`")?;
        protocol.validate("`eval`")?;
        Ok(protocol)
    }

    /// The trained variants it is made of (a merge's or ensemble's; none otherwise).
    pub fn parts(&self) -> &[String] {
        match self.kind() {
            VariantKind::Merge(spec) => &spec.runs,
            VariantKind::Ensemble(parts) => parts,
            VariantKind::Of(of) => std::slice::from_ref(of),
            _ => &[],
        }
    }

    /// Whether it is trained (not a model, merge or ensemble).
    pub fn is_trained(&self) -> bool {
        self.kind() == VariantKind::Trained
    }
}

/// Keys the study sets itself for every run.
const RUNNER_KEYS: [&str; 2] = ["seed", "out"];

/// The key that says which kind a tagged config object is (a method's `name`, a trainable
/// set's `kind`): an override naming another kind replaces the object instead of merging into it.
const TAGS: [&str; 2] = ["name", "kind"];

/// Merges `patch` onto `base`: objects merge key by key, anything else replaces. An object that
/// names another `kind` or `name` than the one it lands on replaces it whole, so switching e.g.
/// from LoRA to BitFit drops LoRA's options.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let other_kind = TAGS.iter().any(
                |tag| matches!((base.get(*tag), patch.get(*tag)), (Some(a), Some(b)) if a != b),
            );
            if other_kind {
                base.clear();
            }
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

impl Study {
    /// Reads a study file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Study> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Study::from_json_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// A study from JSON text (unknown keys refused), checked by [`Study::validate`].
    pub fn from_json_str(text: &str) -> Result<Study> {
        let study: Study =
            serde_json::from_str(text).map_err(|e| Error::msg(format!("study: {e}")))?;
        study.validate()?;
        Ok(study)
    }

    /// Checks everything that needs no training: names, seeds, `x`, and the config of every
    /// variant (see [`Study::configs`]).
    pub fn validate(&self) -> Result<()> {
        if self.variants.is_empty() || self.seeds.is_empty() {
            return Err(Error::msg(
                "study: `variants` and `seeds` must each hold at least one entry",
            ));
        }
        for (i, v) in self.variants.iter().enumerate() {
            let clean = !v.name.is_empty()
                && v.name != "."
                && v.name != ".."
                && !v.name.contains(['/', '\\']);
            if !clean {
                return Err(Error::msg(format!(
                    "study: variant {i} is named `{}`; a name must be a plain folder name",
                    v.name
                )));
            }
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(Error::msg(format!(
                    "study: two variants are named `{}`",
                    v.name
                )));
            }
            if v.x.is_some_and(|x| !x.is_finite()) {
                return Err(Error::msg(format!(
                    "study: variant `{}`: `x` must be a finite number",
                    v.name
                )));
            }
            match (&v.curve, v.x) {
                (Some(c), _) if c.is_empty() => {
                    return Err(Error::msg(format!(
                        "study: variant `{}`: `curve` is empty; name the line",
                        v.name
                    )))
                }
                (Some(c), None) => {
                    return Err(Error::msg(format!(
                        "study: variant `{}`: `curve` `{c}` needs an `x` (the variant's place \
                         on the line)",
                        v.name
                    )))
                }
                _ => {}
            }
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return Err(Error::msg(format!("study: seed {s} is listed twice")));
            }
        }
        self.eval.validate("study `eval`")?;
        if let Some(name) = &self.paired_with {
            if !self.variants.iter().any(|v| &v.name == name && !v.hidden) {
                return Err(Error::msg(format!(
                    "study `paired_with`: `{name}` is not a reported variant of this study"
                )));
            }
        }
        let configs = self.configs()?;
        for v in &self.variants {
            self.check_derived(v, &configs)
                .map_err(|e| Error::msg(format!("study variant `{}`: {e}", v.name)))?;
        }
        Ok(())
    }

    /// Checks a variant that is not trained: one kind only, its model present, the variants
    /// it is made of trained ones of this study, its merge weights and validation protocol.
    fn check_derived(&self, v: &Variant, configs: &[(&Variant, RunConfig)]) -> Result<()> {
        if v.at_step.is_some() && v.of.is_none() {
            return Err(Error::msg(
                "`at_step` applies to a variant with `of`: it names a step of that variant's runs",
            ));
        }
        let kinds = [
            v.model.is_some(),
            v.merge.is_some(),
            v.ensemble.is_some(),
            v.of.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 if !v.eval.is_empty() => {
                return Err(Error::msg(
                    "`eval` applies to variants that are not trained (`of`, `model`, `merge`, \
                     `ensemble`); every trained run is evaluated under the study's `eval`",
                ))
            }
            0 => return Ok(()),
            1 => {}
            _ => {
                return Err(Error::msg(
                    "give one of `model`, `merge`, `ensemble` and `of`",
                ))
            }
        }
        v.protocol(&self.eval)?;
        if !v.overrides.is_empty() || v.hidden {
            return Err(Error::msg(
                "`overrides` and `hidden` apply to trained variants, not to a model, merge, \
                 ensemble or `of`",
            ));
        }
        let parts = match v.kind() {
            VariantKind::Model(path) => {
                if !path.exists() {
                    return Err(Error::msg(format!(
                        "`model` {}: no such file",
                        path.display()
                    )));
                }
                return Ok(());
            }
            VariantKind::Merge(spec) => {
                spec.weights()?;
                if spec.weights == "grid" {
                    spec.validation(&self.eval)?;
                }
                &spec.runs
            }
            VariantKind::Ensemble(parts) => parts,
            VariantKind::Of(of) => std::slice::from_ref(of),
            VariantKind::Trained => unreachable!("counted above"),
        };
        if parts.is_empty() {
            return Err(Error::msg("name the trained variants it is made of"));
        }
        for part in parts {
            let Some((_, config)) = configs.iter().find(|(t, _)| &t.name == part) else {
                return Err(Error::msg(format!(
                    "`{part}` is not a trained variant of this study"
                )));
            };
            if let Some(step) = v.at_step.filter(|s| !config.snapshots.contains(s)) {
                return Err(Error::msg(format!(
                    "`at_step` {step}: the runs of `{part}` write no snapshot at that step (its \
                     `snapshots`: {:?}); add the step there",
                    config.snapshots
                )));
            }
            if v.merge.is_some() && config.init.is_none() {
                return Err(Error::msg(format!(
                    "`{part}` starts from scratch: a merge needs the base its runs started from \
                     (`init`)"
                )));
            }
        }
        Ok(())
    }

    /// The base config as JSON, every key spelled out (defaults included), so an override
    /// merges onto what the run would use: the file it names, or the inline object.
    fn base_json(&self) -> Result<Value> {
        let config = match &self.base {
            Value::String(path) => RunConfig::from_file(Path::new(path))?,
            Value::Object(_) => serde_json::from_value(self.base.clone())
                .map_err(|e| Error::msg(format!("study `base`: {e}")))?,
            other => {
                return Err(Error::msg(format!(
                    "study `base`: expected a run config's path or an inline config object, got {other}"
                )))
            }
        };
        Ok(serde_json::to_value(config).expect("a config is plain JSON"))
    }

    /// The run config of every trained variant (seed and out still the base's), each checked:
    /// an unknown key, an option of another kind, a key the study sets itself (`seed`, `out`) or
    /// a bad value is an error naming the variant and the key.
    pub fn configs(&self) -> Result<Vec<(&Variant, RunConfig)>> {
        let base = self.base_json()?;
        self.variants
            .iter()
            .filter(|v| v.is_trained())
            .map(|v| {
                let err = |msg: String| Error::msg(format!("study variant `{}`: {msg}", v.name));
                if let Some(key) = RUNNER_KEYS.iter().find(|k| v.overrides.contains_key(**k)) {
                    return Err(err(format!(
                        "overrides `{key}`, which the study sets for each run (see `seeds`, `out`)"
                    )));
                }
                let mut json = base.clone();
                merge(&mut json, &Value::Object(v.overrides.clone()));
                let mut config: RunConfig =
                    serde_json::from_value(json).map_err(|e| err(e.to_string()))?;
                // Checked with the study's own out: the base's may be empty.
                config.out = self.run_dir(&v.name, 0);
                config.validate().map_err(|e| err(e.to_string()))?;
                Ok((v, config))
            })
            .collect()
    }

    /// The run folder of a variant and seed.
    pub fn run_dir(&self, variant: &str, seed: u64) -> PathBuf {
        self.out.join(variant).join(format!("seed-{seed}"))
    }

    /// The config of one run: the variant's, with the seed and the run folder set.
    pub fn run_config(&self, variant: &RunConfig, name: &str, seed: u64) -> RunConfig {
        RunConfig {
            seed,
            out: self.run_dir(name, seed),
            ..variant.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_key_by_key_and_another_kind_replaces() {
        let mut base = json!({"steps": 10, "sample": {"sampler": "ddim4", "per_class": 2},
            "trainable": {"kind": "lora", "rank": 4}, "init": "runs/x"});
        let patch = json!({"sample": {"per_class": 3}, "trainable": {"kind": "bitfit"},
            "init": null, "lr": 0.1});
        merge(&mut base, &patch);
        assert_eq!(
            base,
            json!({"steps": 10, "sample": {"sampler": "ddim4", "per_class": 3},
                "trainable": {"kind": "bitfit"}, "init": null, "lr": 0.1})
        );
        // The same kind keeps its options.
        merge(&mut base, &json!({"trainable": {"kind": "bitfit"}}));
        assert_eq!(base["trainable"], json!({"kind": "bitfit"}));
        let mut lora = json!({"kind": "lora", "rank": 4, "alpha": 4});
        merge(&mut lora, &json!({"rank": 8}));
        assert_eq!(lora, json!({"kind": "lora", "rank": 8, "alpha": 4}));
    }

    fn study(variants: Value) -> Result<Study> {
        let text = json!({
            "base": {"data": "animal-mnist", "steps": 3},
            "variants": variants,
            "seeds": [0, 1],
            "eval": {"reference": "animal-mnist",
                "classifier": concat!(env!("CARGO_MANIFEST_DIR"), "/../data/classifiers/animal-mnist.safetensors")},
            "out": "runs/study"
        });
        Study::from_json_str(&text.to_string())
    }

    #[test]
    fn bad_variants_are_named_with_the_key() {
        let ok = study(json!([{"name": "a"}, {"name": "b", "overrides": {"lr": 0.01}}])).unwrap();
        let configs = ok.configs().unwrap();
        assert_eq!((configs[0].1.lr, configs[1].1.lr), (1e-3, 0.01));
        let cases = [
            (json!({"stepz": 3}), "stepz"),
            (json!({"trainable": {"kind": "lora", "rnk": 2}}), "rnk"),
            (json!({"trainable": {"rank": 2}}), "rank"),
            (json!({"seed": 2}), "seed"),
            (json!({"lr": -1.0}), "lr"),
        ];
        for (overrides, key) in cases {
            let bad = json!([{"name": "a"}, {"name": "odd", "overrides": overrides}]);
            let err = study(bad).unwrap_err().to_string();
            assert!(err.contains("variant `odd`") && err.contains(key), "{err}");
        }
        // A variant may leave the swept number out: it is then in the tables, not the curve.
        let partial = study(json!([{"name": "a", "x": 1}, {"name": "b"}])).unwrap();
        assert_eq!(partial.variants[1].x, None);
        let err = study(json!([{"name": "a"}, {"name": "a"}]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("two variants are named `a`"), "{err}");
    }

    #[test]
    fn at_step_and_curve_are_checked_before_anything_runs() {
        let a = json!({"name": "a", "overrides": {"snapshots": [2]}, "x": 3, "curve": "tuned"});
        let at_2 = json!({"name": "a-2", "of": "a", "at_step": 2, "x": 2, "curve": "tuned"});
        let ok = study(json!([a, at_2])).unwrap();
        assert_eq!(
            (ok.variants[1].at_step, ok.variants[1].curve.as_deref()),
            (Some(2), Some("tuned"))
        );
        // A variant without them writes neither (its `variant.json` is as before they existed).
        let bare: Variant = serde_json::from_value(json!({"name": "b"})).unwrap();
        let written = serde_json::to_value(&bare).unwrap();
        assert_eq!(written, json!({"name": "b", "overrides": {}, "x": null}));
        let cases = [
            (
                json!({"name": "m", "at_step": 2}),
                "`at_step` applies to a variant with `of`",
            ),
            (json!({"name": "m", "of": "a", "at_step": 3}), "`at_step` 3"),
            (
                json!({"name": "m", "curve": "tuned"}),
                "`curve` `tuned` needs an `x`",
            ),
            (
                json!({"name": "m", "curve": "", "x": 1}),
                "`curve` is empty",
            ),
        ];
        for (variant, message) in cases {
            let err = study(json!([a, variant])).unwrap_err().to_string();
            assert!(
                err.contains("variant `m`") && err.contains(message),
                "{message}: {err}"
            );
        }
        let err = study(json!([a, {"name": "m", "of": "a", "at_step": 3}]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`snapshots`: [2]"), "{err}");
    }
}
