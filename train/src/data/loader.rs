//! Seeded shuffling and batching that can be saved and resumed.
//!
//! Every random choice is a pure function of the seed and the position in the stream: the order
//! of epoch `e` comes from a generator seeded with `(seed, e)`, and the crops and flips of the
//! batch that starts at position `p` from one seeded with `(seed, e, p)`. So a [`LoaderState`]
//! (epoch and position) is all a resumed run needs to continue with exactly the batches it would
//! have seen.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;
use tensor::{Error, Generator, Result, Tensor};

use super::transform::{crop_resized, prepare_into, Crop};
use super::Dataset;

/// What each entry of an image's control vector ([`Batch::control`]) records: the side of its
/// crop as a fraction of the image's, the crop's first row and column as fractions of the
/// image's height and width (in the data set's image: the crop comes before the flip and the
/// padding), and 1 when it was mirrored (else 0).
pub const CONTROL_KINDS: [&str; 4] = ["scale", "crop_top", "crop_left", "flip"];

/// The control vector of an image neither cropped nor flipped.
pub fn identity_control() -> [f32; 4] {
    [1.0, 0.0, 0.0, 0.0]
}

/// How a [`Batches`] stream draws its batches.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// The seed of the order and of the flips.
    pub seed: u64,
    /// Shuffle each epoch (otherwise the data set's order).
    pub shuffle: bool,
    /// Skip the last batch of an epoch when it would be short.
    pub drop_last: bool,
    /// Zero pixels added on every side (2 turns 28x28 into 32x32).
    pub pad: usize,
    /// Mirror each image left to right with probability 1/2.
    pub hflip: bool,
    /// Random resized crops of square images: the smallest side of a crop as a fraction of the
    /// image's, in (0, 1]; 1 crops nothing. A crop's side fraction is drawn uniformly from
    /// `[crop_scale, 1]`, its place uniformly, and the window is resized back to the image's size.
    pub crop_scale: f64,
}

impl LoaderConfig {
    /// Shuffled batches of `batch_size`, the last short one dropped, no padding, crops or flips.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            seed,
            shuffle: true,
            drop_last: true,
            pad: 0,
            hflip: false,
            crop_scale: 1.0,
        }
    }

    /// The same with random resized crops down to `scale` of the side (1: none).
    pub fn crop_scale(mut self, scale: f64) -> Self {
        self.crop_scale = scale;
        self
    }

    /// The same with `pad` pixels of padding.
    pub fn pad(mut self, pad: usize) -> Self {
        self.pad = pad;
        self
    }

    /// The same with random horizontal flips on or off.
    pub fn hflip(mut self, on: bool) -> Self {
        self.hflip = on;
        self
    }

    /// The same with shuffling on or off.
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }

    /// The same with the last short batch kept or dropped.
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }
}

/// Where a stream stands: the epoch and the position of the next batch within that epoch's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoaderState {
    /// The current epoch, from 0.
    pub epoch: u64,
    /// The index in the epoch's order of the next batch's first image.
    pub position: usize,
}

