//! Sample grids: a batch of images as one PNG.

use std::path::Path;

use tensor::{DType, Device, Error, Result, Tensor};

use super::folder::save_png;
use super::transform::unscale;

/// The colour of the gaps between images.
const GAP_VALUE: u8 = 128;

/// Writes images `[N, C, H, W]` (C 1 or 3; `u8`, or floats in `[-1, 1]`) as one PNG grid with
/// `gap` pixels of mid-gray between images, atomically. With `labels` (`[N]`), each row holds one
/// class (in increasing label order, images in batch order); without, the grid is as square as
/// possible. Returns the PNG's width and height.
pub fn save_grid(
    path: impl AsRef<Path>,
    images: &Tensor,
    labels: Option<&Tensor>,
    gap: usize,
) -> Result<(usize, usize)> {
    let path = path.as_ref();
    let [n, c, h, w] = <[usize; 4]>::try_from(images.shape()).map_err(|_| {
        Error::shape(
            "save_grid",
            format!("images {:?}: expected [N, C, H, W]", images.shape()),
        )
    })?;
    if n == 0 || !matches!(c, 1 | 3) {
        return Err(Error::shape(
            "save_grid",
            format!(
                "images {:?}: expected at least one image of 1 or 3 channels",
                images.shape()
            ),
        ));
    }
    let pixels = unscale(images)?.to_vec::<u8>()?;
    // rows[r] = the indices of the images in row r.
    let rows: Vec<Vec<usize>> = match labels {
        Some(labels) => {
            if labels.shape() != [n] {
                return Err(Error::shape(
                    "save_grid",
                    format!("labels {:?} for {n} images: expected [{n}]", labels.shape()),
                ));
            }
            let labels = labels
                .to_device(Device::Cpu)?
                .to_dtype(DType::I64)?
                .to_vec::<i64>()?;
            let mut classes = labels.clone();
            classes.sort_unstable();
            classes.dedup();
            classes
                .iter()
                .map(|&k| (0..n).filter(|&i| labels[i] == k).collect())
                .collect()
        }
        None => {
            let cols = (n as f64).sqrt().ceil() as usize;
            (0..n)
                .collect::<Vec<_>>()
                .chunks(cols)
                .map(|r| r.to_vec())
                .collect()
        }
    };
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1);
    let width = cols * w + (cols + 1) * gap;
    let height = rows.len() * h + (rows.len() + 1) * gap;
    let mut canvas = vec![GAP_VALUE; width * height * c];
    for (r, row) in rows.iter().enumerate() {
        for (col, &i) in row.iter().enumerate() {
            let (left, top) = (gap + col * (w + gap), gap + r * (h + gap));
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        canvas[((top + y) * width + left + x) * c + ch] =
                            pixels[((i * c + ch) * h + y) * w + x];
                    }
                }
            }
        }
    }
    save_png(path, width, height, c, &canvas)?;
    Ok((width, height))
}

/// Writes images `[N, C, H, W]` (as for [`save_grid`]) one PNG each, into a sub-folder per class
/// named after `classes[label]`: the layout [`Dataset::from_folder`](super::Dataset::from_folder)
/// reads back, e.g. for `difftune eval --images`.
pub fn save_image_folder(
    dir: impl AsRef<Path>,
    images: &Tensor,
    labels: &[i64],
    classes: &[String],
) -> Result<()> {
    let dir = dir.as_ref();
    let [n, c, h, w] = <[usize; 4]>::try_from(images.shape()).map_err(|_| {
        Error::shape(
            "save_image_folder",
            format!("images {:?}: expected [N, C, H, W]", images.shape()),
        )
    })?;
    if labels.len() != n {
        return Err(Error::shape(
            "save_image_folder",
            format!("{} labels for {n} images", labels.len()),
        ));
    }
    let pixels = unscale(images)?.to_vec::<u8>()?;
    let size = c * h * w;
    for (i, (image, &label)) in pixels.chunks_exact(size).zip(labels).enumerate() {
        let class = usize::try_from(label)
            .ok()
            .and_then(|l| classes.get(l))
            .ok_or_else(|| {
                Error::msg(format!(
                    "save_image_folder: label {label} has no class name ({} classes)",
                    classes.len()
                ))
            })?;
        // CHW planes to interleaved HWC pixels.
        let hwc: Vec<u8> = (0..h * w)
            .flat_map(|p| (0..c).map(move |ch| image[ch * h * w + p]))
            .collect();
        let folder = folder_name(class);
        save_png(&dir.join(folder).join(format!("{i:06}.png")), w, h, c, &hwc)?;
    }
    Ok(())
}

