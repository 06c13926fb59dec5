//! [`ParamStore`]: every parameter of a model under its reference state-dict name, with
//! trainable flags, freezing by name pattern, and checkpoint loading that reports what did not fit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use autograd::Var;

use crate::peft::Lora;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{DType, Device, Error, Generator, Result, Tensor};

/// The parameters of a model, by hierarchical name (`blocks.0.attn.qkv.weight`).
///
/// Modules keep the names of their parameters and read the current [`Var`]s from the store in
/// `forward`, so an optimizer or a checkpoint load replaces a value in one place.
///
/// ```
/// use models::ParamStore;
/// use tensor::{DType, Device, Tensor};
/// let mut store = ParamStore::new(DType::F32, Device::Cpu, 0);
/// store.insert("proj.weight", Tensor::zeros(&[4, 4], DType::F32, Device::Cpu).unwrap()).unwrap();
/// store.insert("proj.bias", Tensor::zeros(&[4], DType::F32, Device::Cpu).unwrap()).unwrap();
/// assert_eq!(store.set_trainable("*.bias", false), 1);
/// assert_eq!(store.trainable_count(), 16);
/// ```
pub struct ParamStore {
    params: BTreeMap<String, Var>,
    adapters: BTreeMap<String, Lora>,
    dtype: DType,
    compute: Option<DType>,
    device: Device,
    gen: Generator,
}

