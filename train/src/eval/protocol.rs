//! One evaluation protocol for checkpoints: how many images are sampled, with which sampler and
//! guidance, and what they are compared with (a reference data set, in the features of one
//! classifier). `difftune eval --checkpoint` and `difftune study` both judge a run through it.

use std::path::{Path, PathBuf};

use models::classifier::Classifier;
use serde::{Deserialize, Serialize};
use tensor::{Error, Result, Tensor};

use super::copying::{mean_nearest_distance, Copying};
use super::leakage::{measure, sweep, Leakage, LeakageSweep};
use super::{evaluate_with, EvalOptions, EvalReport, KidConfig, ReferenceStats};
use crate::data::{transform, DataSource};
use crate::diffusion::DiffusionConfig;
use crate::run::checkpoint::CheckpointState;
use crate::run::{generate_chunked, load_model, ConditionImages, SampleSettings, Stage, Weights};

/// How checkpoints are evaluated; absent keys of its JSON form keep their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Protocol {
    /// Images sampled per checkpoint, the same number of each class (as far as it divides).
    pub samples: usize,
    /// The sampler (`ddim50`, `250`, ...); `None`: the run's own.
    pub sampler: Option<String>,
    /// DDIM's eta, in [0, 1]; `None`: the run's own.
    pub eta: Option<f64>,
    /// Classifier-free guidance; `None`: the run's own.
    pub cfg_scale: Option<f64>,
    /// The reference set: `fashion-mnist`, `fashion-mnist-test`, `animal-mnist` or a folder.
    pub reference: String,
    /// The classifier file (see `difftune classifier train`).
    pub classifier: PathBuf,
    /// Folder of cached reference statistics.
    pub cache: PathBuf,
    /// KID: random subsets.
    pub kid_subsets: usize,
    /// KID: images per subset (capped by the smaller set).
    pub kid_subset_size: usize,
    /// Splits of the Inception-style score.
    pub is_splits: usize,
    /// Seed of the sampling noise, the KID subsets and the precision/recall subset.
    pub seed: u64,
    /// ANL models: the fraction of the condition's tokens masked (masked sampling), in [0, 1].
    pub mask: f64,
    /// ANL models: the data the condition images are drawn from, one of the asked class per
    /// sample; `None`: the run's own training data (the target's training split).
    pub condition: Option<String>,
    /// The copying check: the training images (a data source) each sample's nearest distance
    /// is measured to, against real held-out images' (the reference set's); `None`: no check.
    pub copying: Option<String>,
    /// The control-leakage check of a DiT with control metadata (see [`super::leakage`]):
    /// `{"controls": [[...], ...], "samples": N}`; `None`: no check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leakage: Option<LeakageSweep>,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            samples: 1000,
            sampler: None,
            eta: None,
            cfg_scale: None,
            reference: String::new(),
            classifier: PathBuf::new(),
            cache: "runs/cache".into(),
            kid_subsets: 100,
            kid_subset_size: 1000,
            is_splits: 10,
            seed: 0,
            mask: 0.0,
            condition: None,
            copying: None,
            leakage: None,
        }
    }
}

/// Images per call of the sampler: the progress bar's grain.
const SAMPLE_CHUNK: usize = 100;

impl Protocol {
    /// Checks the values that need no file; `what` names the protocol's origin in errors.
    pub fn validate(&self, what: &str) -> Result<()> {
        let counts = [
            ("samples", self.samples, 1),
            ("kid_subsets", self.kid_subsets, 1),
            ("kid_subset_size", self.kid_subset_size, 2),
            ("is_splits", self.is_splits, 1),
        ];
        for (key, value, least) in counts {
            if value < least {
                return Err(Error::msg(format!(
                    "{what} `{key}`: must be at least {least}, got {value}"
                )));
            }
        }
        if self.reference.is_empty() {
            return Err(Error::msg(format!(
                "{what} `reference`: name the reference data set (e.g. animal-mnist or a folder)"
            )));
        }
        DataSource::parse(&self.reference, &format!("{what} `reference`"))?;
        models::anl::check_mask(self.mask, &format!("{what} `mask`"))?;
        for (key, value) in [("condition", &self.condition), ("copying", &self.copying)] {
            if let Some(v) = value {
                DataSource::parse(v, &format!("{what} `{key}`"))?;
            }
        }
        if let Some(sweep) = &self.leakage {
            sweep.validate(what)?;
        }
        if !self.classifier.is_file() {
            return Err(Error::msg(format!(
                "{what} `classifier` {}: no such file",
                self.classifier.display()
            )));
        }
        Ok(())
    }

