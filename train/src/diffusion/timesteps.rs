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
    /// DeMe's probabilistic range sampling: per batch, with probability `full` all of `0..T`,
    /// otherwise the range `lo..hi`; drawn as the official code draws them, in antithetic
    /// pairs: `n / 2 + 1` uniform steps, then their mirrors (`a + b - 1 - t` over `a..b`), the
    /// first `n` kept.
    Range {
        /// T.
        steps: usize,
        /// The range's first step.
        lo: usize,
        /// One past its last step.
        hi: usize,
        /// The probability of a batch drawn from all steps.
        full: f64,
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

    /// DeMe's sampler of the range `lo..hi` of `steps` steps, all steps with probability
    /// `full` per batch.
    pub fn range(steps: usize, lo: usize, hi: usize, full: f64) -> Result<TimestepSampler> {
        if !(lo < hi && hi <= steps && (0.0..=1.0).contains(&full)) {
            return Err(Error::msg(format!(
                "timestep sampler: range {lo}..{hi} of {steps} steps with full-range \
                 probability {full}: expected lo < hi <= steps and a probability in [0, 1]"
            )));
        }
        Ok(TimestepSampler::Range {
            steps,
            lo,
            hi,
            full,
        })
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        match self {
            TimestepSampler::Uniform(t) => *t,
            TimestepSampler::Weighted { probs, .. } => probs.len(),
            TimestepSampler::Range { steps, .. } => *steps,
        }
    }

    /// The probability of step `t`.
    pub fn prob(&self, t: usize) -> f64 {
        match self {
            TimestepSampler::Uniform(n) => 1.0 / *n as f64,
            TimestepSampler::Weighted { probs, .. } => probs[t],
            TimestepSampler::Range {
                steps,
                lo,
                hi,
                full,
            } => {
                let inside = if (*lo..*hi).contains(&t) { 1.0 } else { 0.0 };
                full / *steps as f64 + (1.0 - full) * inside / (hi - lo) as f64
            }
        }
    }

    /// `n` steps (i64 `[n]`) and their importance weights 1 / (T p_t) (f64 `[n]`).
    pub fn sample(&self, n: usize, gen: &mut Generator) -> Result<(Tensor, Tensor)> {
        let steps: Vec<usize> = match self {
            TimestepSampler::Range {
                steps,
                lo,
                hi,
                full,
            } => {
                let (a, b) = match gen.rng().random_range(0.0..1.0) < *full {
                    true => (0, *steps),
                    false => (*lo, *hi),
                };
                let half: Vec<usize> = (0..n / 2 + 1)
                    .map(|_| gen.rng().random_range(a..b))
                    .collect();
                let mirrors = half.iter().map(|t| a + b - 1 - t);
                half.iter().copied().chain(mirrors).take(n).collect()
            }
            _ => (0..n).map(|_| self.draw(gen)).collect(),
        };
        let t = self.steps() as f64;
        let weights: Vec<f64> = steps.iter().map(|&s| 1.0 / (t * self.prob(s))).collect();
        Ok((
            Tensor::from_vec(steps.iter().map(|&s| s as i64).collect::<Vec<_>>(), &[n])?,
            Tensor::from_vec(weights, &[n])?,
        ))
    }

    /// One step of a sampler that draws steps independently.
    fn draw(&self, gen: &mut Generator) -> usize {
        match self {
            TimestepSampler::Weighted { cdf, probs } => {
                let u: f64 = gen.rng().random_range(0.0..1.0);
                // The first step whose running sum exceeds u; zero-probability steps are
                // never chosen (their running sum equals the previous one).
                let i = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
                (0..=i).rev().find(|&j| probs[j] > 0.0).unwrap_or(i)
            }
            _ => gen.rng().random_range(0..self.steps()),
        }
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
    fn range_batches_are_antithetic_and_sometimes_span_every_step() {
        let s = TimestepSampler::range(100, 25, 50, 0.3).unwrap();
        let mut gen = Generator::new(2);
        let mut full = 0;
        for _ in 0..400 {
            let t = s.sample(7, &mut gen).unwrap().0.to_vec::<i64>().unwrap();
            let inside = t.iter().all(|&v| (25..50).contains(&v));
            if !inside {
                full += 1;
                assert!(t.iter().all(|&v| (0..100).contains(&v)), "{t:?}");
            }
            // 7 = 4 draws and the mirrors of the first three, over the batch's range.
            let (a, b) = if inside { (25, 50) } else { (0, 100) };
            for k in 0..3 {
                assert_eq!(t[4 + k], a + b - 1 - t[k], "{t:?}");
            }
        }
        // About 30% of batches span all steps (such a batch always has a step outside the
        // range: the mirror 99 - t of a step t in 25..50 is not in it).
        assert!((80..160).contains(&full), "{full} of 400");
        assert!((s.prob(30) - (0.3 / 100.0 + 0.7 / 25.0)).abs() < 1e-15);
        assert!((s.prob(60) - 0.003).abs() < 1e-15);
        let total: f64 = (0..100).map(|t| s.prob(t)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(TimestepSampler::range(100, 50, 50, 0.3).is_err());
        assert!(TimestepSampler::range(100, 0, 101, 0.3).is_err());
        assert!(TimestepSampler::range(100, 0, 10, 1.5).is_err());
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
