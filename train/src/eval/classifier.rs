//! Training the evaluation classifier with difftune's own autograd, and running it: accuracy,
//! features and class probabilities.

use autograd::{no_grad, Var};
use models::classifier::{Classifier, ClassifierConfig};
use tensor::{Error, Result, Tensor};

use crate::data::{transform, Batches, Dataset, LoaderConfig};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};

/// How a classifier is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierTraining {
    /// Name stored in the file (metric names say `FD-<name>`).
    pub name: String,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per batch.
    pub batch: usize,
    /// Peak learning rate (cosine decay to a tenth of it, after 100 warm-up steps).
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Random horizontal flips of training images.
    pub hflip: bool,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        ClassifierTraining {
            name: "classifier".into(),
            epochs: 4,
            batch: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            hflip: false,
            seed: 0,
        }
    }
}

/// What a training run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierTrainReport {
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Accuracy on the held-out set after training.
    pub held_out_accuracy: f64,
}

/// Trains a fresh classifier on `train` and measures it on `held_out` (same image shape and
/// classes).
pub fn train_classifier(
    train: &Dataset,
    held_out: &Dataset,
    cfg: &ClassifierTraining,
) -> Result<(Classifier, ClassifierTrainReport)> {
    if train.is_empty() || held_out.is_empty() {
        return Err(Error::msg(format!(
            "classifier training: {} training and {} held-out images; both must be non-empty",
            train.len(),
            held_out.len()
        )));
    }
    if train.image_shape() != held_out.image_shape() || train.classes() != held_out.classes() {
        return Err(Error::msg(
            "classifier training: training and held-out sets differ in image shape or classes",
        ));
    }
    if cfg.epochs == 0 || cfg.batch == 0 {
        return Err(Error::msg(
            "classifier training: epochs and batch must be at least 1",
        ));
    }
    let config = ClassifierConfig::new(&cfg.name, train.classes().to_vec(), train.image_shape());
    let mut model = Classifier::new(config, cfg.seed)?;
    let loader = LoaderConfig::new(cfg.batch, cfg.seed).hflip(cfg.hflip);
    let mut batches = Batches::new(train, loader)?;
    let per_epoch = batches.batches_per_epoch();
    let total = (per_epoch * cfg.epochs) as u64;
    let schedule = LrSchedule::cosine(cfg.lr, 100.min(total / 10), total, cfg.lr / 10.0);
    let mut opt = AdamW::new(
        AdamWConfig::default()
            .with_lr(cfg.lr)
            .with_weight_decay(cfg.weight_decay),
    );
    let bar = crate::progress::bar(total, "train");
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    let mut step = 0u64;
    for _ in 0..cfg.epochs {
        let mut sum = 0.0;
        for _ in 0..per_epoch {
            let batch = batches.next_batch()?;
            let loss = model
                .forward(&Var::constant(batch.images))?
                .cross_entropy(&batch.labels)?;
            let value = loss.value().to_scalar()?;
            sum += value;
            let grads = loss.backward()?;
            opt.config.lr = schedule.lr_at(step);
            opt.step(&mut model.params, &grads)?;
            step += 1;
            bar.set_message(format!("loss {value:.4}"));
            bar.inc(1);
        }
        epoch_losses.push(sum / per_epoch as f64);
    }
    bar.finish();
    let held_out_accuracy = accuracy(&model, held_out)?;
    Ok((
        model,
        ClassifierTrainReport {
            epoch_losses,
            held_out_accuracy,
        },
    ))
}

/// Share of `data`'s images the classifier labels correctly.
pub fn accuracy(model: &Classifier, data: &Dataset) -> Result<f64> {
    if data.is_empty() {
        return Err(Error::msg("accuracy: the data set is empty"));
    }
    if data.classes().len() != model.config.classes.len() {
        return Err(Error::msg(format!(
            "accuracy: the data set has {} classes, classifier `{}` {}",
            data.classes().len(),
            model.config.name,
            model.config.classes.len()
        )));
    }
    let images = transform::scale(&data.images_tensor()?)?;
    let out = run(model, &images)?;
    label_accuracy(&out.probs, data.labels())
}

/// Share of rows of `probs` (`[N, K]`, row-major) whose largest entry is at `labels[n]`.
pub fn label_accuracy(probs: &[f64], labels: &[i64]) -> Result<f64> {
    if labels.is_empty() || !probs.len().is_multiple_of(labels.len()) {
        return Err(Error::msg(format!(
            "label accuracy: {} probabilities for {} labels",
            probs.len(),
            labels.len()
        )));
    }
    let k = probs.len() / labels.len();
    let hits = probs
        .chunks(k)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, &p)| if p > b.1 { (i, p) } else { b },
                );
            best.0 as i64 == l
        })
        .count();
    Ok(hits as f64 / labels.len() as f64)
}

/// What the classifier says about a set of images.
pub struct ClassifierOutput {
    /// Penultimate features, row-major `[N, D]`.
    pub features: Vec<f64>,
    /// Feature width `D`.
    pub dim: usize,
    /// Softmax class probabilities, row-major `[N, K]`.
    pub probs: Vec<f64>,
}

/// Features and class probabilities of `images` (`f32 [N, C, H, W]` in `[-1, 1]`), computed in
/// batches without gradients.
pub fn run(model: &Classifier, images: &Tensor) -> Result<ClassifierOutput> {
    let n = images.shape().first().copied().unwrap_or(0);
    let dim = model.config.features;
    let mut out = ClassifierOutput {
        features: Vec::with_capacity(n * dim),
        dim,
        probs: Vec::with_capacity(n * model.config.classes.len()),
    };
    const CHUNK: usize = 500;
    for start in (0..n).step_by(CHUNK) {
        let x = images.narrow(0, start, CHUNK.min(n - start))?;
        let (f, p) = no_grad(|| -> Result<(Tensor, Tensor)> {
            let f = model.features(&Var::constant(x))?;
            let p = model.head(&f)?.softmax(1)?;
            Ok((f.value().clone(), p.value().clone()))
        })?;
        out.features.extend(f.to_f64_vec()?);
        out.probs.extend(p.to_f64_vec()?);
    }
    if n == 0 {
        // Still check the shape, so an empty or misshapen input is an error.
        model.features(&Var::constant(images.clone()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::two_tone;

    #[test]
    fn learns_an_easy_task_and_is_seeded() {
        let cfg = ClassifierTraining {
            epochs: 3,
            batch: 16,
            lr: 5e-3,
            ..Default::default()
        };
        let (model, report) = train_classifier(&two_tone(64, 1), &two_tone(32, 9), &cfg).unwrap();
        assert!(report.held_out_accuracy > 0.95, "{report:?}");
        let (_, again) = train_classifier(&two_tone(64, 1), &two_tone(32, 9), &cfg).unwrap();
        assert_eq!(report, again);
        let out = run(
            &model,
            &transform::scale(&two_tone(4, 0).images_tensor().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!((out.features.len(), out.probs.len()), (4 * 128, 4 * 2));
    }

    #[test]
    fn label_accuracy_counts_argmax_hits() {
        let probs = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        assert_eq!(label_accuracy(&probs, &[0, 1, 1]).unwrap(), 2.0 / 3.0);
        assert!(label_accuracy(&probs, &[0, 1, 1, 0]).is_err());
    }
}