    /// The options of [`evaluate_with`].
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            kid: KidConfig {
                subsets: self.kid_subsets,
                subset_size: self.kid_subset_size,
                seed: self.seed,
            },
            is_splits: self.is_splits,
            ..Default::default()
        }
    }

    /// Loads the classifier and the reference statistics (computed once, then read from
    /// [`Protocol::cache`]).
    pub fn judge(&self) -> Result<Judge> {
        let classifier = Classifier::load(&self.classifier)?;
        let source = DataSource::parse(&self.reference, "reference")?;
        let data = source.reference(classifier.config.input)?;
        let (reference, cached) =
            ReferenceStats::cached(&self.cache, &source.to_string(), &data, &classifier)?;
        let copying = match &self.copying {
            Some(train) => {
                let train =
                    DataSource::parse(train, "copying")?.reference(classifier.config.input)?;
                let train = transform::scale(&train.images_tensor()?)?;
                // Up to COPYING_REAL reference images, evenly spread, as the real yardstick.
                let step = data.len().div_ceil(COPYING_REAL).max(1);
                let picks: Vec<usize> = (0..data.len()).step_by(step).collect();
                let real = transform::scale(&data.subset(&picks)?.images_tensor()?)?;
                let real_distance = mean_nearest_distance(&real, &train)?;
                Some((train, real_distance))
            }
            None => None,
        };
        Ok(Judge {
            protocol: self.clone(),
            classifier,
            reference,
            cached,
            copying,
        })
    }
}

/// A [`Protocol`] ready to use: its classifier and reference statistics loaded.
pub struct Judge {
    /// The protocol.
    pub protocol: Protocol,
    /// Its classifier.
    pub classifier: Classifier,
    /// The reference set's features.
    pub reference: ReferenceStats,
    /// Whether the reference statistics came from the cache.
    pub cached: bool,
    /// The copying check's training images and the real images' mean nearest distance to them.
    copying: Option<(Tensor, f64)>,
}

/// Real images the copying check measures its yardstick on.
const COPYING_REAL: usize = 1000;

/// `images` (`[N, C, H, W]`) cut to the classifier's `input` (`[C, h, w]`): their centre
/// `h x w` when they have its channels and are larger by an even margin on each axis (the
/// samples of a model trained on images padded by the run's `pad`, so the padding comes off
/// again); otherwise as they are, for [`evaluate_with`] to take or refuse, naming both shapes.
pub fn centre_crop_to(images: &Tensor, input: [usize; 3]) -> Result<Tensor> {
    let [c, h, w] = input;
    let margins = match *images.shape() {
        [_, ic, ih, iw] if ic == c && ih >= h && iw >= w => Some((ih - h, iw - w)),
        _ => None,
    };
    match margins {
        Some((dh, dw)) if dh % 2 == 0 && dw % 2 == 0 && (dh, dw) != (0, 0) => images
            .narrow(2, dh / 2, h)?
            .narrow(3, dw / 2, w)?
            .contiguous(),
        _ => Ok(images.clone()),
    }
}

impl Judge {
    /// Every metric of `images` (`[N, C, H, W]` in `[-1, 1]`), with the class accuracy when the
    /// `labels` they were asked for are known. Images larger than the classifier's input by an
    /// even margin are judged by their centre (see [`centre_crop_to`]).
    pub fn evaluate(&self, images: &Tensor, labels: Option<&[i64]>) -> Result<EvalReport> {
        let images = &centre_crop_to(images, self.classifier.config.input)?;
        let options = self.protocol.options();
        let mut report =
            evaluate_with(images, labels, &self.reference, &self.classifier, &options)?;
        if let Some((train, real)) = &self.copying {
            report.copying = Some(Copying::of(images, train, *real)?);
        }
        Ok(report)
    }

    /// The process and sampling settings of a checkpoint's `state` under the protocol: its own,
    /// with the protocol's sampler and guidance where it sets them.
    fn settings(&self, state: &CheckpointState) -> Result<(DiffusionConfig, SampleSettings)> {
        let mut settings = state.config.sample.clone();
        if let Some(s) = &self.protocol.sampler {
            settings.sampler = s.clone();
        }
        settings.eta = self.protocol.eta.unwrap_or(settings.eta);
        settings.cfg_scale = self.protocol.cfg_scale.unwrap_or(settings.cfg_scale);
        let process = state.config.diffusion_config()?;
        settings.validate(process.steps)?;
        Ok((process, settings))
    }

    /// The control-leakage check of the protocol (`None` when it asks for none) on the model
    /// in `path` (a run, checkpoint or exported file, its moving average): its samples, image
    /// `i` of class `i % classes` with noise seeded by `seed`, under each control of the sweep.
    pub fn leakage(&self, path: &Path, seed: u64) -> Result<Option<Leakage>> {
        let Some(spec) = &self.protocol.leakage else {
            return Ok(None);
        };
        let model = load_model(path, Weights::Ema)?;
        let (process, settings) = self.settings(&model.state)?;
        let classes = model.state.classes.len() as i64;
        let labels: Vec<i64> = (0..spec.samples as i64).map(|i| i % classes).collect();
        let rows = sweep(
            &model.network,
            &model.params,
            &process,
            &settings,
            &labels,
            seed,
            &spec.controls,
        )
        .map_err(|e| Error::msg(format!("leakage check of {}: {e}", path.display())))?;
        let input = self.classifier.config.input;
        let rows = rows
            .iter()
            .map(|r| centre_crop_to(r, input))
            .collect::<Result<Vec<_>>>()?;
        measure(&rows, &labels, &self.classifier).map(Some)
    }

