//! Beta schedules and every per-step quantity derived from them, in f64 as DiT's
//! `GaussianDiffusion.__init__` computes them (numpy float64, the same operations in the same order,
//! so that a parity test can hold them to 1e-12).

use tensor::{Error, Result};

/// A named beta schedule over T diffusion steps.
#[derive(Clone, Debug, PartialEq)]
pub enum BetaSchedule {
    /// Ho et al.'s linear schedule extended to any T as DiT does: `linspace(1e-4, 0.02, T)` scaled
    /// by `1000 / T`.
    Linear,
    /// Nichol & Dhariwal's cosine schedule (`squaredcos_cap_v2`): ᾱ(s) = cos²((s + 0.008) / 1.008 ·
    /// π/2), betas capped at 0.999.
    Cosine,
    /// `base` moved toward more noise for a higher resolution (METHODS.md section 4): the logSNR of
    /// every step is shifted by `2 ln(n_old / n_new)`, so at `n_new > n_old` every step is noisier
    /// by the factor the larger image needs to destroy the same information. `n_old`, `n_new` are
    /// the image (or latent) side lengths the base schedule was made for and the new one.
    ResolutionShifted {
        /// The schedule at the old resolution.
        base: Box<BetaSchedule>,
        /// The side length the base schedule was tuned for.
        n_old: usize,
        /// The side length the shifted schedule is for.
        n_new: usize,
    },
}

/// The most a cosine (or shifted) step may destroy: keeps ᾱ_T away from 0 and 1/ᾱ finite.
pub const MAX_BETA: f64 = 0.999;

impl BetaSchedule {
    /// The betas of `steps` diffusion steps.
    pub fn betas(&self, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::msg(
                "beta schedule: at least one diffusion step is needed",
            ));
        }
        Ok(match self {
            BetaSchedule::Linear => {
                let scale = 1000.0 / steps as f64;
                linspace(scale * 0.0001, scale * 0.02, steps)
            }
            BetaSchedule::Cosine => betas_for_alpha_bar(steps, |s| {
                ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            }),
            BetaSchedule::ResolutionShifted { base, n_old, n_new } => {
                if *n_old == 0 || *n_new == 0 {
                    return Err(Error::msg(format!(
                        "resolution-shifted schedule: sizes must be positive, got {n_old} -> {n_new}"
                    )));
                }
                let shift = 2.0 * (*n_old as f64 / *n_new as f64).ln();
                shift_logsnr(&base.betas(steps)?, shift)
            }
        })
    }
}

/// numpy's `linspace(start, stop, n)`: `start + i · step`, with the last point exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

/// Betas discretising a continuous ᾱ(s), s ∈ [0, 1]: β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), 0.999).
fn betas_for_alpha_bar(steps: usize, alpha_bar: impl Fn(f64) -> f64) -> Vec<f64> {
    (0..steps)
        .map(|i| {
            let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(MAX_BETA)
        })
        .collect()
}

/// The betas whose ᾱ has logSNR = ln(ᾱ / (1 − ᾱ)) shifted by `shift` at every step (ᾱ' =
/// sigmoid(logSNR + shift)); a negative shift adds noise. Betas stay capped at [`MAX_BETA`].
pub fn shift_logsnr(betas: &[f64], shift: f64) -> Vec<f64> {
    let mut prev = 1.0;
    cumprod(betas)
        .into_iter()
        .map(|a| {
            let logsnr = (a / (1.0 - a)).ln() + shift;
            let shifted = 1.0 / (1.0 + (-logsnr).exp());
            let beta = (1.0 - shifted / prev).min(MAX_BETA);
            prev *= 1.0 - beta;
            beta
        })
        .collect()
}

/// ᾱ_t = Π_{s ≤ t} (1 − β_s), multiplied in order as numpy's cumprod.
fn cumprod(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |a, b| {
            *a *= 1.0 - b;
            Some(*a)
        })
        .collect()
}

/// Every per-step quantity of a Gaussian diffusion with the given betas (DiT's
/// `GaussianDiffusion` fields); index t is the (respaced) step, 0 the least noisy.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// β_t.
    pub betas: Vec<f64>,
    /// ᾱ_t = Π (1 − β_s).
    pub alphas_cumprod: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub alphas_cumprod_prev: Vec<f64>,
    /// ᾱ_{t+1}, with ᾱ_T = 0.
    pub alphas_cumprod_next: Vec<f64>,
    /// √ᾱ_t.
    pub sqrt_alphas_cumprod: Vec<f64>,
    /// √(1 − ᾱ_t).
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    /// ln(1 − ᾱ_t).
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    /// √(1 / ᾱ_t).
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    /// √(1 / ᾱ_t − 1).
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0).
    pub posterior_variance: Vec<f64>,
    /// ln β̃_t with β̃_0 (= 0) replaced by β̃_1.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Coefficient of x_0 in the posterior mean: β_t √ᾱ_{t−1} / (1 − ᾱ_t).
    pub posterior_mean_coef1: Vec<f64>,
    /// Coefficient of x_t in the posterior mean: (1 − ᾱ_{t−1}) √α_t / (1 − ᾱ_t).
    pub posterior_mean_coef2: Vec<f64>,
    /// ln β_t (the upper end of a learned variance range).
    pub log_betas: Vec<f64>,
}

