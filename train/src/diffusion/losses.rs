//! Per-sample training losses over autograd [`Var`]s, as DiT's `training_losses` with loss type
//! MSE: the MSE of the mean output against its target (ε, x_0 or v), plus, when the variance is
//! learned, the variational-bound term with the model's mean detached (the "hybrid" loss of
//! Nichol & Dhariwal). Every loss is a `[N]` vector: a method weights and reduces it.

use std::f64::consts::LN_2;

use autograd::Var;
use tensor::{CmpOp, DType, Error, Result, Tensor};

use super::{check_float, split_channels, Diffusion, MeanType, VarType};

/// The per-sample terms of a training loss, each `[N]`.
pub struct LossTerms {
    /// `mse + vb` (or `mse` when the variance is fixed).
    pub loss: Var,
    /// Mean over non-batch dims of (target − mean output)².
    pub mse: Var,
    /// The variational-bound term in bits per dim, present when the variance is learned; only the
    /// variance values receive its gradient.
    pub vb: Option<Var>,
}

/// The mean over every dim but the first: `[N, ..]` -> `[N]`.
pub fn mean_flat(x: &Var) -> Result<Var> {
    let dims: Vec<usize> = (1..x.shape().len()).collect();
    if dims.is_empty() {
        return Ok(x.clone());
    }
    x.mean(&dims, false)
}

/// Per-sample mean squared error `[N]` of `pred` against a constant `target` of its shape.
pub fn mse_per_sample(pred: &Var, target: &Tensor) -> Result<Var> {
    if pred.shape() != target.shape() {
        return Err(Error::shape(
            "mse_per_sample",
            format!(
                "prediction {:?} and target {:?} differ",
                pred.shape(),
                target.shape()
            ),
        ));
    }
    mean_flat(&pred.sub(&Var::constant(target.clone()))?.square()?)
}

/// KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats (broadcasting).
pub fn normal_kl(mean1: &Var, logvar1: &Var, mean2: &Var, logvar2: &Var) -> Result<Var> {
    let mean_term = mean1.sub(mean2)?.square()?.mul(&logvar2.neg()?.exp()?)?;
    logvar2
        .sub(logvar1)?
        .add_scalar(-1.0)?
        .add(&logvar1.sub(logvar2)?.exp()?)?
        .add(&mean_term)?
        .mul_scalar(0.5)
}

/// Φ(x) by the tanh approximation the reference uses:
/// 0.5 (1 + tanh(√(2/π) (x + 0.044715 x³))).
pub fn approx_standard_normal_cdf(x: &Var) -> Result<Var> {
    let cube = x.square()?.mul(x)?;
    x.add(&cube.mul_scalar(0.044715)?)?
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt())?
        .tanh()?
        .add_scalar(1.0)?
        .mul_scalar(0.5)
}

/// ln p(x) elementwise for a Gaussian discretised to the 256 bins of an image rescaled to
/// [−1, 1] (bin half-width 1/255; the edge bins extend to ±∞), with the given means and log
/// standard deviations. `x` is a constant (its value picks the edge bins).
pub fn discretized_gaussian_log_likelihood(
    x: &Tensor,
    means: &Var,
    log_scales: &Var,
) -> Result<Var> {
    if x.shape() != means.shape() || x.shape() != log_scales.shape() {
        return Err(Error::shape(
            "discretized_gaussian_log_likelihood",
            format!(
                "x {:?}, means {:?} and log scales {:?} must share one shape",
                x.shape(),
                means.shape(),
                log_scales.shape()
            ),
        ));
    }
    let centered = Var::constant(x.clone()).sub(means)?;
    let inv_stdv = log_scales.neg()?.exp()?;
    let cdf_plus = approx_standard_normal_cdf(&inv_stdv.mul(&centered.add_scalar(1.0 / 255.0)?)?)?;
    let cdf_min = approx_standard_normal_cdf(&inv_stdv.mul(&centered.add_scalar(-1.0 / 255.0)?)?)?;
    // Clamped at 1e-12 before the log, as the reference: an empty bin costs ~27.6 nats, not ∞.
    let log_cdf_plus = cdf_plus.clamp(1e-12, f64::INFINITY)?.log()?;
    let log_one_minus_cdf_min = cdf_min
        .neg()?
        .add_scalar(1.0)?
        .clamp(1e-12, f64::INFINITY)?
        .log()?;
    let log_cdf_delta = cdf_plus.sub(&cdf_min)?.clamp(1e-12, f64::INFINITY)?.log()?;
    let bound = |v: f64| Tensor::full(&[], v, x.dtype(), x.device());
    let low = x.cmp(CmpOp::Lt, &bound(-0.999)?)?;
    let high = x.cmp(CmpOp::Gt, &bound(0.999)?)?;
    let inner = Var::where_cond(&high, &log_one_minus_cdf_min, &log_cdf_delta)?;
    Var::where_cond(&low, &log_cdf_plus, &inner)
}

