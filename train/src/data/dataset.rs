//! The [`Dataset`] type and the named data sets (Fashion-MNIST, Animal-MNIST).

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use tensor::{DType, Error, Generator, Result, Tensor};

use super::folder::{resize, Image};
use super::idx;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Animal-MNIST's class names, by label.
pub const ANIMAL_MNIST_CLASSES: [&str; 10] = [
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
];

/// Which half of a data set shipped as train and test files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training files (60,000 images for Fashion-MNIST).
    Train,
    /// The test files (10,000 images for Fashion-MNIST).
    Test,
}

/// A labelled image set held in memory: images `u8 [N, C, H, W]` (row-major), labels in `0..K`
/// and the `K` class names.
#[derive(Clone, Debug)]
pub struct Dataset {
    pixels: Vec<u8>,
    shape: [usize; 4],
    labels: Vec<i64>,
    classes: Vec<String>,
}

impl Dataset {
    /// A data set from tensors: `images` `u8 [N, C, H, W]`, `labels` integer `[N]` with values in
    /// `0..classes.len()`.
    pub fn new(images: &Tensor, labels: &Tensor, classes: Vec<String>) -> Result<Dataset> {
        if images.dtype() != DType::U8 {
            return Err(Error::dtype("Dataset::new", images.dtype(), "u8 images"));
        }
        let [n, c, h, w] = <[usize; 4]>::try_from(images.shape()).map_err(|_| {
            Error::shape(
                "Dataset::new",
                format!("images {:?}: expected [N, C, H, W]", images.shape()),
            )
        })?;
        if labels.rank() != 1 {
            return Err(Error::shape(
                "Dataset::new",
                format!("labels {:?}: expected [N]", labels.shape()),
            ));
        }
        let labels = labels
            .to_device(tensor::Device::Cpu)?
            .to_dtype(DType::I64)?;
        let images = images.to_device(tensor::Device::Cpu)?;
        Dataset::from_raw(
            images.to_vec::<u8>()?,
            [n, c, h, w],
            labels.to_vec::<i64>()?,
            classes,
        )
    }

