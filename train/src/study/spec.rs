//! The study file: its JSON form, and the run configs of its variants (base config with each
//! variant's overrides merged on), all checked before anything runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tensor::{Error, Result};

use crate::eval::protocol::Protocol;
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
    /// The swept number this variant sets, if the study sweeps one.
    #[serde(default)]
    pub x: Option<f64>,
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
            if v.x.is_some() != self.variants[0].x.is_some() {
                return Err(Error::msg(format!(
                    "study: variant `{}` {} `x` and variant `{}` {}; give every variant one or none",
                    v.name,
                    if v.x.is_some() { "sets" } else { "lacks" },
                    self.variants[0].name,
                    if v.x.is_some() { "does not" } else { "does" },
                )));
            }
            if v.x.is_some_and(|x| !x.is_finite()) {
                return Err(Error::msg(format!(
                    "study: variant `{}`: `x` must be a finite number",
                    v.name
                )));
            }
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return Err(Error::msg(format!("study: seed {s} is listed twice")));
            }
        }
        self.eval.validate("study `eval`")?;
        self.configs().map(|_| ())
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

    /// The run config of every variant (seed and out still the base's), each checked: an unknown
    /// key, an option of another kind, a key the study sets itself (`seed`, `out`) or a bad value
    /// is an error naming the variant and the key.
    pub fn configs(&self) -> Result<Vec<RunConfig>> {
        let base = self.base_json()?;
        self.variants
            .iter()
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
                Ok(config)
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
        assert_eq!((configs[0].lr, configs[1].lr), (1e-3, 0.01));
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
        let err = study(json!([{"name": "a", "x": 1}, {"name": "b"}]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`b`") && err.contains("`x`"), "{err}");
        let err = study(json!([{"name": "a"}, {"name": "a"}]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("two variants are named `a`"), "{err}");
    }
}
