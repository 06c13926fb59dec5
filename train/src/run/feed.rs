//! A step's data: every [`Stream`] of the run's method drawn from its own loader, concatenated
//! into one batch (one forward and backward pass), and the step's loss weighted back per stream.

use autograd::Var;
use tensor::{Error, Generator, Result, Tensor};

use crate::data::loader::mix;
use crate::data::{Batches, Dataset, LoaderConfig, LoaderState};
use crate::methods::Stream;

/// The loaders of a run's streams, in the method's order (the target's first).
pub(crate) struct Feed<'a> {
    parts: Vec<(Stream, Batches<'a>)>,
}

/// One step's images, labels and timesteps, stream after stream.
pub(crate) struct StepData {
    /// `f32 [B, C, H, W]` in `[-1, 1]`.
    pub images: Tensor,
    /// `i64 [B]`: the data's labels, or `null_class` for a stream with null labels.
    pub labels: Tensor,
    /// `f32 [B, 4]`: each image's crop and flip (see [`crate::data::CONTROL_KINDS`]).
    pub control: Tensor,
    /// `i64 [B]`: each stream's draws from its own sampler.
    pub timesteps: Tensor,
    /// Images of each stream, in order (an epoch's last batch may be short).
    pub counts: Vec<usize>,
}

impl<'a> Feed<'a> {
    /// Loaders over `data` (one per stream) resuming at `states`. The target stream's loader is
    /// seeded with `base.seed` as a single-stream run's is; the others with seeds derived from it.
    pub fn new(
        streams: Vec<Stream>,
        data: Vec<&'a Dataset>,
        base: &LoaderConfig,
        states: &[LoaderState],
    ) -> Result<Feed<'a>> {
        let parts = streams
            .into_iter()
            .zip(data)
            .zip(states)
            .enumerate()
            .map(|(i, ((stream, data), &state))| {
                let seed = match i {
                    0 => base.seed,
                    _ => mix(base.seed ^ mix(i as u64)),
                };
                let config = LoaderConfig {
                    batch_size: stream.images,
                    seed,
                    ..base.clone()
                };
                let batches = Batches::resume(data, config, state)
                    .map_err(|e| Error::msg(format!("stream `{}`: {e}", stream.name)))?;
                Ok((stream, batches))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Feed { parts })
    }

    /// The next step's data; the timesteps are drawn from `gen`, stream after stream.
    pub fn next(&mut self, gen: &mut Generator, null_class: usize) -> Result<StepData> {
        let (mut images, mut labels, mut control) = (vec![], vec![], vec![]);
        let (mut timesteps, mut counts) = (vec![], vec![]);
        for (stream, batches) in &mut self.parts {
            let batch = batches.next_batch()?;
            let n = batch.labels.elem_count();
            labels.push(if stream.null_labels {
                Tensor::from_vec(vec![null_class as i64; n], &[n])?
            } else {
                batch.labels
            });
            images.push(batch.images);
            control.push(batch.control);
            timesteps.push(stream.timesteps.sample(n, gen)?.0);
            counts.push(n);
        }
        let cat = |parts: Vec<Tensor>| match parts.len() {
            1 => Ok(parts.into_iter().next().expect("one part")),
            _ => Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0),
        };
        Ok(StepData {
            images: cat(images)?,
            labels: cat(labels)?,
            control: cat(control)?,
            timesteps: cat(timesteps)?,
            counts,
        })
    }

    /// The step's loss from the per-sample `losses` of `step` (`[B]`, in its order): the sum
    /// over streams of weight × mean (each sample's loss first times its timestep's weight, where
    /// the stream has them); and each stream's mean, before the stream's weight.
    pub fn loss(&self, step: &StepData, losses: &Var) -> Result<(Var, Vec<f64>)> {
        let (mut total, mut means, mut start) = (None::<Var>, vec![], 0);
        for ((stream, _), &n) in self.parts.iter().zip(&step.counts) {
            let mean = weighted_mean(
                &losses.narrow(0, start, n)?,
                &step.timesteps.narrow(0, start, n)?,
                stream.timestep_weights.as_deref(),
            )?;
            means.push(mean.value().to_scalar()?);
            let term = mean.mul_scalar(stream.weight)?;
            total = Some(match total {
                None => term,
                Some(sum) => sum.add(&term)?,
            });
            start += n;
        }
        Ok((total.expect("a method has a stream"), means))
    }

    /// Each stream's name and where its loader stands, in order.
    pub fn states(&self) -> Vec<(&'static str, LoaderState)> {
        self.parts
            .iter()
            .map(|(stream, batches)| (stream.name, batches.state()))
            .collect()
    }
}

/// The mean of per-sample `losses` (`[n]`), each first times `weights[t]` of its timestep `t`
/// (`i64 [n]`) where there are weights.
fn weighted_mean(losses: &Var, timesteps: &Tensor, weights: Option<&[f64]>) -> Result<Var> {
    let Some(weights) = weights else {
        return losses.mean_all();
    };
    let w: Vec<f64> = timesteps
        .to_vec::<i64>()?
        .iter()
        .map(|&t| weights[t as usize])
        .collect();
    let value = losses.value();
    let w = Tensor::from_vec(w, &[timesteps.elem_count()])?
        .to_dtype(value.dtype())?
        .to_device(value.device())?;
    losses.mul(&Var::constant(w))?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::two_tone;
    use crate::diffusion::TimestepSampler;
    use crate::methods::StreamData;

    /// The step's control rows are each stream's batch's, stream after stream, as its images are.
    #[test]
    fn control_is_concatenated_like_the_images() {
        let stream = |name, images| Stream {
            name,
            data: StreamData::Target,
            images,
            timesteps: TimestepSampler::uniform(10).unwrap(),
            null_labels: false,
            weight: 1.0,
            timestep_weights: None,
        };
        let (target, bank) = (two_tone(8, 1), two_tone(6, 2));
        let base = LoaderConfig::new(0, 5).hflip(true).crop_scale(0.5);
        let states = [LoaderState::default(); 2];
        let streams = vec![stream("target", 3), stream("bank", 2)];
        let mut feed = Feed::new(streams, vec![&target, &bank], &base, &states).unwrap();
        let step = feed.next(&mut Generator::new(0), 2).unwrap();
        assert_eq!(step.control.shape(), &[5, 4]);
        assert_eq!(step.counts, [3, 2]);
        let alone = |data, images, seed| {
            let config = LoaderConfig {
                batch_size: images,
                seed,
                ..base.clone()
            };
            Batches::new(data, config).unwrap().next_batch().unwrap()
        };
        let parts = [
            alone(&target, 3, base.seed),
            alone(&bank, 2, mix(base.seed ^ mix(1))),
        ];
        let want: Vec<f32> = parts
            .iter()
            .flat_map(|b| b.control.to_vec::<f32>().unwrap())
            .collect();
        assert_eq!(step.control.to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn each_loss_is_weighted_by_its_timestep_before_the_mean() {
        let losses = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 4.0], &[3]).unwrap());
        let t = Tensor::from_vec(vec![2i64, 0, 2], &[3]).unwrap();
        let mean = |w| {
            weighted_mean(&losses, &t, w)
                .unwrap()
                .value()
                .to_scalar()
                .unwrap()
        };
        assert!((mean(None) - 7.0 / 3.0).abs() < 1e-15);
        // Weights 0.5 at t = 0, 3 at t = 2: (3 * 1 + 0.5 * 2 + 3 * 4) / 3.
        assert!((mean(Some(&[0.5, 9.0, 3.0][..])) - 16.0 / 3.0).abs() < 1e-15);
    }
}
