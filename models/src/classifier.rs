//! A small CNN image classifier whose penultimate features the evaluation metrics use.
//!
//! ```text
//! x [N, C, 28, 28] -> conv3x3 16 -> relu -> avgpool2 -> conv3x3 32 -> relu -> avgpool2
//!   -> conv3x3 64 -> relu -> avgpool2 -> flatten -> linear 128 -> relu   (features, [N, 128])
//!   -> linear K                                                           (logits, [N, K])
//! ```
//!
//! Under 100k parameters (about 0.4 MB of f32) for 28x28 inputs. A saved file is self-describing:
//! its metadata holds the [`ClassifierConfig`] as JSON under [`CONFIG_KEY`], so
//! [`Classifier::load`] needs nothing but the path.

use std::collections::HashMap;
use std::path::Path;

use autograd::Var;
use tensor::safetensors::SafeTensorsFile;
use tensor::{Conv2dParams, DType, Device, Error, Result};

use crate::nn::{Conv2d, Linear};
use crate::ParamStore;

/// The safetensors metadata key of the JSON [`ClassifierConfig`].
pub const CONFIG_KEY: &str = "difftune.classifier";

/// What a classifier is: its name, its classes and the images it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierConfig {
    /// Short name, used in metric names (`FD-<name>`) and cache keys.
    pub name: String,
    /// Class names, by label.
    pub classes: Vec<String>,
    /// `[C, H, W]` of one input image (H and W at least 8).
    pub input: [usize; 3],
    /// Channels of the three convolutions.
    pub widths: [usize; 3],
    /// Width of the penultimate (feature) layer.
    pub features: usize,
}

impl ClassifierConfig {
    /// The default architecture for `classes` over `[C, H, W]` images.
    pub fn new(name: &str, classes: Vec<String>, input: [usize; 3]) -> Self {
        ClassifierConfig {
            name: name.to_string(),
            classes,
            input,
            widths: [16, 32, 64],
            features: 128,
        }
    }

    /// Checks sizes: at least two classes, a non-empty name, H and W of at least 8, non-zero widths.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::msg(format!("classifier config: {msg}")));
        if self.name.is_empty() {
            return bad("empty name".into());
        }
        if self.classes.len() < 2 {
            return bad(format!(
                "{} classes, expected at least 2",
                self.classes.len()
            ));
        }
        let [c, h, w] = self.input;
        if c == 0 || h < 8 || w < 8 {
            return bad(format!(
                "input {:?}: expected [C >= 1, H >= 8, W >= 8]",
                self.input
            ));
        }
        if self.widths.contains(&0) || self.features == 0 {
            return bad(format!(
                "widths {:?} and features {} must be non-zero",
                self.widths, self.features
            ));
        }
        tensor::limits::IMAGE_PIXELS.check(
            tensor::limits::product(&[h, w]),
            format!("classifier config: input {:?}", self.input),
        )?;
        let [w1, w2, w3] = self.widths;
        crate::config::check_sizes(
            "classifier",
            &[
                ("input channels", c),
                ("widths", w1.max(w2).max(w3)),
                ("features", self.features),
            ],
        )
    }

    /// The config as a JSON string (for the file metadata).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "name": self.name,
            "classes": self.classes,
            "input": self.input,
            "widths": self.widths,
            "features": self.features,
        })
        .to_string()
    }

    /// Parses [`ClassifierConfig::to_json`]'s output; `source` names where it came from in errors.
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let err = |msg: &str| Error::msg(format!("{source}: classifier config {msg}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(&format!("is not JSON: {e}")))?;
        let triple = |key: &str| -> Result<[usize; 3]> {
            let items = v[key]
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| err(&format!("`{key}` is not a list of 3 integers")))?;
            let mut out = [0; 3];
            for (o, item) in out.iter_mut().zip(items) {
                *o = item
                    .as_u64()
                    .ok_or_else(|| err(&format!("`{key}` holds a non-integer")))?
                    as usize;
            }
            Ok(out)
        };
        let config = ClassifierConfig {
            name: v["name"]
                .as_str()
                .ok_or_else(|| err("lacks a string `name`"))?
                .to_string(),
            classes: v["classes"]
                .as_array()
                .ok_or_else(|| err("lacks a list `classes`"))?
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err("`classes` holds a non-string"))?,
            input: triple("input")?,
            widths: triple("widths")?,
            features: v["features"]
                .as_u64()
                .ok_or_else(|| err("lacks an integer `features`"))? as usize,
        };
        config
            .validate()
            .map_err(|e| err(&format!("is invalid: {e}")))?;
        Ok(config)
    }
}

/// The classifier: its config, its layers and its parameters.
pub struct Classifier {
    /// What it is.
    pub config: ClassifierConfig,
    /// Its parameters (`conv1.weight`, ..., `fc.weight`, `head.bias`).
    pub params: ParamStore,
    convs: [Conv2d; 3],
    fc: Linear,
    head: Linear,
}