/// What a checkpoint load found: tensors the model lacks, parameters the file lacks, and shape
/// mismatches. Strict loading fails unless all three are empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters loaded.
    pub loaded: usize,
    /// Model parameters the file does not have.
    pub missing: Vec<String>,
    /// File tensors the model does not have.
    pub unexpected: Vec<String>,
    /// (name, expected shape, found shape).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Whether everything matched.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} loaded", self.loaded)?;
        for name in &self.missing {
            write!(f, "\n  missing: {name}")?;
        }
        for name in &self.unexpected {
            write!(f, "\n  unexpected: {name}")?;
        }
        for (name, expected, found) in &self.mismatched {
            write!(
                f,
                "\n  shape mismatch: {name}: expected {expected:?}, found {found:?}"
            )?;
        }
        Ok(())
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (dots included).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| matches(rest, &name[head.len() + i..]))
        }
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl ParamStore {
    /// An empty store whose initialisers make `dtype` tensors on `device`, seeded with `seed`.
    pub fn new(dtype: DType, device: Device, seed: u64) -> Self {
        ParamStore {
            params: BTreeMap::new(),
            adapters: BTreeMap::new(),
            dtype,
            compute: None,
            device,
            gen: Generator::new(seed),
        }
    }

    /// The dtype of new parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of new parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    /// `value` on the store's device in its dtype: values made on the host (checkpoints, fixed
    /// embeddings) land where the parameters live.
    fn place(&self, value: &Tensor) -> Result<Tensor> {
        value.to_device(self.device)?.to_dtype(self.dtype)
    }

    /// Adds a trainable parameter; a name can be added once.
    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<()> {
        if self.params.contains_key(name) {
            return Err(Error::msg(format!("parameter `{name}` is defined twice")));
        }
        self.params
            .insert(name.to_string(), Var::param(self.place(&value)?));
        Ok(())
    }

    /// Checks, before a new parameter `name` of `shape` is allocated, that the store stays within
    /// [`tensor::limits::MODEL_PARAMS`]: models are built from configs, which are user input.
    fn reserve(&self, name: &str, shape: &[usize]) -> Result<()> {
        let total = (self.param_count() as u128).saturating_add(tensor::limits::product(shape));
        tensor::limits::MODEL_PARAMS.check(
            total,
            format!("the model's parameters up to `{name}` {shape:?}"),
        )
    }

    /// Adds a parameter drawn uniformly from [-bound, bound].
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64) -> Result<()> {
        self.reserve(name, shape)?;
        let t = Tensor::rand(shape, -bound, bound, self.dtype, self.device, &mut self.gen)
            .map_err(|e| Error::msg(format!("parameter `{name}`: {e}")))?;
        self.insert(name, t)
    }

    /// Adds a parameter drawn from N(0, std²).
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> Result<()> {
        self.reserve(name, shape)?;
        let t = Tensor::randn(shape, 0.0, std, self.dtype, self.device, &mut self.gen)?;
        self.insert(name, t)
    }

    /// Adds a parameter filled with `value`.
    pub fn constant(&mut self, name: &str, shape: &[usize], value: f64) -> Result<()> {
        self.reserve(name, shape)?;
        let t = Tensor::full(shape, value, self.dtype, self.device)?;
        self.insert(name, t)
    }

    /// The current Var of `name`.
    pub fn var(&self, name: &str) -> Result<Var> {
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| Error::msg(format!("no parameter named `{name}`")))
    }

    /// Mixed precision: the parameters stay in the store's dtype (the f32 master weights the
    /// optimizer updates) while forward passes read them through [`ParamStore::weight`] cast to
    /// `dtype` (bf16 on CUDA, accumulating in f32); gradients come back through the cast in the
    /// master dtype. `None` computes in the store's dtype.
    pub fn set_compute_dtype(&mut self, dtype: Option<DType>) {
        self.compute = dtype.filter(|&d| d != self.dtype);
    }

    /// The dtype forward passes compute in: the mixed-precision choice, else the store's dtype.
    pub fn compute_dtype(&self) -> DType {
        self.compute.unwrap_or(self.dtype)
    }

    /// The Var of `name` as a forward pass uses it: cast to [`ParamStore::compute_dtype`]
    /// (the parameter itself when no cast is needed). Use [`ParamStore::var`] for the parameter's
    /// identity (gradients, optimizers).
    pub fn weight(&self, name: &str) -> Result<Var> {
        let v = self.var(name)?;
        match self.compute {
            Some(dtype) => v.to_dtype(dtype),
            None => Ok(v),
        }
    }

    /// Whether the store has a parameter `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// The current value of `name`.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.var(name)?.value().clone())
    }

    /// Replaces the value of `name`, keeping its trainable flag; the shape must match.
    pub fn set(&mut self, name: &str, value: Tensor) -> Result<()> {
        let old = self.var(name)?;
        if old.shape() != value.shape() {
            return Err(Error::shape(
                "ParamStore::set",
                format!("`{name}` is {:?}, got {:?}", old.shape(), value.shape()),
            ));
        }
        let value = self.place(&value)?;
        self.params
            .insert(name.to_string(), Var::leaf(value, old.requires_grad()));
        Ok(())
    }

    /// A store sharing the Vars (same identities, so gradients map back) and LoRA adapters of
    /// every parameter named `prefix` or `prefix.*`: what a block needs to run on its own, e.g.
    /// inside [`autograd::checkpoint`], whose closure cannot borrow the whole store.
    pub fn subset(&self, prefix: &str) -> ParamStore {
        let under = |name: &str| {
            prefix.is_empty()
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        ParamStore {
            params: self
                .params
                .iter()
                .filter(|(k, _)| under(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            adapters: self
                .adapters
                .iter()
                .filter(|(k, _)| under(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dtype: self.dtype,
            compute: self.compute,
            device: self.device,
            gen: Generator::new(0),
        }
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// (name, Var) of every parameter, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Sets the trainable flag of every parameter whose name matches `pattern` (`*` wildcards);
    /// returns how many matched.
    pub fn set_trainable(&mut self, pattern: &str, trainable: bool) -> usize {
        let mut n = 0;
        for (name, var) in self.params.iter_mut() {
            if matches(pattern, name) {
                *var = Var::leaf(var.value().clone(), trainable);
                n += 1;
            }
        }
        n
    }

    /// The LoRA adapter of the weight `name`, if it has one.
    pub fn lora(&self, name: &str) -> Option<&Lora> {
        self.adapters.get(name)
    }

    /// Sets the LoRA adapter of the weight `name`.
    pub(crate) fn set_lora(&mut self, name: &str, lora: Lora) {
        self.adapters.insert(name.to_string(), lora);
    }

    /// Every (weight name, adapter).
    pub fn loras(&self) -> impl Iterator<Item = (&str, &Lora)> {
        self.adapters.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.params
            .values()
            .filter(|v| v.requires_grad())
            .map(|v| v.value().elem_count())
            .sum()
    }

    /// Number of scalars.
    pub fn param_count(&self) -> usize {
        self.params.values().map(|v| v.value().elem_count()).sum()
    }

    /// The name of the first parameter (in name order) holding a NaN or an infinity, `None` when
    /// every value is finite: weights loaded from a checkpoint, or after an optimizer step, are
    /// checked with it before they are used or saved. One pass over each tensor on its device.
    pub fn first_non_finite(&self) -> Result<Option<&str>> {
        for (name, var) in &self.params {
            if !var.value().all_finite()? {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Loads the tensors named `prefix + name` from a safetensors file. Strict: anything missing,
    /// unexpected or mis-shaped is an error carrying the whole report. Not strict: what matches is
    /// loaded and the report says what did not.
    pub fn load(
        &mut self,
        path: impl AsRef<Path>,
        prefix: &str,
        strict: bool,
    ) -> Result<LoadReport> {
        let file = SafeTensorsFile::open(path.as_ref())?;
        let mut report = LoadReport::default();
        let in_file: Vec<&str> = file
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .collect();
        for name in &in_file {
            if !self.params.contains_key(*name) {
                report.unexpected.push(name.to_string());
            }
        }
        let mut updates = Vec::new();
        for (name, var) in &self.params {
            let key = format!("{prefix}{name}");
            if !file.contains(&key) {
                report.missing.push(name.clone());
                continue;
            }
            let (_, shape) = file.info(&key)?;
            if shape != var.shape() {
                report
                    .mismatched
                    .push((name.clone(), var.shape().to_vec(), shape));
                continue;
            }
            updates.push((name.clone(), file.tensor(&key)?));
        }
        if strict && !report.is_clean() {
            return Err(Error::Format {
                path: path.as_ref().to_path_buf(),
                msg: format!("strict load failed: {report}"),
            });
        }
        report.loaded = updates.len();
        for (name, value) in updates {
            self.set(&name, value)?;
        }
        Ok(report)
    }

    /// Saves every parameter (atomically) under its name, with optional metadata.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        metadata: Option<&HashMap<String, String>>,
    ) -> Result<()> {
        let tensors: Vec<(&str, &Tensor)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.value()))
            .collect();
        safetensors::save(path, &tensors, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_wildcards() {
        assert!(matches("blocks.*.attn.*", "blocks.0.attn.qkv.weight"));
        assert!(matches("*bias", "final_layer.linear.bias"));
        assert!(!matches("*bias", "final_layer.linear.weight"));
        assert!(matches("x_embedder.proj.weight", "x_embedder.proj.weight"));
        assert!(!matches("blocks.1*", "blocks.0.mlp.fc1.weight"));
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    fn store(seed: u64, shapes: &[(&str, &[usize])]) -> ParamStore {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, seed);
        for (name, shape) in shapes {
            ps.normal(name, shape, 1.0).unwrap();
        }
        ps
    }

    #[test]
    fn strict_load_reports_missing_unexpected_and_mismatched_tensors() {
        let dir = std::env::temp_dir().join(format!("difftune-load-{}", std::process::id()));
        let path = dir.join("ckpt.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        store(
            1,
            &[("a.weight", &[2, 3]), ("b.weight", &[4]), ("extra", &[1])],
        )
        .save(&path, None)
        .unwrap();

        let mut ps = store(
            2,
            &[("a.weight", &[2, 3]), ("b.weight", &[5]), ("c.bias", &[2])],
        );
        let before = ps.tensor("a.weight").unwrap();
        let err = ps.load(&path, "", true).unwrap_err().to_string();
        for needle in [
            "ckpt.safetensors",
            "missing: c.bias",
            "unexpected: extra",
            "b.weight: expected [5], found [4]",
        ] {
            assert!(err.contains(needle), "`{needle}` not in: {err}");
        }
        // A failed strict load changes nothing.
        assert_eq!(
            ps.tensor("a.weight")
                .unwrap()
                .max_abs_diff(&before)
                .unwrap(),
            0.0
        );

        let report = ps.load(&path, "", false).unwrap();
        assert_eq!(report.loaded, 1);
        assert_eq!(
            (report.missing.clone(), report.unexpected.clone()),
            (vec!["c.bias".to_string()], vec!["extra".to_string()])
        );
        assert_eq!(
            report.mismatched,
            vec![("b.weight".to_string(), vec![5], vec![4])]
        );
        assert!(
            ps.tensor("a.weight")
                .unwrap()
                .max_abs_diff(&before)
                .unwrap()
                > 0.0
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_or_corrupt_checkpoint_is_an_error_not_a_panic() {
        let mut ps = store(0, &[("a", &[2])]);
        let err = ps
            .load("/nonexistent/ckpt.safetensors", "", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ckpt.safetensors"), "{err}");
        let path = std::env::temp_dir().join(format!(
            "difftune-corrupt-{}.safetensors",
            std::process::id()
        ));
        std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
        assert!(ps.load(&path, "", false).is_err());
        std::fs::remove_file(path).unwrap();
    }
}

#[cfg(test)]
mod finite_tests {
    use super::*;

    #[test]
    fn first_non_finite_names_the_first_bad_parameter() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        for name in ["a.weight", "b.weight", "c.weight"] {
            ps.normal(name, &[3, 4], 1.0).unwrap();
        }
        assert_eq!(ps.first_non_finite().unwrap(), None);
        for (bad, at) in [(f32::INFINITY, "c.weight"), (f32::NAN, "b.weight")] {
            let mut v = ps.tensor(at).unwrap().to_vec::<f32>().unwrap();
            v[7] = bad;
            ps.set(at, Tensor::from_vec(v, &[3, 4]).unwrap()).unwrap();
            assert_eq!(ps.first_non_finite().unwrap(), Some(at));
        }
    }
}
