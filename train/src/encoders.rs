//! Training and probing the image encoders of the ANL transfer method
//! ([`models::encoder::ImageEncoder`]): `cnn` and `vit` supervised on the source classes
//! (cross-entropy through their head), `clip` contrastively between two augmented views of each
//! image (no text exists), and a linear probe of the frozen pooled features on a target set.

use autograd::{no_grad, Var};
use models::encoder::{EncoderConfig, EncoderKind, ImageEncoder};
use models::ParamStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tensor::{DType, Device, Error, Result, Tensor};

use crate::data::{transform, Batches, Dataset, LoaderConfig};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};

/// CLIP's bound on the logit scale: exp(logit_scale) is clamped at 100.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// How an encoder is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderTraining {
    /// The architecture (its small default, [`EncoderConfig::small`]).
    pub kind: EncoderKind,
    /// Optimizer steps.
    pub steps: usize,
    /// Images per batch (for `clip`, the number of positive pairs).
    pub batch: usize,
    /// Peak learning rate (cosine decay to a tenth of it after a warm-up of 5% of the steps).
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the weights, the batch order and the augmentations.
    pub seed: u64,
}

impl Default for EncoderTraining {
    fn default() -> Self {
        EncoderTraining {
            kind: EncoderKind::Cnn,
            steps: 1000,
            batch: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// What a training run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderTrainReport {
    /// The loss of every step.
    pub losses: Vec<f64>,
}

impl EncoderTrainReport {
    /// The mean loss of the first and of the last `k` steps.
    pub fn first_and_last(&self, k: usize) -> (f64, f64) {
        let k = k.clamp(1, self.losses.len().max(1));
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        (
            mean(&self.losses[..k.min(self.losses.len())]),
            mean(&self.losses[self.losses.len().saturating_sub(k)..]),
        )
    }
}

/// Rows of `x` `[N, D]` scaled to unit length.
fn normalize_rows(x: &Var) -> Result<Var> {
    let norm = x.square()?.sum(&[1], true)?.add_scalar(1e-12)?.sqrt()?;
    x.div(&norm)
}

/// CLIP's symmetric InfoNCE between paired embeddings `a`, `b` `[B, D]`: the mean of the
/// cross-entropies of each row and each column of `exp(logit_scale) · cos(a_i, b_j)` with the
/// pairs on the diagonal as targets; the scale is clamped at [`MAX_LOGIT_SCALE`] as CLIP clamps
/// it. `logit_scale` is a scalar Var (the log of the scale).
pub fn contrastive_loss(a: &Var, b: &Var, logit_scale: &Var) -> Result<Var> {
    if a.shape().len() != 2 || a.shape() != b.shape() || a.shape()[0] < 2 {
        return Err(Error::shape(
            "contrastive_loss",
            format!(
                "expected two [B >= 2, D] embeddings, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let n = a.shape()[0];
    let scale = logit_scale
        .clamp(f64::NEG_INFINITY, MAX_LOGIT_SCALE.ln())?
        .exp()?;
    let logits = normalize_rows(a)?
        .matmul(&normalize_rows(b)?.transpose(0, 1)?)?
        .mul(&scale)?;
    let targets = Tensor::from_vec((0..n as i64).collect::<Vec<_>>(), &[n])?;
    let rows = logits.cross_entropy(&targets)?;
    let cols = logits
        .transpose(0, 1)?
        .contiguous()?
        .cross_entropy(&targets)?;
    rows.add(&cols)?.mul_scalar(0.5)
}

/// One random view of each image of `images` (`f32 [N, C, H, W]` in `[-1, 1]`): shifted by up to
/// `shift` pixels each way (padding with the background, -1, then cropping), mirrored left to
/// right with probability 1/2, plus Gaussian noise of standard deviation `noise`.
pub fn augment(images: &Tensor, shift: usize, noise: f64, rng: &mut StdRng) -> Result<Tensor> {
    let &[n, c, h, w] = images.shape() else {
        return Err(Error::shape(
            "augment",
            format!("expected images [N, C, H, W], got {:?}", images.shape()),
        ));
    };
    let src: Vec<f32> = images.to_dtype(DType::F32)?.to_vec()?;
    let mut out = vec![-1.0f32; src.len()];
    let normal = Normal::new(0.0, noise.max(0.0)).map_err(|e| Error::msg(e.to_string()))?;
    let s = shift as i64;
    for i in 0..n {
        let (dy, dx) = (
            rng.random_range(-s..=s) as isize,
            rng.random_range(-s..=s) as isize,
        );
        let flip = rng.random_bool(0.5);
        for ch in 0..c {
            let plane = (i * c + ch) * h * w;
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    if sx < 0 || sx >= w as isize {
                        continue;
                    }
                    out[plane + y * w + x] = src[plane + sy as usize * w + sx as usize];
                }
            }
        }
    }
    if noise > 0.0 {
        for v in &mut out {
            *v += normal.sample(rng) as f32;
        }
    }
    Tensor::from_vec(out, images.shape())
}

/// Trains a fresh encoder of `cfg.kind` on `data` (f32 on `device`).
pub fn train_encoder(
    data: &Dataset,
    cfg: &EncoderTraining,
    device: Device,
) -> Result<(ImageEncoder, ParamStore, EncoderTrainReport)> {
    let min_batch = if cfg.kind == EncoderKind::Clip { 2 } else { 1 };
    if cfg.steps == 0 || cfg.batch < min_batch {
        return Err(Error::msg(format!(
            "encoder training: --steps {} and --batch-size {}: expected at least 1 step and \
             {min_batch} images per batch",
            cfg.steps, cfg.batch
        )));
    }
    if data.len() < cfg.batch {
        return Err(Error::msg(format!(
            "encoder training: {} images, fewer than one batch of {}",
            data.len(),
            cfg.batch
        )));
    }
    let config = EncoderConfig::small(cfg.kind, data.image_shape(), data.classes().len());
    let mut ps = ParamStore::new(DType::F32, device, cfg.seed);
    let encoder = ImageEncoder::new(&mut ps, &config)?;
    let mut batches = Batches::new(data, LoaderConfig::new(cfg.batch, cfg.seed))?;
    let total = cfg.steps as u64;
    let schedule = LrSchedule::cosine(cfg.lr, total / 20, total, cfg.lr / 10.0);
    let mut opt = AdamW::new(
        AdamWConfig::default()
            .with_lr(cfg.lr)
            .with_weight_decay(cfg.weight_decay),
    );
    // Augmentations draw from their own stream, so the batch order is the loader's alone.
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x0065_6e63_6f64_6572);
    let bar = crate::progress::bar(total, cfg.kind.name());
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..total {
        let batch = batches.next_batch()?;
        let loss = match cfg.kind {
            EncoderKind::Clip => {
                let view = |rng: &mut StdRng| -> Result<Var> {
                    let v = augment(&batch.images, 2, 0.05, rng)?.to_device(device)?;
                    encoder.pooled(&ps, &Var::constant(v))
                };
                let (a, b) = (view(&mut rng)?, view(&mut rng)?);
                contrastive_loss(&a, &b, &encoder.logit_scale(&ps)?)?
            }
            EncoderKind::Vit | EncoderKind::Cnn => {
                let x = augment(&batch.images, 2, 0.0, &mut rng)?.to_device(device)?;
                let pooled = encoder.pooled(&ps, &Var::constant(x))?;
                let labels = batch.labels.to_device(device)?;
                encoder.logits(&ps, &pooled)?.cross_entropy(&labels)?
            }
        };
        let value = loss.value().to_scalar()?;
        if !value.is_finite() {
            return Err(Error::msg(format!(
                "encoder training: the loss is {value} at step {step}"
            )));
        }
        losses.push(value);
        let grads = loss.backward()?;
        opt.config.lr = schedule.lr_at(step);
        opt.step(&mut ps, &grads)?;
        bar.set_message(format!("loss {value:.4}"));
        bar.inc(1);
    }
    bar.finish();
    Ok((encoder, ps, EncoderTrainReport { losses }))
}

/// Pooled features `f32 [N, P]` of every image of `data` (scaled to `[-1, 1]`), without
/// gradients, in chunks.
pub fn pooled_features(encoder: &ImageEncoder, ps: &ParamStore, data: &Dataset) -> Result<Tensor> {
    let images = transform::scale(&data.images_tensor()?)?;
    let n = data.len();
    const CHUNK: usize = 500;
    let mut parts = Vec::new();
    for start in (0..n).step_by(CHUNK) {
        let x = images
            .narrow(0, start, CHUNK.min(n - start))?
            .to_device(ps.device())?;
        let f = no_grad(|| encoder.pooled(ps, &Var::constant(x)))?;
        parts.push(f.value().to_device(Device::Cpu)?.to_dtype(DType::F32)?);
    }
    if parts.is_empty() {
        return Err(Error::msg("pooled features: the data set is empty"));
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

/// What a linear probe measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// Accuracy on the training features.
    pub train_accuracy: f64,
    /// Accuracy on the held-out features.
    pub held_out_accuracy: f64,
}

/// Logistic regression on features `[N, P]`: standardised with the training set's mean and
/// deviation, then a linear layer fit by full-batch AdamW (`steps` steps, lr 1e-2, weight decay
/// 1e-4) to the training labels; accuracies on both sets.
pub fn linear_probe(
    train: (&Tensor, &[i64]),
    held_out: (&Tensor, &[i64]),
    classes: usize,
    steps: usize,
) -> Result<ProbeReport> {
    let (xt, yt) = train;
    let (xh, yh) = held_out;
    let p = xt.shape().get(1).copied().unwrap_or(0);
    if xt.shape() != [yt.len(), p] || xh.shape() != [yh.len(), p] || yt.is_empty() || yh.is_empty()
    {
        return Err(Error::shape(
            "linear_probe",
            format!(
                "features {:?} and {:?} for {} and {} labels",
                xt.shape(),
                xh.shape(),
                yt.len(),
                yh.len()
            ),
        ));
    }
    let xt = xt.to_dtype(DType::F64)?;
    let mean = xt.mean(&[0], true)?;
    let centred = xt.sub(&mean)?;
    let std = centred
        .square()?
        .mean(&[0], true)?
        .add_scalar(1e-8)?
        .sqrt()?;
    let standardise =
        |x: &Tensor| -> Result<Tensor> { x.to_dtype(DType::F64)?.sub(&mean)?.div(&std) };
    let (xt, xh) = (standardise(&xt)?, standardise(xh)?);
    let labels = |y: &[i64]| Tensor::from_vec(y.to_vec(), &[y.len()]);
    let (lt, lh) = (labels(yt)?, labels(yh)?);
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let head = models::nn::Linear::new(&mut ps, "probe", p, classes, true)?;
    let mut opt = AdamW::new(AdamWConfig::default().with_lr(1e-2).with_weight_decay(1e-4));
    for _ in 0..steps {
        let loss = head
            .forward(&ps, &Var::constant(xt.clone()))?
            .cross_entropy(&lt)?;
        let grads = loss.backward()?;
        opt.step(&mut ps, &grads)?;
    }
    let accuracy = |x: &Tensor, y: &Tensor| -> Result<f64> {
        let logits = no_grad(|| head.forward(&ps, &Var::constant(x.clone())))?;
        let probs = logits.value().to_f64_vec()?;
        crate::eval::classifier::label_accuracy(&probs, &y.to_vec::<i64>()?)
    };
    Ok(ProbeReport {
        train_accuracy: accuracy(&xt, &lt)?,
        held_out_accuracy: accuracy(&xh, &lh)?,
    })
}

#[cfg(test)]
mod tests;
