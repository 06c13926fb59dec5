//! Gaussian diffusion as facebookresearch/DiT's `diffusion/` package: beta schedules
//! ([`schedule`]), timestep respacing ([`respace`], DiT's `SpacedDiffusion`), the forward process
//! ([`Diffusion::q_sample`]), per-sample training losses ([`losses`]: ε- or v-MSE and DiT's hybrid
//! MSE + variational bound for learned variances), timestep samplers ([`timesteps`]) and the
//! samplers ([`sampling`]: respaced DDPM ancestral, DDIM with η, classifier-free guidance).
//!
//! A [`Diffusion`] is always the spaced process, as `create_diffusion` makes it: its steps are
//! indices 0..K into the kept steps, and the model is fed the ORIGINAL step `timestep_map[k]`
//! ([`Diffusion::model_timesteps`], DiT's `_WrappedModel`). With no respacing K = T and the map is
//! the identity.
//!
//! ```
//! use train::diffusion::{create_diffusion, DiffusionConfig};
//! let d = create_diffusion("ddim50", &DiffusionConfig::default()).unwrap();
//! assert_eq!(d.num_timesteps(), 50);
//! assert_eq!(d.timestep_map[1], 20);
//! ```

pub mod losses;
pub mod respace;
pub mod sampling;
pub mod schedule;
pub mod timesteps;

pub use losses::LossTerms;
pub use respace::{space_timesteps, Respacing};
pub use sampling::{check_eta, classifier_free_guidance, PMeanVar};
pub use schedule::{BetaSchedule, Schedule};
pub use timesteps::TimestepSampler;

use tensor::{DType, Error, Result, Tensor};

/// What the model's (first C) output channels predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeanType {
    /// The noise ε (DiT's default).
    Epsilon,
    /// The clean sample x_0.
    StartX,
    /// The velocity v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho).
    Velocity,
}

/// The variance of p(x_{t−1} | x_t).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    /// β̃_t, the posterior variance (DiT's `sigma_small`).
    FixedSmall,
    /// β_t (with β̃_1 at t = 0).
    FixedLarge,
    /// Learned: the model outputs 2C channels; the last C, v ∈ [−1, 1], interpolate the log
    /// variance between ln β̃_t and ln β_t (DiT's `learn_sigma`).
    LearnedRange,
}

/// The arguments of DiT's `create_diffusion` apart from the respacing.
#[derive(Clone, Debug)]
pub struct DiffusionConfig {
    /// The beta schedule of the original process.
    pub schedule: BetaSchedule,
    /// Steps of the original process (DiT: 1000).
    pub steps: usize,
    /// What the model predicts.
    pub mean_type: MeanType,
    /// The reverse variance.
    pub var_type: VarType,
}

impl Default for DiffusionConfig {
    /// DiT's defaults: linear betas, 1000 steps, ε-prediction, learned sigma.
    fn default() -> Self {
        DiffusionConfig {
            schedule: BetaSchedule::Linear,
            steps: 1000,
            mean_type: MeanType::Epsilon,
            var_type: VarType::LearnedRange,
        }
    }
}

/// A (spaced) Gaussian diffusion process: DiT's `SpacedDiffusion`.
#[derive(Clone, Debug)]
pub struct Diffusion {
    /// The quantities of the respaced process, indexed by respaced step.
    pub schedule: Schedule,
    /// Respaced step k -> original step fed to the model.
    pub timestep_map: Vec<usize>,
    /// Steps of the original process.
    pub original_num_steps: usize,
    /// What the model predicts.
    pub mean_type: MeanType,
    /// The reverse variance.
    pub var_type: VarType,
}

/// DiT's `create_diffusion(respacing, ...)`: the original schedule of `config`, respaced by
/// `respacing` (`""` for none; see [`Respacing`]).
pub fn create_diffusion(respacing: &str, config: &DiffusionConfig) -> Result<Diffusion> {
    Diffusion::respaced(&respacing.parse()?, config)
}

impl Diffusion {
    /// The original schedule of `config`, respaced by `respacing`.
    pub fn respaced(respacing: &Respacing, config: &DiffusionConfig) -> Result<Diffusion> {
        let betas = config.schedule.betas(config.steps)?;
        let keep = respacing.timesteps(config.steps)?;
        Diffusion::spaced(betas, &keep, config.mean_type, config.var_type)
    }

    /// The process with the original `betas` that keeps only the steps `use_timesteps`.
    pub fn spaced(
        betas: Vec<f64>,
        use_timesteps: &[usize],
        mean_type: MeanType,
        var_type: VarType,
    ) -> Result<Diffusion> {
        let base = Schedule::from_betas(betas)?;
        let (new_betas, timestep_map) =
            respace::respaced_betas(&base.alphas_cumprod, use_timesteps)?;
        Ok(Diffusion {
            schedule: Schedule::from_betas(new_betas)?,
            timestep_map,
            original_num_steps: base.len(),
            mean_type,
            var_type,
        })
    }

