//! Samplers over any respacing: DDPM ancestral sampling with a fixed or learned variance
//! (DiT's `p_sample_loop`) and DDIM with η (`ddim_sample_loop`), plus classifier-free guidance as
//! a wrapper of the model closure.
//!
//! The model is a closure `Fn(&Tensor x_t, &Tensor t) -> Result<Tensor>` returning its output
//! (C channels, or 2C with a learned variance); `t` holds the ORIGINAL steps (i64 `[N]`), mapped
//! from the respaced ones as DiT's `_WrappedModel` does. Calls run under [`autograd::no_grad`],
//! so a closure over Var-based models records nothing. All randomness comes from one
//! [`Generator`]: the same seed and the same x_T give the same samples.

use autograd::no_grad;
use tensor::{CmpOp, Error, Generator, Result, Tensor};

use super::{check_float, split_channels, Diffusion, VarType};

/// The model's reverse step p(x_{t−1} | x_t): DiT's `p_mean_variance` output.
pub struct PMeanVar {
    /// The mean of x_{t−1}.
    pub mean: Tensor,
    /// Its variance (broadcastable to x).
    pub variance: Tensor,
    /// Its log variance (broadcastable to x).
    pub log_variance: Tensor,
    /// The predicted x_0 (clipped to [−1, 1] when asked).
    pub pred_xstart: Tensor,
}

