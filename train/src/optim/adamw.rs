//! [`AdamW`]: Adam with decoupled weight decay (Loshchilov & Hutter), over the trainable
//! parameters of a [`ParamStore`], with its state kept by parameter name and saved to safetensors.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use autograd::Grads;
use models::ParamStore;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{AdamWStep, Error, Result, Tensor};

use super::{format_error, metadata_value, trainable_names};

/// Metadata key of the step count in a state file.
const STEP_KEY: &str = "adamw.step";
/// Metadata key of the trainable parameter names (a JSON list) in a state file.
const PARAMS_KEY: &str = "adamw.params";
/// Metadata key: the parameters that have moments, so that a file missing one is refused.
const MOMENTS_KEY: &str = "adamw.moments";

/// The hyperparameters of [`AdamW`]. `Default` is DiT's (lr 1e-4, betas (0.9, 0.999), eps 1e-8,
/// no weight decay); [`AdamWConfig::deme`] is DeMe's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate of the next step (a schedule sets it before each step).
    pub lr: f64,
    /// Decay rates of the first and second moments.
    pub betas: (f64, f64),
    /// Added to the bias-corrected root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies the parameter by `1 - lr * weight_decay`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// DeMe's settings: lr 5e-5, betas (0.95, 0.999), eps 1e-8, weight decay 1e-6.
    pub fn deme() -> Self {
        AdamWConfig {
            lr: 5e-5,
            betas: (0.95, 0.999),
            eps: 1e-8,
            weight_decay: 1e-6,
        }
    }

    /// The same settings with learning rate `lr`.
    pub fn with_lr(self, lr: f64) -> Self {
        AdamWConfig { lr, ..self }
    }

    /// The same settings with weight decay `weight_decay`.
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        AdamWConfig {
            weight_decay,
            ..self
        }
    }
}

/// Parameters that train with their own learning rate and weight decay (PyTorch's parameter
/// groups): those whose names match `params` (`*` wildcards).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// A name pattern, e.g. `blocks.*.difffit_scale`.
    pub params: String,
    /// Multiplies the learning rate of the schedule.
    #[serde(default = "ParamGroup::one")]
    pub lr_scale: f64,
    /// The group's weight decay (the optimizer's when absent).
    #[serde(default)]
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    fn one() -> f64 {
        1.0
    }

    /// Checks the values; errors name `key`, the config key of the group.
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(Error::msg(format!("config `{key}.{field}`: {msg}")));
        if self.params.trim().is_empty() {
            return bad("params", "is empty; name a parameter pattern".into());
        }
        if !(self.lr_scale >= 0.0 && self.lr_scale.is_finite()) {
            return bad(
                "lr_scale",
                format!("must be finite and >= 0, got {}", self.lr_scale),
            );
        }
        match self.weight_decay {
            Some(wd) if !(wd >= 0.0 && wd.is_finite()) => {
                bad("weight_decay", format!("must be finite and >= 0, got {wd}"))
            }
            _ => Ok(()),
        }
    }
}

/// Adam with decoupled weight decay, as PyTorch's `torch.optim.AdamW`:
///
/// ```text
/// p ← p · (1 − lr·wd)
/// m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
/// p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
/// ```
///
/// Every trainable parameter of the store that has a gradient is updated; frozen parameters and
/// parameters without a gradient are left alone, and only parameters that were updated have
/// state (`m`, `v`, created at zero on their first gradient). The step count `t` is one for the
/// whole optimizer (PyTorch counts per parameter; the two agree whenever every trainable
/// parameter gets a gradient every step). A parameter in one of the [`ParamGroup`]s (the first
/// whose pattern matches) takes its learning-rate scale and weight decay.
pub struct AdamW {
    /// The hyperparameters; `config.lr` may change between steps.
    pub config: AdamWConfig,
    /// Parameters with their own learning rate and weight decay.
    pub groups: Vec<ParamGroup>,
    step: u64,
    /// (m, v) by parameter name.
    state: BTreeMap<String, (Tensor, Tensor)>,
    /// The trainable parameter names at the last step: what a state file belongs to.
    params: Vec<String>,
}

