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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Fashion-MNIST: train on its 60,000 training images, hold out its 10,000 test images.
    FashionMnist,
    /// Fashion-MNIST's test images only (as a reference set).
    FashionMnistTest,
    /// Animal-MNIST: a stratified split, [`HELD_OUT`] of each class held out with [`SPLIT_SEED`].
    AnimalMnist,
    /// `root/<class>/<image>` folder, split like Animal-MNIST.
    Folder(PathBuf),
}

impl DataSource {
    /// `fashion-mnist`, `fashion-mnist-test`, `animal-mnist`, or the path of an existing folder;
    /// anything else is an error naming `flag` and the value.
    pub fn parse(value: &str, flag: &str) -> Result<Self> {
        match value {
            "fashion-mnist" => Ok(DataSource::FashionMnist),
            "fashion-mnist-test" => Ok(DataSource::FashionMnistTest),
            "animal-mnist" => Ok(DataSource::AnimalMnist),
            path if Path::new(path).is_dir() => Ok(DataSource::Folder(path.into())),
            other => Err(Error::msg(format!(
                "{flag} `{other}`: expected fashion-mnist, fashion-mnist-test, animal-mnist or an \
                 existing folder of <class>/<image> files"
            ))),
        }
    }

    pub(crate) fn folder(root: &Path, input: [usize; 3]) -> Result<Dataset> {
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
            },
        )
    }

    /// The (train, held-out) pair a classifier is trained and measured on; folder images are
    /// read as `input` (`[C, H, W]`).
    pub fn train_and_held_out(&self, input: [usize; 3]) -> Result<(Dataset, Dataset)> {
        match self {
            DataSource::FashionMnist => Ok((
                Dataset::fashion_mnist(Split::Train)?,
                Dataset::fashion_mnist(Split::Test)?,
            )),
            DataSource::FashionMnistTest => Err(Error::msg(
                "fashion-mnist-test is a reference set only; train on fashion-mnist",
            )),
            DataSource::AnimalMnist => Dataset::animal_mnist()?.split(HELD_OUT, SPLIT_SEED),
            DataSource::Folder(root) => Self::folder(root, input)?.split(HELD_OUT, SPLIT_SEED),
        }
    }

    /// The held-out images a trained classifier is measured on.
    pub fn held_out(&self, input: [usize; 3]) -> Result<Dataset> {
        match self {
            DataSource::FashionMnist | DataSource::FashionMnistTest => {
                Dataset::fashion_mnist(Split::Test)
            }
            _ => Ok(self.train_and_held_out(input)?.1),
        }
    }

    /// The whole set generated images are compared with: Fashion-MNIST's training images, its
    /// test images, all of Animal-MNIST, or the whole folder.
    pub fn reference(&self, input: [usize; 3]) -> Result<Dataset> {
        match self {
            DataSource::FashionMnist => Dataset::fashion_mnist(Split::Train),
            DataSource::FashionMnistTest => Dataset::fashion_mnist(Split::Test),
            DataSource::AnimalMnist => Dataset::animal_mnist(),
            DataSource::Folder(root) => Self::folder(root, input),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::FashionMnist => write!(f, "fashion-mnist"),
            DataSource::FashionMnistTest => write!(f, "fashion-mnist-test"),
            DataSource::AnimalMnist => write!(f, "animal-mnist"),
            DataSource::Folder(p) => write!(f, "folder:{}", p.display()),
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