    /// A data set from row-major pixels of `shape` `[N, C, H, W]` and labels in
    /// `0..classes.len()`.
    pub fn from_raw(
        pixels: Vec<u8>,
        shape: [usize; 4],
        labels: Vec<i64>,
        classes: Vec<String>,
    ) -> Result<Dataset> {
        let op = "Dataset::from_raw";
        if pixels.len() != shape.iter().product::<usize>() {
            return Err(Error::shape(
                op,
                format!("{} pixels do not fill {shape:?}", pixels.len()),
            ));
        }
        if labels.len() != shape[0] {
            return Err(Error::shape(
                op,
                format!("{} labels for {} images", labels.len(), shape[0]),
            ));
        }
        if let Some(bad) = labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes.len())
        {
            return Err(Error::msg(format!(
                "{op}: label {bad} is outside 0..{} ({} class names given)",
                classes.len(),
                classes.len()
            )));
        }
        Ok(Dataset {
            pixels,
            shape,
            labels,
            classes,
        })
    }

    /// A data set from a pair of IDX files (see [`idx::read_pair`]).
    pub fn from_idx(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        classes: Vec<String>,
    ) -> Result<Dataset> {
        let (x, y) = idx::read_pair(&images, &labels)?;
        let shape = <[usize; 4]>::try_from(x.shape()).expect("read_pair returns [N, 1, H, W]");
        let labels_vec = y.to_vec::<i64>()?;
        if let Some(bad) = labels_vec.iter().find(|&&l| l as usize >= classes.len()) {
            return Err(Error::Format {
                path: labels.as_ref().to_path_buf(),
                msg: format!("label {bad} is outside 0..{}", classes.len()),
            });
        }
        Dataset::from_raw(x.to_vec::<u8>()?, shape, labels_vec, classes)
    }

    /// Fashion-MNIST from the Debian package `dataset-fashion-mnist` (see [`FASHION_MNIST_DIR`]).
    pub fn fashion_mnist(split: Split) -> Result<Dataset> {
        Dataset::fashion_mnist_in(FASHION_MNIST_DIR, split)
    }

    /// Fashion-MNIST from the four `*-ubyte.gz` files in `dir`.
    pub fn fashion_mnist_in(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let dir = dir.as_ref();
        let images = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
        let labels = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
        require(&[&images, &labels], "Fashion-MNIST")?;
        Dataset::from_idx(images, labels, names(&FASHION_MNIST_CLASSES))
    }

    /// Animal-MNIST from the repository's `data/animal-mnist/` folder.
    pub fn animal_mnist() -> Result<Dataset> {
        Dataset::animal_mnist_in(Dataset::animal_mnist_dir())
    }

    /// The repository's `data/animal-mnist/` folder (as seen from this crate's sources).
    pub fn animal_mnist_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/animal-mnist")
    }

    /// Animal-MNIST from `images-idx3-ubyte.gz` and `labels-idx1-ubyte.gz` in `dir`.
    pub fn animal_mnist_in(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref();
        let images = dir.join("images-idx3-ubyte.gz");
        let labels = dir.join("labels-idx1-ubyte.gz");
        require(&[&images, &labels], "Animal-MNIST")?;
        Dataset::from_idx(images, labels, names(&ANIMAL_MNIST_CLASSES))
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    /// All pixels, row-major `[N, C, H, W]`.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixels of image `i`, row-major `[C, H, W]` (panics when `i >= len()`, like indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.shape[1] * self.shape[2] * self.shape[3];
        &self.pixels[i * size..(i + 1) * size]
    }

    /// The labels, in `0..classes().len()`.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The class names, by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The images as a `u8 [N, C, H, W]` tensor (a copy).
    pub fn images_tensor(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.pixels, &self.shape)
    }

    /// The labels as an `i64 [N]` tensor (a copy).
    pub fn labels_tensor(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.labels, &[self.labels.len()])
    }

    /// How many images each class holds, by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order (an index may repeat).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!(
                "Dataset::subset: index {bad} is out of range for {} images",
                self.len()
            )));
        }
        let mut pixels = Vec::with_capacity(indices.len() * self.image(0).len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let [_, c, h, w] = self.shape;
        Dataset::from_raw(
            pixels,
            [indices.len(), c, h, w],
            indices.iter().map(|&i| self.labels[i]).collect(),
            self.classes.clone(),
        )
    }

    /// A fixed small subset: `count` images of each class, a seeded random choice (the same
    /// seed gives the same images), in their original order. A class with fewer images is an
    /// error naming it.
    pub fn per_class(&self, count: usize, seed: u64) -> Result<Dataset> {
        let mut gen = Generator::new(seed);
        let mut keep = vec![false; self.len()];
        for (class, name) in self.classes.iter().enumerate() {
            let mut members: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class as i64)
                .collect();
            if members.len() < count {
                return Err(Error::msg(format!(
                    "{count} images per class were asked for, but class `{name}` has {}",
                    members.len()
                )));
            }
            members.shuffle(gen.rng());
            for &i in &members[..count] {
                keep[i] = true;
            }
        }
        let indices: Vec<usize> = (0..self.len()).filter(|&i| keep[i]).collect();
        self.subset(&indices)
    }

    /// The images resized to `height` x `width` (antialiased bilinear, see [`resize`]), labels
    /// and classes unchanged; the same data set when it already has that size.
    pub fn resized(&self, height: usize, width: usize) -> Result<Dataset> {
        let [n, c, h, w] = self.shape;
        if (h, w) == (height, width) {
            return Ok(self.clone());
        }
        if height == 0 || width == 0 {
            return Err(Error::msg(format!(
                "Dataset::resized: {height}x{width}, expected at least 1x1"
            )));
        }
        let mut pixels = Vec::with_capacity(n * c * height * width);
        for i in 0..n {
            resize(&Image::from_planar(self.image(i), [c, h, w]), width, height)
                .extend_planar(&mut pixels);
        }
        Dataset::from_raw(
            pixels,
            [n, c, height, width],
            self.labels.clone(),
            self.classes.clone(),
        )
    }

    /// A fixed train/held-out split, stratified by class: from each class, a seeded random
    /// `held_out` fraction (rounded) goes to the second set. The same seed gives the same split;
    /// both sets keep the original order of their images.
    pub fn split(&self, held_out: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&held_out) {
            return Err(Error::msg(format!(
                "Dataset::split: held-out fraction {held_out} is outside [0, 1]"
            )));
        }
        let mut gen = Generator::new(seed);
        let mut is_held = vec![false; self.len()];
        for class in 0..self.classes.len() as i64 {
            let mut members: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            members.shuffle(gen.rng());
            let take = (members.len() as f64 * held_out).round() as usize;
            for &i in &members[..take] {
                is_held[i] = true;
            }
        }
        let (held, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| is_held[i]);
        Ok((self.subset(&train)?, self.subset(&held)?))
    }
}

fn names(classes: &[&str]) -> Vec<String> {
    classes.iter().map(|s| s.to_string()).collect()
}

