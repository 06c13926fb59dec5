//! How a method's step draws its data: one or more [`Stream`]s, each with its own share of the
//! batch, timestep sampler, labels and loss weight.

use tensor::Result;

use super::{bank_images, deme_range, DiffTuningForm, Method};
use crate::diffusion::TimestepSampler;

/// Where a stream's images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamData {
    /// The run's own data (`data` in the config).
    Target,
    /// Another data source, named by the method option `key` (for errors).
    Source {
        /// The option that names it, as `method.<key>`.
        key: &'static str,
        /// The data source (see [`crate::data::DataSource::parse`]).
        value: String,
    },
}

/// One part of every training batch.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Its name in logs and checkpoints (`target`, `bank`).
    pub name: &'static str,
    /// Where its images come from.
    pub data: StreamData,
    /// Images per step.
    pub images: usize,
    /// How its timesteps are drawn.
    pub timesteps: TimestepSampler,
    /// Whether its images get the null label instead of their own (which the model's label
    /// dropout then treats like any other).
    pub null_labels: bool,
    /// The weight of its mean per-sample loss in the step's loss.
    pub weight: f64,
    /// A weight per timestep for each per-sample loss before the mean (Diff-Tuning's weighted
    /// form); `None`: all 1.
    pub timestep_weights: Option<Vec<f64>>,
}