impl Diffusion {
    /// The log variance of p(x_{t−1} | x_t) for learned variance values `v` ∈ [−1, 1]:
    /// frac · ln β_t + (1 − frac) · ln β̃_t with frac = (v + 1) / 2.
    pub fn learned_log_variance(&self, v: &Var, t: &Tensor) -> Result<Var> {
        let s = &self.schedule;
        let max_log = Var::constant(self.extract(&s.log_betas, t, v.value())?);
        let min_log =
            Var::constant(self.extract(&s.posterior_log_variance_clipped, t, v.value())?);
        let frac = v.add_scalar(1.0)?.mul_scalar(0.5)?;
        frac.mul(&max_log)?
            .add(&frac.neg()?.add_scalar(1.0)?.mul(&min_log)?)
    }

    /// DiT's `_vb_terms_bpd` with an unclipped x_0: per sample `[N]`, in bits per dim, the KL
    /// between the true posterior q(x_{t−1} | x_t, x_0) and the model's p(x_{t−1} | x_t), or at
    /// t = 0 the decoder NLL −ln p(x_0 | x_1) under the discretised Gaussian. `mean_out` is the
    /// model's mean output (ε, x_0 or v), `log_variance` the model's log variance.
    pub fn vb_terms_bpd(
        &self,
        mean_out: &Var,
        log_variance: &Var,
        x0: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Var> {
        let (true_mean, _, true_log_var) = self.q_posterior(x0, x_t, t)?;
        // The model's mean is a function of its mean output; with a detached output (the hybrid
        // loss) it is a constant, so only the variance learns from this term.
        let pred_xstart = self.predict_xstart_var(x_t, t, mean_out)?;
        let s = &self.schedule;
        let c1 = Var::constant(self.extract(&s.posterior_mean_coef1, t, x_t)?);
        let c2x = Var::constant(self.extract(&s.posterior_mean_coef2, t, x_t)?.mul(x_t)?);
        let model_mean = c1.mul(&pred_xstart)?.add(&c2x)?;
        let kl = normal_kl(
            &Var::constant(true_mean),
            &Var::constant(true_log_var),
            &model_mean,
            log_variance,
        )?;
        let kl = mean_flat(&kl)?.mul_scalar(1.0 / LN_2)?;
        let nll =
            discretized_gaussian_log_likelihood(x0, &model_mean, &log_variance.mul_scalar(0.5)?)?
                .neg()?;
        let nll = mean_flat(&nll)?.mul_scalar(1.0 / LN_2)?;
        // Timesteps come from the host; the mask goes where the terms are.
        let zero = Tensor::zeros(&[], DType::I64, t.device())?;
        let first = t
            .to_dtype(DType::I64)?
            .cmp(CmpOp::Eq, &zero)?
            .to_device(x0.device())?;
        Var::where_cond(&first, &nll, &kl)
    }

    /// [`Diffusion::predict_xstart`] over a Var mean output.
    fn predict_xstart_var(&self, x_t: &Tensor, t: &Tensor, out: &Var) -> Result<Var> {
        let s = &self.schedule;
        let (a, b) = match self.mean_type {
            MeanType::Epsilon => (&s.sqrt_recip_alphas_cumprod, &s.sqrt_recipm1_alphas_cumprod),
            MeanType::Velocity => (&s.sqrt_alphas_cumprod, &s.sqrt_one_minus_alphas_cumprod),
            MeanType::StartX => return Ok(out.clone()),
        };
        let ax = Var::constant(self.extract(a, t, x_t)?.mul(x_t)?);
        ax.sub(&Var::constant(self.extract(b, t, x_t)?).mul(out)?)
    }

    /// The target of the mean output: ε, x_0 or v.
    pub fn mean_target(&self, x0: &Tensor, t: &Tensor, noise: &Tensor) -> Result<Tensor> {
        match self.mean_type {
            MeanType::Epsilon => Ok(noise.clone()),
            MeanType::StartX => Ok(x0.clone()),
            MeanType::Velocity => self.v_target(x0, t, noise),
        }
    }

    /// DiT's `training_losses` (loss type MSE) given the model's output at `x_t` =
    /// [`q_sample`](Diffusion::q_sample)`(x0, t, noise)`: per-sample MSE of the mean output, plus
    /// for a learned variance the VB term on `[detached mean output, variance values]`.
    pub fn training_losses(
        &self,
        model_output: &Var,
        x0: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
        noise: &Tensor,
    ) -> Result<LossTerms> {
        check_float("training_losses", x0)?;
        let learned = self.var_type == VarType::LearnedRange;
        split_channels(
            "training_losses",
            model_output.shape(),
            x_t.shape(),
            learned,
        )?;
        let c = x_t.shape()[1];
        let mean_out = model_output.narrow(1, 0, c)?;
        let target = self.mean_target(x0, t, noise)?;
        let mse = mse_per_sample(&mean_out, &target)?;
        if !learned {
            return Ok(LossTerms {
                loss: mse.clone(),
                mse,
                vb: None,
            });
        }
        let v = model_output.narrow(1, c, c)?;
        let log_var = self.learned_log_variance(&v, t)?;
        let vb = self.vb_terms_bpd(&mean_out.detach(), &log_var, x0, x_t, t)?;
        Ok(LossTerms {
            loss: mse.add(&vb)?,
            mse,
            vb: Some(vb),
        })
    }

    /// [`q_sample`](Diffusion::q_sample), the model on (x_t, original t), and
    /// [`training_losses`](Diffusion::training_losses): one training step's losses. `model` gets
    /// x_t as a constant Var and the original (not respaced) steps, i64 `[N]`.
    pub fn training_losses_with(
        &self,
        model: impl FnOnce(&Var, &Tensor) -> Result<Var>,
        x0: &Tensor,
        t: &Tensor,
        noise: &Tensor,
    ) -> Result<LossTerms> {
        let x_t = self.q_sample(x0, t, noise)?;
        let out = model(&Var::constant(x_t.clone()), &self.model_timesteps(t)?)?;
        self.training_losses(&out, x0, &x_t, t, noise)
    }
}

#[cfg(test)]
mod tests {
    use autograd::check::{gradcheck, CheckOptions};
    use tensor::{Device, Generator};