fn require(files: &[&Path], what: &str) -> Result<()> {
    match files.iter().find(|f| !f.is_file()) {
        Some(missing) => Err(Error::Format {
            path: missing.to_path_buf(),
            msg: format!("{what} file not found; run scripts/setup.sh to install the data sets"),
        }),
        None => Ok(()),
    }
}

/// Two classes told apart by brightness: `n` dark and light 8x8 images, alternating, with a
/// little texture varied by `seed` (the unit tests' easy task).
#[cfg(test)]
pub(crate) fn two_tone(n: usize, seed: u8) -> Dataset {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = i % 2;
        let base = if label == 0 { 40u8 } else { 200 };
        pixels.extend((0..64).map(|j| base.wrapping_add(((i * 7 + j) as u8 ^ seed) % 30)));
        labels.push(label as i64);
    }
    Dataset::from_raw(
        pixels,
        [n, 1, 8, 8],
        labels,
        vec!["dark".into(), "light".into()],
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize, classes: usize) -> Dataset {
        let pixels: Vec<u8> = (0..n * 4).map(|i| i as u8).collect();
        let labels = (0..n).map(|i| (i % classes) as i64).collect();
        let names = (0..classes).map(|c| format!("c{c}")).collect();
        Dataset::from_raw(pixels, [n, 1, 2, 2], labels, names).unwrap()
    }

    #[test]
    fn animal_mnist_loads_ten_thousand_balanced_images() {
        let data = Dataset::animal_mnist().unwrap();
        assert_eq!(data.shape(), [10_000, 1, 28, 28]);
        assert_eq!(data.class_counts(), vec![1_000; 10]);
        assert_eq!(data.classes()[9], "zebra");
        // Silhouettes: white on black, so both extremes occur.
        assert_eq!(data.pixels().iter().min(), Some(&0));
        assert_eq!(data.pixels().iter().max(), Some(&255));
    }

    #[test]
    fn fashion_mnist_loads_both_splits_when_installed() {
        if !Path::new(FASHION_MNIST_DIR).is_dir() {
            println!("skipped: {FASHION_MNIST_DIR} is missing (run scripts/setup.sh)");
            return;
        }
        let train = Dataset::fashion_mnist(Split::Train).unwrap();
        let test = Dataset::fashion_mnist(Split::Test).unwrap();
        assert_eq!(train.shape(), [60_000, 1, 28, 28]);
        assert_eq!(test.shape(), [10_000, 1, 28, 28]);
        assert_eq!(train.class_counts(), vec![6_000; 10]);
        assert_eq!(test.class_counts(), vec![1_000; 10]);
    }

    #[test]
    fn missing_files_say_to_run_setup() {
        let e = Dataset::fashion_mnist_in("/nonexistent-difftune", Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t10k-images-idx3-ubyte.gz") && e.contains("scripts/setup.sh"),
            "{e}"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let names = vec!["a".to_string()];
        assert!(Dataset::from_raw(vec![0; 3], [1, 1, 2, 2], vec![0], names.clone()).is_err());
        assert!(Dataset::from_raw(vec![0; 4], [1, 1, 2, 2], vec![1], names.clone()).is_err());
        assert!(Dataset::from_raw(vec![0; 4], [1, 1, 2, 2], vec![], names).is_err());
        let d = tiny(3, 1);
        assert!(d.subset(&[3]).is_err());
        assert!(d.split(1.5, 0).is_err());
        let t = Tensor::zeros(&[2, 2], DType::U8, tensor::Device::Cpu).unwrap();
        let l = Tensor::zeros(&[2], DType::I64, tensor::Device::Cpu).unwrap();
        assert!(Dataset::new(&t, &l, vec!["a".into()]).is_err());
    }

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let d = tiny(40, 4);
        let (train, held) = d.split(0.25, 3).unwrap();
        // 10 per class; 2.5 rounds to 3 held out from each.
        assert_eq!((train.len(), held.len()), (28, 12));
        assert_eq!(held.class_counts(), vec![3; 4]);
        assert_eq!(train.class_counts(), vec![7; 4]);
        let (train2, held2) = d.split(0.25, 3).unwrap();
        assert_eq!(held.pixels(), held2.pixels());
        assert_eq!(train.pixels(), train2.pixels());
        let (_, held3) = d.split(0.25, 4).unwrap();
        assert_ne!(held.pixels(), held3.pixels());
        // Every image lands in exactly one set: the first pixel identifies it.
        let mut firsts: Vec<u8> = train
            .pixels()
            .chunks(4)
            .chain(held.pixels().chunks(4))
            .map(|c| c[0])
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..40).map(|i| (i * 4) as u8).collect::<Vec<_>>());
    }
}
