//! [`DataSource`]: a labelled data set named on the command line or in a config — Fashion-MNIST,
//! its test images, Animal-MNIST or an image folder — with its fixed train / held-out split.

use std::fmt;
use std::path::{Path, PathBuf};

use tensor::{Error, Result};

use super::{ColorMode, Dataset, FolderOptions, Split};

/// Fraction of Animal-MNIST (and of an image folder) held out from classifier training.
pub const HELD_OUT: f64 = 0.2;
/// Seed of that split.
pub const SPLIT_SEED: u64 = 0;

/// A labelled data set named on the command line.
///
/// ```
/// use train::data::DataSource;
/// // 50 images of each class of Animal-MNIST's training split, the same 50 every time.
/// let few = DataSource::parse("animal-mnist-train:50", "--data").unwrap();
/// assert_eq!(few.to_string(), "animal-mnist-train:50");
/// assert!(DataSource::parse("animal-mnist:0", "--data").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Fashion-MNIST: train on its 60,000 training images, hold out its 10,000 test images.
    FashionMnist,
    /// Fashion-MNIST's test images only (as a reference set).
    FashionMnistTest,
    /// Animal-MNIST: a stratified split, [`HELD_OUT`] of each class held out with [`SPLIT_SEED`].
    AnimalMnist,
    /// The training part of that split (what its classifier was trained on).
    AnimalMnistTrain,
    /// The held-out part of that split.
    AnimalMnistTest,
    /// `source:K`: K images of each class of `source`'s images, drawn once with [`SPLIT_SEED`]
    /// (a fixed low-data set).
    PerClass {
        /// The set drawn from.
        of: Box<DataSource>,
        /// Images per class.
        count: usize,
    },
    /// `root/<class>/<image>` folder, split like Animal-MNIST.
    Folder(PathBuf),
}

impl DataSource {
    /// `fashion-mnist`, `fashion-mnist-test`, `animal-mnist`, `animal-mnist-train`,
    /// `animal-mnist-test`, or the path of an existing folder, each optionally followed by `:K`
    /// (K images per class); anything else is an error naming `flag` and the value.
    pub fn parse(value: &str, flag: &str) -> Result<Self> {
        let unknown = || {
            Error::msg(format!(
                "{flag} `{value}`: expected fashion-mnist, fashion-mnist-test, animal-mnist, \
                 animal-mnist-train, animal-mnist-test or an existing folder of <class>/<image> \
                 files, optionally followed by `:K` (K images per class, K at least 1)"
            ))
        };
        match value {
            "fashion-mnist" => Ok(DataSource::FashionMnist),
            "fashion-mnist-test" => Ok(DataSource::FashionMnistTest),
            "animal-mnist" => Ok(DataSource::AnimalMnist),
            "animal-mnist-train" => Ok(DataSource::AnimalMnistTrain),
            "animal-mnist-test" => Ok(DataSource::AnimalMnistTest),
            path if Path::new(path).is_dir() => Ok(DataSource::Folder(path.into())),
            _ => {
                let (of, count) = value.rsplit_once(':').ok_or_else(unknown)?;
                let count = count.parse::<usize>().ok().filter(|&k| k > 0);
                match (DataSource::parse(of, flag), count) {
                    (Ok(of), Some(count)) => Ok(DataSource::PerClass {
                        of: Box::new(of),
                        count,
                    }),
                    _ => Err(unknown()),
                }
            }
        }
    }

    pub(crate) fn folder(root: &Path, input: [usize; 3], exact: bool) -> Result<Dataset> {
        let [c, h, w] = input;
        if h != w {
            return Err(Error::msg(format!(
                "image folder {}: images are read square, but {h}x{w} was asked for",
                root.display()
            )));
        }
        Dataset::from_folder(
            root,
            FolderOptions {
                size: h,
                color: color_mode(c)?,
                exact,
            },
        )
    }

    /// The (train, held-out) pair a classifier is trained and measured on, read as `input`
    /// (`[C, H, W]`: folder images and the named sets resized to its side).
    pub fn train_and_held_out(&self, input: [usize; 3]) -> Result<(Dataset, Dataset)> {
        match self {
            DataSource::FashionMnist => Ok((
                self.reference(input)?,
                DataSource::FashionMnistTest.reference(input)?,
            )),
            DataSource::FashionMnistTest => Err(Error::msg(
                "fashion-mnist-test is a reference set only; train on fashion-mnist",
            )),
            DataSource::AnimalMnist | DataSource::Folder(_) => {
                self.reference(input)?.split(HELD_OUT, SPLIT_SEED)
            }
            part => Err(Error::msg(format!(
                "{part} is a part of a data set (to train a diffusion model on, or a reference); \
                 classifiers train and are measured on a whole set: animal-mnist, fashion-mnist \
                 or a folder"
            ))),
        }
    }

    /// The held-out images a trained classifier is measured on (and `eval --dataset` draws): a
    /// whole set's held-out part, or a part named itself (`animal-mnist-test`, `NAME:K`).
    pub fn held_out(&self, input: [usize; 3]) -> Result<Dataset> {
        match self {
            DataSource::FashionMnist | DataSource::FashionMnistTest => {
                DataSource::FashionMnistTest.reference(input)
            }
            DataSource::AnimalMnist | DataSource::Folder(_) => {
                Ok(self.train_and_held_out(input)?.1)
            }
            part => part.reference(input),
        }
    }