    /// Samples [`Protocol::samples`] images of a run or checkpoint folder from its moving
    /// average, class `i % classes` for image `i`, with the protocol's sampler and guidance (else
    /// the run's) and noise seeded by `seed`; the images and their requested labels (`None` for
    /// an unconditional model, whose samples were asked for no class). The run's classes must be
    /// the classifier's. `progress`: a bar on standard error.
    pub fn sample(
        &self,
        dir: &Path,
        seed: u64,
        progress: bool,
    ) -> Result<(Tensor, Option<Vec<i64>>)> {
        let loaded = load_model(dir, Weights::Ema)?;
        let stage = Stage::new(&loaded.network, &loaded.params);
        let what = dir.display().to_string();
        self.sample_in_stages(&[stage], &loaded.state, &what, seed, progress)
    }

    /// [`Judge::sample`] with the chain split between networks (see [`crate::run::generate_in_stages`]);
    /// `state` is the first stage's checkpoint (its classes, process and sampling settings),
    /// `what` names it in messages.
    pub fn sample_in_stages(
        &self,
        stages: &[Stage],
        state: &CheckpointState,
        what: &str,
        seed: u64,
        progress: bool,
    ) -> Result<(Tensor, Option<Vec<i64>>)> {
        let classes = &state.classes;
        let expected = &self.classifier.config.classes;
        if classes != expected {
            return Err(Error::msg(format!(
                "{what}: its classes ({}) are not the classifier's ({})",
                classes.join(", "),
                expected.join(", ")
            )));
        }
        let (process, settings) = self.settings(state)?;
        tensor::limits::SAMPLES.check(self.protocol.samples as u128, "samples per evaluation")?;
        let labels: Vec<i64> = (0..self.protocol.samples)
            .map(|i| (i % classes.len()) as i64)
            .collect();
        // ANL models: a condition image of the asked class per sample, drawn once for every
        // stage that reads one.
        let condition = match stages.iter().any(|s| s.network.needs_condition()) {
            true => Some(ConditionImages::of_source(
                self.protocol.condition.as_deref().map(|c| (c, "condition")),
                state,
                &labels,
                self.protocol.mask,
                seed,
            )?),
            false => None,
        };
        let stages: Vec<Stage> = stages
            .iter()
            .map(|s| Stage {
                condition: condition
                    .as_ref()
                    .filter(|_| s.network.needs_condition())
                    .or(s.condition),
                ..*s
            })
            .collect();
        let bar = progress.then(|| {
            eprintln!(
                "sampling {} images from {what} ({}, guidance {})",
                labels.len(),
                settings.sampler,
                settings.cfg_scale
            );
            crate::progress::bar(labels.len() as u64, "sample")
        });
        let images = generate_chunked(
            &stages,
            &process,
            &settings,
            &labels,
            seed,
            SAMPLE_CHUNK,
            bar.as_ref(),
        )?;
        if let Some(bar) = bar {
            bar.finish();
        }
        let conditional = stages.first().is_some_and(|s| s.network.conditional());
        Ok((images, conditional.then_some(labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_samples_are_cut_to_the_classifier_and_other_shapes_left_alone() {
        // Two 1-channel 6x6 images, pixel value 100 n + 10 y + x.
        let values: Vec<f32> = (0..2 * 36)
            .map(|i| (100 * (i / 36) + 10 * (i % 36 / 6) + i % 6) as f32)
            .collect();
        let images = Tensor::from_vec(values, &[2, 1, 6, 6]).unwrap();
        let cut = centre_crop_to(&images, [1, 4, 4]).unwrap();
        assert_eq!(cut.shape(), &[2, 1, 4, 4]);
        let want: Vec<f32> = (0..2)
            .flat_map(|n| {
                (1..5).flat_map(move |y| (1..5).map(move |x| (100 * n + 10 * y + x) as f32))
            })
            .collect();
        assert_eq!(cut.to_vec::<f32>().unwrap(), want);
        // Only height's margin: the rows come off.
        let rows = centre_crop_to(&images, [1, 2, 6]).unwrap();
        assert_eq!(
            rows.to_vec::<f32>().unwrap()[..6],
            [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]
        );
        // Odd margins, other channels, smaller images: left as they are.
        for input in [[1, 5, 5], [3, 4, 4], [1, 8, 8], [1, 6, 6]] {
            let same = centre_crop_to(&images, input).unwrap();
            assert_eq!(same.shape(), images.shape(), "{input:?}");
        }
    }
}
