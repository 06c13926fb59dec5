//! How a method's step draws its data: one or more [`Stream`]s, each with its own share of the
//! batch, timestep sampler, labels and loss weight.

use tensor::Result;

use super::{bank_images, Method};
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
        };
        Ok(match self {
            Method::Standard { .. } => vec![target(batch_size, TimestepSampler::uniform(steps)?)],
            Method::DiffTuning {
                bank,
                bank_share,
                lambda,
                tau,
                tau_retention,
            } => {
                let tau_retention = tau_retention.unwrap_or(*tau);
                let power = |f: &dyn Fn(f64) -> f64, exp: f64| {
                    let weights: Vec<f64> = (0..steps).map(|t| f(t as f64).powf(exp)).collect();
                    TimestepSampler::weighted(&weights)
                };
                // Adaptation far from the data: p(t) ∝ (t + 1)^tau; retention near it:
                // p(t) ∝ (T - t)^tau_retention.
                let adapt = power(&|t| t + 1.0, *tau)?;
                let retain = power(&|t| steps as f64 - t, tau_retention)?;
                let bank_count = bank_images(batch_size, *bank_share);
                let mut streams = vec![target(batch_size - bank_count, adapt)];
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
        }
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
