//! Reference statistics: a real data set's features through one classifier, computed once and
//! cached as safetensors under a key made of the data set's and the classifier's content hashes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use models::classifier::Classifier;
use rand::seq::index::sample;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{Error, Generator, Result, Tensor};

use super::classifier::run;
use super::stats::FeatureStats;
use crate::data::{transform, Dataset};

/// Most reference feature vectors kept for KID and precision/recall (a seeded random subset).
pub const MAX_REFERENCE_FEATURES: usize = 10_000;

/// Metadata keys of a cache file.
const META_DATASET: &str = "dataset";
const META_CLASSIFIER: &str = "classifier";
const META_KEY: &str = "key";
const META_N: &str = "n";

/// The features of a real data set through a classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceStats {
    /// Which data set (as named on the command line).
    pub dataset: String,
    /// The classifier's name.
    pub classifier: String,
    /// Content key: hashes of the data set and of the classifier's weights.
    pub key: String,
    /// Mean and covariance over the whole set.
    pub stats: FeatureStats,
    /// Up to [`MAX_REFERENCE_FEATURES`] feature vectors, row-major `[M, stats.dim]`.
    pub features: Vec<f64>,
}

/// 64-bit FNV-1a: a small stable content hash for cache keys (not for security).
pub fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The content hash of a model's parameters (names, shapes and values) and its config.
pub fn classifier_hash(model: &Classifier) -> Result<u64> {
    let mut h = fnv1a(model.config.to_json().as_bytes(), FNV_OFFSET);
    for (name, var) in model.params.iter() {
        h = fnv1a(name.as_bytes(), h);
        for v in var.value().to_f64_vec()? {
            h = fnv1a(&(v as f32).to_le_bytes(), h);
        }
    }
    Ok(h)
}

/// The content hash of a data set's pixels, shape and labels.
pub fn dataset_hash(data: &Dataset) -> u64 {
    let mut h = fnv1a(data.pixels(), FNV_OFFSET);
    for d in data.shape() {
        h = fnv1a(&(d as u64).to_le_bytes(), h);
    }
    for l in data.labels() {
        h = fnv1a(&l.to_le_bytes(), h);
    }
    h
}

impl ReferenceStats {
    /// Runs `model` over all of `data` (named `dataset`): statistics of every image, and a
    /// seeded subset of at most [`MAX_REFERENCE_FEATURES`] features.
    pub fn compute(dataset: &str, data: &Dataset, model: &Classifier) -> Result<Self> {
        if data.image_shape() != model.config.input {
            return Err(Error::shape(
                "reference statistics",
                format!(
                    "data set `{dataset}` has images {:?}, classifier `{}` takes {:?}",
                    data.image_shape(),
                    model.config.name,
                    model.config.input
                ),
            ));
        }
        let out = run(model, &transform::scale(&data.images_tensor()?)?)?;
        let stats = FeatureStats::from_features(&out.features, out.dim)?;
        let keep = subset_rows(stats.n, MAX_REFERENCE_FEATURES, 0);
        let features = keep
            .iter()
            .flat_map(|&i| out.features[i * out.dim..(i + 1) * out.dim].iter().copied())
            .collect();
        Ok(ReferenceStats {
            dataset: dataset.to_string(),
            classifier: model.config.name.clone(),
            key: format!(
                "{:016x}{:016x}",
                dataset_hash(data),
                classifier_hash(model)?
            ),
            stats,
            features,
        })
    }