/// A class name as one folder name: path separators (Fashion-MNIST's `T-shirt/top`) become `-`,
/// and a name that would mean another folder (empty, `.`, `..`) is quoted in underscores.
fn folder_name(class: &str) -> String {
    let name = class.replace(['/', '\\'], "-");
    match name.as_str() {
        "" | "." | ".." => format!("_{name}_"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Cursor;

    use super::*;

    fn read_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
        let bytes = fs::read(path).unwrap();
        let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.width, info.height, info.color_type, buf)
    }

    #[test]
    fn class_names_become_one_folder_each_and_read_back() {
        let dir = std::env::temp_dir().join(format!("difftune-folders-{}", std::process::id()));
        let classes: Vec<String> = ["T-shirt/top", "a\\b", "..", "Bag"]
            .map(String::from)
            .into();
        let images = Tensor::from_vec(vec![0.5f32; 4 * 4], &[4, 1, 2, 2]).unwrap();
        save_image_folder(&dir, &images, &[0, 1, 2, 3], &classes).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["Bag", "T-shirt-top", "_.._", "a-b"]);
        let options = crate::data::FolderOptions {
            size: 2,
            color: crate::data::ColorMode::Gray,
            exact: false,
        };
        let back = crate::data::Dataset::from_folder(&dir, options).unwrap();
        assert_eq!(back.len(), 4);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn grid_png_has_the_expected_size_and_layout() {
        let dir = std::env::temp_dir().join(format!("difftune-grid-{}", std::process::id()));
        // 5 gray 3x2 images in [-1, 1]: image i is constant (i - 2) / 2.
        let values: Vec<f32> = (0..5).flat_map(|i| [(i as f32 - 2.0) / 2.0; 6]).collect();
        let images = Tensor::from_vec(values, &[5, 1, 3, 2]).unwrap();

        // Unlabelled: 3 columns, 2 rows.
        let path = dir.join("plain.png");
        assert_eq!(save_grid(&path, &images, None, 1).unwrap(), (10, 9));
        let (w, h, color, px) = read_png(&path);
        assert_eq!((w, h, color), (10, 9, png::ColorType::Grayscale));
        assert_eq!(px[0], GAP_VALUE);
        assert_eq!(px[10 + 1], 0, "image 0 is -1 -> 0");
        assert_eq!(
            px[(1 + 4) * 10 + 4],
            255,
            "image 4 (row 1, col 1) is 1 -> 255"
        );

        // By class: labels 1, 0, 1, 1, 0 -> row 0 holds images 1 and 4, row 1 images 0, 2, 3.
        let labels = Tensor::from_vec(vec![1i64, 0, 1, 1, 0], &[5]).unwrap();
        let path = dir.join("classes.png");
        assert_eq!(
            save_grid(&path, &images, Some(&labels), 2).unwrap(),
            (14, 12)
        );
        let (_, _, _, px) = read_png(&path);
        assert_eq!(px[2 * 14 + 2], from_value(-0.5));
        assert_eq!(px[2 * 14 + 2 + 4], 255);
        assert_eq!(px[(2 + 5) * 14 + 2 + 8], from_value(0.5));

        // u8 RGB images are written as they are.
        let rgb = Tensor::from_vec(vec![7u8; 2 * 3 * 2 * 2], &[2, 3, 2, 2]).unwrap();
        let path = dir.join("rgb.png");
        assert_eq!(save_grid(&path, &rgb, None, 0).unwrap(), (4, 2));
        let (_, _, color, px) = read_png(&path);
        assert_eq!((color, px), (png::ColorType::Rgb, vec![7; 24]));

        // Bad shapes are errors.
        assert!(save_grid(dir.join("x.png"), &rgb.reshape(&[2, 12]).unwrap(), None, 1).is_err());
        assert!(save_grid(
            dir.join("x.png"),
            &images,
            Some(&labels.narrow(0, 0, 2).unwrap()),
            1
        )
        .is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    fn from_value(v: f32) -> u8 {
        super::super::transform::from_signed_unit(v)
    }
}