    /// Number of (respaced) steps.
    pub fn num_timesteps(&self) -> usize {
        self.schedule.len()
    }

    /// The original steps (i64 `[N]`) for respaced steps `t` (i64 `[N]`): what the model is fed.
    pub fn model_timesteps(&self, t: &Tensor) -> Result<Tensor> {
        let idx = self.indices("model_timesteps", t)?;
        let mapped: Vec<i64> = idx.iter().map(|&k| self.timestep_map[k] as i64).collect();
        Tensor::from_vec(mapped, &[idx.len()])
    }

    /// The respaced steps of `t` (1-D, integer-valued) as indices, checked against the length.
    pub(crate) fn indices(&self, op: &'static str, t: &Tensor) -> Result<Vec<usize>> {
        if t.rank() != 1 {
            return Err(Error::shape(
                op,
                format!("timesteps must be 1-D [N], got {:?}", t.shape()),
            ));
        }
        t.to_f64_vec()?
            .into_iter()
            .map(|v| {
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < self.num_timesteps() {
                    Ok(v as usize)
                } else {
                    Err(Error::msg(format!(
                        "{op}: timestep {v} is not a step of a {}-step process",
                        self.num_timesteps()
                    )))
                }
            })
            .collect()
    }

    /// `values[t_n]` for each sample n, shaped `[N, 1, ..]` to broadcast against `like` (`[N, ..]`)
    /// and in its dtype (DiT's `_extract_into_tensor`: f64 tables, read in the model's precision).
    pub fn extract(&self, values: &[f64], t: &Tensor, like: &Tensor) -> Result<Tensor> {
        let idx = self.indices("extract", t)?;
        if like.shape().first() != Some(&idx.len()) {
            return Err(Error::shape(
                "extract",
                format!(
                    "{} timesteps for a batch of shape {:?}",
                    idx.len(),
                    like.shape()
                ),
            ));
        }
        let mut shape = vec![1; like.rank()];
        shape[0] = idx.len();
        let picked: Vec<f64> = idx.iter().map(|&k| values[k]).collect();
        Tensor::from_vec(picked, &shape)?
            .to_device(like.device())?
            .to_dtype(like.dtype())
    }

    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with a step per sample (`t`: i64 `[N]` respaced steps).
    pub fn q_sample(&self, x0: &Tensor, t: &Tensor, noise: &Tensor) -> Result<Tensor> {
        if x0.shape() != noise.shape() {
            return Err(Error::shape(
                "q_sample",
                format!("x0 {:?} and noise {:?} differ", x0.shape(), noise.shape()),
            ));
        }
        let s = &self.schedule;
        let a = self.extract(&s.sqrt_alphas_cumprod, t, x0)?;
        let b = self.extract(&s.sqrt_one_minus_alphas_cumprod, t, x0)?;
        x0.mul(&a)?.add(&noise.mul(&b)?)
    }

    /// The v-prediction target √ᾱ_t ε − √(1 − ᾱ_t) x_0.
    pub fn v_target(&self, x0: &Tensor, t: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let s = &self.schedule;
        let a = self.extract(&s.sqrt_alphas_cumprod, t, x0)?;
        let b = self.extract(&s.sqrt_one_minus_alphas_cumprod, t, x0)?;
        noise.mul(&a)?.sub(&x0.mul(&b)?)
    }

    /// Mean and variance of q(x_{t−1} | x_t, x_0): (mean, variance, clipped log variance).
    pub fn q_posterior(
        &self,
        x0: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let s = &self.schedule;
        let mean = self
            .extract(&s.posterior_mean_coef1, t, x_t)?
            .mul(x0)?
            .add(&self.extract(&s.posterior_mean_coef2, t, x_t)?.mul(x_t)?)?;
        Ok((
            mean,
            self.extract(&s.posterior_variance, t, x_t)?,
            self.extract(&s.posterior_log_variance_clipped, t, x_t)?,
        ))
    }

    /// x_0 from the model's mean output (ε, x_0 or v) at x_t.
    pub fn predict_xstart(&self, x_t: &Tensor, t: &Tensor, out: &Tensor) -> Result<Tensor> {
        let s = &self.schedule;
        match self.mean_type {
            MeanType::Epsilon => self
                .extract(&s.sqrt_recip_alphas_cumprod, t, x_t)?
                .mul(x_t)?
                .sub(
                    &self
                        .extract(&s.sqrt_recipm1_alphas_cumprod, t, x_t)?
                        .mul(out)?,
                ),
            MeanType::StartX => Ok(out.clone()),
            MeanType::Velocity => self.extract(&s.sqrt_alphas_cumprod, t, x_t)?.mul(x_t)?.sub(
                &self
                    .extract(&s.sqrt_one_minus_alphas_cumprod, t, x_t)?
                    .mul(out)?,
            ),
        }
    }