impl Diffusion {
    /// Runs `model` on x and the original steps of the respaced steps `t`, without recording.
    fn call_model<M>(&self, model: &M, x: &Tensor, t: &Tensor) -> Result<Tensor>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        let original = self.model_timesteps(t)?;
        let out = no_grad(|| model(x, &original))?;
        if !out.all_finite()? {
            let mut steps = original.to_vec::<i64>()?;
            steps.dedup();
            return Err(Error::msg(format!(
                "sampling: the model's output at timestep {} is not finite (NaN or inf)",
                list(&steps)
            )));
        }
        split_channels(
            "sampling",
            out.shape(),
            x.shape(),
            self.var_type == VarType::LearnedRange,
        )?;
        out.to_dtype(x.dtype())
    }

    /// The model's p(x_{t−1} | x_t) at respaced steps `t` (i64 `[N]`); `clip_denoised` clamps
    /// the predicted x_0 to [−1, 1] before the mean is formed.
    pub fn p_mean_variance<M>(
        &self,
        model: &M,
        x: &Tensor,
        t: &Tensor,
        clip_denoised: bool,
    ) -> Result<PMeanVar>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        check_float("p_mean_variance", x)?;
        let out = self.call_model(model, x, t)?;
        let c = x.shape()[1];
        let s = &self.schedule;
        let (mean_out, variance, log_variance) = match self.var_type {
            VarType::LearnedRange => {
                let v = out.narrow(1, c, c)?;
                let max_log = self.extract(&s.log_betas, t, x)?;
                let min_log = self.extract(&s.posterior_log_variance_clipped, t, x)?;
                let frac = v.add_scalar(1.0)?.mul_scalar(0.5)?;
                let log_var = frac
                    .mul(&max_log)?
                    .add(&frac.neg()?.add_scalar(1.0)?.mul(&min_log)?)?;
                (out.narrow(1, 0, c)?, log_var.exp()?, log_var)
            }
            VarType::FixedSmall => (
                out,
                self.extract(&s.posterior_variance, t, x)?,
                self.extract(&s.posterior_log_variance_clipped, t, x)?,
            ),
            VarType::FixedLarge => {
                // β_t, except β̃_1 at t = 0 for a better decoder likelihood (as the reference).
                let large: Vec<f64> = (0..self.num_timesteps())
                    .map(|k| match (k, s.posterior_variance.get(1)) {
                        (0, Some(&v)) => v,
                        _ => s.betas[k],
                    })
                    .collect();
                let log_large: Vec<f64> = large.iter().map(|v| v.ln()).collect();
                (
                    out,
                    self.extract(&large, t, x)?,
                    self.extract(&log_large, t, x)?,
                )
            }
        };
        let mut pred_xstart = self.predict_xstart(x, t, &mean_out)?;
        if clip_denoised {
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)?;
        }
        let (mean, _, _) = self.q_posterior(&pred_xstart, x, t)?;
        Ok(PMeanVar {
            mean,
            variance,
            log_variance,
            pred_xstart,
        })
    }

    /// One ancestral step x_t -> x_{t−1}: mean + σ z, with no noise where t = 0.
    pub fn p_sample<M>(
        &self,
        model: &M,
        x: &Tensor,
        t: &Tensor,
        clip_denoised: bool,
        gen: &mut Generator,
    ) -> Result<Tensor>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        let out = self.p_mean_variance(model, x, t, clip_denoised)?;
        let noise = Tensor::randn(x.shape(), 0.0, 1.0, x.dtype(), x.device(), gen)?;
        let sigma = out
            .log_variance
            .mul_scalar(0.5)?
            .exp()?
            .mul(&nonzero_mask(t, x)?)?;
        out.mean.add(&sigma.mul(&noise)?)
    }

    /// Ancestral sampling from `x_T` over every (respaced) step, last to first.
    pub fn p_sample_loop<M>(
        &self,
        model: &M,
        x_t: Tensor,
        clip_denoised: bool,
        gen: &mut Generator,
    ) -> Result<Tensor>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        self.reverse_chain(x_t, |x, t| self.p_sample(model, x, t, clip_denoised, gen))
    }

    /// One DDIM step (eq. 12 of Song et al.): x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ²) ε̂ + σ z
    /// with σ = η √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t−1}); η = 0 is deterministic and
    /// draws no noise.
    pub fn ddim_sample<M>(
        &self,
        model: &M,
        x: &Tensor,
        t: &Tensor,
        clip_denoised: bool,
        eta: f64,
        gen: &mut Generator,
    ) -> Result<Tensor>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        check_eta(eta).map_err(|e| Error::msg(format!("ddim_sample: eta: {e}")))?;
        let out = self.p_mean_variance(model, x, t, clip_denoised)?;
        // Re-derived from x̂_0 so that clipping (and x_0 or v prediction) is respected.
        let eps = self.predict_eps(x, t, &out.pred_xstart)?;
        let s = &self.schedule;
        let idx = self.indices("ddim_sample", t)?;
        let sigmas: Vec<f64> = idx
            .iter()
            .map(|&k| {
                let (ab, abp) = (s.alphas_cumprod[k], s.alphas_cumprod_prev[k]);
                eta * ((1.0 - abp) / (1.0 - ab)).sqrt() * (1.0 - ab / abp).sqrt()
            })
            .collect();
        // 1 − ᾱ_{t−1} − σ² ≥ 0 for η ≤ 1; only rounding can take it below 0 (where ᾱ_t is 0).
        let rest: Vec<f64> = idx
            .iter()
            .zip(&sigmas)
            .map(|(&k, sg)| (1.0 - s.alphas_cumprod_prev[k] - sg * sg).max(0.0).sqrt())
            .collect();
        let sqrt_prev: Vec<f64> = idx
            .iter()
            .map(|&k| s.alphas_cumprod_prev[k].sqrt())
            .collect();
        for (i, &k) in idx.iter().enumerate() {
            let (sigma, dir, prev) = (sigmas[i], rest[i], sqrt_prev[i]);
            if !(sigma.is_finite() && dir.is_finite() && prev.is_finite()) {
                return Err(Error::msg(format!(
                    "ddim_sample: non-finite coefficients at timestep {}: sigma {sigma}, \
                     direction {dir}, sqrt(alpha_bar_prev) {prev}",
                    self.timestep_map[k]
                )));
            }
        }
        let per_sample = |v: &[f64]| -> Result<Tensor> {
            let mut shape = vec![1; x.rank()];
            shape[0] = v.len();
            Tensor::from_vec(v.to_vec(), &shape)?
                .to_device(x.device())?
                .to_dtype(x.dtype())
        };
        let mean = out
            .pred_xstart
            .mul(&per_sample(&sqrt_prev)?)?
            .add(&eps.mul(&per_sample(&rest)?)?)?;
        if eta == 0.0 {
            return Ok(mean);
        }
        let noise = Tensor::randn(x.shape(), 0.0, 1.0, x.dtype(), x.device(), gen)?;
        let sigma = per_sample(&sigmas)?.mul(&nonzero_mask(t, x)?)?;
        mean.add(&sigma.mul(&noise)?)
    }

    /// DDIM sampling from `x_T` over every (respaced) step, last to first.
    pub fn ddim_sample_loop<M>(
        &self,
        model: &M,
        x_t: Tensor,
        clip_denoised: bool,
        eta: f64,
        gen: &mut Generator,
    ) -> Result<Tensor>
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        self.reverse_chain(x_t, |x, t| {
            self.ddim_sample(model, x, t, clip_denoised, eta, gen)
        })
    }

    /// Runs `step(x, t)` from `x_T` over every (respaced) step, last to first.
    fn reverse_chain(
        &self,
        x_t: Tensor,
        mut step: impl FnMut(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut x = x_t;
        let steps = self.num_timesteps();
        for k in (0..steps).rev() {
            let t = self.full_step(k, &x)?;
            x = step(&x, &t)?;
            if !x.all_finite()? {
                return Err(Error::msg(format!(
                    "sampling: the samples are not finite (NaN or inf) after the step at timestep \
                     {} (step {} of {steps})",
                    self.timestep_map[k],
                    steps - k
                )));
            }
        }
        Ok(x)
    }

    /// Step `k` for every sample of `x`.
    fn full_step(&self, k: usize, x: &Tensor) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        Diffusion::timesteps(&vec![k; n])
    }
}

