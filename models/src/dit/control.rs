//! Control metadata (arXiv 2411.03177, "On Improved Conditioning Mechanisms and Pre-training
//! Strategies for Diffusion Models"): numbers about how a training image was made (the scale and
//! offsets of its crop, a flip), which the model is told so that it can learn them apart from the
//! image's content.
//!
//! Each kind k has its own embedder, under `control_embedder.{k}.mlp.{0,2}`: the value v becomes
//! the sinusoidal features of `1000 · v` ([`FEATURES`] wide, as a timestep's, so values in [0, 1]
//! span the frequencies a timestep in [0, 1000] does), then Linear, SiLU, Linear. The last Linear
//! starts at zero, so a checkpoint without control embedders loads into a model with them and
//! computes what it did. The control embedding added to the adaLN vector is
//!
//! ```text
//! m = Σ_k g_k(t) · keep · e_k(v_k)
//! ```
//!
//! with `keep` 0 for a sample whose control is dropped (the null control of guidance) and
//! `g_k(t) = 1` in the adaLN mode (the paper's baseline, where control leaks into semantics), or
//! the schedule `g_k(t) = γ_{α_k}(t)` ([`gamma`]) in the attention modes: a cosine from 1 at
//! t = 0 to 0 at t = T, so control shapes the last, low-noise steps (details) and not the first,
//! high-noise ones where the image's layout and class are decided.

use autograd::Var;
use tensor::{DType, Error, Result, Tensor};

use super::embed::{timestep_embedding_f32, xavier_linear, zero_linear};
use super::{Conditioning, DitConfig};
use crate::nn::Linear;
use crate::params::{join, ParamStore};

/// Width of the sinusoidal features of one control value.
pub const FEATURES: usize = 64;

/// Control values are embedded as timesteps `VALUE_SCALE · v`.
const VALUE_SCALE: f64 = 1000.0;

/// The schedule of a control kind in the attention modes,
/// `γ_α(t) = ((1 + cos(π t / T)) / 2)^α` for `t` in `[0, T]`: 1 at t = 0 (no noise), 0 at t = T
/// (pure noise), the plain half cosine at α = 1. A larger α switches control off earlier in the
/// noise (it acts only near the data); α = 0 keeps it on everywhere (no schedule).
///
/// ```
/// use models::dit::control::gamma;
/// assert_eq!(gamma(0.0, 1000, 1.0), 1.0);
/// assert!((gamma(500.0, 1000, 1.0) - 0.5).abs() < 1e-12);
/// assert!(gamma(1000.0, 1000, 1.0).abs() < 1e-12);
/// assert!(gamma(500.0, 1000, 2.0) < gamma(500.0, 1000, 1.0));
/// assert_eq!(gamma(700.0, 1000, 0.0), 1.0);
/// ```
pub fn gamma(t: f64, steps: usize, alpha: f64) -> f64 {
    let u = (t / steps as f64).clamp(0.0, 1.0);
    ((1.0 + (std::f64::consts::PI * u).cos()) / 2.0).powf(alpha)
}

/// The control metadata of a batch: `values` `[N, K]` (K kinds) and which samples keep theirs
/// (a dropped one gets no control embedding: the null control).
#[derive(Clone, Debug)]
pub struct Control {
    values: Tensor,
    keep: Vec<bool>,
}

impl Control {
    /// Control `values` `[N, K]` (any float dtype), each sample's kept where `keep` says.
    pub fn new(values: Tensor, keep: Vec<bool>) -> Result<Control> {
        if values.rank() != 2 || values.shape()[0] != keep.len() || values.dtype() == DType::I64 {
            return Err(Error::shape(
                "Control::new",
                format!(
                    "control values {:?} {}: expected floats [N, K] for {} samples",
                    values.shape(),
                    values.dtype(),
                    keep.len()
                ),
            ));
        }
        Ok(Control { values, keep })
    }

