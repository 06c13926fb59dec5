//! Feature statistics (mean and covariance, f64) and the Fréchet distance between the Gaussians
//! they describe:
//!
//! ```text
//! FD = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½
//! ```
//!
//! `tr (Σ1^½ Σ2 Σ1^½)^½` equals `tr (Σ1 Σ2)^½` and is computed from two symmetric
//! eigendecompositions: `Σ1^½ = V diag(√λ) Vᵀ`, then the eigenvalues of the symmetric PSD
//! `Σ1^½ Σ2 Σ1^½`, whose square roots are summed (tiny negative eigenvalues from rounding count
//! as zero).

use nalgebra::DMatrix;
use tensor::{DType, Error, Result, Tensor};

/// Mean and (unbiased, `N − 1`) covariance of `n` feature vectors of width `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// Number of feature vectors.
    pub n: usize,
    /// Feature width `D`.
    pub dim: usize,
    /// Mean, `[D]`.
    pub mean: Vec<f64>,
    /// Covariance, row-major `[D, D]`.
    pub cov: Vec<f64>,
}

/// Checks that `features` holds whole rows of `dim` values, at least `min_rows` of them, all
/// finite; returns the row count. `what` names the set in errors.
pub(crate) fn check_rows(
    features: &[f64],
    dim: usize,
    min_rows: usize,
    what: &str,
) -> Result<usize> {
    if dim == 0 || !features.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "eval",
            format!(
                "{what}: {} values are not whole rows of {dim} features",
                features.len()
            ),
        ));
    }
    let n = features.len() / dim;
    if n < min_rows {
        return Err(Error::msg(format!(
            "{what}: {n} feature vectors, at least {min_rows} needed"
        )));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(Error::msg(format!(
            "{what}: feature {} of row {} is not finite ({})",
            i % dim,
            i / dim,
            features[i]
        )));
    }
    Ok(n)
}

impl FeatureStats {
    /// The statistics of row-major `features` `[N, dim]` (N at least 2).
    pub fn from_features(features: &[f64], dim: usize) -> Result<Self> {
        let n = check_rows(features, dim, 2, "feature statistics")?;
        let mut mean = vec![0.0; dim];
        for row in features.chunks(dim) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centered = DMatrix::from_fn(n, dim, |i, j| features[i * dim + j] - mean[j]);
        let cov = centered.tr_mul(&centered) / (n as f64 - 1.0);
        Ok(FeatureStats {
            n,
            dim,
            mean,
            // Symmetric, so column-major storage reads the same as row-major.
            cov: cov.as_slice().to_vec(),
        })
    }

    /// The statistics as f64 tensors `mean [D]` and `cov [D, D]` (for a cache file).
    pub fn to_tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(&self.mean, &[self.dim])?,
            Tensor::from_slice(&self.cov, &[self.dim, self.dim])?,
        ))
    }

    /// Statistics from tensors `mean [D]` and `cov [D, D]` over `n` vectors.
    pub fn from_tensors(mean: &Tensor, cov: &Tensor, n: usize) -> Result<Self> {
        let dim = mean.shape().first().copied().unwrap_or(0);
        if mean.rank() != 1 || cov.shape() != [dim, dim] || dim == 0 {
            return Err(Error::shape(
                "FeatureStats::from_tensors",
                format!(
                    "mean {:?} and cov {:?}: expected [D] and [D, D]",
                    mean.shape(),
                    cov.shape()
                ),
            ));
        }
        Ok(FeatureStats {
            n,
            dim,
            mean: mean.to_dtype(DType::F64)?.to_vec::<f64>()?,
            cov: cov.to_dtype(DType::F64)?.to_vec::<f64>()?,
        })
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.dim, self.dim, &self.cov)
    }
}

/// `tr (A^½ B A^½)^½` for symmetric positive semi-definite `a` and `b`.
pub fn trace_sqrt_product(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let root_a = psd_sqrt(a);
    let m = &root_a * b * &root_a;
    // Symmetrise away rounding before the symmetric solver.
    let m = (&m + m.transpose()) * 0.5;
    m.symmetric_eigenvalues()
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum()
}

/// `A^½ = V diag(√max(λ, 0)) Vᵀ` of a symmetric PSD matrix.
pub fn psd_sqrt(a: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = a.clone().symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    let scaled = &eig.eigenvectors * DMatrix::from_diagonal(&roots);
    scaled * eig.eigenvectors.transpose()
}

/// The Fréchet distance between the Gaussians of `a` and `b` (same width).
///
/// Not clamped at 0: a distance is never negative, but rounding can leave one of nearly equal
/// statistics slightly below 0 (see [`self_distance_rounding`]); it is reported as computed, as
/// pytorch-fid does, so that a clearly negative value still shows a fault instead of reading 0.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(Error::shape(
            "frechet_distance",
            format!("feature widths differ: {} and {}", a.dim, b.dim),
        ));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let (ca, cb) = (a.cov_matrix(), b.cov_matrix());
    Ok(mean_term + ca.trace() + cb.trace() - 2.0 * trace_sqrt_product(&ca, &cb))
}