/// `eta` if DDIM accepts it: σ = η √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t−1}) leaves the
/// direction term √(1 − ᾱ_{t−1} − σ²) real for every step only with η in [0, 1]: 1 − ᾱ_{t−1} − σ²
/// = (1 − ᾱ_{t−1}) (1 − η² (ᾱ_{t−1} − ᾱ_t) / (ᾱ_{t−1} (1 − ᾱ_t))), and the fraction approaches 1
/// where ᾱ_t is near 0 (the first steps of sampling). The error says the accepted range.
pub fn check_eta(eta: f64) -> std::result::Result<f64, String> {
    if (0.0..=1.0).contains(&eta) {
        Ok(eta)
    } else {
        Err(format!("expected a number in [0, 1], got {eta}"))
    }
}

/// `5`, or `[5, 7]` for several values: timesteps in a message.
fn list<T: std::fmt::Debug>(values: &[T]) -> String {
    match values {
        [one] => format!("{one:?}"),
        _ => format!("{values:?}"),
    }
}

/// 1 where t ≠ 0 else 0, shaped `[N, 1, ..]` in x's dtype: the last step adds no noise.
fn nonzero_mask(t: &Tensor, x: &Tensor) -> Result<Tensor> {
    let zero = Tensor::zeros(&[], t.dtype(), t.device())?;
    let mut shape = vec![1; x.rank()];
    shape[0] = t.elem_count();
    t.cmp(CmpOp::Ne, &zero)?
        .reshape(&shape)?
        .to_dtype(x.dtype())
}