    use super::*;
    use crate::diffusion::{create_diffusion, DiffusionConfig};

    fn randn(shape: &[usize], gen: &mut Generator) -> Tensor {
        Tensor::randn(shape, 0.0, 1.0, DType::F64, Device::Cpu, gen).unwrap()
    }

    /// The hybrid loss of one sample written out in scalars (DiT's formulas, nothing shared with
    /// the Var implementation but the schedule).
    fn scalar_hybrid(d: &Diffusion, x0: &[f64], eps: &[f64], out: &[f64], t: usize) -> f64 {
        let s = &d.schedule;
        let c = x0.len();
        let (eps_hat, v) = out.split_at(c);
        let phi = |x: f64| {
            0.5 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        let (mut mse, mut kl, mut nll) = (0.0, 0.0, 0.0);
        for i in 0..c {
            let xt = s.sqrt_alphas_cumprod[t] * x0[i] + s.sqrt_one_minus_alphas_cumprod[t] * eps[i];
            mse += (eps[i] - eps_hat[i]).powi(2) / c as f64;
            let x0_hat =
                s.sqrt_recip_alphas_cumprod[t] * xt - s.sqrt_recipm1_alphas_cumprod[t] * eps_hat[i];
            let mean = s.posterior_mean_coef1[t] * x0_hat + s.posterior_mean_coef2[t] * xt;
            let true_mean = s.posterior_mean_coef1[t] * x0[i] + s.posterior_mean_coef2[t] * xt;
            let frac = (v[i] + 1.0) / 2.0;
            let lv = frac * s.betas[t].ln() + (1.0 - frac) * s.posterior_log_variance_clipped[t];
            let tlv = s.posterior_log_variance_clipped[t];
            kl += 0.5
                * (-1.0 + lv - tlv + (tlv - lv).exp() + (true_mean - mean).powi(2) * (-lv).exp())
                / c as f64;
            let inv = (-0.5 * lv).exp();
            let (hi, lo) = (
                phi(inv * (x0[i] - mean + 1.0 / 255.0)),
                phi(inv * (x0[i] - mean - 1.0 / 255.0)),
            );
            let logp = if x0[i] < -0.999 {
                hi.max(1e-12).ln()
            } else if x0[i] > 0.999 {
                (1.0 - lo).max(1e-12).ln()
            } else {
                (hi - lo).max(1e-12).ln()
            };
            nll -= logp / c as f64;
        }
        let vb = if t == 0 { nll } else { kl };
        mse + vb / LN_2
    }

    #[test]
    fn hybrid_loss_matches_a_scalar_computation() {
        let d = create_diffusion("", &DiffusionConfig::default()).unwrap();
        let mut gen = Generator::new(7);
        // Pixels at both edges and inside, so every branch of the decoder likelihood is used.
        let x0 = Tensor::from_vec(
            vec![-1.0, 1.0, 0.3, -0.2, 1.0, -1.0, 0.0, 0.5],
            &[2, 1, 2, 2],
        )
        .unwrap();
        let noise = randn(&[2, 1, 2, 2], &mut gen);
        let out =
            Tensor::rand(&[2, 2, 2, 2], -1.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        for steps in [[0usize, 500], [0, 0], [1, 999]] {
            let t = Diffusion::timesteps(&steps).unwrap();
            let x_t = d.q_sample(&x0, &t, &noise).unwrap();
            let terms = d
                .training_losses(&Var::param(out.clone()), &x0, &x_t, &t, &noise)
                .unwrap();
            let got = terms.loss.value().to_vec::<f64>().unwrap();
            let (x0v, nv, ov) = (
                x0.to_f64_vec().unwrap(),
                noise.to_f64_vec().unwrap(),
                out.to_f64_vec().unwrap(),
            );
            for n in 0..2 {
                let want = scalar_hybrid(
                    &d,
                    &x0v[4 * n..4 * n + 4],
                    &nv[4 * n..4 * n + 4],
                    &ov[8 * n..8 * n + 8],
                    steps[n],
                );
                assert!(
                    (got[n] - want).abs() < 1e-10 * want.abs().max(1.0),
                    "t {}: {} vs {want}",
                    steps[n],
                    got[n]
                );
            }
        }
    }

    #[test]
    fn the_vb_term_trains_only_the_variance() {
        let d = create_diffusion("", &DiffusionConfig::default()).unwrap();
        let mut gen = Generator::new(2);
        let x0 = Tensor::rand(&[3, 2, 2, 2], -1.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let noise = randn(&[3, 2, 2, 2], &mut gen);
        let out = Var::param(randn(&[3, 4, 2, 2], &mut gen).mul_scalar(0.3).unwrap());
        let t = Diffusion::timesteps(&[0, 10, 700]).unwrap();
        let x_t = d.q_sample(&x0, &t, &noise).unwrap();
        let terms = d.training_losses(&out, &x0, &x_t, &t, &noise).unwrap();
        let g = terms.vb.unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(&out).unwrap();
        let abs_sum = |x: Tensor| x.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(abs_sum(g.narrow(1, 0, 2).unwrap()), 0.0);
        assert!(abs_sum(g.narrow(1, 2, 2).unwrap()) > 0.0);
        // ... and the MSE only the mean.
        let g = terms.mse.sum_all().unwrap().backward().unwrap();
        let g = g.get(&out).unwrap();
        assert!(abs_sum(g.narrow(1, 0, 2).unwrap()) > 0.0);
        assert_eq!(abs_sum(g.narrow(1, 2, 2).unwrap()), 0.0);
    }

    #[test]
    fn the_true_posterior_has_zero_kl() {
        let d = create_diffusion("250", &DiffusionConfig::default()).unwrap();
        let mut gen = Generator::new(4);
        let x0 = Tensor::rand(&[3, 2, 2, 2], -1.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let noise = randn(&[3, 2, 2, 2], &mut gen);
        let t = Diffusion::timesteps(&[1, 100, 249]).unwrap();
        let x_t = d.q_sample(&x0, &t, &noise).unwrap();
        // ε̂ = ε gives the true mean; v = −1 gives frac 0, the posterior variance.
        let v = Tensor::full(&[3, 2, 2, 2], -1.0, DType::F64, Device::Cpu).unwrap();
        let out = Var::param(Tensor::cat(&[&noise, &v], 1).unwrap());
        let terms = d.training_losses(&out, &x0, &x_t, &t, &noise).unwrap();
        let vb = terms.vb.unwrap().value().to_vec::<f64>().unwrap();
        assert!(vb.iter().all(|k| k.abs() < 1e-12), "{vb:?}");
        assert!(terms
            .mse
            .value()
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .all(|&m| m == 0.0));
        // Any other variance (here β_t, v = 1) costs a positive KL.
        let out = Var::param(Tensor::cat(&[&noise, &v.neg().unwrap()], 1).unwrap());
        let vb = d
            .training_losses(&out, &x0, &x_t, &t, &noise)
            .unwrap()
            .vb
            .unwrap();
        assert!(vb.value().to_vec::<f64>().unwrap().iter().all(|&k| k > 0.0));
    }

    #[test]
    fn vb_term_gradients_match_finite_differences() {
        let d = create_diffusion("", &DiffusionConfig::default()).unwrap();
        let mut gen = Generator::new(9);
        let x0 = Tensor::from_vec(
            vec![-1.0, 1.0, 0.3, -0.2, 0.9, -0.6, 0.0, 0.5],
            &[2, 1, 2, 2],
        )
        .unwrap();
        let noise = randn(&[2, 1, 2, 2], &mut gen);
        for steps in [[0usize, 3], [0, 800]] {
            let t = Diffusion::timesteps(&steps).unwrap();
            let x_t = d.q_sample(&x0, &t, &noise).unwrap();
            let eps_hat = randn(&[2, 1, 2, 2], &mut gen)
                .mul_scalar(0.1)
                .unwrap()
                .add(&noise)
                .unwrap();
            let v =
                Tensor::rand(&[2, 1, 2, 2], -0.9, 0.9, DType::F64, Device::Cpu, &mut gen).unwrap();
            // Through the mean (not detached here) and the variance.
            let report = gradcheck(
                |p| {
                    let lv = d.learned_log_variance(&p[1], &t)?;
                    d.vb_terms_bpd(&p[0], &lv, &x0, &x_t, &t)
                },
                &[eps_hat, v],
                &CheckOptions::default(),
            )
            .unwrap();
            assert!(report.passed(), "t {steps:?}: {report:?}");
        }
    }

    #[test]
    fn v_prediction_and_fixed_variance_losses() {
        let cfg = DiffusionConfig {
            mean_type: MeanType::Velocity,
            var_type: VarType::FixedSmall,
            ..Default::default()
        };
        let d = create_diffusion("", &cfg).unwrap();
        let mut gen = Generator::new(1);
        let x0 = randn(&[2, 3, 2, 2], &mut gen);
        let noise = randn(&[2, 3, 2, 2], &mut gen);
        let t = Diffusion::timesteps(&[5, 600]).unwrap();
        let v = d.v_target(&x0, &t, &noise).unwrap();
        let terms = d
            .training_losses_with(|_, _| Ok(Var::param(v.clone())), &x0, &t, &noise)
            .unwrap();
        assert!(terms.vb.is_none());
        assert_eq!(terms.loss.value().to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
        // A 2C output is refused when the variance is fixed.
        let wide = Var::param(randn(&[2, 6, 2, 2], &mut gen));
        let x_t = d.q_sample(&x0, &t, &noise).unwrap();
        assert!(d.training_losses(&wide, &x0, &x_t, &t, &noise).is_err());
        // Per-sample: sample 1's loss is the mean of its own squared errors.
        let off = Var::param(v.add_scalar(1.0).unwrap());
        let terms = d.training_losses(&off, &x0, &x_t, &t, &noise).unwrap();
        assert_eq!(terms.loss.shape(), &[2]);
        let got = terms.loss.value().to_vec::<f64>().unwrap();
        assert!(got.iter().all(|&l| (l - 1.0).abs() < 1e-12), "{got:?}");
    }
}