    /// Writes the statistics to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let (mean, cov) = self.stats.to_tensors()?;
        let rows = self.features.len() / self.stats.dim;
        let features = Tensor::from_slice(&self.features, &[rows, self.stats.dim])?;
        let meta = HashMap::from([
            (META_DATASET.to_string(), self.dataset.clone()),
            (META_CLASSIFIER.to_string(), self.classifier.clone()),
            (META_KEY.to_string(), self.key.clone()),
            (META_N.to_string(), self.stats.n.to_string()),
        ]);
        safetensors::save(
            path,
            &[("mean", &mean), ("cov", &cov), ("features", &features)],
            Some(&meta),
        )
    }

    /// Reads statistics written by [`ReferenceStats::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let file = SafeTensorsFile::open(path)?;
        let meta = file.metadata();
        let field = |key: &str| {
            meta.get(key).cloned().ok_or_else(|| Error::Format {
                path: path.to_path_buf(),
                msg: format!("reference statistics lack the `{key}` metadata"),
            })
        };
        let n = field(META_N)?.parse::<usize>().map_err(|_| Error::Format {
            path: path.to_path_buf(),
            msg: "reference statistics: `n` is not a count".into(),
        })?;
        let stats = FeatureStats::from_tensors(&file.tensor("mean")?, &file.tensor("cov")?, n)?;
        let features = file.tensor("features")?;
        if features.rank() != 2 || features.shape()[1] != stats.dim {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!(
                    "reference features {:?} do not have width {}",
                    features.shape(),
                    stats.dim
                ),
            });
        }
        Ok(ReferenceStats {
            dataset: field(META_DATASET)?,
            classifier: field(META_CLASSIFIER)?,
            key: field(META_KEY)?,
            stats,
            features: features.to_f64_vec()?,
        })
    }

    /// The statistics of `data` (named `dataset`) through `model`, read from `cache_dir` when a
    /// file with the same content key is there, else computed and written there. Also returns
    /// whether the cache was used.
    pub fn cached(
        cache_dir: &Path,
        dataset: &str,
        data: &Dataset,
        model: &Classifier,
    ) -> Result<(Self, bool)> {
        let key = format!(
            "{:016x}{:016x}",
            dataset_hash(data),
            classifier_hash(model)?
        );
        let path = cache_path(cache_dir, dataset, &model.config.name, &key);
        if path.is_file() {
            if let Ok(found) = ReferenceStats::load(&path) {
                if found.key == key {
                    return Ok((found, true));
                }
            }
        }
        let fresh = ReferenceStats::compute(dataset, data, model)?;
        std::fs::create_dir_all(cache_dir).map_err(|source| Error::Io {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        fresh.save(&path)?;
        Ok((fresh, false))
    }
}

/// `cache_dir/ref-<dataset>-<classifier>-<key>.safetensors`, names reduced to safe characters.
pub fn cache_path(cache_dir: &Path, dataset: &str, classifier: &str, key: &str) -> PathBuf {
    let slug = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect()
    };
    cache_dir.join(format!(
        "ref-{}-{}-{key}.safetensors",
        slug(dataset),
        slug(classifier)
    ))
}

/// At most `max` of the row indices `0..n`, drawn with `seed`, in increasing order (all rows
/// when `n <= max`).
pub fn subset_rows(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut rows = sample(Generator::new(seed).rng(), n, max).into_vec();
    rows.sort_unstable();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::classifier::ClassifierConfig;

    #[test]
    fn cache_is_written_reused_and_keyed_by_content() {
        let dir = std::env::temp_dir().join(format!("difftune-refcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pixels: Vec<u8> = (0..20 * 64).map(|i| (i * 37 % 256) as u8).collect();
        let labels = (0..20).map(|i| i % 2).collect();
        let data =
            Dataset::from_raw(pixels, [20, 1, 8, 8], labels, vec!["a".into(), "b".into()]).unwrap();
        let config = ClassifierConfig::new("t", vec!["a".into(), "b".into()], [1, 8, 8]);
        let model = Classifier::new(config.clone(), 1).unwrap();
        let (first, cached) = ReferenceStats::cached(&dir, "toy/set", &data, &model).unwrap();
        assert!(!cached);
        assert_eq!((first.stats.n, first.features.len()), (20, 20 * 128));
        let (second, cached) = ReferenceStats::cached(&dir, "toy/set", &data, &model).unwrap();
        assert!(cached);
        assert_eq!(second, first);
        // Other weights: another key, recomputed.
        let other = Classifier::new(config, 2).unwrap();
        let (third, cached) = ReferenceStats::cached(&dir, "toy/set", &data, &other).unwrap();
        assert!(!cached && third.key != first.key);
        let bad = Dataset::from_raw(
            vec![0; 2 * 2 * 16],
            [2, 2, 4, 4],
            vec![0, 1],
            vec!["a".into(), "b".into()],
        )
        .unwrap();
        let e = ReferenceStats::compute("bad", &bad, &model)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 4, 4]") && e.contains("[1, 8, 8]"), "{e}");
    }

    #[test]
    fn subsets_are_seeded_sorted_and_capped() {
        assert_eq!(subset_rows(3, 5, 0), vec![0, 1, 2]);
        let s = subset_rows(100, 10, 4);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, subset_rows(100, 10, 4));
    }
}