    /// The same `value` (K numbers) for each of `n` samples, all kept.
    pub fn repeat(value: &[f64], n: usize) -> Result<Control> {
        let values: Vec<f64> = (0..n).flat_map(|_| value.iter().copied()).collect();
        Control::new(Tensor::from_vec(values, &[n, value.len()])?, vec![true; n])
    }

    /// The values `[N, K]`.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// Which samples keep their control.
    pub fn keep(&self) -> &[bool] {
        &self.keep
    }

    /// The same values with every sample's control dropped or kept as `keep` says.
    pub fn with_keep(&self, keep: Vec<bool>) -> Result<Control> {
        Control::new(self.values.clone(), keep)
    }
}

/// The control embedders of a DiT with control metadata.
pub(super) struct ControlEmbedder {
    mlps: Vec<(Linear, Linear)>,
    /// α of each kind; `None` in the adaLN mode (no schedule).
    alpha: Option<Vec<f64>>,
    steps: usize,
}

impl ControlEmbedder {
    /// The embedders of `cfg`'s `control_dim` kinds (none when it is 0).
    pub(super) fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Option<ControlEmbedder>> {
        if cfg.control_dim == 0 {
            return Ok(None);
        }
        let d = cfg.hidden_size;
        let mlps = (0..cfg.control_dim)
            .map(|k| {
                let prefix = format!("control_embedder.{k}.mlp");
                Ok((
                    xavier_linear(ps, &join(&prefix, "0"), FEATURES, d)?,
                    zero_linear(ps, &join(&prefix, "2"), d, d)?,
                ))
            })
            .collect::<Result<_>>()?;
        let alpha = (cfg.conditioning != Conditioning::AdaLn).then(|| {
            (0..cfg.control_dim)
                .map(|k| cfg.control_alpha[k.min(cfg.control_alpha.len() - 1)])
                .collect()
        });
        Ok(Some(ControlEmbedder {
            mlps,
            alpha,
            steps: cfg.num_timesteps,
        }))
    }

    /// The control embedding `[N, D]` of `control` at timesteps `t` `[N]`.
    pub(super) fn forward(&self, ps: &ParamStore, control: &Control, t: &Tensor) -> Result<Var> {
        let kinds = self.mlps.len();
        let (n, k) = (control.keep.len(), control.values.shape()[1]);
        if k != kinds {
            return Err(Error::shape(
                "Dit::forward",
                format!(
                    "control is {:?}, expected [{n}, {kinds}] (one value per control kind)",
                    control.values.shape()
                ),
            ));
        }
        let values = control.values.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let times = t.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let mut sum: Option<Var> = None;
        for (kind, (fc1, fc2)) in self.mlps.iter().enumerate() {
            let column: Vec<f64> = (0..n).map(|i| values[i * k + kind] * VALUE_SCALE).collect();
            let features =
                timestep_embedding_f32(&Tensor::from_vec(column, &[n])?, FEATURES, 10000.0)?;
            let features = Var::constant(
                features
                    .to_device(ps.device())?
                    .to_dtype(ps.compute_dtype())?,
            );
            let e = fc2.forward(ps, &fc1.forward(ps, &features)?.silu()?)?;
            // Each sample's weight: dropped or kept, times the schedule.
            let weights: Vec<f64> = (0..n)
                .map(|i| match (control.keep[i], &self.alpha) {
                    (false, _) => 0.0,
                    (true, None) => 1.0,
                    (true, Some(alpha)) => gamma(times[i], self.steps, alpha[kind]),
                })
                .collect();
            let weights = Tensor::from_vec(weights, &[n, 1])?
                .to_dtype(ps.compute_dtype())?
                .to_device(ps.device())?;
            let term = e.mul(&Var::constant(weights))?;
            sum = Some(match sum {
                None => term,
                Some(s) => s.add(&term)?,
            });
        }
        Ok(sum.expect("a control embedder has a kind"))
    }
}