    /// ε implied by a prediction of x_0 at x_t.
    pub fn predict_eps(&self, x_t: &Tensor, t: &Tensor, pred_xstart: &Tensor) -> Result<Tensor> {
        let s = &self.schedule;
        self.extract(&s.sqrt_recip_alphas_cumprod, t, x_t)?
            .mul(x_t)?
            .sub(pred_xstart)?
            .div(&self.extract(&s.sqrt_recipm1_alphas_cumprod, t, x_t)?)
    }

    /// A batch of respaced steps as the i64 `[N]` tensor the other methods take.
    pub fn timesteps(t: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(t.iter().map(|&v| v as i64).collect::<Vec<_>>(), &[t.len()])
    }
}

/// Checks that a model output for `x` `[N, C, ..]` has C channels, or 2C (mean, variance values)
/// when the variance is learned.
pub(crate) fn split_channels(
    op: &'static str,
    out_shape: &[usize],
    x_shape: &[usize],
    learned: bool,
) -> Result<()> {
    let want_c = x_shape.get(1).copied().unwrap_or(0) * if learned { 2 } else { 1 };
    let ok = out_shape.len() == x_shape.len()
        && out_shape.first() == x_shape.first()
        && out_shape.get(1) == Some(&want_c)
        && out_shape[2.min(out_shape.len())..] == x_shape[2.min(x_shape.len())..];
    if ok {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "model output {out_shape:?} for x {x_shape:?}: expected {want_c} channels{}",
                if learned {
                    " (the mean and the variance values)"
                } else {
                    ""
                }
            ),
        ))
    }
}

/// Float dtypes only: the samplers and losses compute in the model's precision.
pub(crate) fn check_float(op: &'static str, x: &Tensor) -> Result<()> {
    match x.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::dtype(op, other, "f32 or f64")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{Device, Generator};

    #[test]
    fn q_sample_gathers_per_sample_and_has_the_right_statistics() {
        let d = create_diffusion("", &DiffusionConfig::default()).unwrap();
        let mut gen = Generator::new(3);
        let (n, dim) = (2, 20000);
        let x0 = Tensor::full(&[n, dim, 1, 1], 0.7, DType::F64, Device::Cpu).unwrap();
        let noise =
            Tensor::randn(&[n, dim, 1, 1], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let t = Diffusion::timesteps(&[10, 900]).unwrap();
        let xt = d.q_sample(&x0, &t, &noise).unwrap().to_f64_vec().unwrap();
        for (i, &step) in [10usize, 900].iter().enumerate() {
            let row = &xt[i * dim..(i + 1) * dim];
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            let ab = d.schedule.alphas_cumprod[step];
            // Mean within 4 standard errors; variance within 4% (n = 20000).
            let se = ((1.0 - ab) / dim as f64).sqrt();
            assert!(
                (mean - 0.7 * ab.sqrt()).abs() < 4.0 * se,
                "t {step}: mean {mean}"
            );
            assert!((var / (1.0 - ab) - 1.0).abs() < 0.04, "t {step}: var {var}");
        }
        // Exact per sample: the first element of sample 1 uses step 900's coefficients.
        let e = noise.to_f64_vec().unwrap()[dim];
        let want = 0.7 * d.schedule.sqrt_alphas_cumprod[900]
            + e * d.schedule.sqrt_one_minus_alphas_cumprod[900];
        assert!((xt[dim] - want).abs() < 1e-15);
        assert!(d
            .q_sample(&x0, &Diffusion::timesteps(&[0, 1000]).unwrap(), &noise)
            .is_err());
    }

    #[test]
    fn the_model_sees_original_timesteps() {
        let d = create_diffusion("250", &DiffusionConfig::default()).unwrap();
        let t = Diffusion::timesteps(&[0, 1, 249]).unwrap();
        assert_eq!(
            d.model_timesteps(&t).unwrap().to_vec::<i64>().unwrap(),
            vec![0, 4, 999]
        );
    }

    #[test]
    fn predictions_invert_each_other() {
        let mut gen = Generator::new(1);
        for mean_type in [MeanType::Epsilon, MeanType::Velocity] {
            let cfg = DiffusionConfig {
                mean_type,
                ..Default::default()
            };
            let d = create_diffusion("", &cfg).unwrap();
            let x0 =
                Tensor::randn(&[3, 2, 2, 2], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
            let eps =
                Tensor::randn(&[3, 2, 2, 2], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
            let t = Diffusion::timesteps(&[1, 400, 999]).unwrap();
            let xt = d.q_sample(&x0, &t, &eps).unwrap();
            let out = match mean_type {
                MeanType::Epsilon => eps.clone(),
                _ => d.v_target(&x0, &t, &eps).unwrap(),
            };
            let x0_hat = d.predict_xstart(&xt, &t, &out).unwrap();
            assert!(x0_hat.max_abs_diff(&x0).unwrap() < 1e-9, "{mean_type:?}");
            let eps_hat = d.predict_eps(&xt, &t, &x0_hat).unwrap();
            assert!(eps_hat.max_abs_diff(&eps).unwrap() < 1e-9, "{mean_type:?}");
        }
    }
}
