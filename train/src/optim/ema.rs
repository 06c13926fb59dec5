//! [`Ema`]: an exponential moving average of the trainable parameters, the weights that DiT and
//! DeMe sample and evaluate with.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use models::ParamStore;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{Error, Result, Tensor};

use super::{format_error, metadata_value};

/// Metadata key of the update count in an EMA file.
const UPDATES_KEY: &str = "ema.updates";

/// How the decay grows at the start of training, as a function of `n`, the updates made before
/// the current one. The decay used is the smaller of this and [`Ema::decay`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EmaWarmup {
    /// The full decay from the first update (DiT: the average starts as a copy of the model).
    None,
    /// `(1 + n) / (10 + n)`: TensorFlow's `ExponentialMovingAverage` with `num_updates`, and
    /// diffusers' `EMAModel` without `use_ema_warmup`.
    Ramp,
    /// `1 - (1 + n / inv_gamma)^(-power)`: diffusers' `use_ema_warmup` (defaults 1 and 2/3).
    Power {
        /// How fast the decay rises.
        inv_gamma: f64,
        /// The exponent.
        power: f64,
    },
}

/// A moving average `ema ← d·ema + (1 − d)·p` of every parameter that was trainable when it
/// was made (frozen parameters do not move, so their average is the parameter itself).
///
/// ```
/// use models::ParamStore;
/// use tensor::{DType, Device, Tensor};
/// use train::optim::Ema;
/// let mut model = ParamStore::new(DType::F64, Device::Cpu, 0);
/// model.constant("w", &[2], 1.0).unwrap();
/// let mut ema = Ema::new(&model, 0.9);
/// model.set("w", Tensor::full(&[2], 3.0, DType::F64, Device::Cpu).unwrap()).unwrap();
/// ema.update(&model).unwrap();
/// let w = ema.get("w").unwrap().to_vec::<f64>().unwrap();
/// assert!((w[0] - 1.2).abs() < 1e-12);
/// ```
pub struct Ema {
    /// The decay (0.9999 in DiT).
    pub decay: f64,
    /// The warmup of the decay.
    pub warmup: EmaWarmup,
    updates: u64,
    shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// An average that starts as a copy of the trainable parameters of `model`, with no warmup.
    pub fn new(model: &ParamStore, decay: f64) -> Self {
        Ema {
            decay,
            warmup: EmaWarmup::None,
            updates: 0,
            shadow: model
                .iter()
                .filter(|(_, v)| v.requires_grad())
                .map(|(name, v)| (name.to_string(), v.value().clone()))
                .collect(),
        }
    }

    /// The same average with `warmup`.
    pub fn with_warmup(self, warmup: EmaWarmup) -> Self {
        Ema { warmup, ..self }
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay of the update that follows `n` earlier ones.
    pub fn decay_at(&self, n: u64) -> f64 {
        let n = n as f64;
        let ramp = match self.warmup {
            EmaWarmup::None => return self.decay,
            EmaWarmup::Ramp => (1.0 + n) / (10.0 + n),
            EmaWarmup::Power { inv_gamma, power } => 1.0 - (1.0 + n / inv_gamma).powf(-power),
        };
        ramp.min(self.decay)
    }

    /// The averaged value of parameter `name`, if it is tracked.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.shadow.get(name)
    }

