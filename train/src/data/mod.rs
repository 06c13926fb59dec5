//! Data: labelled image sets, their loaders and the latent cache.
//!
//! - [`Dataset`]: images `u8 [N, C, H, W]`, labels `i64 [N]` and class names, read from IDX files
//!   ([`idx`]), from folders of PNG/JPEG images with one sub-folder per class ([`folder`]), or
//!   built by hand with [`Dataset::new`].
//! - [`Batches`] ([`loader`]): seeded shuffling and batching, random resized crops, padding,
//!   random horizontal flips and scaling to `[-1, 1]`, each image's crop and flip recorded as
//!   its control vector ([`CONTROL_KINDS`]), with a [`LoaderState`] that a resumed run restores
//!   to continue exactly.
//! - [`Latents`] ([`latents`]): a dataset encoded once through a caller's encoder, saved as
//!   safetensors.
//! - [`save_grid`] ([`grid`]): a batch of images as one PNG, rows by class.
//! - [`DataSource`] ([`source`]): the named data sets and image folders, with their fixed splits.
//!
//! ```
//! use train::data::{Batches, Dataset, LoaderConfig};
//! let images: Vec<u8> = (0..4 * 2 * 2).map(|i| i as u8).collect();
//! let data = Dataset::from_raw(images, [4, 1, 2, 2], vec![0, 1, 0, 1], vec!["a".into(), "b".into()]).unwrap();
//! let mut batches = Batches::new(&data, LoaderConfig::new(2, 7).pad(1)).unwrap();
//! let batch = batches.next_batch().unwrap();
//! assert_eq!(batch.images.shape(), &[2, 1, 4, 4]);
//! ```

mod dataset;
pub mod folder;
pub mod grid;
pub mod idx;
pub mod latents;
pub mod loader;
pub mod source;
pub mod transform;

#[cfg(test)]
pub(crate) use dataset::two_tone;
pub use dataset::{Dataset, Split, ANIMAL_MNIST_CLASSES, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR};
pub use folder::{ColorMode, FolderOptions};
pub use grid::{save_grid, save_image_folder};
pub use latents::Latents;
pub use loader::{
    identity_control, Batch, Batches, LoaderConfig, LoaderState, Sampler, CONTROL_KINDS,
};
pub use source::DataSource;