impl Schedule {
    /// All quantities of `betas` (each in (0, 1]).
    pub fn from_betas(betas: Vec<f64>) -> Result<Schedule> {
        if betas.is_empty() || betas.iter().any(|&b| !(b > 0.0 && b <= 1.0)) {
            return Err(Error::msg(format!(
                "schedule: betas must be non-empty and in (0, 1], got {} values (min {:?}, max {:?})",
                betas.len(),
                betas.iter().cloned().fold(f64::INFINITY, f64::min),
                betas.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            )));
        }
        let n = betas.len();
        let ac = cumprod(&betas);
        let mut prev = vec![1.0];
        prev.extend_from_slice(&ac[..n - 1]);
        let mut next = ac[1..].to_vec();
        next.push(0.0);
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let posterior_variance = map(&|t| betas[t] * (1.0 - prev[t]) / (1.0 - ac[t]));
        // β̃_0 = 0: the log is clipped to β̃_1, as the reference does (and ln β̃_0 alone when T = 1).
        let posterior_log_variance_clipped = map(&|t| {
            let v = if t == 0 && n > 1 {
                posterior_variance[1]
            } else {
                posterior_variance[t]
            };
            v.ln()
        });
        Ok(Schedule {
            alphas_cumprod_prev: prev.clone(),
            alphas_cumprod_next: next,
            sqrt_alphas_cumprod: map(&|t| ac[t].sqrt()),
            sqrt_one_minus_alphas_cumprod: map(&|t| (1.0 - ac[t]).sqrt()),
            log_one_minus_alphas_cumprod: map(&|t| (1.0 - ac[t]).ln()),
            sqrt_recip_alphas_cumprod: map(&|t| (1.0 / ac[t]).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&|t| (1.0 / ac[t] - 1.0).sqrt()),
            posterior_mean_coef1: map(&|t| betas[t] * prev[t].sqrt() / (1.0 - ac[t])),
            posterior_mean_coef2: map(&|t| {
                (1.0 - prev[t]) * (1.0 - betas[t]).sqrt() / (1.0 - ac[t])
            }),
            log_betas: map(&|t| betas[t].ln()),
            posterior_variance,
            posterior_log_variance_clipped,
            alphas_cumprod: ac,
            betas,
        })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether there are no steps (never, for a built schedule).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_dit_endpoints_and_scales_with_t() {
        let b = BetaSchedule::Linear.betas(1000).unwrap();
        assert_eq!((b[0], b[999]), (1e-4, 0.02));
        let b = BetaSchedule::Linear.betas(100).unwrap();
        assert!((b[0] - 1e-3).abs() < 1e-18 && (b[99] - 0.2).abs() < 1e-16);
    }

    #[test]
    fn cosine_alpha_bar_follows_the_formula_and_caps_beta() {
        let t = 1000;
        let s = Schedule::from_betas(BetaSchedule::Cosine.betas(t).unwrap()).unwrap();
        let f = |u: f64| {
            ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        // ᾱ_t = f((t+1)/T) / f(0) wherever no cap applied.
        for i in [0, 10, 500, 900] {
            let want = f((i + 1) as f64 / t as f64) / f(0.0);
            assert!((s.alphas_cumprod[i] - want).abs() < 1e-12, "{i}");
        }
        assert_eq!(s.betas[t - 1], MAX_BETA);
    }

    #[test]
    fn resolution_shift_adds_noise_by_the_squared_size_ratio() {
        let base = Schedule::from_betas(BetaSchedule::Linear.betas(1000).unwrap()).unwrap();
        let shifted = BetaSchedule::ResolutionShifted {
            base: Box::new(BetaSchedule::Linear),
            n_old: 32,
            n_new: 64,
        };
        let s = Schedule::from_betas(shifted.betas(1000).unwrap()).unwrap();
        let snr = |a: f64| a / (1.0 - a);
        for t in [0, 100, 500, 900] {
            let ratio = snr(s.alphas_cumprod[t]) / snr(base.alphas_cumprod[t]);
            assert!((ratio - 0.25).abs() < 1e-9, "t {t}: SNR ratio {ratio}");
        }
        // Same size: no change.
        let same = BetaSchedule::ResolutionShifted {
            base: Box::new(BetaSchedule::Linear),
            n_old: 32,
            n_new: 32,
        };
        let b = same.betas(1000).unwrap();
        let b0 = BetaSchedule::Linear.betas(1000).unwrap();
        let err = b
            .iter()
            .zip(&b0)
            .map(|(x, y)| ((x - y) / y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
    }

    #[test]
    fn posterior_quantities_are_consistent() {
        let s = Schedule::from_betas(BetaSchedule::Linear.betas(50).unwrap()).unwrap();
        assert_eq!(s.posterior_variance[0], 0.0);
        assert_eq!(
            s.posterior_log_variance_clipped[0],
            s.posterior_variance[1].ln()
        );
        for t in 1..50 {
            // β̃_t ≤ β_t, and the posterior mean of (x_0, x_t) = (x, √ᾱ_t x) is √ᾱ_{t−1} x.
            assert!(s.posterior_variance[t] <= s.betas[t]);
            let m =
                s.posterior_mean_coef1[t] + s.posterior_mean_coef2[t] * s.sqrt_alphas_cumprod[t];
            assert!((m - s.alphas_cumprod_prev[t].sqrt()).abs() < 1e-12);
        }
        assert!(Schedule::from_betas(vec![0.1, 0.0]).is_err());
    }
}