impl AdamW {
    /// An optimizer with no state yet.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            groups: Vec::new(),
            step: 0,
            state: BTreeMap::new(),
            params: Vec::new(),
        }
    }

    /// Steps taken so far (0 before the first): the step a schedule should be asked about next.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The parameters that have state (moments), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.state.keys().map(String::as_str)
    }

    /// The first and second moments of parameter `name`, if it has state.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        self.state.get(name).map(|(m, v)| (m, v))
    }

    /// One update of every trainable parameter of `store` that has a gradient in `grads`. The
    /// new values replace the old ones in the store (new leaves: gradients computed before the
    /// step do not apply to them). A gradient whose shape or dtype differs from its parameter's
    /// is an error, found before anything changes.
    pub fn step(&mut self, store: &mut ParamStore, grads: &Grads) -> Result<()> {
        let names = trainable_names(store);
        let mut work = Vec::with_capacity(names.len());
        for name in &names {
            let var = store.var(name)?;
            if let Some(g) = grads.get(&var) {
                if g.shape() != var.shape() || g.dtype() != var.value().dtype() {
                    return Err(Error::shape(
                        "AdamW::step",
                        format!(
                            "parameter `{name}` is {:?} {} but its gradient is {:?} {}",
                            var.shape(),
                            var.value().dtype(),
                            g.shape(),
                            g.dtype()
                        ),
                    ));
                }
                work.push(name);
            }
        }
        self.step += 1;
        let coefficients = Coefficients::new(&self.config, self.step);
        let grouped: Vec<Coefficients> = self
            .groups
            .iter()
            .map(|g| {
                let config = AdamWConfig {
                    lr: self.config.lr * g.lr_scale,
                    weight_decay: g.weight_decay.unwrap_or(self.config.weight_decay),
                    ..self.config
                };
                Coefficients::new(&config, self.step)
            })
            .collect();
        for name in work {
            let coefficients = self
                .groups
                .iter()
                .position(|g| models::params::matches(&g.params, name))
                .map_or(&coefficients, |i| &grouped[i]);
            let var = store.var(name)?;
            let g = grads.get(&var).expect("checked above");
            let (m, v) = match self.state.remove(name) {
                Some(state) => state,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let (p, m, v) = coefficients.update(var.value(), g, &m, &v)?;
            drop(var);
            store.set(name, p)?;
            self.state.insert(name.clone(), (m, v));
        }
        if self.params != names {
            self.params = names;
        }
        Ok(())
    }

    /// Saves the state (atomically): tensors `adamw.m.<param>` and `adamw.v.<param>`, the step
    /// count and the trainable parameter names in the metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let names: Vec<(String, String)> = self
            .state
            .keys()
            .map(|p| (format!("adamw.m.{p}"), format!("adamw.v.{p}")))
            .collect();
        let mut tensors = Vec::with_capacity(2 * names.len());
        for ((m_name, v_name), (m, v)) in names.iter().zip(self.state.values()) {
            tensors.push((m_name.as_str(), m));
            tensors.push((v_name.as_str(), v));
        }
        let metadata = HashMap::from([
            (STEP_KEY.to_string(), self.step.to_string()),
            (
                PARAMS_KEY.to_string(),
                serde_json::to_string(&self.params).expect("a list of strings"),
            ),
            (
                MOMENTS_KEY.to_string(),
                serde_json::to_string(&self.names().collect::<Vec<_>>())
                    .expect("a list of strings"),
            ),
        ]);
        safetensors::save(path, &tensors, Some(&metadata))
    }

    /// Replaces the state with the one saved at `path`, checked against `store`: the file must
    /// have been saved for the same trainable parameters, with moments shaped as they are. A
    /// mismatch is an error naming the parameter, and leaves the optimizer unchanged. The moments
    /// go to each parameter's device; the hyperparameters stay as they are.
    pub fn load(&mut self, path: impl AsRef<Path>, store: &ParamStore) -> Result<()> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let step: u64 = metadata_value(path, file.metadata(), STEP_KEY)?;
        let raw: String = metadata_value(path, file.metadata(), PARAMS_KEY)?;
        let saved: Vec<String> = serde_json::from_str(&raw).map_err(|e| {
            format_error(path, format!("metadata `{PARAMS_KEY}` is not a list: {e}"))
        })?;
        let raw: String = metadata_value(path, file.metadata(), MOMENTS_KEY)?;
        let with_moments: Vec<String> = serde_json::from_str(&raw).map_err(|e| {
            format_error(path, format!("metadata `{MOMENTS_KEY}` is not a list: {e}"))
        })?;
        let names = trainable_names(store);
        // Before the first step the optimizer has seen no parameters: any store fits.
        if step > 0 {
            if let Some(p) = saved.iter().find(|p| names.binary_search(p).is_err()) {
                return Err(format_error(
                    path,
                    format!("optimizer state is for parameter `{p}`, which is not a trainable parameter of this model"),
                ));
            }
            if let Some(p) = names.iter().find(|p| !saved.contains(p)) {
                return Err(format_error(
                    path,
                    format!("trainable parameter `{p}` is not in the saved optimizer state"),
                ));
            }
        }
        let mut state = BTreeMap::new();
        for key in file.names() {
            let Some(name) = key.strip_prefix("adamw.m.") else {
                if key.starts_with("adamw.v.") {
                    continue;
                }
                return Err(format_error(path, format!("unexpected tensor `{key}`")));
            };
            let param = store.var(name).map_err(|_| {
                format_error(
                    path,
                    format!("optimizer state for `{name}`, which this model does not have"),
                )
            })?;
            if !saved.iter().any(|p| p == name) {
                return Err(format_error(
                    path,
                    format!("optimizer state for `{name}`, which `{PARAMS_KEY}` does not list"),
                ));
            }
            let v_key = format!("adamw.v.{name}");
            if !file.contains(&v_key) {
                return Err(format_error(path, format!("`{v_key}` is missing")));
            }
            let value = param.value();
            let mut moments = Vec::with_capacity(2);
            for key in [key, v_key.as_str()] {
                let (dtype, shape) = file.info(key)?;
                if shape != value.shape() || dtype != value.dtype() {
                    return Err(format_error(
                        path,
                        format!(
                            "`{key}` is {shape:?} {dtype} but parameter `{name}` is {:?} {}",
                            value.shape(),
                            value.dtype()
                        ),
                    ));
                }
                moments.push(file.tensor(key)?.to_device(value.device())?);
            }
            let v = moments.pop().expect("two moments");
            let m = moments.pop().expect("two moments");
            state.insert(name.to_string(), (m, v));
        }
        for key in file.names() {
            if let Some(name) = key.strip_prefix("adamw.v.") {
                if !state.contains_key(name) {
                    return Err(format_error(path, format!("`adamw.m.{name}` is missing")));
                }
            }
        }
        // Every parameter saved with moments must come back with them: a file that lost a tensor
        // would otherwise restart that parameter's moments at zero, silently.
        if let Some(p) = with_moments
            .iter()
            .find(|p| !state.contains_key(p.as_str()))
        {
            return Err(format_error(
                path,
                format!("the moments of `{p}` (listed in `{MOMENTS_KEY}`) are missing"),
            ));
        }
        if let Some(p) = state.keys().find(|p| !with_moments.contains(p)) {
            return Err(format_error(
                path,
                format!("moments of `{p}`, which `{MOMENTS_KEY}` does not list"),
            ));
        }
        self.step = step;
        self.state = state;
        self.params = if step > 0 { saved } else { Vec::new() };
        Ok(())
    }
}

