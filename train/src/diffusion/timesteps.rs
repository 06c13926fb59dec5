//! Timestep samplers for training: uniform, or from any distribution over the steps (DiT's
//! `ScheduleSampler`), each returning the steps and the importance weights 1 / (T p_t) that keep
//! a weighted loss an unbiased estimate of the uniform one.

use rand::Rng;
use tensor::{Error, Generator, Result, Tensor};

/// How training steps are drawn.
#[derive(Clone, Debug)]
pub enum TimestepSampler {
    /// Uniform over `0..T`.
    Uniform(usize),
    /// Proportional to the given non-negative weights over `0..T`.
    Weighted {
        /// The normalised probabilities.
        probs: Vec<f64>,
        /// Their running sums (the last is 1).
        cdf: Vec<f64>,
    },
}

impl TimestepSampler {
    /// Uniform over `steps` steps.
    pub fn uniform(steps: usize) -> Result<TimestepSampler> {
        if steps == 0 {
            return Err(Error::msg("timestep sampler: no steps to draw from"));
        }
        Ok(TimestepSampler::Uniform(steps))
    }

    /// Proportional to `weights` (one per step, non-negative, not all zero).
    pub fn weighted(weights: &[f64]) -> Result<TimestepSampler> {
        let total: f64 = weights.iter().sum();
        if weights.is_empty()
            || weights.iter().any(|w| !(*w >= 0.0 && w.is_finite()))
            || total <= 0.0
        {
            return Err(Error::msg(format!(
                "timestep sampler: weights must be finite, non-negative and not all zero (got {} weights summing to {total})",
                weights.len()
            )));
        }
        let probs: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = probs
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        *cdf.last_mut().expect("non-empty") = 1.0;
        Ok(TimestepSampler::Weighted { probs, cdf })
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        match self {
            TimestepSampler::Uniform(t) => *t,
            TimestepSampler::Weighted { probs, .. } => probs.len(),
        }
    }

    /// The probability of step `t`.
    pub fn prob(&self, t: usize) -> f64 {
        match self {
            TimestepSampler::Uniform(n) => 1.0 / *n as f64,
            TimestepSampler::Weighted { probs, .. } => probs[t],
        }
    }

    /// `n` steps (i64 `[n]`) and their importance weights 1 / (T p_t) (f64 `[n]`).
    pub fn sample(&self, n: usize, gen: &mut Generator) -> Result<(Tensor, Tensor)> {
        let steps: Vec<usize> = (0..n)
            .map(|_| match self {
                TimestepSampler::Uniform(t) => gen.rng().random_range(0..*t),
                TimestepSampler::Weighted { cdf, probs } => {
                    let u: f64 = gen.rng().random_range(0.0..1.0);
                    // The first step whose running sum exceeds u; zero-probability steps are
                    // never chosen (their running sum equals the previous one).
                    let i = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
                    (0..=i).rev().find(|&j| probs[j] > 0.0).unwrap_or(i)
                }
            })
            .collect();
        let t = self.steps() as f64;
        let weights: Vec<f64> = steps.iter().map(|&s| 1.0 / (t * self.prob(s))).collect();
        Ok((
            Tensor::from_vec(steps.iter().map(|&s| s as i64).collect::<Vec<_>>(), &[n])?,
            Tensor::from_vec(weights, &[n])?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_sampling_follows_the_weights_and_is_seeded() {
        let s = TimestepSampler::weighted(&[1.0, 0.0, 3.0, 0.0]).unwrap();
        let (t, w) = s.sample(20000, &mut Generator::new(5)).unwrap();
        let t = t.to_vec::<i64>().unwrap();
        let count = |k| t.iter().filter(|&&v| v == k).count() as f64 / t.len() as f64;
        assert_eq!(count(1) + count(3), 0.0);
        assert!((count(2) - 0.75).abs() < 0.015, "{}", count(2));
        // Importance weights: 1 / (4 · 0.25) = 1 and 1 / (4 · 0.75).
        let w = w.to_vec::<f64>().unwrap();
        for (ti, wi) in t.iter().zip(&w) {
            let want = if *ti == 0 { 1.0 } else { 1.0 / 3.0 };
            assert!((wi - want).abs() < 1e-15);
        }
        let again = s.sample(20000, &mut Generator::new(5)).unwrap().0;
        assert_eq!(again.to_vec::<i64>().unwrap(), t);
        assert!(TimestepSampler::weighted(&[0.0, 0.0]).is_err());
        assert!(TimestepSampler::weighted(&[1.0, -1.0]).is_err());
    }

    #[test]
    fn uniform_covers_every_step_with_unit_weights() {
        let s = TimestepSampler::uniform(10).unwrap();
        let (t, w) = s.sample(2000, &mut Generator::new(0)).unwrap();
        let t = t.to_vec::<i64>().unwrap();
        assert!((0..10).all(|k| t.contains(&k)));
        assert!(t.iter().all(|&k| (0..10).contains(&k)));
        assert!(w.to_vec::<f64>().unwrap().iter().all(|&v| v == 1.0));
    }
}