/// A bound on |`frechet_distance(s, s)`|, which is 0 in exact arithmetic, as computed in f64.
///
/// The eigenvalues μ = λ² of Σ^½ Σ Σ^½ come out with an absolute error δ ≲ d ε ‖Σ‖² (a backward
/// stable symmetric eigensolver and the products forming the matrix; d the width, ε = 2.2e-16,
/// ‖Σ‖ ≤ tr Σ). The trace term sums √μ: for μ ≫ δ that errs by δ / 2λ, but where λ is near 0
/// (features that barely vary, common in ReLU features) √(μ + δ) is up to √δ = √(d ε) ‖Σ‖. Over d
/// eigenvalues and with the factor 2 of the formula: 2 d √(d ε) tr Σ. The other terms (the mean's,
/// and tr Σ computed twice) err by d ε tr Σ only. So the error scales with √ε, not ε: for 128
/// features with tr Σ = 383, 1.7e-2 (measured: −6.6e-7 here, −1.3e-6 on another machine, whose
/// features differ in the last bits because the classifier's f32 kernels take other SIMD paths).
pub fn self_distance_rounding(s: &FeatureStats) -> f64 {
    let d = s.dim as f64;
    let trace: f64 = (0..s.dim).map(|i| s.cov[i * s.dim + i]).sum();
    2.0 * d * (d * f64::EPSILON).sqrt() * trace
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use tensor::Generator;

    fn random_features(n: usize, dim: usize, seed: u64) -> Vec<f64> {
        let mut gen = Generator::new(seed);
        (0..n * dim)
            .map(|i| gen.rng().random::<f64>() * (1.0 + (i % dim) as f64))
            .collect()
    }

    fn stats(mean: Vec<f64>, cov_diag: &[f64]) -> FeatureStats {
        let dim = mean.len();
        let cov = DMatrix::from_diagonal(&nalgebra::DVector::from_row_slice(cov_diag));
        FeatureStats {
            n: 10,
            dim,
            mean,
            cov: cov.as_slice().to_vec(),
        }
    }

    #[test]
    fn statistics_match_a_hand_computation() {
        // Rows (0, 0), (2, 4), (4, 2): mean (2, 2), cov [[4, 2], [2, 4]].
        let s = FeatureStats::from_features(&[0.0, 0.0, 2.0, 4.0, 4.0, 2.0], 2).unwrap();
        assert_eq!(s.mean, vec![2.0, 2.0]);
        assert_eq!(s.cov, vec![4.0, 2.0, 2.0, 4.0]);
        assert!(FeatureStats::from_features(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, 2.0], 2).is_err());
        let e = FeatureStats::from_features(&[1.0, f64::NAN, 0.0, 0.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not finite"), "{e}");
    }

    #[test]
    fn fd_of_a_set_with_itself_is_zero() {
        let s = FeatureStats::from_features(&random_features(300, 16, 1), 16).unwrap();
        let fd = frechet_distance(&s, &s).unwrap();
        // Rounding only, which grows with √ε and the statistics' scale (tr Σ ≈ 125 here).
        assert!(fd.abs() <= self_distance_rounding(&s), "{fd}");
        // The bound is far below a real distance: that of the set and a shifted copy, |Δμ|² = 16.
        let shifted: Vec<f64> = random_features(300, 16, 1)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let t = FeatureStats::from_features(&shifted, 16).unwrap();
        let real = frechet_distance(&s, &t).unwrap();
        assert!((real - 16.0).abs() <= self_distance_rounding(&s), "{real}");
        assert!(self_distance_rounding(&s) < 1e-2 * real);
    }

    #[test]
    fn fd_of_diagonal_gaussians_has_a_closed_form() {
        // |μ1 − μ2|² + Σ (√a − √b)²
        let a = stats(vec![1.0, 0.0, -2.0], &[4.0, 1.0, 9.0]);
        let b = stats(vec![0.0, 3.0, -2.0], &[1.0, 1.0, 0.25]);
        let expected = (1.0 + 9.0) + (1.0 + 0.0 + 6.25);
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - expected).abs() < 1e-9, "{fd} vs {expected}");
        let wide = stats(vec![0.0; 4], &[1.0; 4]);
        assert!(frechet_distance(&a, &wide).is_err());
    }

    #[test]
    fn fd_is_symmetric_for_non_commuting_covariances() {
        let a = FeatureStats::from_features(&random_features(200, 8, 2), 8).unwrap();
        let mut rotated = random_features(200, 8, 3);
        for row in rotated.chunks_mut(8) {
            let (x, y) = (row[0], row[1]);
            row[0] = x + y;
            row[1] = x - 0.5 * y;
        }
        let b = FeatureStats::from_features(&rotated, 8).unwrap();
        let (ab, ba) = (
            frechet_distance(&a, &b).unwrap(),
            frechet_distance(&b, &a).unwrap(),
        );
        assert!(ab > 0.1 && (ab - ba).abs() < 1e-8 * ab, "{ab} vs {ba}");
    }

    #[test]
    fn psd_sqrt_squares_back() {
        let s = FeatureStats::from_features(&random_features(50, 6, 4), 6).unwrap();
        let c = s.cov_matrix();
        let r = psd_sqrt(&c);
        assert!((&r * &r - &c).abs().max() < 1e-10);
    }

    #[test]
    fn tensors_round_trip() {
        let s = FeatureStats::from_features(&random_features(20, 3, 5), 3).unwrap();
        let (m, c) = s.to_tensors().unwrap();
        assert_eq!(FeatureStats::from_tensors(&m, &c, s.n).unwrap(), s);
        assert!(FeatureStats::from_tensors(&c, &m, 1).is_err());
    }
}
