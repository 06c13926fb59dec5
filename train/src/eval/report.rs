//! [`EvalReport`]: every metric of one evaluation, as JSON and as a table.

use std::fmt;

use serde_json::{json, Value};

use super::inception_score::InceptionScore;
use super::kid::Kid;
use super::precision_recall::PrecisionRecall;

/// The metrics of a set of generated images against a reference set, in the features of one
/// classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// The classifier's name: metric names carry it (`FD-<name>`, `KID-<name>`).
    pub classifier: String,
    /// The reference data set.
    pub reference: String,
    /// Images evaluated.
    pub images: usize,
    /// Reference images behind the mean and covariance.
    pub reference_images: usize,
    /// Fréchet distance between the feature Gaussians.
    pub fd: f64,
    /// KID (unbiased MMD², cubic kernel) over random subsets.
    pub kid: Kid,
    /// Inception-style score from the classifier's softmax.
    pub inception_score: InceptionScore,
    /// k-NN precision and recall.
    pub precision_recall: PrecisionRecall,
    /// Share of images the classifier puts in the class they were asked for (conditional
    /// samples only).
    pub class_accuracy: Option<f64>,
    /// The copying check against the training images, where the protocol asks for it.
    pub copying: Option<super::copying::Copying>,
    /// The control-leakage check, where the protocol asks for it.
    pub leakage: Option<super::leakage::Leakage>,
}

impl EvalReport {
    /// The report as JSON, metrics under their classifier-qualified names.
    pub fn to_json(&self) -> Value {
        let name = &self.classifier;
        json!({
            "classifier": name,
            "reference": self.reference,
            "images": self.images,
            "reference_images": self.reference_images,
            format!("FD-{name}"): self.fd,
            format!("KID-{name}"): {
                "mean": self.kid.mean,
                "std": self.kid.std,
                "stderr": self.kid.stderr,
                "subsets": self.kid.subsets,
                "subset_size": self.kid.subset_size,
            },
            format!("IS-{name}"): {
                "mean": self.inception_score.mean,
                "std": self.inception_score.std,
                "splits": self.inception_score.splits,
            },
            "precision": self.precision_recall.precision,
            "recall": self.precision_recall.recall,
            "k": self.precision_recall.k,
            "class_accuracy": self.class_accuracy,
            "copying": self.copying,
            "leakage": self.leakage,
        })
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.classifier;
        let rows = [
            (format!("FD-{name}"), format!("{:.4}", self.fd)),
            (
                format!("KID-{name}"),
                format!(
                    "{:.6} ± {:.6} (stderr; std {:.6}, {} subsets of {})",
                    self.kid.mean,
                    self.kid.stderr,
                    self.kid.std,
                    self.kid.subsets,
                    self.kid.subset_size
                ),
            ),
            (
                format!("IS-{name}"),
                format!(
                    "{:.4} ± {:.4} ({} splits)",
                    self.inception_score.mean,
                    self.inception_score.std,
                    self.inception_score.splits
                ),
            ),
            (
                format!("precision (k={})", self.precision_recall.k),
                format!("{:.4}", self.precision_recall.precision),
            ),
            (
                format!("recall (k={})", self.precision_recall.k),
                format!("{:.4}", self.precision_recall.recall),
            ),
            (
                "class accuracy".to_string(),
                self.class_accuracy
                    .map_or("-".to_string(), |a| format!("{a:.4}")),
            ),
        ];
        let mut rows = rows.to_vec();
        if let Some(c) = &self.copying {
            rows.push((
                "copying ratio".to_string(),
                format!(
                    "{:.4} (nearest training image: samples {:.3}, real held-out {:.3})",
                    c.ratio, c.sample_distance, c.real_distance
                ),
            ));
        }
        writeln!(
            f,
            "{} images against {} ({} images), classifier `{name}`",
            self.images, self.reference, self.reference_images
        )?;
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            writeln!(f, "  {k:<width$}  {v}")?;
        }
        Ok(())
    }
}
