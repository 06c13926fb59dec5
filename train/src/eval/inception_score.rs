//! The Inception-style score from a classifier's softmax: for each of `splits` consecutive
//! parts of the set, `exp(mean_x KL(p(y|x) ‖ p(y)))` with `p(y)` the part's mean prediction;
//! reported as the mean and standard deviation over the parts. It runs from 1 (every image gets
//! the same prediction) to the number of classes (confident predictions spread evenly).

use tensor::{Error, Result};

/// An Inception-style score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InceptionScore {
    /// Mean over the splits.
    pub mean: f64,
    /// Standard deviation over the splits (population, as the usual implementations).
    pub std: f64,
    /// Number of splits.
    pub splits: usize,
}

/// The score of row-major probabilities `probs` `[N, classes]` (rows summing to 1) in `splits`
/// parts (each at least one row).
pub fn inception_score(probs: &[f64], classes: usize, splits: usize) -> Result<InceptionScore> {
    if classes == 0 || !probs.len().is_multiple_of(classes) {
        return Err(Error::shape(
            "inception_score",
            format!(
                "{} probabilities are not whole rows of {classes}",
                probs.len()
            ),
        ));
    }
    let n = probs.len() / classes;
    if splits == 0 || n < splits {
        return Err(Error::msg(format!(
            "inception score: {n} images cannot be cut into {splits} splits"
        )));
    }
    if let Some(bad) = probs.iter().find(|p| !(0.0..=1.0 + 1e-6).contains(*p)) {
        return Err(Error::msg(format!(
            "inception score: probability {bad} is outside [0, 1]"
        )));
    }
    let scores: Vec<f64> = (0..splits)
        .map(|s| {
            let rows = &probs[s * n / splits * classes..(s + 1) * n / splits * classes];
            let count = (rows.len() / classes) as f64;
            let mut marginal = vec![0.0; classes];
            for row in rows.chunks(classes) {
                marginal
                    .iter_mut()
                    .zip(row)
                    .for_each(|(m, p)| *m += p / count);
            }
            let kl: f64 = rows
                .chunks(classes)
                .map(|row| {
                    row.iter()
                        .zip(&marginal)
                        .filter(|(&p, _)| p > 0.0)
                        .map(|(&p, &m)| p * (p.ln() - m.ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / count;
            kl.exp()
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / splits as f64;
    Ok(InceptionScore {
        mean,
        std: var.sqrt(),
        splits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(labels: impl Iterator<Item = usize>, classes: usize) -> Vec<f64> {
        labels
            .flat_map(|l| (0..classes).map(move |c| if c == l { 1.0 } else { 0.0 }))
            .collect()
    }

    #[test]
    fn confident_uniform_predictions_score_the_class_count() {
        let probs = one_hot((0..200).map(|i| i % 10), 10);
        let s = inception_score(&probs, 10, 4).unwrap();
        assert!((s.mean - 10.0).abs() < 1e-9 && s.std < 1e-9, "{s:?}");
    }

    #[test]
    fn collapsed_or_unsure_predictions_score_one() {
        let same = one_hot(std::iter::repeat_n(3, 50), 10);
        assert!((inception_score(&same, 10, 5).unwrap().mean - 1.0).abs() < 1e-12);
        let flat = vec![0.25; 4 * 40];
        assert!((inception_score(&flat, 4, 2).unwrap().mean - 1.0).abs() < 1e-12);
        // Half the classes used: the score halves.
        let half = one_hot((0..100).map(|i| i % 5), 10);
        assert!((inception_score(&half, 10, 1).unwrap().mean - 5.0).abs() < 1e-9);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(inception_score(&[0.5, 0.5, 1.0], 2, 1).is_err());
        assert!(inception_score(&[0.5, 0.5], 2, 2).is_err());
        assert!(inception_score(&[1.5, -0.5], 2, 1).is_err());
    }
}