impl LoaderState {
    /// The state as string pairs, e.g. for a checkpoint's safetensors metadata.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("loader.epoch".to_string(), self.epoch.to_string()),
            ("loader.position".to_string(), self.position.to_string()),
        ])
    }

    /// Reads a state written by [`LoaderState::to_metadata`].
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<LoaderState> {
        let get = |key: &str| -> Result<u64> {
            let v = meta.get(key).ok_or_else(|| {
                Error::msg(format!("loader state: metadata has no `{key}` entry"))
            })?;
            v.parse().map_err(|_| {
                Error::msg(format!(
                    "loader state: `{key}` is `{v}`, expected an unsigned integer"
                ))
            })
        };
        Ok(LoaderState {
            epoch: get("loader.epoch")?,
            position: get("loader.position")? as usize,
        })
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A generator for the stream `seed`, purpose `tag`, epoch and position.
fn stream_generator(seed: u64, tag: u64, epoch: u64, position: u64) -> Generator {
    Generator::new(mix(
        mix(mix(seed ^ tag).wrapping_add(epoch)).wrapping_add(position)
    ))
}

/// Seeded, resumable index batches over `len` items: the part of a loader that does not touch
/// the data, shared by image and latent loaders.
#[derive(Clone, Debug)]
pub struct Sampler {
    len: usize,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    state: LoaderState,
    /// The order of `state.epoch`.
    order: Vec<usize>,
}

impl Sampler {
    /// A sampler over `len` items that starts at `state`.
    pub fn new(
        len: usize,
        batch_size: usize,
        seed: u64,
        shuffle: bool,
        drop_last: bool,
        state: LoaderState,
    ) -> Result<Sampler> {
        if batch_size == 0 {
            return Err(Error::msg("loader: batch size 0, expected at least 1"));
        }
        if len == 0 || (drop_last && len < batch_size) {
            return Err(Error::msg(format!(
                "loader: {len} items cannot fill one batch of {batch_size}{}",
                if drop_last { " (drop_last is set)" } else { "" }
            )));
        }
        if state.position > len {
            return Err(Error::msg(format!(
                "loader state: position {} is past the end of an epoch of {len} items",
                state.position
            )));
        }
        let mut sampler = Sampler {
            len,
            batch_size,
            seed,
            shuffle,
            drop_last,
            state,
            order: Vec::new(),
        };
        sampler.order = sampler.epoch_order(state.epoch);
        Ok(sampler)
    }

    /// The order of the items in epoch `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            order.shuffle(stream_generator(self.seed, 1, epoch, 0).rng());
        }
        order
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// Where the next batch starts.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// The next batch's indices, with the state it was drawn at; moves on to the next epoch when
    /// this one is used up.
    pub fn next_indices(&mut self) -> (LoaderState, Vec<usize>) {
        let left = self.len - self.state.position;
        if left == 0 || (self.drop_last && left < self.batch_size) {
            self.state = LoaderState {
                // Saturating: a resumed state (a checkpoint is user input) may say any epoch.
                epoch: self.state.epoch.saturating_add(1),
                position: 0,
            };
            self.order = self.epoch_order(self.state.epoch);
        }
        let at = self.state;
        let end = (at.position + self.batch_size).min(self.len);
        let indices = self.order[at.position..end].to_vec();
        self.state.position = end;
        (at, indices)
    }

    /// A generator for the augmentations of the batch drawn at `at`.
    pub fn augment_generator(&self, at: LoaderState) -> Generator {
        stream_generator(self.seed, 2, at.epoch, at.position as u64)
    }
}

/// One batch: images `f32 [B, C, H + 2 pad, W + 2 pad]` in `[-1, 1]`, labels `i64 [B]`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The images, scaled to `[-1, 1]`, cropped, padded and flipped as configured.
    pub images: Tensor,
    /// The labels.
    pub labels: Tensor,
    /// `f32 [B, 4]`: each image's crop and flip, as [`CONTROL_KINDS`] says
    /// ([`identity_control`] for an image left as it is).
    pub control: Tensor,
    /// The data set indices of the images.
    pub indices: Vec<usize>,
    /// Which images were flipped.
    pub flipped: Vec<bool>,
    /// Where the batch was drawn.
    pub at: LoaderState,
}

/// An endless stream of [`Batch`]es over a [`Dataset`], epoch after epoch (take
/// [`Batches::batches_per_epoch`] of them for one epoch).
pub struct Batches<'a> {
    data: &'a Dataset,
    config: LoaderConfig,
    sampler: Sampler,
}

impl<'a> Batches<'a> {
    /// A stream from the start (epoch 0, position 0).
    pub fn new(data: &'a Dataset, config: LoaderConfig) -> Result<Batches<'a>> {
        Batches::resume(data, config, LoaderState::default())
    }

    /// A stream that continues from `state`, as saved by [`Batches::state`] with the same config.
    pub fn resume(
        data: &'a Dataset,
        config: LoaderConfig,
        state: LoaderState,
    ) -> Result<Batches<'a>> {
        let scale = config.crop_scale;
        if !(scale > 0.0 && scale <= 1.0) {
            return Err(Error::msg(format!(
                "loader: crop scale {scale}, expected a fraction in (0, 1] (1: no crops)"
            )));
        }
        let [_, h, w] = data.image_shape();
        if scale < 1.0 && h != w {
            return Err(Error::msg(format!(
                "loader: random crops need square images, these are {h}x{w}"
            )));
        }
        let sampler = Sampler::new(
            data.len(),
            config.batch_size,
            config.seed,
            config.shuffle,
            config.drop_last,
            state,
        )?;
        Ok(Batches {
            data,
            config,
            sampler,
        })
    }

