//! Evaluation of generated images in the features of a small classifier trained by difftune
//! itself ([`models::classifier::Classifier`]); metric names carry the classifier's name
//! (`FD-fashion-mnist`), never "FID".
//!
//! - [`stats`]: feature mean and covariance (f64) and the Fréchet distance.
//! - [`kid`]: unbiased MMD² with the cubic polynomial kernel over random subsets.
//! - [`inception_score`]: the Inception-style score of the classifier's softmax.
//! - [`precision_recall`]: k-NN manifold precision and recall (Kynkäänniemi et al. 2019).
//! - [`classifier`]: training the classifier, its accuracy, features and probabilities.
//! - [`reference`]: a real set's features, cached by content hash.
//! - [`data`]: named data sets and image folders; [`report`]: the result as JSON and a table.
//! - [`protocol`]: how a checkpoint is sampled and judged (`difftune eval`, `difftune study`).
//!
//! [`evaluate`] puts them together for one set of images.

pub mod classifier;
pub mod copying;
pub mod data;
pub mod inception_score;
pub mod interval;
pub mod kid;
pub mod leakage;
pub mod precision_recall;
pub mod protocol;
pub mod reference;
pub mod report;
pub mod stats;

use models::classifier::Classifier;
use tensor::{DType, Error, Result, Tensor};

pub use kid::KidConfig;
pub use reference::ReferenceStats;
pub use report::EvalReport;

/// The knobs of [`evaluate_with`]; `Default` is what [`evaluate`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// KID's subsets.
    pub kid: KidConfig,
    /// Splits of the Inception-style score (fewer when there are fewer images), cut after a
    /// seeded shuffle (seed `kid.seed`), so images saved class by class do not make one-class
    /// splits.
    pub is_splits: usize,
    /// Neighbour rank of precision and recall.
    pub k: usize,
    /// Most generated images used for precision and recall (a seeded subset).
    pub max_pr_images: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            kid: KidConfig::default(),
            is_splits: 10,
            k: 3,
            max_pr_images: reference::MAX_REFERENCE_FEATURES,
        }
    }
}

/// [`evaluate_with`] with the default options.
pub fn evaluate(
    images: &Tensor,
    requested_labels: Option<&[i64]>,
    reference: &ReferenceStats,
    classifier: &Classifier,
) -> Result<EvalReport> {
    evaluate_with(
        images,
        requested_labels,
        reference,
        classifier,
        &EvalOptions::default(),
    )
}

/// Every metric of `images` (`f32 [N, C, H, W]` in `[-1, 1]`, N at least 4) against
/// `reference` (computed with the same `classifier`); with `requested_labels` (`[N]`, the class
/// each image was asked for), also the classifier's accuracy on them.
pub fn evaluate_with(
    images: &Tensor,
    requested_labels: Option<&[i64]>,
    reference: &ReferenceStats,
    classifier: &Classifier,
    options: &EvalOptions,
) -> Result<EvalReport> {
    let cfg = &classifier.config;
    if images.dtype() != DType::F32 {
        return Err(Error::dtype(
            "evaluate",
            images.dtype(),
            "f32 images in [-1, 1]",
        ));
    }
    if images.rank() != 4 || images.shape()[1..] != cfg.input {
        return Err(Error::shape(
            "evaluate",
            format!(
                "images {:?}: classifier `{}` takes [N, {}, {}, {}]",
                images.shape(),
                cfg.name,
                cfg.input[0],
                cfg.input[1],
                cfg.input[2]
            ),
        ));
    }
    let n = images.shape()[0];
    if n < options.k + 1 || n < 2 {
        return Err(Error::msg(format!(
            "evaluate: {n} images, at least {} needed",
            (options.k + 1).max(2)
        )));
    }
    if reference.classifier != cfg.name || reference.stats.dim != cfg.features {
        return Err(Error::msg(format!(
            "evaluate: reference statistics of `{}` were made with classifier `{}` ({} features), \
             not `{}` ({} features)",
            reference.dataset, reference.classifier, reference.stats.dim, cfg.name, cfg.features
        )));
    }
    if let Some(labels) = requested_labels {
        if labels.len() != n {
            return Err(Error::shape(
                "evaluate",
                format!("{} requested labels for {n} images", labels.len()),
            ));
        }
        if let Some(bad) = labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= cfg.classes.len())
        {
            return Err(Error::msg(format!(
                "evaluate: requested label {bad} is outside 0..{} of classifier `{}`",
                cfg.classes.len(),
                cfg.name
            )));
        }
    }
    let out = classifier::run(classifier, images)?;
    let dim = out.dim;
    let stats = stats::FeatureStats::from_features(&out.features, dim)?;
    let keep = reference::subset_rows(n, options.max_pr_images, options.kid.seed);
    let pr_features: Vec<f64> = keep
        .iter()
        .flat_map(|&i| out.features[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    Ok(EvalReport {
        classifier: cfg.name.clone(),
        reference: reference.dataset.clone(),
        images: n,
        reference_images: reference.stats.n,
        fd: stats::frechet_distance(&stats, &reference.stats)?,
        kid: kid::kid(&out.features, &reference.features, dim, &options.kid)?,
        inception_score: inception_score::inception_score(
            &shuffled_rows(&out.probs, cfg.classes.len(), options.kid.seed),
            cfg.classes.len(),
            options.is_splits.clamp(1, n),
        )?,
        precision_recall: precision_recall::precision_recall(
            &reference.features,
            &pr_features,
            dim,
            options.k,
        )?,
        class_accuracy: requested_labels
            .map(|labels| classifier::label_accuracy(&out.probs, labels))
            .transpose()?,
        copying: None,
        leakage: None,
    })
}

/// The rows of row-major `values` (`width` per row) in a seeded random order.
fn shuffled_rows(values: &[f64], width: usize, seed: u64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len() / width).collect();
    rand::seq::SliceRandom::shuffle(&mut order[..], tensor::Generator::new(seed).rng());
    order
        .iter()
        .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
        .collect()
}
