//! The copying check: how close generated images come to the training images, against how close
//! fresh real images come. A model that reproduces its training (or condition) images has
//! samples nearer to the training set than real held-out images are: a ratio below 1.

use serde::{Deserialize, Serialize};
use tensor::{DType, Error, Result, Tensor};

/// Rows of the distance matrix computed at once: bounds its memory.
const ROWS: usize = 256;

/// The mean Euclidean distance (in pixels scaled to [-1, 1]) from each of `images` `[N, ..]`
/// to its nearest image among `train` `[M, ..]`.
pub fn mean_nearest_distance(images: &Tensor, train: &Tensor) -> Result<f64> {
    let flat = |t: &Tensor| -> Result<Tensor> {
        let n = t.shape().first().copied().unwrap_or(0);
        t.to_dtype(DType::F32)?
            .contiguous()?
            .reshape(&[n, t.elem_count() / n.max(1)])
    };
    let (a, b) = (flat(images)?, flat(train)?);
    if a.shape()[0] == 0 || b.shape()[0] == 0 || a.shape()[1] != b.shape()[1] {
        return Err(Error::shape(
            "copying check",
            format!(
                "images {:?} and training images {:?}: expected non-empty sets of one image shape",
                images.shape(),
                train.shape()
            ),
        ));
    }
    let b_sq = b.square()?.sum(&[1], true)?.reshape(&[1, b.shape()[0]])?;
    let bt = b.transpose(0, 1)?.contiguous()?;
    let mut total = 0.0;
    for start in (0..a.shape()[0]).step_by(ROWS) {
        let len = ROWS.min(a.shape()[0] - start);
        let rows = a.narrow(0, start, len)?.contiguous()?;
        // |a - b|² = |a|² + |b|² - 2 a·b, the nearest b per row.
        let d2 = rows
            .square()?
            .sum(&[1], true)?
            .add(&b_sq)?
            .sub(&rows.matmul(&bt)?.mul_scalar(2.0)?)?;
        let nearest = d2.min(&[1], false)?.to_f64_vec()?;
        total += nearest.iter().map(|d| d.max(0.0).sqrt()).sum::<f64>();
    }
    Ok(total / a.shape()[0] as f64)
}

/// The copying check of a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Copying {
    /// Mean distance from each sample to its nearest training image.
    pub sample_distance: f64,
    /// Mean distance from each real held-out image to its nearest training image.
    pub real_distance: f64,
    /// `sample_distance / real_distance`: below 1, the samples sit closer to the training
    /// images than new real images do (copying).
    pub ratio: f64,
}

impl Copying {
    /// The check of `images` against `train`, with the real images' distance `real_distance`.
    pub fn of(images: &Tensor, train: &Tensor, real_distance: f64) -> Result<Copying> {
        let sample_distance = mean_nearest_distance(images, train)?;
        Ok(Copying {
            sample_distance,
            real_distance,
            ratio: sample_distance / real_distance.max(f64::MIN_POSITIVE),
        })
    }
}

#[cfg(test)]
mod tests {
    use tensor::{Device, Generator};

    use super::*;

    #[test]
    fn copies_sit_at_distance_zero_and_noise_far_away() {
        let mut gen = Generator::new(0);
        let train = Tensor::rand(
            &[300, 1, 4, 4],
            -1.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        let copies = train.narrow(0, 10, 5).unwrap();
        assert!(mean_nearest_distance(&copies, &train).unwrap() < 1e-3);
        let fresh =
            Tensor::rand(&[20, 1, 4, 4], -1.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
        let real = mean_nearest_distance(&fresh, &train).unwrap();
        assert!(real > 0.5, "{real}");
        let check = Copying::of(&copies, &train, real).unwrap();
        assert!(check.ratio < 0.01);
        // One image by hand: [0, 0] against {[3, 4], [1, 0]} is 1 away.
        let one = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2]).unwrap();
        let two = Tensor::from_vec(vec![3.0f32, 4.0, 1.0, 0.0], &[2, 2]).unwrap();
        let d = mean_nearest_distance(&one, &two).unwrap();
        assert!((d - 1.0).abs() < 1e-6, "{d}");
        assert!(
            mean_nearest_distance(&one, &train).is_err(),
            "shapes differ"
        );
    }
}
