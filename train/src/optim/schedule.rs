//! [`LrSchedule`]: the learning rate as a pure function of the step, so a resumed run needs only
//! the step count to continue on the same curve.

/// What follows the warmup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// The base learning rate until the end.
    Constant,
    /// Half a cosine from the base learning rate down to `min_lr`, reached at step `total_steps`
    /// and kept after it.
    Cosine {
        /// Steps of the whole run, warmup included.
        total_steps: u64,
        /// The floor.
        min_lr: f64,
    },
}

/// Linear warmup over `warmup_steps`, then [`Decay`].
///
/// Steps count from 0 (the first update). During warmup, update `s` uses
/// `base_lr · (s + 1) / warmup_steps`, so the first update is not wasted at zero and update
/// `warmup_steps - 1` is the first at the full rate.
///
/// ```
/// use train::optim::LrSchedule;
/// let s = LrSchedule::cosine(1e-3, 10, 110, 1e-5);
/// assert!((s.lr_at(0) - 1e-4).abs() < 1e-18);
/// assert_eq!(s.lr_at(10), 1e-3);
/// assert_eq!(s.lr_at(110), 1e-5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The rate after warmup (and the start of the decay).
    pub base_lr: f64,
    /// Steps of linear warmup (0 for none).
    pub warmup_steps: u64,
    /// What follows the warmup.
    pub decay: Decay,
}

impl LrSchedule {
    /// Warmup, then `base_lr` for good.
    pub fn constant(base_lr: f64, warmup_steps: u64) -> Self {
        LrSchedule {
            base_lr,
            warmup_steps,
            decay: Decay::Constant,
        }
    }

    /// Warmup, then a cosine from `base_lr` to `min_lr` at step `total_steps`.
    pub fn cosine(base_lr: f64, warmup_steps: u64, total_steps: u64, min_lr: f64) -> Self {
        LrSchedule {
            base_lr,
            warmup_steps,
            decay: Decay::Cosine {
                total_steps,
                min_lr,
            },
        }
    }

    /// The learning rate of update `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.decay {
            Decay::Constant => self.base_lr,
            Decay::Cosine {
                total_steps,
                min_lr,
            } => {
                let span = total_steps.saturating_sub(self.warmup_steps);
                if span == 0 || step >= total_steps {
                    return min_lr;
                }
                let progress = (step - self.warmup_steps) as f64 / span as f64;
                min_lr
                    + (self.base_lr - min_lr)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1e-300)
    }

    #[test]
    fn warmup_is_linear_and_ends_at_the_base_rate() {
        let s = LrSchedule::constant(1e-4, 4);
        let got: Vec<f64> = (0..7).map(|i| s.lr_at(i)).collect();
        let want = [2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4, 1e-4];
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, w), "{got:?}");
        }
        assert_eq!(LrSchedule::constant(3e-4, 0).lr_at(0), 3e-4);
        assert_eq!(LrSchedule::constant(3e-4, 0).lr_at(1_000_000), 3e-4);
    }

    #[test]
    fn cosine_at_chosen_steps() {
        // Warmup 100, cosine over steps 100..1100 from 1e-3 to 1e-4.
        let s = LrSchedule::cosine(1e-3, 100, 1100, 1e-4);
        assert!(close(s.lr_at(49), 5e-4));
        assert!(close(s.lr_at(100), 1e-3));
        // A quarter of the way: 1e-4 + 9e-4 · (1 + cos(π/4)) / 2.
        let quarter = 1e-4 + 9e-4 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!(close(s.lr_at(350), quarter), "{}", s.lr_at(350));
        // Half way: the mean of the two ends.
        assert!(close(s.lr_at(600), 5.5e-4), "{}", s.lr_at(600));
        assert!(close(s.lr_at(1100), 1e-4));
        assert!(close(s.lr_at(5000), 1e-4));
        // Monotone after warmup.
        let lrs: Vec<f64> = (100..1100).map(|i| s.lr_at(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn cosine_without_warmup_matches_the_closed_form() {
        // The toy run's schedule: 0.55 + 0.45 cos(π s / S) times the base rate, i.e. a floor of 10%.
        let s = LrSchedule::cosine(4e-3, 0, 6000, 4e-4);
        for step in [0u64, 1, 1500, 2999, 4500, 5999] {
            let want = 4e-3 * (0.55 + 0.45 * (std::f64::consts::PI * step as f64 / 6000.0).cos());
            assert!((s.lr_at(step) - want).abs() < 1e-17, "step {step}");
        }
    }
}