/// Classifier-free guidance around a model that is run on a stacked batch: `model` receives K
/// copies `[x; x; ...]` and `[t; t; ...]`, K = `scales.len() + 1`, conditioned from most to least
/// (its closure holds the conditions: for one scale the labels `[y; null]`, as DiT's
/// `forward_with_cfg`), and the guided output walks the chain from the least conditioned copy:
///
/// ```text
/// eps = e_{K-1} + s_{K-2} (e_{K-2} - e_{K-1}) + ... + s_0 (e_0 - e_1)
/// ```
///
/// One scale is the usual `uncond + s · (cond − uncond)`; two are the class and control scales
/// of arXiv 2411.03177, copies `[(c, m), (c, ∅), (∅, ∅)]` and scales `[s_m, s_c]`:
/// `e(∅,∅) + s_c (e(c,∅) − e(∅,∅)) + s_m (e(c,m) − e(c,∅))`. The guided output replaces the first
/// `guided_channels` channels (all when `None`; DiT guides 3); the other channels (e.g. learned
/// variance values) are the most conditioned copy's. Scales of 1 give that copy.
pub fn classifier_free_guidance<M>(
    model: M,
    scales: &[f64],
    guided_channels: Option<usize>,
) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor>
where
    M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
{
    let scales = scales.to_vec();
    move |x: &Tensor, t: &Tensor| {
        let n = x.shape().first().copied().unwrap_or(0);
        let copies = scales.len() + 1;
        let (xs, ts) = (vec![x; copies], vec![t; copies]);
        let out = no_grad(|| model(&Tensor::cat(&xs, 0)?, &Tensor::cat(&ts, 0)?))?;
        if out.shape().first() != Some(&(copies * n)) || out.rank() < 2 {
            return Err(Error::shape(
                "classifier_free_guidance",
                format!(
                    "the model returned {:?} for {copies} stacked copies of a batch of {n}",
                    out.shape(),
                ),
            ));
        }
        let channels = out.shape()[1];
        let k = guided_channels.unwrap_or(channels).min(channels);
        let eps = |i: usize| out.narrow(0, i * n, n)?.narrow(1, 0, k);
        let mut guided = eps(copies - 1)?;
        let mut less = guided.clone();
        for (i, scale) in scales.iter().enumerate().rev() {
            let more = eps(i)?;
            guided = guided.add(&more.sub(&less)?.mul_scalar(*scale)?)?;
            less = more;
        }
        if k == channels {
            Ok(guided)
        } else {
            let cond = out.narrow(0, 0, n)?;
            Tensor::cat(&[&guided, &cond.narrow(1, k, channels - k)?], 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use tensor::{DType, Device};

    use super::*;
    use crate::diffusion::{create_diffusion, DiffusionConfig, MeanType, Schedule};

    /// The exact ε-predictor for data that is the single point `x_star` (a `[1, C, ..]` tensor):
    /// ε = (x_t − √ᾱ_t x*) / √(1 − ᾱ_t), with ᾱ read at the ORIGINAL step the model is fed, so a
    /// wrong timestep map gives a wrong ε. `learned` appends variance values `v`.
    fn oracle(x_star: Tensor, learned: Option<f64>) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor> {
        let full =
            Schedule::from_betas(crate::diffusion::BetaSchedule::Linear.betas(1000).unwrap())
                .unwrap();
        move |x: &Tensor, t: &Tensor| {
            let n = x.shape()[0];
            let mut shape = vec![1; x.rank()];
            shape[0] = n;
            let pick = |v: &[f64]| -> Result<Tensor> {
                let vals: Vec<f64> = t.to_vec::<i64>()?.iter().map(|&k| v[k as usize]).collect();
                Tensor::from_vec(vals, &shape)?.to_dtype(x.dtype())
            };
            let eps = x
                .sub(&x_star.mul(&pick(&full.sqrt_alphas_cumprod)?)?)?
                .div(&pick(&full.sqrt_one_minus_alphas_cumprod)?)?;
            match learned {
                Some(v) => Tensor::cat(&[&eps, &eps.ones_like()?.mul_scalar(v)?], 1),
                None => Ok(eps),
            }
        }
    }

    fn noise(seed: u64) -> Tensor {
        Tensor::randn(
            &[4, 2, 3, 3],
            0.0,
            1.0,
            DType::F64,
            Device::Cpu,
            &mut Generator::new(seed),
        )
        .unwrap()
    }

    fn point() -> Tensor {
        Tensor::from_vec(
            (0..18)
                .map(|i| (i as f64 / 9.0) - 0.95)
                .collect::<Vec<f64>>(),
            &[1, 2, 3, 3],
        )
        .unwrap()
    }

    #[test]
    fn samplers_recover_the_single_data_point() {
        let target = point()
            .broadcast_as(&[4, 2, 3, 3])
            .unwrap()
            .contiguous()
            .unwrap();
        let mut gen = Generator::new(11);
        for (respacing, var_type, learned) in [
            ("250", VarType::LearnedRange, Some(0.3)),
            ("10,5,20", VarType::FixedSmall, None),
            ("ddim50", VarType::FixedLarge, None),
        ] {
            let cfg = DiffusionConfig {
                var_type,
                ..Default::default()
            };
            let d = create_diffusion(respacing, &cfg).unwrap();
            let model = oracle(point(), learned);
            let x = d.p_sample_loop(&model, noise(1), false, &mut gen).unwrap();
            let err = x.max_abs_diff(&target).unwrap();
            assert!(err < 1e-9, "DDPM {respacing}: {err}");
            for eta in [0.0, 1.0] {
                let x = d
                    .ddim_sample_loop(&model, noise(2), true, eta, &mut gen)
                    .unwrap();
                let err = x.max_abs_diff(&target).unwrap();
                assert!(err < 1e-9, "DDIM {respacing} eta {eta}: {err}");
            }
        }
    }

    /// From x_T = √ᾱ_T x* + √(1 − ᾱ_T) ε, every DDIM (η = 0) step with the oracle stays on
    /// x_k = √ᾱ_k x* + √(1 − ᾱ_k) ε, and the DDPM mean is the true posterior mean: both hold only
    /// if the model is fed the original steps. Returns the largest deviation over the steps.
    fn oracle_path_error<M>(d: &Diffusion, model: &M) -> f64
    where
        M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
    {
        let star = point()
            .broadcast_as(&[4, 2, 3, 3])
            .unwrap()
            .contiguous()
            .unwrap();
        let eps = noise(5);
        let s = &d.schedule;
        let last = d.num_timesteps() - 1;
        let on_path = |k: usize| {
            star.mul_scalar(s.sqrt_alphas_cumprod[k])
                .unwrap()
                .add(&eps.mul_scalar(s.sqrt_one_minus_alphas_cumprod[k]).unwrap())
                .unwrap()
        };
        let mut x = on_path(last);
        let mut worst = 0.0f64;
        let mut gen = Generator::new(0);
        for k in (1..=last).rev() {
            let t = d.full_step(k, &x).unwrap();
            let out = d.p_mean_variance(model, &x, &t, false).unwrap();
            let (true_mean, _, _) = d.q_posterior(&star, &x, &t).unwrap();
            worst = worst.max(out.mean.max_abs_diff(&true_mean).unwrap());
            x = d.ddim_sample(model, &x, &t, false, 0.0, &mut gen).unwrap();
            worst = worst.max(x.max_abs_diff(&on_path(k - 1)).unwrap());
        }
        worst
    }

    #[test]
    fn the_oracle_stays_on_its_noise_path_only_with_the_timestep_map() {
        let d = create_diffusion("ddim50", &DiffusionConfig::default()).unwrap();
        let model = oracle(point(), Some(0.0));
        let err = oracle_path_error(&d, &model);
        assert!(err < 1e-9, "{err}");
        // Fed the respaced step instead of the original one, the same oracle leaves the path.
        let unmapped = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
            let k = t.to_vec::<i64>()?;
            let back: Vec<i64> = k.iter().map(|&v| v / 20).collect();
            model(x, &Tensor::from_vec(back, &[k.len()])?)
        };
        assert!(oracle_path_error(&d, &unmapped) > 1e-2);
    }

    /// A smooth, nonlinear stand-in for a trained model, so that the samplers' maps are not
    /// trivially the identity.
    fn wobbly(x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let n = x.shape()[0];
        let tt: Vec<f64> = t.to_f64_vec()?.iter().map(|v| v / 1000.0).collect();
        let tt = Tensor::from_vec(tt, &[n, 1, 1, 1])?;
        x.mul_scalar(0.8)?.tanh()?.add(&tt)?.mul_scalar(0.9)
    }

    #[test]
    fn ddim_with_eta_zero_is_a_deterministic_map_of_x_t() {
        let cfg = DiffusionConfig {
            var_type: VarType::FixedSmall,
            ..Default::default()
        };
        let d = create_diffusion("ddim20", &cfg).unwrap();
        let run = |x_t: Tensor, seed: u64| {
            d.ddim_sample_loop(&wobbly, x_t, true, 0.0, &mut Generator::new(seed))
                .unwrap()
        };
        // Same x_T, different generators: identical samples.
        let (a, b) = (run(noise(1), 1), run(noise(1), 99));
        assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        // Different seeds give different x_T and so different samples.
        assert!(noise(1).max_abs_diff(&noise(2)).unwrap() > 0.1);
        let c = run(noise(2), 1);
        assert!(a.max_abs_diff(&c).unwrap() > 1e-3);
        // With eta > 0 the generator matters, and the same seed reproduces.
        let s = |seed| {
            d.ddim_sample_loop(&wobbly, noise(1), true, 1.0, &mut Generator::new(seed))
                .unwrap()
        };
        assert_eq!(s(5).to_vec::<f64>().unwrap(), s(5).to_vec::<f64>().unwrap());
        assert!(s(5).max_abs_diff(&s(6)).unwrap() > 1e-3);
        // DDPM likewise.
        let p = |seed| {
            d.p_sample_loop(&wobbly, noise(1), true, &mut Generator::new(seed))
                .unwrap()
        };
        assert_eq!(p(3).to_vec::<f64>().unwrap(), p(3).to_vec::<f64>().unwrap());
        assert!(p(3).max_abs_diff(&p(4)).unwrap() > 1e-3);
    }

    #[test]
    fn guidance_interpolates_conditional_and_unconditional() {
        // "Conditional" half: 2x; "unconditional" half: x; channel 1 stands for variance values.
        let model = |x: &Tensor, _t: &Tensor| -> Result<Tensor> {
            let n = x.shape()[0] / 2;
            let cond = x.narrow(0, 0, n)?.mul_scalar(2.0)?;
            Tensor::cat(&[&cond, &x.narrow(0, n, n)?], 0)
        };
        let x = noise(3).narrow(1, 0, 2).unwrap().contiguous().unwrap();
        let t = Diffusion::timesteps(&[1, 2, 3, 4]).unwrap();
        for scale in [0.0, 1.0, 4.0] {
            let g = classifier_free_guidance(model, &[scale], Some(1))(&x, &t).unwrap();
            let want0 = x.narrow(1, 0, 1).unwrap().mul_scalar(1.0 + scale).unwrap();
            assert!(g.narrow(1, 0, 1).unwrap().max_abs_diff(&want0).unwrap() < 1e-15);
            let want1 = x.narrow(1, 1, 1).unwrap().mul_scalar(2.0).unwrap();
            assert!(g.narrow(1, 1, 1).unwrap().max_abs_diff(&want1).unwrap() < 1e-15);
        }
        let all = classifier_free_guidance(model, &[3.0], None)(&x, &t).unwrap();
        assert!(all.max_abs_diff(&x.mul_scalar(4.0).unwrap()).unwrap() < 1e-15);
    }

    #[test]
    fn two_scales_walk_from_unconditional_to_class_to_control() {
        // Copies (c, m), (c, 0), (0, 0) answer 7x, 3x and x.
        let model = |x: &Tensor, _t: &Tensor| -> Result<Tensor> {
            let n = x.shape()[0] / 3;
            let part = |i: usize, k: f64| x.narrow(0, i * n, n)?.mul_scalar(k);
            Tensor::cat(&[&part(0, 7.0)?, &part(1, 3.0)?, &part(2, 1.0)?], 0)
        };
        let x = noise(4).narrow(1, 0, 1).unwrap().contiguous().unwrap();
        let t = Diffusion::timesteps(&[1, 2, 3, 4]).unwrap();
        for (s_m, s_c) in [(1.0, 1.0), (2.0, 1.0), (0.0, 4.0), (1.5, 0.5)] {
            let g = classifier_free_guidance(model, &[s_m, s_c], None)(&x, &t).unwrap();
            // e00 + s_c (e_c0 - e00) + s_m (e_cm - e_c0) = (1 + 2 s_c + 4 s_m) x
            let want = x.mul_scalar(1.0 + 2.0 * s_c + 4.0 * s_m).unwrap();
            assert!(g.max_abs_diff(&want).unwrap() < 1e-14, "{s_m} {s_c}");
        }
    }

    #[test]
    fn x0_prediction_and_bad_outputs() {
        // An x_0-predicting oracle recovers its point too; a wrong channel count is an error.
        let cfg = DiffusionConfig {
            mean_type: MeanType::StartX,
            var_type: VarType::FixedSmall,
            ..Default::default()
        };
        let d = create_diffusion("25", &cfg).unwrap();
        let star = point();
        let model = |x: &Tensor, _t: &Tensor| -> Result<Tensor> {
            star.broadcast_as(x.shape())?.contiguous()
        };
        let x = d
            .p_sample_loop(&model, noise(4), true, &mut Generator::new(0))
            .unwrap();
        let target = point().broadcast_as(&[4, 2, 3, 3]).unwrap();
        assert!(x.max_abs_diff(&target.contiguous().unwrap()).unwrap() < 1e-12);
        let wide = |x: &Tensor, _t: &Tensor| Tensor::cat(&[x, x], 1);
        assert!(d
            .p_sample_loop(&wide, noise(4), true, &mut Generator::new(0))
            .is_err());
    }

    #[test]
    fn eta_above_one_is_refused_not_a_nan_grid() {
        // With η > 1, σ² exceeds 1 − ᾱ_{t−1} at the first steps: the direction term would be
        // √(negative). η = 1 is the largest that works.
        let d = create_diffusion("ddim10", &DiffusionConfig::default()).unwrap();
        let model = oracle(point(), Some(0.0));
        for eta in [1.5, -0.1, f64::NAN, f64::INFINITY] {
            let err = d
                .ddim_sample_loop(&model, noise(1), true, eta, &mut Generator::new(0))
                .unwrap_err()
                .to_string();
            assert!(err.contains("eta") && err.contains("[0, 1]"), "{err}");
        }
        let x = d
            .ddim_sample_loop(&model, noise(1), true, 1.0, &mut Generator::new(0))
            .unwrap();
        assert!(x.all_finite().unwrap());
    }

    #[test]
    fn non_finite_outputs_and_samples_are_errors_naming_the_timestep() {
        let cfg = DiffusionConfig {
            var_type: VarType::FixedSmall,
            ..Default::default()
        };
        let d = create_diffusion("ddim10", &cfg).unwrap();
        // A model that breaks down at one step (original timestep 500).
        let nan_at_500 = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
            let bad = t.to_vec::<i64>()?.contains(&500);
            x.mul_scalar(if bad { f64::NAN } else { 0.5 })
        };
        let err = d
            .ddim_sample_loop(&nan_at_500, noise(1), true, 0.0, &mut Generator::new(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model's output at timestep 500 is not finite"),
            "{err}"
        );
        // Finite outputs whose x̂_0 overflows without clipping: the first step's samples.
        let huge = |x: &Tensor, _t: &Tensor| x.ones_like()?.mul_scalar(1e307);
        for ddim in [false, true] {
            let mut gen = Generator::new(0);
            let result = match ddim {
                true => d.ddim_sample_loop(&huge, noise(1), false, 0.0, &mut gen),
                false => d.p_sample_loop(&huge, noise(1), false, &mut gen),
            };
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("samples are not finite")
                    && err.contains("timestep 900 (step 1 of 10)"),
                "{err}"
            );
        }
    }
}