    /// The whole set generated images are compared with (or a run trains on): Fashion-MNIST's
    /// training images, its test images, all of Animal-MNIST, or the whole folder. Folder images
    /// are read as `input` (`[C, H, W]`); the named sets keep their one channel and are resized
    /// (antialiased) to `input`'s height and width where those differ from their 28.
    pub fn reference(&self, input: [usize; 3]) -> Result<Dataset> {
        self.read(input, false)
    }

    /// [`DataSource::reference`], but a folder's images must already be `input`'s size and
    /// channel count (see [`FolderOptions::exact`]): a knowledge bank made for another model is
    /// refused, not resized.
    pub fn exact(&self, input: [usize; 3]) -> Result<Dataset> {
        self.read(input, true)
    }

    fn read(&self, input: [usize; 3], exact: bool) -> Result<Dataset> {
        let named = match self {
            DataSource::FashionMnist => Dataset::fashion_mnist(Split::Train)?,
            DataSource::FashionMnistTest => Dataset::fashion_mnist(Split::Test)?,
            DataSource::AnimalMnist => Dataset::animal_mnist()?,
            DataSource::AnimalMnistTrain => Dataset::animal_mnist()?.split(HELD_OUT, SPLIT_SEED)?.0,
            DataSource::AnimalMnistTest => Dataset::animal_mnist()?.split(HELD_OUT, SPLIT_SEED)?.1,
            DataSource::Folder(root) => return Self::folder(root, input, exact),
            DataSource::PerClass { of, count } => {
                return of
                    .read(input, exact)?
                    .per_class(*count, SPLIT_SEED)
                    .map_err(|e| Error::msg(format!("{self}: {e}")))
            }
        };
        let [_, h, w] = input;
        named.resized(h, w)
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::FashionMnist => write!(f, "fashion-mnist"),
            DataSource::FashionMnistTest => write!(f, "fashion-mnist-test"),
            DataSource::AnimalMnist => write!(f, "animal-mnist"),
            DataSource::AnimalMnistTrain => write!(f, "animal-mnist-train"),
            DataSource::AnimalMnistTest => write!(f, "animal-mnist-test"),
            DataSource::Folder(p) => write!(f, "{}", p.display()),
            DataSource::PerClass { of, count } => write!(f, "{of}:{count}"),
        }
    }
}

/// The colour mode of images with `channels` channels.
pub(crate) fn color_mode(channels: usize) -> Result<ColorMode> {
    match channels {
        1 => Ok(ColorMode::Gray),
        3 => Ok(ColorMode::Rgb),
        c => Err(Error::msg(format!(
            "images with {c} channels cannot be read from files (1 or 3)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::{resize, Image};

    #[test]
    fn the_low_data_split_is_fixed_and_inside_the_training_split() {
        let input = [1, 28, 28];
        let few = DataSource::parse("animal-mnist-train:50", "--data").unwrap();
        let (a, b) = (few.reference(input).unwrap(), few.reference(input).unwrap());
        assert_eq!(a.class_counts(), vec![50; 10]);
        assert_eq!(a.pixels(), b.pixels());
        // Every image of it is a training image, none a held-out one.
        let train = DataSource::AnimalMnistTrain.reference(input).unwrap();
        let test = DataSource::AnimalMnistTest.reference(input).unwrap();
        assert_eq!((train.len(), test.len()), (8000, 2000));
        let contains = |set: &Dataset, image: &[u8]| (0..set.len()).any(|i| set.image(i) == image);
        for i in (0..a.len()).step_by(37) {
            assert!(contains(&train, a.image(i)) && !contains(&test, a.image(i)));
        }
        let err = DataSource::parse("animal-mnist-test:300", "--data")
            .unwrap()
            .reference(input)
            .unwrap_err()
            .to_string();
        assert!(err.contains("300") && err.contains("bear"), "{err}");
        for bad in ["animal-mnist:0", "animal-mnist:", "no-such-set:5"] {
            let err = DataSource::parse(bad, "--data").unwrap_err().to_string();
            assert!(err.contains("--data") && err.contains(bad), "{err}");
        }
    }

    /// A named set is resized to the asked side (each image as `folder::resize` makes it), and
    /// kept as it is at its own 28.
    #[test]
    fn named_sets_are_resized_to_the_asked_side() {
        let native = Dataset::animal_mnist().unwrap();
        let same = DataSource::AnimalMnist.reference([1, 28, 28]).unwrap();
        assert_eq!(same.pixels(), native.pixels());
        let small = DataSource::AnimalMnist.reference([3, 16, 16]).unwrap();
        assert_eq!(small.shape(), [native.len(), 1, 16, 16]);
        assert_eq!(
            (small.labels(), small.classes()),
            (native.labels(), native.classes())
        );
        for i in [0, 4321] {
            let image = Image::from_planar(native.image(i), [1, 28, 28]);
            let want = resize(&image, 16, 16).pixels;
            assert_eq!(small.image(i), &want[..]);
        }
        // A fixed subset of a resized set holds the same images, resized.
        let few = DataSource::parse("animal-mnist:3", "--data").unwrap();
        let (a, b) = (few.reference([1, 28, 28]), few.reference([1, 16, 16]));
        assert_eq!(
            b.unwrap().pixels(),
            a.unwrap().resized(16, 16).unwrap().pixels()
        );
    }

    #[test]
    fn sources_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            DataSource::parse("animal-mnist", "--data").unwrap(),
            DataSource::AnimalMnist
        );
        let e = DataSource::parse("/no/such/place", "--reference")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--reference") && e.contains("/no/such/place"),
            "{e}"
        );
    }
}