/// The scalars of one step, shared by every parameter.
struct Coefficients(AdamWStep);

impl Coefficients {
    fn new(c: &AdamWConfig, step: u64) -> Self {
        let (b1, b2) = c.betas;
        let t = step.min(i32::MAX as u64) as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        Coefficients(AdamWStep {
            b1,
            b2,
            decay: 1.0 - c.lr * c.weight_decay,
            step_size: c.lr * bc2.sqrt() / bc1,
            eps: c.eps * bc2.sqrt(),
        })
    }

    /// The new (parameter, m, v), in one fused pass ([`Tensor::adamw_update`]; one kernel launch
    /// on CUDA). `m / (√v/√bc2 + eps) · lr/bc1` is computed as `m / (√v + eps·√bc2) · lr·√bc2/bc1`,
    /// the same number with fewer operations (Kingma & Ba's "more efficient" order).
    fn update(
        &self,
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        p.adamw_update(g, m, v, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::Var;
    use tensor::{DType, Device};

    /// A store of f64 parameters `a` [3] and `b` [2], with fixed values.
    fn store() -> ParamStore {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        ps.insert(
            "a",
            Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3]).unwrap(),
        )
        .unwrap();
        ps.insert("b", Tensor::from_vec(vec![1.0f64, -3.0], &[2]).unwrap())
            .unwrap();
        ps
    }

