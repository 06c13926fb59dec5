//! What the end-to-end tests of `train` share: small image folders of real data.

use std::path::{Path, PathBuf};

use train::data::{save_image_folder, Dataset};

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
