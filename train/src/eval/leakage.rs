//! Control leakage (arXiv 2411.03177): does a model's control metadata change what its images
//! show? The same samples (the same noise, the same asked classes) are drawn once per control
//! value of a sweep; the classifier then says how often it still sees the asked class, and how
//! far its features moved from the samples of the sweep's first value (the reference control,
//! e.g. the identity augmentation). A model whose control only shapes the crop keeps its classes
//! and moves little; one whose control leaks into semantics changes class.

use serde::{Deserialize, Serialize};
use tensor::{Error, Result, Tensor};

use super::classifier::{label_accuracy, run};
use crate::data::transform::{crop_resized, prepare_into, Crop};
use crate::diffusion::DiffusionConfig;
use crate::run::{generate, Network, SampleSettings};
use models::classifier::Classifier;
use models::ParamStore;

/// The sweep of a leakage check (the protocol key `leakage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakageSweep {
    /// The control values, one row each (a value per control kind); the first is the reference
    /// the others' features are compared with.
    pub controls: Vec<Vec<f64>>,
    /// Samples per control value (the same noise and classes for every value).
    pub samples: usize,
}

impl LeakageSweep {
    /// Checks the sweep's shape; `what` names its origin in errors.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.controls.len() < 2 {
            return Err(Error::msg(format!(
                "{what} `leakage.controls`: give a reference control and at least one other, \
                 got {} values",
                self.controls.len()
            )));
        }
        if self.samples < 2 {
            return Err(Error::msg(format!(
                "{what} `leakage.samples`: must be at least 2, got {}",
                self.samples
            )));
        }
        let k = self.controls[0].len();
        if let Some(row) = self.controls.iter().find(|row| row.len() != k) {
            return Err(Error::msg(format!(
                "{what} `leakage.controls`: every row needs {k} values (the first's), got {row:?}"
            )));
        }
        if let Some(bad) = self.controls.iter().flatten().find(|v| !v.is_finite()) {
            return Err(Error::msg(format!(
                "{what} `leakage.controls`: values must be finite, got {bad}"
            )));
        }
        Ok(())
    }
}

/// What the classifier saw along a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leakage {
    /// Per control value: the share of samples the classifier puts in their asked class.
    pub accuracy: Vec<f64>,
    /// Per control value: the mean distance, in the classifier's features, of each sample from
    /// the same sample under the reference control (0 for the reference itself).
    pub shift: Vec<f64>,
}

impl Leakage {
    /// The headline numbers: the accuracy and the feature shift averaged over the controls
    /// other than the reference.
    pub fn summary(&self) -> (f64, f64) {
        let mean = |v: &[f64]| v[1..].iter().sum::<f64>() / (v.len() - 1).max(1) as f64;
        (mean(&self.accuracy), mean(&self.shift))
    }
}

/// The samples of `labels` (noise seeded by `seed`) under each control value of `controls`:
/// one `[N, C, H, W]` per value.
pub fn sweep(
    network: &Network,
    params: &ParamStore,
    process: &DiffusionConfig,
    settings: &SampleSettings,
    labels: &[i64],
    seed: u64,
    controls: &[Vec<f64>],
) -> Result<Vec<Tensor>> {
    controls
        .iter()
        .map(|control| {
            let settings = SampleSettings {
                control: control.clone(),
                ..settings.clone()
            };
            generate(network, params, process, &settings, labels, seed)
        })
        .collect()
}

/// The classifier's view of the `rows` of a [`sweep`] (the first the reference), whose samples
/// were asked for `labels`.
pub fn measure(rows: &[Tensor], labels: &[i64], classifier: &Classifier) -> Result<Leakage> {
    let outputs = rows
        .iter()
        .map(|images| run(classifier, images))
        .collect::<Result<Vec<_>>>()?;
    let reference = outputs
        .first()
        .ok_or_else(|| Error::msg("leakage: no samples to measure"))?;
    let dim = reference.dim;
    let mut leakage = Leakage {
        accuracy: Vec::new(),
        shift: Vec::new(),
    };
    for out in &outputs {
        leakage.accuracy.push(label_accuracy(&out.probs, labels)?);
        let distances: Vec<f64> = out
            .features
            .chunks(dim)
            .zip(reference.features.chunks(dim))
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        leakage
            .shift
            .push(distances.iter().sum::<f64>() / distances.len().max(1) as f64);
    }
    Ok(leakage)
}

/// The classifier's accuracy on real `data` (`[C, S, S]` images, the models' size) transformed
/// as each control of a sweep says (`[scale, crop_top, crop_left, flip]`: the crop of side
/// `round(scale · S)` at those fractions of the side, resized back, then mirrored when
/// `flip >= 0.5`): what a model that renders its control faithfully, without leaking it into
/// the class, would score.
pub fn real_accuracy(
    data: &crate::data::Dataset,
    controls: &[Vec<f64>],
    classifier: &Classifier,
) -> Result<Vec<f64>> {
    let [c, h, w] = data.image_shape();
    if h != w {
        return Err(Error::msg(format!(
            "leakage: crops need square images, these are {h}x{w}"
        )));
    }
    controls
        .iter()
        .map(|control| {
            let [scale, top, left, flip] =
                <[f64; 4]>::try_from(control.as_slice()).map_err(|_| {
                    Error::msg(format!(
                        "leakage: control {control:?}: expected 4 values (scale, crop_top, \
                         crop_left, flip)"
                    ))
                })?;
            let side = ((scale * h as f64).round() as usize).clamp(1, h);
            let at = |f: f64| ((f * h as f64).round().max(0.0) as usize).min(h - side);
            let crop = Crop {
                top: at(top),
                left: at(left),
                side,
            };
            let mut images = vec![0f32; data.len() * c * h * w];
            for (i, out) in images.chunks_exact_mut(c * h * w).enumerate() {
                let cropped = crop_resized(data.image(i), [c, h, w], crop);
                prepare_into(&cropped, (h, w), 0, flip >= 0.5, out);
            }
            let images = Tensor::from_vec(images, &[data.len(), c, h, w])?;
            let out = run(classifier, &images)?;
            label_accuracy(&out.probs, data.labels())
        })
        .collect()
}
