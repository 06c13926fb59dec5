//! Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
//! balls around its points, each ball reaching the point's k-th nearest neighbour in its own set.
//! Precision is the share of generated points inside the real manifold; recall the share of real
//! points inside the generated one.

use nalgebra::DMatrix;
use tensor::{Error, Result};

use super::stats::check_rows;

/// Rows of the query set compared at once (bounds the distance block held in memory).
const BLOCK: usize = 512;

/// Precision and recall of a generated set against a real one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrecisionRecall {
    /// Share of generated points inside the real manifold.
    pub precision: f64,
    /// Share of real points inside the generated manifold.
    pub recall: f64,
    /// Neighbour rank of the ball radii.
    pub k: usize,
}

/// A point set as a matrix with its squared row norms.
struct Points {
    rows: DMatrix<f64>,
    norms: Vec<f64>,
}

impl Points {
    fn new(features: &[f64], dim: usize) -> Points {
        let rows = DMatrix::from_row_slice(features.len() / dim, dim, features);
        let norms = rows.row_iter().map(|r| r.norm_squared()).collect();
        Points { rows, norms }
    }

    fn len(&self) -> usize {
        self.rows.nrows()
    }

    /// Squared distances from rows `start..start + len` of `self` to every row of `other`,
    /// as a `[len, other.len()]` matrix.
    fn block_distances(&self, start: usize, len: usize, other: &Points) -> DMatrix<f64> {
        let q = self.rows.rows(start, len);
        let mut d = q * other.rows.transpose() * -2.0;
        for i in 0..len {
            for j in 0..other.len() {
                d[(i, j)] = (d[(i, j)] + self.norms[start + i] + other.norms[j]).max(0.0);
            }
        }
        d
    }

    /// Squared distance of each point to its k-th nearest other point of the same set.
    fn knn_radii(&self, k: usize) -> Vec<f64> {
        let mut radii = Vec::with_capacity(self.len());
        for start in (0..self.len()).step_by(BLOCK) {
            let len = BLOCK.min(self.len() - start);
            let d = self.block_distances(start, len, self);
            for i in 0..len {
                let mut row: Vec<f64> = (0..self.len())
                    .filter(|&j| j != start + i)
                    .map(|j| d[(i, j)])
                    .collect();
                let (_, kth, _) = row.select_nth_unstable_by(k - 1, f64::total_cmp);
                radii.push(*kth);
            }
        }
        radii
    }

    /// Share of `self`'s points inside some ball of `manifold` (centres and squared radii).
    fn coverage(&self, manifold: &Points, radii: &[f64]) -> f64 {
        let mut inside = 0usize;
        for start in (0..self.len()).step_by(BLOCK) {
            let len = BLOCK.min(self.len() - start);
            let d = self.block_distances(start, len, manifold);
            inside += (0..len)
                .filter(|&i| (0..manifold.len()).any(|j| d[(i, j)] <= radii[j]))
                .count();
        }
        inside as f64 / self.len() as f64
    }
}

/// Precision and recall of `fake` against `real` (row-major `[N, dim]`, each more than `k`
/// rows) with k-nearest-neighbour balls.
pub fn precision_recall(
    real: &[f64],
    fake: &[f64],
    dim: usize,
    k: usize,
) -> Result<PrecisionRecall> {
    if k == 0 {
        return Err(Error::msg("precision/recall: k must be at least 1"));
    }
    check_rows(real, dim, k + 1, "precision/recall: real set")?;
    check_rows(fake, dim, k + 1, "precision/recall: generated set")?;
    let (real, fake) = (Points::new(real, dim), Points::new(fake, dim));
    let real_radii = real.knn_radii(k);
    let fake_radii = fake.knn_radii(k);
    Ok(PrecisionRecall {
        precision: fake.coverage(&real, &real_radii),
        recall: real.coverage(&fake, &fake_radii),
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use tensor::Generator;

    fn cloud(n: usize, dim: usize, centre: f64, seed: u64) -> Vec<f64> {
        let mut gen = Generator::new(seed);
        (0..n * dim)
            .map(|_| centre + gen.rng().random::<f64>())
            .collect()
    }

    #[test]
    fn identical_sets_have_full_precision_and_recall() {
        let a = cloud(600, 5, 0.0, 1);
        let pr = precision_recall(&a, &a, 5, 3).unwrap();
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
    }

    #[test]
    fn far_apart_sets_have_none() {
        let pr = precision_recall(&cloud(100, 5, 0.0, 1), &cloud(80, 5, 50.0, 2), 5, 3).unwrap();
        assert_eq!((pr.precision, pr.recall), (0.0, 0.0));
    }

    #[test]
    fn a_collapsed_generator_has_precision_but_little_recall() {
        // Real: the unit cube; generated: a small corner of it.
        let real = cloud(500, 2, 0.0, 3);
        let fake: Vec<f64> = cloud(500, 2, 0.0, 4).iter().map(|v| v * 0.2).collect();
        let pr = precision_recall(&real, &fake, 2, 3).unwrap();
        assert!(pr.precision > 0.95 && pr.recall < 0.2, "{pr:?}");
    }

    #[test]
    fn radii_are_the_kth_neighbour_distances() {
        // Points on a line at 0, 1, 3, 7: the 2nd neighbour of 0 is 3 away (squared 9).
        let p = Points::new(&[0.0, 1.0, 3.0, 7.0], 1);
        assert_eq!(p.knn_radii(2), vec![9.0, 4.0, 9.0, 36.0]);
        assert!(precision_recall(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0, 3.0], 1, 3).is_err());
        assert!(precision_recall(&[0.0; 8], &[0.0; 8], 1, 0).is_err());
    }
}