    /// Where the next batch starts: save it with a checkpoint to resume there.
    pub fn state(&self) -> LoaderState {
        self.sampler.state()
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.sampler.batches_per_epoch()
    }

    /// `[C, H, W]` of the images in a batch (after padding).
    pub fn image_shape(&self) -> [usize; 3] {
        let [c, h, w] = self.data.image_shape();
        [c, h + 2 * self.config.pad, w + 2 * self.config.pad]
    }

    /// A random crop of a square image of side `side` (`None` without crops), drawn from `gen`.
    /// Nothing is drawn without crops, so the flips are those of a loader without them.
    fn draw_crop(&self, gen: &mut Generator, side: usize) -> Option<Crop> {
        if self.config.crop_scale >= 1.0 {
            return None;
        }
        let rng = gen.rng();
        let fraction = rng.random_range(self.config.crop_scale..=1.0);
        let k = ((fraction * side as f64).round() as usize).clamp(1, side);
        Some(Crop {
            top: rng.random_range(0..=side - k),
            left: rng.random_range(0..=side - k),
            side: k,
        })
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let (at, indices) = self.sampler.next_indices();
        let mut gen = self.sampler.augment_generator(at);
        let [c, h, w] = self.data.image_shape();
        let [_, ph, pw] = self.image_shape();
        let size = c * ph * pw;
        let mut images = vec![0f32; indices.len() * size];
        let mut flipped = Vec::with_capacity(indices.len());
        let mut control = Vec::with_capacity(indices.len() * CONTROL_KINDS.len());
        for (out, &i) in images.chunks_exact_mut(size).zip(&indices) {
            let crop = self.draw_crop(&mut gen, h);
            let flip = self.config.hflip && gen.rng().random_bool(0.5);
            let cropped = crop.map(|crop| crop_resized(self.data.image(i), [c, h, w], crop));
            let src = cropped.as_deref().unwrap_or(self.data.image(i));
            prepare_into(src, (h, w), self.config.pad, flip, out);
            let [scale, top, left, _] = match crop {
                Some(crop) => [
                    crop.side as f32 / h as f32,
                    crop.top as f32 / h as f32,
                    crop.left as f32 / w as f32,
                    0.0,
                ],
                None => identity_control(),
            };
            control.extend([scale, top, left, if flip { 1.0 } else { 0.0 }]);
            flipped.push(flip);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| self.data.labels()[i]).collect();
        let n = indices.len();
        Ok(Batch {
            images: Tensor::from_vec(images, &[n, c, ph, pw])?,
            labels: Tensor::from_vec(labels, &[n])?,
            control: Tensor::from_vec(control, &[n, CONTROL_KINDS.len()])?,
            indices,
            flipped,
            at,
        })
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        Some(self.next_batch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        // Image i is filled with the value i, so a batch shows which images it holds.
        let pixels: Vec<u8> = (0..n).flat_map(|i| [i as u8; 6]).collect();
        let labels = (0..n).map(|i| (i % 3) as i64).collect();
        let names = vec!["a".into(), "b".into(), "c".into()];
        Dataset::from_raw(pixels, [n, 1, 2, 3], labels, names).unwrap()
    }

    /// `n` square `side` x `side` images of distinct-looking pixels (labels as `data`'s).
    fn square(n: usize, side: usize) -> Dataset {
        let pixels: Vec<u8> = (0..n * side * side).map(|i| (i * 37 % 251) as u8).collect();
        let labels = (0..n).map(|i| (i % 3) as i64).collect();
        let names = vec!["a".into(), "b".into(), "c".into()];
        Dataset::from_raw(pixels, [n, 1, side, side], labels, names).unwrap()
    }

    type Summary = (Vec<usize>, Vec<bool>, Vec<f32>, Vec<f32>);

    fn summary(b: &Batch) -> Summary {
        (
            b.indices.clone(),
            b.flipped.clone(),
            b.images.to_vec().unwrap(),
            b.control.to_vec().unwrap(),
        )
    }

    #[test]
    fn same_seed_same_stream_and_epochs_cover_everything() {
        let d = data(10);
        let config = LoaderConfig::new(3, 42).hflip(true).pad(1);
        let a: Vec<_> = Batches::new(&d, config.clone())
            .unwrap()
            .take(9)
            .map(|b| summary(&b.unwrap()))
            .collect();
        let b: Vec<_> = Batches::new(&d, config.clone())
            .unwrap()
            .take(9)
            .map(|b| summary(&b.unwrap()))
            .collect();
        assert_eq!(a, b);
        // 3 batches per epoch (the short last one dropped); each epoch is a fresh permutation.
        let epoch0: Vec<usize> = a[..3].iter().flat_map(|s| s.0.clone()).collect();
        let epoch1: Vec<usize> = a[3..6].iter().flat_map(|s| s.0.clone()).collect();
        assert_ne!(epoch0, epoch1);
        let mut seen = epoch0.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        assert_ne!(epoch0, (0..9).collect::<Vec<_>>(), "shuffled");
        // Both flips occur, and another seed gives another stream.
        assert!(a.iter().any(|s| s.1.contains(&true)) && a.iter().any(|s| s.1.contains(&false)));
        let c = Batches::new(&d, LoaderConfig::new(3, 43))
            .unwrap()
            .next_batch()
            .unwrap();
        assert_ne!(c.indices, a[0].0);
    }

    #[test]
    fn batch_contents_match_the_indices() {
        let d = data(5);
        let mut batches = Batches::new(&d, LoaderConfig::new(2, 0).pad(1)).unwrap();
        let b = batches.next_batch().unwrap();
        assert_eq!(b.images.shape(), &[2, 1, 4, 5]);
        let x = b.images.to_vec::<f32>().unwrap();
        for (k, &i) in b.indices.iter().enumerate() {
            let img = &x[k * 20..(k + 1) * 20];
            assert_eq!(img[0], -1.0, "padding");
            assert_eq!(img[6], i as f32 / 127.5 - 1.0, "interior");
        }
        let labels = b.labels.to_vec::<i64>().unwrap();
        assert_eq!(
            labels,
            b.indices
                .iter()
                .map(|&i| (i % 3) as i64)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_restored_state_continues_the_same_order() {
        let config = LoaderConfig::new(4, 7).hflip(true).drop_last(false);
        let (flat, square) = (data(10), square(10, 5));
        for (d, config) in [(&flat, config.clone()), (&square, config.crop_scale(0.4))] {
            let mut full = Batches::new(d, config.clone()).unwrap();
            assert_eq!(full.batches_per_epoch(), 3);
            let all: Vec<_> = (0..8)
                .map(|_| summary(&full.next_batch().unwrap()))
                .collect();
            // The short last batch of an epoch is kept.
            assert_eq!(all[2].0.len(), 2);
            for stop in [1, 3, 5] {
                let mut first = Batches::new(d, config.clone()).unwrap();
                for _ in 0..stop {
                    first.next_batch().unwrap();
                }
                let saved = LoaderState::from_metadata(&first.state().to_metadata()).unwrap();
                let mut resumed = Batches::resume(d, config.clone(), saved).unwrap();
                let rest: Vec<_> = (stop..8)
                    .map(|_| summary(&resumed.next_batch().unwrap()))
                    .collect();
                assert_eq!(rest, all[stop..], "{config:?} resumed after {stop} batches");
            }
        }
    }

    /// A loader without crops draws what it drew before crops existed: one flip per image from
    /// the batch's augment generator and nothing else, so existing runs keep their batches.
    #[test]
    fn without_crops_the_stream_is_the_one_before_crops_existed() {
        let d = square(10, 4);
        let config = LoaderConfig::new(3, 42).hflip(true).pad(1);
        assert_eq!(config.crop_scale, 1.0);
        let sampler = Sampler::new(10, 3, 42, true, true, LoaderState::default()).unwrap();
        let mut batches = Batches::new(&d, config).unwrap();
        for _ in 0..6 {
            let b = batches.next_batch().unwrap();
            let mut gen = sampler.augment_generator(b.at);
            let images = b.images.to_vec::<f32>().unwrap();
            let control = b.control.to_vec::<f32>().unwrap();
            for (k, &i) in b.indices.iter().enumerate() {
                let flip = gen.rng().random_bool(0.5);
                assert_eq!(b.flipped[k], flip);
                let mut want = vec![0f32; 36];
                prepare_into(d.image(i), (4, 4), 1, flip, &mut want);
                assert_eq!(images[k * 36..(k + 1) * 36], want);
                let mut identity = identity_control();
                identity[3] = if flip { 1.0 } else { 0.0 };
                assert_eq!(control[k * 4..(k + 1) * 4], identity);
            }
        }
    }

    /// Crops are recorded in range, and each image is the recorded window of its data set
    /// image, resized back, then padded and flipped as recorded.
    #[test]
    fn each_image_is_its_recorded_crop() {
        let side = 6;
        let d = square(12, side);
        let config = LoaderConfig::new(4, 3).hflip(true).pad(1).crop_scale(0.5);
        let mut batches = Batches::new(&d, config).unwrap();
        assert_eq!(batches.image_shape(), [1, 8, 8]);
        let mut sides = Vec::new();
        for _ in 0..9 {
            let b = batches.next_batch().unwrap();
            assert_eq!(b.control.shape(), &[4, CONTROL_KINDS.len()]);
            let images = b.images.to_vec::<f32>().unwrap();
            let control = b.control.to_vec::<f32>().unwrap();
            for (k, &i) in b.indices.iter().enumerate() {
                let [scale, top, left, flip] = control[k * 4..(k + 1) * 4] else {
                    unreachable!("four entries")
                };
                // Sides from round(0.5 * 6) = 3 to 6 pixels, the window inside the image.
                let crop = Crop {
                    side: (scale * side as f32).round() as usize,
                    top: (top * side as f32).round() as usize,
                    left: (left * side as f32).round() as usize,
                };
                assert!((3..=side).contains(&crop.side), "{crop:?}");
                assert_eq!(scale, crop.side as f32 / side as f32);
                assert!(crop.top + crop.side <= side && crop.left + crop.side <= side);
                assert_eq!(flip, if b.flipped[k] { 1.0 } else { 0.0 });
                let window = crop_resized(d.image(i), [1, side, side], crop);
                let mut want = vec![0f32; 64];
                prepare_into(&window, (side, side), 1, b.flipped[k], &mut want);
                assert_eq!(images[k * 64..(k + 1) * 64], want, "{crop:?}");
                sides.push(crop.side);
            }
        }
        // The smallest crop occurs among the 36.
        assert!(sides.contains(&3), "{sides:?}");
    }

    #[test]
    fn bad_configs_and_states_are_errors() {
        let d = data(3);
        assert!(Batches::new(&d, LoaderConfig::new(0, 0)).is_err());
        assert!(Batches::new(&d, LoaderConfig::new(4, 0)).is_err());
        assert!(Batches::new(&d, LoaderConfig::new(4, 0).drop_last(false)).is_ok());
        let late = LoaderState {
            epoch: 0,
            position: 4,
        };
        assert!(Batches::resume(&d, LoaderConfig::new(1, 0), late).is_err());
        for scale in [0.0, -0.5, 1.5, f64::NAN] {
            let config = LoaderConfig::new(1, 0).crop_scale(scale);
            let err = Batches::new(&square(3, 2), config).err().expect("refused");
            assert!(err.to_string().contains("crop scale"), "{scale}");
        }
        // `d`'s images are 2x3: crops are square.
        let config = LoaderConfig::new(1, 0).crop_scale(0.5);
        let err = Batches::new(&d, config).err().expect("refused");
        assert!(err.to_string().contains("square"), "{err}");
        let meta = HashMap::from([("loader.epoch".to_string(), "x".to_string())]);
        assert!(LoaderState::from_metadata(&meta).is_err());
    }
}
