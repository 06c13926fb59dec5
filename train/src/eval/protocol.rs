//! One evaluation protocol for checkpoints: how many images are sampled, with which sampler and
//! guidance, and what they are compared with (a reference data set, in the features of one
//! classifier). `difftune eval --checkpoint` and `difftune study` both judge a run through it.

use std::path::{Path, PathBuf};

use models::classifier::Classifier;
use serde::{Deserialize, Serialize};
use tensor::{Error, Result, Tensor};

use super::{evaluate_with, EvalOptions, EvalReport, KidConfig, ReferenceStats};
use crate::data::DataSource;
use crate::run::checkpoint::CheckpointState;
use crate::run::{generate_chunked, load_model, Stage, Weights};

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
        Ok(Judge {
            protocol: self.clone(),
            classifier,
            reference,
            cached,
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
}

impl Judge {
    /// Every metric of `images` (`[N, C, H, W]` in `[-1, 1]`), with the class accuracy when the
    /// `labels` they were asked for are known.
    pub fn evaluate(&self, images: &Tensor, labels: Option<&[i64]>) -> Result<EvalReport> {
        let options = self.protocol.options();
        evaluate_with(images, labels, &self.reference, &self.classifier, &options)
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
        let stage = Stage {
            network: &loaded.network,
            params: &loaded.params,
            from: 0,
            null_labels: false,
        };
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
        let mut settings = state.config.sample.clone();
        if let Some(s) = &self.protocol.sampler {
            settings.sampler = s.clone();
        }
        settings.eta = self.protocol.eta.unwrap_or(settings.eta);
        settings.cfg_scale = self.protocol.cfg_scale.unwrap_or(settings.cfg_scale);
        let process = state.config.diffusion_config()?;
        settings.validate(process.steps)?;
        tensor::limits::SAMPLES.check(self.protocol.samples as u128, "samples per evaluation")?;
        let labels: Vec<i64> = (0..self.protocol.samples)
            .map(|i| (i % classes.len()) as i64)
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
            stages,
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
