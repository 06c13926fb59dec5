//! Folders of generated images to evaluate (the named data sets are [`DataSource`]s).

use std::path::Path;

use tensor::{Error, Result, Tensor};

use crate::data::folder::{decode, resize_and_crop};
use crate::data::source::color_mode;
use crate::data::DataSource;

/// Images read from a folder for evaluation, `f32 [N, C, H, W]` in `[-1, 1]`, with the labels
/// they were asked for when the folder has one sub-folder per class.
pub struct ImageFolder {
    /// The images.
    pub images: Tensor,
    /// The requested class of each image, when known.
    pub labels: Option<Vec<i64>>,
}

/// Reads generated images as `input` `[C, H, W]` from `root`: either flat (`root/*.png`) or one
/// sub-folder per class (`root/<class>/*.png`), a class being named by its index or by one of
/// `classes`.
pub fn read_image_folder(
    root: &Path,
    input: [usize; 3],
    classes: &[String],
) -> Result<ImageFolder> {
    let [c, h, w] = input;
    if !root.is_dir() {
        return Err(Error::msg(format!(
            "--images {}: not a folder",
            root.display()
        )));
    }
    let entries = std::fs::read_dir(root).map_err(|source| Error::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut has_dirs = false;
    for entry in entries {
        let path = entry
            .map_err(|source| Error::Io {
                path: root.to_path_buf(),
                source,
            })?
            .path();
        has_dirs |= path.is_dir();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    if has_dirs && files.is_empty() {
        let data = DataSource::folder(root, input, false)?;
        let labels = data
            .labels()
            .iter()
            .map(|&l| class_index(&data.classes()[l as usize], classes))
            .collect::<Result<Vec<_>>>()?;
        let images = crate::data::transform::scale(&data.images_tensor()?)?;
        return Ok(ImageFolder {
            images,
            labels: Some(labels),
        });
    }
    if files.is_empty() {
        return Err(Error::msg(format!(
            "--images {}: no .png, .jpg or .jpeg image in it (nor class sub-folders)",
            root.display()
        )));
    }
    if h != w {
        return Err(Error::msg(format!(
            "--images: images are read square, but the classifier takes {h}x{w}"
        )));
    }
    files.sort();
    let color = color_mode(c)?;
    tensor::limits::DECOMPRESSED_BYTES.check(
        tensor::limits::product(&[files.len(), c, h, w]),
        format!(
            "--images {}: {} images of {c}x{h}x{w}",
            root.display(),
            files.len()
        ),
    )?;
    let mut pixels: Vec<u8> = Vec::with_capacity(files.len() * c * h * w);
    for file in &files {
        let image = resize_and_crop(&decode(file, color)?, h);
        for ch in 0..c {
            pixels.extend(image.pixels.iter().skip(ch).step_by(c));
        }
    }
    let images = Tensor::from_vec(pixels, &[files.len(), c, h, w])?;
    Ok(ImageFolder {
        images: crate::data::transform::scale(&images)?,
        labels: None,
    })
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The label of a class sub-folder: its index (`3`) or its position in `classes`.
fn class_index(folder: &str, classes: &[String]) -> Result<i64> {
    if let Some(i) = classes.iter().position(|c| c == folder) {
        return Ok(i as i64);
    }
    match folder.parse::<usize>() {
        Ok(i) if i < classes.len() => Ok(i as i64),
        _ => Err(Error::msg(format!(
            "--images: class folder `{folder}` is neither an index below {} nor one of the \
             classifier's classes {classes:?}",
            classes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::save_png;

    #[test]
    fn flat_and_class_folders_read_with_labels() {
        let root = std::env::temp_dir().join(format!("difftune-evalimg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let classes = vec!["a".to_string(), "b".to_string()];
        std::fs::create_dir_all(root.join("flat")).unwrap();
        save_png(&root.join("flat/0.png"), 8, 8, 1, &[255; 64]).unwrap();
        let flat = read_image_folder(&root.join("flat"), [1, 8, 8], &classes).unwrap();
        assert_eq!(flat.images.shape(), &[1, 1, 8, 8]);
        assert!(flat.labels.is_none());
        assert_eq!(flat.images.to_vec::<f32>().unwrap()[0], 1.0);
        for (dir, v) in [("b", 0u8), ("0", 255)] {
            std::fs::create_dir_all(root.join("cls").join(dir)).unwrap();
            save_png(&root.join("cls").join(dir).join("x.png"), 8, 8, 1, &[v; 64]).unwrap();
        }
        let cls = read_image_folder(&root.join("cls"), [1, 8, 8], &classes).unwrap();
        // Sorted sub-folders: "0" (index 0), then "b" (class 1).
        assert_eq!(cls.labels, Some(vec![0, 1]));
        std::fs::create_dir_all(root.join("cls/zebra")).unwrap();
        save_png(&root.join("cls/zebra/x.png"), 8, 8, 1, &[0; 64]).unwrap();
        let e = read_image_folder(&root.join("cls"), [1, 8, 8], &classes)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("zebra"), "{e}");
        let e = read_image_folder(&root.join("none"), [1, 8, 8], &classes)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--images"), "{e}");
    }
}
