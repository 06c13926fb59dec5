//! Kernel Inception-style Distance: the unbiased estimate of the squared maximum mean discrepancy
//! (MMD²) with the cubic polynomial kernel `k(x, y) = (x·y / d + 1)³`, averaged over random
//! subsets of both sets, with its spread.
//!
//! For subsets `X`, `Y` of `m` rows each:
//!
//! ```text
//! MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²
//! ```
//!
//! The diagonal terms are left out, which makes the estimate unbiased: its mean is zero when both
//! sets come from one distribution (and it can then be negative).

use nalgebra::DMatrix;
use rand::seq::index::sample;
use tensor::{Error, Generator, Result};

use super::stats::check_rows;

/// How KID draws its subsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidConfig {
    /// Number of random subset pairs.
    pub subsets: usize,
    /// Rows per subset (capped by the smaller set).
    pub subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        KidConfig {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
        }
    }
}

/// A KID estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kid {
    /// Mean of MMD²_u over the subsets.
    pub mean: f64,
    /// Standard deviation of MMD²_u over the subsets.
    pub std: f64,
    /// Standard error of the mean, `std / √subsets`.
    pub stderr: f64,
    /// Subsets drawn.
    pub subsets: usize,
    /// Rows per subset.
    pub subset_size: usize,
}

fn matrix(rows: &[usize], features: &[f64], dim: usize) -> DMatrix<f64> {
    DMatrix::from_fn(rows.len(), dim, |i, j| features[rows[i] * dim + j])
}

/// `(x·y / d + 1)³` over all pairs of rows of `a` and `b`.
fn kernel(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    let d = a.ncols() as f64;
    (a * b.transpose()).map(|v| (v / d + 1.0).powi(3))
}

fn off_diagonal_mean(k: &DMatrix<f64>) -> f64 {
    let m = k.nrows() as f64;
    (k.sum() - k.trace()) / (m * (m - 1.0))
}

/// MMD²_u between the row sets `x` and `y` (`[m, d]` each, `m ≥ 2`), as above.
pub fn mmd2_unbiased(x: &DMatrix<f64>, y: &DMatrix<f64>) -> f64 {
    let m = x.nrows() as f64;
    off_diagonal_mean(&kernel(x, x)) + off_diagonal_mean(&kernel(y, y))
        - 2.0 * kernel(x, y).sum() / (m * m)
}

/// KID between row-major feature sets `x` `[N, dim]` and `y` `[M, dim]`.
pub fn kid(x: &[f64], y: &[f64], dim: usize, config: &KidConfig) -> Result<Kid> {
    let nx = check_rows(x, dim, 2, "KID: first set")?;
    let ny = check_rows(y, dim, 2, "KID: second set")?;
    if config.subsets == 0 || config.subset_size < 2 {
        return Err(Error::msg(format!(
            "KID: {} subsets of {} rows; expected at least 1 subset of at least 2 rows",
            config.subsets, config.subset_size
        )));
    }
    let m = config.subset_size.min(nx).min(ny);
    let mut gen = Generator::new(config.seed);
    let values: Vec<f64> = (0..config.subsets)
        .map(|_| {
            let rx = sample(gen.rng(), nx, m).into_vec();
            let ry = sample(gen.rng(), ny, m).into_vec();
            mmd2_unbiased(&matrix(&rx, x, dim), &matrix(&ry, y, dim))
        })
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Ok(Kid {
        mean,
        std,
        stderr: std / n.sqrt(),
        subsets: values.len(),
        subset_size: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, dim: usize, shift: f64, gen: &mut Generator) -> Vec<f64> {
        (0..n * dim)
            .map(|_| {
                let z: f64 = StandardNormal.sample(gen.rng());
                z + shift
            })
            .collect()
    }

    #[test]
    fn kernel_and_mmd_match_a_hand_computation() {
        // d = 1, x = {0, 1}, y = {2, 2}: k = (xy + 1)³.
        let x = DMatrix::from_row_slice(2, 1, &[0.0, 1.0]);
        let y = DMatrix::from_row_slice(2, 1, &[2.0, 2.0]);
        // xx off-diagonal: k(0,1) = 1; yy: k(2,2) = 125; xy: 1, 1, 27, 27.
        let expected = 1.0 + 125.0 - 2.0 * (1.0 + 1.0 + 27.0 + 27.0) / 4.0;
        assert!((mmd2_unbiased(&x, &y) - expected).abs() < 1e-12);
    }

    #[test]
    fn unbiased_mean_is_near_zero_where_the_biased_one_is_not() {
        // Fresh pairs of samples of one distribution: E[MMD²_u] = 0 exactly.
        let mut gen = Generator::new(5);
        let (m, d, trials) = (30, 4, 300);
        let mut unbiased = Vec::new();
        let mut biased = Vec::new();
        for _ in 0..trials {
            let x = DMatrix::from_vec(m, d, gaussian(m, d, 0.0, &mut gen));
            let y = DMatrix::from_vec(m, d, gaussian(m, d, 0.0, &mut gen));
            unbiased.push(mmd2_unbiased(&x, &y));
            // The V-statistic keeps the diagonals.
            biased
                .push(kernel(&x, &x).mean() + kernel(&y, &y).mean() - 2.0 * kernel(&x, &y).mean());
        }
        let n = trials as f64;
        let mean = unbiased.iter().sum::<f64>() / n;
        let std = (unbiased.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let stderr = std / n.sqrt();
        let biased_mean = biased.iter().sum::<f64>() / n;
        assert!(mean.abs() < 3.0 * stderr, "{mean} vs {stderr}");
        assert!(biased_mean > 10.0 * stderr, "{biased_mean} vs {stderr}");
    }

    #[test]
    fn kid_separates_shifted_sets_and_is_seeded() {
        let mut gen = Generator::new(1);
        let a = gaussian(400, 4, 0.0, &mut gen);
        let b = gaussian(400, 4, 0.0, &mut gen);
        let c = gaussian(400, 4, 1.0, &mut gen);
        let cfg = KidConfig {
            subsets: 20,
            subset_size: 100,
            seed: 3,
        };
        let same = kid(&a, &b, 4, &cfg).unwrap();
        let far = kid(&a, &c, 4, &cfg).unwrap();
        assert!(far.mean > 10.0 * same.mean.abs() && far.mean > 5.0 * far.stderr);
        assert_eq!(kid(&a, &c, 4, &cfg).unwrap(), far);
        assert_eq!(far.subset_size, 100);
        assert!(kid(&a, &c[..3], 4, &cfg).is_err());
        assert!(kid(&a, &c, 4, &KidConfig { subsets: 0, ..cfg }).is_err());
    }
}
