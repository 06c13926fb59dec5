//! What the end-to-end tests of `train` share: small image folders of real data, a tiny DiT.

use std::path::{Path, PathBuf};

use train::data::{save_image_folder, Dataset};
use train::run::{ModelConfig, RunConfig};

/// `per_class` Animal-MNIST images of each of its first `classes` classes (all of them when
/// `classes` is larger), as an image folder `dir/images`.
pub fn image_folder(dir: &Path, classes: usize, per_class: usize) -> PathBuf {
    let data = Dataset::animal_mnist().unwrap();
    let mut picked = Vec::new();
    for class in 0..classes.min(data.classes().len()) as i64 {
        picked.extend(
            (0..data.len())
                .filter(|&i| data.labels()[i] == class)
                .take(per_class),
        );
    }
    let subset = data.subset(&picked).unwrap();
    let images = train::data::transform::scale(&subset.images_tensor().unwrap()).unwrap();
    let root = dir.join("images");
    save_image_folder(&root, &images, subset.labels(), subset.classes()).unwrap();
    root
}

/// A DiT small enough to train in the dev profile in seconds.
pub fn tiny_config(data: &Path, out: &Path) -> RunConfig {
    let mut c = RunConfig {
        data: data.display().to_string(),
        color: "gray".into(),
        model: ModelConfig {
            patch_size: 7,
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            ..ModelConfig::default()
        },
        batch_size: 8,
        warmup_steps: 5,
        checkpoint_every: 4,
        log_every: 2,
        out: out.to_path_buf(),
        ..RunConfig::default()
    };
    c.sample.sampler = "ddim4".into();
    c.sample.per_class = 1;
    c.sample.cfg_scale = 1.0;
    c
}