    /// The tracked parameter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shadow.keys().map(String::as_str)
    }

    /// One update from the current values of `model`, which must still have every tracked
    /// parameter with the same shape.
    pub fn update(&mut self, model: &ParamStore) -> Result<()> {
        let d = self.decay_at(self.updates);
        for (name, avg) in self.shadow.iter_mut() {
            let p = model.tensor(name)?;
            if p.shape() != avg.shape() {
                return Err(Error::shape(
                    "Ema::update",
                    format!(
                        "`{name}` is {:?} in the model, {:?} in the average",
                        p.shape(),
                        avg.shape()
                    ),
                ));
            }
            *avg = avg.mul_scalar(d)?.add(&p.mul_scalar(1.0 - d)?)?;
        }
        self.updates += 1;
        Ok(())
    }

    /// A store with the Vars and adapters of `model`, the tracked parameters replaced by their
    /// averages: the model to sample with (or to save as a complete checkpoint).
    pub fn store(&self, model: &ParamStore) -> Result<ParamStore> {
        let mut out = model.subset("");
        for (name, avg) in &self.shadow {
            out.set(name, avg.clone())?;
        }
        Ok(out)
    }

    /// Saves the averages (atomically) under the parameters' own names, with the update count
    /// in the metadata. When every parameter is trainable the file is a complete checkpoint that
    /// [`ParamStore::load`] reads as it is.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: Vec<(&str, &Tensor)> =
            self.shadow.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let metadata = HashMap::from([(UPDATES_KEY.to_string(), self.updates.to_string())]);
        safetensors::save(path, &tensors, Some(&metadata))
    }

    /// Replaces the averages and the update count with those saved at `path`. The file must hold
    /// exactly the tracked parameters, with their shapes and dtypes; a mismatch is an error naming
    /// the parameter and changes nothing.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let updates: u64 = metadata_value(path, file.metadata(), UPDATES_KEY)?;
        if let Some(name) = file
            .names()
            .into_iter()
            .find(|n| !self.shadow.contains_key(*n))
        {
            return Err(format_error(
                path,
                format!("EMA of `{name}`, which is not a tracked parameter"),
            ));
        }
        let mut shadow = BTreeMap::new();
        for (name, avg) in &self.shadow {
            if !file.contains(name) {
                return Err(format_error(
                    path,
                    format!("tracked parameter `{name}` is not in the file"),
                ));
            }
            let (dtype, shape) = file.info(name)?;
            if shape != avg.shape() || dtype != avg.dtype() {
                return Err(format_error(
                    path,
                    format!(
                        "`{name}` is {shape:?} {dtype} in the file, {:?} {} in the average",
                        avg.shape(),
                        avg.dtype()
                    ),
                ));
            }
            shadow.insert(name.clone(), file.tensor(name)?.to_device(avg.device())?);
        }
        self.shadow = shadow;
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device};

    fn model() -> ParamStore {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        ps.insert("a", Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap())
            .unwrap();
        ps.insert("frozen", Tensor::from_vec(vec![7.0f64], &[1]).unwrap())
            .unwrap();
        ps.set_trainable("frozen", false);
        ps
    }

    fn set(ps: &mut ParamStore, name: &str, v: Vec<f64>) {
        let n = v.len();
        ps.set(name, Tensor::from_vec(v, &[n]).unwrap()).unwrap();
    }

    fn get(ema: &Ema, name: &str) -> Vec<f64> {
        ema.get(name).unwrap().to_vec::<f64>().unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12) && got.len() == want.len(),
            "got {got:?}, want {want:?}"
        );
    }

    #[test]
    fn update_follows_the_formula_and_skips_frozen_parameters() {
        let mut ps = model();
        let mut ema = Ema::new(&ps, 0.9);
        assert_eq!(ema.names().collect::<Vec<_>>(), vec!["a"]);
        set(&mut ps, "a", vec![3.0, 4.0]);
        ema.update(&ps).unwrap();
        // 0.9 · [1, 2] + 0.1 · [3, 4]
        assert_close(&get(&ema, "a"), &[1.2, 2.2]);
        set(&mut ps, "a", vec![0.0, 0.0]);
        ema.update(&ps).unwrap();
        assert_close(&get(&ema, "a"), &[1.08, 1.98]);
        assert_eq!(ema.updates(), 2);

        // The EMA model: averages where tracked, the model's own values elsewhere.
        let averaged = ema.store(&ps).unwrap();
        assert_close(
            &averaged.tensor("a").unwrap().to_vec::<f64>().unwrap(),
            &[1.08, 1.98],
        );
        assert_eq!(
            averaged.tensor("frozen").unwrap().to_vec::<f64>().unwrap(),
            vec![7.0]
        );
        // The model itself is untouched.
        assert_eq!(
            ps.tensor("a").unwrap().to_vec::<f64>().unwrap(),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn warmup_decays_at_chosen_updates() {
        let ema = Ema::new(&model(), 0.9999);
        assert_eq!(ema.decay_at(0), 0.9999);
        let ramp = Ema::new(&model(), 0.9999).with_warmup(EmaWarmup::Ramp);
        assert!((ramp.decay_at(0) - 0.1).abs() < 1e-15);
        assert!((ramp.decay_at(8) - 0.5).abs() < 1e-15);
        assert_eq!(ramp.decay_at(100_000_000), 0.9999);
        let power = Ema::new(&model(), 0.999).with_warmup(EmaWarmup::Power {
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        });
        assert_eq!(power.decay_at(0), 0.0);
        // 1 - 8^(-2/3) = 1 - 1/4
        assert!((power.decay_at(7) - 0.75).abs() < 1e-12);
        assert_eq!(power.decay_at(10_000_000), 0.999);

        // The first update with a ramp moves 90% of the way to the model.
        let mut ps = model();
        let mut ramp = ramp;
        set(&mut ps, "a", vec![11.0, 12.0]);
        ramp.update(&ps).unwrap();
        assert_close(&get(&ramp, "a"), &[10.0, 11.0]);
    }

    #[test]
    fn save_and_load_round_trip_and_refuse_other_parameters() {
        let path =
            std::env::temp_dir().join(format!("difftune-ema-{}.safetensors", std::process::id()));
        let mut ps = model();
        let mut ema = Ema::new(&ps, 0.5);
        set(&mut ps, "a", vec![3.0, 4.0]);
        ema.update(&ps).unwrap();
        ema.save(&path).unwrap();

        let mut resumed = Ema::new(&model(), 0.5);
        resumed.load(&path).unwrap();
        assert_eq!(resumed.updates(), 1);
        assert_eq!(get(&resumed, "a"), get(&ema, "a"));

        // A model that also trains `frozen` expects its average in the file.
        let mut other = model();
        other.set_trainable("frozen", true);
        let mut wrong = Ema::new(&other, 0.5);
        let err = wrong.load(&path).unwrap_err().to_string();
        assert!(err.contains("`frozen`"), "{err}");
        assert_eq!(wrong.updates(), 0);

        // A model without `a` does not track it.
        let mut small = ParamStore::new(DType::F64, Device::Cpu, 0);
        small.constant("b", &[2], 0.0).unwrap();
        let err = Ema::new(&small, 0.5).load(&path).unwrap_err().to_string();
        assert!(err.contains("`a`"), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}