    /// Gradients of `sum(a²) + sum(b³)` (2a and 3b²) at the store's current values.
    fn grads(ps: &ParamStore) -> Grads {
        let a = ps.var("a").unwrap();
        let b = ps.var("b").unwrap();
        let loss = a
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&b.mul(&b.square().unwrap()).unwrap().sum_all().unwrap())
            .unwrap();
        loss.backward().unwrap()
    }

    fn values(ps: &ParamStore, name: &str) -> Vec<f64> {
        ps.tensor(name).unwrap().to_f64_vec().unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn two_steps_match_pytorch() {
        // Expected values computed once with PyTorch 2.15 (float64), torch.optim.AdamW on the same
        // parameters and losses, pasted here:
        //   a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
        //   b = torch.tensor([1.0, -3.0], dtype=torch.float64, requires_grad=True)
        //   opt = torch.optim.AdamW([a, b], lr=0.1, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.5)
        //   for _ in range(2): opt.zero_grad(); ((a**2).sum() + (b**3).sum()).backward(); opt.step()
        let mut ps = store();
        let mut opt = AdamW::new(AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.99),
            eps: 1e-3,
            weight_decay: 0.5,
        });
        for _ in 0..2 {
            let g = grads(&ps);
            opt.step(&mut ps, &g).unwrap();
        }
        assert_eq!(opt.steps(), 2);
        assert_close(&values(&ps, "a"), &TORCH_A, 1e-12);
        assert_close(&values(&ps, "b"), &TORCH_B, 1e-12);
    }

    const TORCH_A: [f64; 3] = [0.2581338506299852, -0.7083128328820194, 1.6104384186477705];
    const TORCH_B: [f64; 2] = [0.709601101447408, -2.9023985904837932];

    #[test]
    fn weight_decay_is_decoupled_from_the_gradient() {
        // Decoupled decay subtracts lr·wd·p and leaves the Adam update as it is: the run with
        // decay ends exactly lr·wd·p below the run without. (L2 regularisation would add wd·p to
        // the gradient instead, and Adam's normalisation would change the whole update.)
        let (lr, wd) = (0.1, 0.5);
        let mut after = Vec::new();
        for weight_decay in [0.0, wd] {
            let mut ps = store();
            let mut opt = AdamW::new(AdamWConfig {
                lr,
                weight_decay,
                ..Default::default()
            });
            let g = grads(&ps);
            opt.step(&mut ps, &g).unwrap();
            after.push([values(&ps, "a"), values(&ps, "b")].concat());
        }
        let before = [values(&store(), "a"), values(&store(), "b")].concat();
        let want: Vec<f64> = after[0]
            .iter()
            .zip(&before)
            .map(|(p_plain, p0)| p_plain - lr * wd * p0)
            .collect();
        assert_close(&after[1], &want, 1e-14);
    }

    #[test]
    fn a_parameter_group_steps_as_an_optimizer_of_its_own_settings() {
        // `b` in a group with 4x the learning rate and its own decay moves exactly as a plain
        // optimizer with those settings moves it; `a` as the base settings move it.
        let base = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let run = |config: AdamWConfig, groups: Vec<ParamGroup>| {
            let mut ps = store();
            let mut opt = AdamW::new(config);
            opt.groups = groups;
            for _ in 0..3 {
                let g = grads(&ps);
                opt.step(&mut ps, &g).unwrap();
            }
            (values(&ps, "a"), values(&ps, "b"))
        };
        let group = ParamGroup {
            params: "b".into(),
            lr_scale: 4.0,
            weight_decay: Some(0.0),
        };
        let (a, b) = run(base, vec![group.clone()]);
        assert_eq!(a, run(base, vec![]).0);
        // 4 · 0.1 is 0.4 exactly in binary, so the two runs may agree to the bit.
        let own = AdamWConfig {
            lr: 0.4,
            weight_decay: 0.0,
            ..base
        };
        assert_eq!(b, run(own, vec![]).1);
        assert_ne!(b, run(base, vec![]).1);
        let frozen = ParamGroup {
            lr_scale: 0.0,
            ..group
        };
        assert_eq!(run(base, vec![frozen]).1, values(&store(), "b"));
        for (bad, key) in [
            (r#"{"params": "b", "lr_scale": -1}"#, "g.lr_scale"),
            (r#"{"params": " "}"#, "g.params"),
            (r#"{"params": "b", "weight_decay": NaN}"#, ""),
        ] {
            match serde_json::from_str::<ParamGroup>(bad) {
                Ok(g) => assert!(g.validate("g").unwrap_err().to_string().contains(key)),
                Err(_) => assert!(key.is_empty(), "{bad}"),
            }
        }
    }

    #[test]
    fn frozen_parameters_get_no_state_and_no_update() {
        let mut ps = store();
        ps.set_trainable("b", false);
        let mut opt = AdamW::new(AdamWConfig::deme().with_lr(0.1));
        for _ in 0..3 {
            let g = grads(&ps);
            opt.step(&mut ps, &g).unwrap();
        }
        assert_eq!(values(&ps, "b"), vec![1.0, -3.0]);
        assert!(opt.moments("b").is_none());
        assert!(opt.moments("a").is_some());
        assert_ne!(values(&ps, "a"), vec![0.5, -1.0, 2.0]);
        // Still frozen after the steps.
        assert!(!ps.var("b").unwrap().requires_grad());
        assert!(ps.var("a").unwrap().requires_grad());
    }

    #[test]
    fn a_gradient_of_the_wrong_shape_is_an_error_and_changes_nothing() {
        let mut ps = store();
        let mut g = Grads::default();
        g.add(
            &ps.var("a").unwrap(),
            Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap(),
        )
        .unwrap();
        g.add(
            &ps.var("b").unwrap(),
            Tensor::from_vec(vec![1.0f64], &[1]).unwrap(),
        )
        .unwrap();
        let mut opt = AdamW::new(AdamWConfig::default());
        let err = opt.step(&mut ps, &g).unwrap_err().to_string();
        assert!(err.contains("`b`"), "{err}");
        assert_eq!(opt.steps(), 0);
        assert_eq!(values(&ps, "a"), vec![0.5, -1.0, 2.0]);
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("difftune-adamw-{}-{name}", std::process::id()))
    }

    #[test]
    fn save_load_continue_equals_an_uninterrupted_run() {
        let config = AdamWConfig::deme().with_lr(0.05);
        let mut straight = store();
        let mut opt = AdamW::new(config);
        for _ in 0..5 {
            let g = grads(&straight);
            opt.step(&mut straight, &g).unwrap();
        }

        let (params, state) = (temp("params.safetensors"), temp("state.safetensors"));
        let mut first = store();
        let mut opt = AdamW::new(config);
        for _ in 0..2 {
            let g = grads(&first);
            opt.step(&mut first, &g).unwrap();
        }
        first.save(&params, None).unwrap();
        opt.save(&state).unwrap();
        drop((first, opt));

        let mut resumed = store();
        resumed.load(&params, "", true).unwrap();
        let mut opt = AdamW::new(config);
        opt.load(&state, &resumed).unwrap();
        assert_eq!(opt.steps(), 2);
        for _ in 0..3 {
            let g = grads(&resumed);
            opt.step(&mut resumed, &g).unwrap();
        }
        for name in ["a", "b"] {
            assert_eq!(values(&resumed, name), values(&straight, name), "{name}");
        }
        std::fs::remove_file(params).unwrap();
        std::fs::remove_file(state).unwrap();
    }

    #[test]
    fn loading_state_for_other_parameters_is_an_error_naming_the_parameter() {
        let path = temp("other.safetensors");
        let mut ps = store();
        let mut opt = AdamW::new(AdamWConfig::default());
        let g = grads(&ps);
        opt.step(&mut ps, &g).unwrap();
        opt.save(&path).unwrap();

        // A model with an extra trainable parameter.
        let mut bigger = store();
        bigger.constant("c", &[2], 0.0).unwrap();
        let mut fresh = AdamW::new(AdamWConfig::default());
        let err = fresh.load(&path, &bigger).unwrap_err().to_string();
        assert!(err.contains("`c`"), "{err}");
        assert_eq!(fresh.steps(), 0);

        // A model where `b` is frozen: the state of `b` no longer belongs.
        let mut frozen = store();
        frozen.set_trainable("b", false);
        let err = fresh.load(&path, &frozen).unwrap_err().to_string();
        assert!(err.contains("`b`"), "{err}");

        // A model where `a` has another shape.
        let mut reshaped = ParamStore::new(DType::F64, Device::Cpu, 0);
        reshaped.constant("a", &[4], 0.0).unwrap();
        reshaped.constant("b", &[2], 0.0).unwrap();
        let err = fresh.load(&path, &reshaped).unwrap_err().to_string();
        assert!(err.contains("parameter `a`"), "{err}");

        fresh.load(&path, &store()).unwrap();
        assert_eq!(fresh.steps(), 1);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_state_file_that_lost_a_parameters_moments_is_refused() {
        let (path, cut) = (temp("whole.safetensors"), temp("cut.safetensors"));
        let mut ps = store();
        let mut opt = AdamW::new(AdamWConfig::default());
        let g = grads(&ps);
        opt.step(&mut ps, &g).unwrap();
        opt.save(&path).unwrap();
        // The same file without `b`'s two moments: its metadata still lists them.
        let file = SafeTensorsFile::open(&path).unwrap();
        let kept: Vec<(String, Tensor)> = file
            .names()
            .into_iter()
            .filter(|n| !n.ends_with(".b"))
            .map(|n| (n.to_string(), file.tensor(n).unwrap()))
            .collect();
        let refs: Vec<(&str, &Tensor)> = kept.iter().map(|(n, t)| (n.as_str(), t)).collect();
        safetensors::save(&cut, &refs, Some(file.metadata())).unwrap();
        let mut fresh = AdamW::new(AdamWConfig::default());
        let err = fresh.load(&cut, &ps).unwrap_err().to_string();
        assert!(
            err.contains("moments of `b`") && err.contains("missing"),
            "{err}"
        );
        assert_eq!(fresh.steps(), 0, "left unchanged");
        fresh.load(&path, &ps).unwrap();
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(cut).unwrap();
    }

    /// The step as 13 elementwise tensor ops (12 without weight decay): what
    /// [`Coefficients::update`] computed before the fused op, kept as its reference.
    fn composite_update(
        c: &AdamWStep,
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let m = m.mul_scalar(c.b1)?.add(&g.mul_scalar(1.0 - c.b1)?)?;
        let v = v
            .mul_scalar(c.b2)?
            .add(&g.mul(&g.mul_scalar(1.0 - c.b2)?)?)?;
        let update = m
            .div(&v.sqrt()?.add_scalar(c.eps)?)?
            .mul_scalar(c.step_size)?;
        let p = if c.decay == 1.0 {
            p.sub(&update)?
        } else {
            p.mul_scalar(c.decay)?.sub(&update)?
        };
        Ok((p, m, v))
    }

    #[test]
    fn the_fused_update_equals_the_composite_bit_for_bit() {
        // Odd sizes, one large enough for the parallel loop; five steps from zero moments, each
        // path carrying its own state, with fresh gradients each step.
        for dtype in [DType::F32, DType::F64] {
            for n in [1, 7, 1001, 40_003] {
                for weight_decay in [0.0, 0.01] {
                    let config = AdamWConfig::deme()
                        .with_lr(1e-2)
                        .with_weight_decay(weight_decay);
                    let mut rng = tensor::Generator::new(n as u64);
                    let mut randn =
                        |std| Tensor::randn(&[n], 0.0, std, dtype, Device::Cpu, &mut rng).unwrap();
                    let p0 = randn(1.0);
                    let start = p0.to_f64_vec().unwrap();
                    let zeros = p0.zeros_like().unwrap();
                    let mut fused = (p0.clone(), zeros.clone(), zeros.clone());
                    let mut composite = (p0, zeros.clone(), zeros);
                    for step in 1..=5 {
                        let g = randn(0.1);
                        let c = Coefficients::new(&config, step);
                        let (p, m, v) = &fused;
                        fused = c.update(p, &g, m, v).unwrap();
                        let (p, m, v) = &composite;
                        composite = composite_update(&c.0, p, &g, m, v).unwrap();
                        let what = format!("{dtype} n={n} wd={weight_decay} step {step}");
                        for (a, b) in [
                            (&fused.0, &composite.0),
                            (&fused.1, &composite.1),
                            (&fused.2, &composite.2),
                        ] {
                            assert_eq!(a.dtype(), dtype);
                            assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), "{what}");
                        }
                    }
                    assert_ne!(fused.0.to_f64_vec().unwrap(), start, "the parameter moved");
                }
            }
        }
    }

    #[test]
    fn minimises_a_quadratic() {
        let target = Tensor::from_vec(vec![1.0f64, -2.0, 0.5], &[3]).unwrap();
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        ps.constant("x", &[3], 0.0).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default().with_lr(0.05));
        for _ in 0..500 {
            let loss = ps
                .var("x")
                .unwrap()
                .sub(&Var::constant(target.clone()))
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&mut ps, &grads).unwrap();
        }
        let x = ps.tensor("x").unwrap();
        assert!(x.max_abs_diff(&target).unwrap() < 1e-3, "{x:?}");
    }
}