impl Classifier {
    /// A freshly initialised classifier (f32, CPU), its weights drawn with `seed`.
    pub fn new(config: ClassifierConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, seed);
        let same = Conv2dParams {
            padding: (1, 1),
            ..Default::default()
        };
        let [c, h, w] = config.input;
        let [w1, w2, w3] = config.widths;
        let convs = [
            Conv2d::new(&mut ps, "conv1", c, w1, 3, same, true)?,
            Conv2d::new(&mut ps, "conv2", w1, w2, 3, same, true)?,
            Conv2d::new(&mut ps, "conv3", w2, w3, 3, same, true)?,
        ];
        let flat = w3 * (h / 8) * (w / 8);
        let fc = Linear::new(&mut ps, "fc", flat, config.features, true)?;
        let head = Linear::new(&mut ps, "head", config.features, config.classes.len(), true)?;
        Ok(Classifier {
            config,
            params: ps,
            convs,
            fc,
            head,
        })
    }

    /// Loads a file written by [`Classifier::save`]; the config comes from its metadata.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let text = file
            .metadata()
            .get(CONFIG_KEY)
            .ok_or_else(|| Error::Format {
                path: path.to_path_buf(),
                msg: format!("no `{CONFIG_KEY}` metadata: not a difftune classifier file"),
            })?;
        let config = ClassifierConfig::from_json(text, &path.display().to_string())?;
        drop(file);
        let mut model = Classifier::new(config, 0)?;
        model.params.load(path, "", true)?;
        Ok(model)
    }

    /// Saves the parameters with the config in the metadata (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let meta = HashMap::from([(CONFIG_KEY.to_string(), self.config.to_json())]);
        self.params.save(path, Some(&meta))
    }

    /// Checks that `x` is `[N, C, H, W]` with the config's `[C, H, W]`.
    fn check_input(&self, x: &Var) -> Result<()> {
        let s = x.shape();
        if s.len() != 4 || s[1..] != self.config.input {
            return Err(Error::shape(
                "Classifier",
                format!(
                    "images {s:?}: classifier `{}` expects [N, {}, {}, {}]",
                    self.config.name,
                    self.config.input[0],
                    self.config.input[1],
                    self.config.input[2]
                ),
            ));
        }
        Ok(())
    }

    /// Penultimate features `[N, features]` (after the ReLU) of images `x` `[N, C, H, W]` in
    /// `[-1, 1]`.
    pub fn features(&self, x: &Var) -> Result<Var> {
        self.check_input(x)?;
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv
                .forward(&self.params, &h)?
                .relu()?
                .avg_pool2d((2, 2), (2, 2), (0, 0))?;
        }
        let n = h.shape()[0];
        let flat = h.reshape(&[n, h.shape()[1..].iter().product()])?;
        self.fc.forward(&self.params, &flat)?.relu()
    }

    /// Logits `[N, K]` from features `[N, features]`.
    pub fn head(&self, features: &Var) -> Result<Var> {
        self.head.forward(&self.params, features)
    }

    /// Logits `[N, K]` of images `x` `[N, C, H, W]` in `[-1, 1]`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        self.head(&self.features(x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{Generator, Tensor};

    fn config() -> ClassifierConfig {
        ClassifierConfig::new(
            "tiny",
            vec!["a".into(), "b".into(), "c".into()],
            [1, 28, 28],
        )
    }

    #[test]
    fn shapes_and_size() {
        let model = Classifier::new(config(), 1).unwrap();
        let mut gen = Generator::new(0);
        let x =
            Tensor::randn(&[2, 1, 28, 28], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
        let x = Var::constant(x);
        assert_eq!(model.features(&x).unwrap().shape(), &[2, 128]);
        assert_eq!(model.forward(&x).unwrap().shape(), &[2, 3]);
        assert!(model.params.param_count() * 4 < 500_000);
        let bad = Var::constant(Tensor::zeros(&[2, 3, 28, 28], DType::F32, Device::Cpu).unwrap());
        let e = model.forward(&bad).unwrap_err().to_string();
        assert!(
            e.contains("[2, 3, 28, 28]") && e.contains("[N, 1, 28, 28]"),
            "{e}"
        );
    }

    #[test]
    fn save_load_round_trip_is_self_describing() {
        let dir = std::env::temp_dir().join(format!("difftune-clf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        let model = Classifier::new(config(), 3).unwrap();
        model.save(&path).unwrap();
        let back = Classifier::load(&path).unwrap();
        assert_eq!(back.config, model.config);
        let w = |m: &Classifier| m.params.tensor("fc.weight").unwrap();
        assert_eq!(w(&back).max_abs_diff(&w(&model)).unwrap(), 0.0);
        // A file without the config is refused with a message that says so.
        model.params.save(&path, None).unwrap();
        let e = Classifier::load(&path).err().unwrap().to_string();
        assert!(e.contains(CONFIG_KEY), "{e}");
        assert!(ClassifierConfig::from_json("{\"name\": 3}", "x").is_err());
        let mut bad = config();
        bad.input = [1, 4, 28];
        assert!(Classifier::new(bad, 0).is_err());
    }
}