impl Method {
    /// The streams of a step of `batch_size` images over a process of `steps` timesteps; the
    /// first is the target data's. Their image counts add up to `batch_size`.
    pub fn streams(&self, batch_size: usize, steps: usize) -> Result<Vec<Stream>> {
        self.validate()?;
        let target = |images, timesteps| Stream {
            name: "target",
            data: StreamData::Target,
            images,
            timesteps,
            null_labels: false,
            weight: 1.0,
            timestep_weights: None,
        };
        Ok(match self {
            Method::Standard { .. } | Method::Anl { .. } => {
                vec![target(batch_size, TimestepSampler::uniform(steps)?)]
            }
            Method::Deme {
                ranges,
                range,
                full_prob,
                ..
            } => {
                if *ranges > steps {
                    return Err(tensor::Error::msg(format!(
                        "config `method.ranges`: {ranges} ranges of a process of {steps} steps \
                         leave some empty; at most {steps}"
                    )));
                }
                let (lo, hi) = deme_range(*ranges, *range, steps);
                vec![target(
                    batch_size,
                    TimestepSampler::range(steps, lo, hi, *full_prob)?,
                )]
            }
            Method::DiffTuning {
                bank,
                bank_share,
                lambda,
                tau,
                tau_retention,
                form,
            } => {
                let power = |f: &dyn Fn(f64) -> f64, exp: f64| -> Vec<f64> {
                    (0..steps).map(|t| f(t as f64).powf(exp)).collect()
                };
                // (target sampler, bank sampler, target loss weights, bank loss weights)
                let (adapt, retain, adapt_weights, retain_weights) = match form {
                    // Adaptation far from the data: p(t) ∝ (t + 1)^tau; retention near it:
                    // p(t) ∝ (T - t)^tau_retention.
                    DiffTuningForm::Sampled => (
                        TimestepSampler::weighted(&power(&|t| t + 1.0, *tau))?,
                        TimestepSampler::weighted(&power(
                            &|t| steps as f64 - t,
                            tau_retention.unwrap_or(*tau),
                        ))?,
                        None,
                        None,
                    ),
                    // psi(t) = ((t + 1) / (T + 1))^tau and 1 - psi(t), over psi's mean.
                    DiffTuningForm::Weighted => {
                        let psi = power(&|t| (t + 1.0) / (steps as f64 + 1.0), *tau);
                        let mean = psi.iter().sum::<f64>() / steps as f64;
                        let retain: Vec<f64> = psi.iter().map(|p| (1.0 - p) / mean).collect();
                        let adapt: Vec<f64> = psi.iter().map(|p| p / mean).collect();
                        let uniform = TimestepSampler::uniform(steps)?;
                        (uniform.clone(), uniform, Some(adapt), Some(retain))
                    }
                };
                let bank_count = bank_images(batch_size, *bank_share);
                let mut streams = vec![Stream {
                    timestep_weights: adapt_weights,
                    ..target(batch_size - bank_count, adapt)
                }];
                if bank_count > 0 {
                    streams.push(Stream {
                        name: "bank",
                        data: StreamData::Source {
                            key: "bank",
                            value: bank.clone(),
                        },
                        images: bank_count,
                        timesteps: retain,
                        null_labels: true,
                        weight: *lambda,
                        timestep_weights: retain_weights,
                    });
                }
                streams
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff_tuning(r: f64, tau: f64) -> Method {
        Method::DiffTuning {
            bank: "fashion-mnist".into(),
            bank_share: r,
            lambda: 0.1,
            tau,
            tau_retention: None,
            form: DiffTuningForm::Sampled,
        }
    }

    fn weighted(tau: f64) -> Vec<Stream> {
        let mut m = diff_tuning(0.2, tau);
        if let Method::DiffTuning { form, .. } = &mut m {
            *form = DiffTuningForm::Weighted;
        }
        m.streams(32, 1000).unwrap()
    }

    #[test]
    fn the_weighted_form_equals_the_sampled_one_in_expectation_only_at_tau_1() {
        // E_uniform[w(t) l(t)] = sum_t w(t) / T l(t): the sampled form's sum_t p(t) l(t) when
        // w(t) / T = p(t) for every t.
        let gap = |w: &[f64], p: &TimestepSampler| {
            (0..1000)
                .map(|t| (w[t] / 1000.0 - p.prob(t)).abs() / p.prob(t))
                .fold(0.0, f64::max)
        };
        for tau in [0.3, 1.0, 1.5] {
            let (w, s) = (
                weighted(tau),
                diff_tuning(0.2, tau).streams(32, 1000).unwrap(),
            );
            assert!((w[0].timesteps.prob(3) - 1e-3).abs() < 1e-15, "uniform");
            assert_eq!((w[0].images, w[1].images, w[1].weight), (26, 6, 0.1));
            let target = w[0].timestep_weights.as_ref().unwrap();
            let bank = w[1].timestep_weights.as_ref().unwrap();
            assert!(gap(target, &s[0].timesteps) < 1e-12, "tau {tau}: target");
            let bank_gap = gap(bank, &s[1].timesteps);
            match tau == 1.0 {
                true => assert!(bank_gap < 1e-12, "tau 1: bank {bank_gap}"),
                false => assert!(bank_gap > 0.1, "tau {tau}: bank {bank_gap}"),
            }
        }
        // tau = 0: psi = 1, no retention left.
        let flat = weighted(0.0);
        assert!(flat[1]
            .timestep_weights
            .as_ref()
            .unwrap()
            .iter()
            .all(|&w| w == 0.0));
        // The sampled form weights nothing.
        let s = diff_tuning(0.2, 1.0).streams(32, 1000).unwrap();
        assert!(s.iter().all(|s| s.timestep_weights.is_none()));
    }

    #[test]
    fn diff_tuning_splits_the_batch_and_weights_the_ends_of_the_chain() {
        // The official code's batch: 32 images at r = 0.2 are 6 bank and 26 target images.
        let s = diff_tuning(0.2, 1.0).streams(32, 1000).unwrap();
        assert_eq!((s[0].images, s[1].images), (26, 6));
        assert_eq!((s[0].weight, s[1].weight), (1.0, 0.1));
        assert!(!s[0].null_labels && s[1].null_labels);
        // tau = 1: p(t) = (t + 1) / sum and (T - t) / sum, sum = T (T + 1) / 2.
        let sum = 1000.0 * 1001.0 / 2.0;
        for t in [0, 499, 999] {
            let want = (t as f64 + 1.0) / sum;
            assert!((s[0].timesteps.prob(t) - want).abs() < 1e-15);
            assert!((s[1].timesteps.prob(999 - t) - want).abs() < 1e-15);
        }
        // tau = 0 is uniform on both; no bank image at a share below one image.
        let flat = diff_tuning(0.2, 0.0).streams(32, 1000).unwrap();
        assert!((flat[0].timesteps.prob(7) - 1e-3).abs() < 1e-15);
        assert_eq!(diff_tuning(0.01, 1.0).streams(32, 1000).unwrap().len(), 1);
    }

    #[test]
    fn bad_options_name_their_key() {
        for (method, key) in [
            (diff_tuning(1.0, 1.0), "method.bank_share"),
            (diff_tuning(-0.1, 1.0), "method.bank_share"),
            (diff_tuning(0.2, f64::NAN), "method.tau"),
        ] {
            let err = method.streams(32, 1000).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let mut both = diff_tuning(0.2, 1.0);
        if let Method::DiffTuning {
            form,
            tau_retention,
            ..
        } = &mut both
        {
            (*form, *tau_retention) = (DiffTuningForm::Weighted, Some(1.0));
        }
        let err = both.streams(32, 1000).unwrap_err().to_string();
        assert!(err.contains("method.tau_retention"), "{err}");
        let config = |form: &str| {
            crate::run::RunConfig::from_json_str(&format!(
                r#"{{ "method": {{ "name": "diff-tuning", "bank": "b", "form": "{form}" }} }}"#
            ))
        };
        assert!(config("weighted").is_ok());
        let err = config("mixed").unwrap_err().to_string();
        assert!(err.contains("mixed") && err.contains("weighted"), "{err}");
        let err = Method::from_name("diff-tuning").unwrap_err().to_string();
        assert!(err.contains("bank"), "{err}");
    }

    #[test]
    fn standard_is_one_uniform_target_stream() {
        let s = Method::default().streams(64, 1000).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].images, s[0].weight, s[0].data.clone()),
            (64, 1.0, StreamData::Target)
        );
        assert!((s[0].timesteps.prob(3) - 1e-3).abs() < 1e-18);
    }
}
