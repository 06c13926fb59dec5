//! Image folders: `root/<class>/<image>.png|.jpg|.jpeg`, classes in sorted name order as labels
//! `0..K`. Each image is decoded (PNG by the `png` crate, JPEG by `zune-jpeg`), converted to
//! grayscale or RGB, resized so its shorter side is `size` (antialiased bilinear, as PIL's
//! `BILINEAR` resize) and centre-cropped to `size` x `size`.

use std::fs;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tensor::{limits, Error, Result, Tensor};
use zune_jpeg::errors::DecodeErrors;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::Dataset;
use crate::files::write_atomic;

/// The channels images are converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// One channel: ITU-R 601 luma (`0.299 R + 0.587 G + 0.114 B`), as PIL's `convert("L")`.
    Gray,
    /// Three channels (alpha is dropped, gray is repeated).
    Rgb,
}

impl ColorMode {
    /// 1 or 3.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// How an image folder is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the square images.
    pub size: usize,
    /// Grayscale or RGB.
    pub color: ColorMode,
    /// Whether every image must already be `size` square with `color`'s channel count: one
    /// that is not is refused, naming it, instead of resized or converted (a knowledge bank
    /// must have been made at the shape of the model it trains).
    pub exact: bool,
}

/// A decoded image: `height` rows of `width` pixels of `channels` (1 or 3) interleaved bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Row-major interleaved pixels (`[H, W, C]`).
    pub pixels: Vec<u8>,
}

fn format_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the file name has an extension this module decodes.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Checks an image's dimensions, as its header declares them, before anything is allocated for
/// its pixels: at least one pixel, and at most [`limits::IMAGE_PIXELS`].
fn check_pixels(path: &Path, width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(format_err(path, format!("the image is {width}x{height}")));
    }
    limits::IMAGE_PIXELS
        .check(
            limits::product(&[width, height]),
            format!("the image is {width}x{height}"),
        )
        .map_err(|e| format_err(path, e.to_string()))
}

/// Refuses `image` (read from `file`) unless it is `[C, H, W]` = `input` already.
fn check_exact(file: &Path, image: &Image, input: [usize; 3]) -> Result<()> {
    let [c, h, w] = input;
    if (image.channels, image.height, image.width) == (c, h, w) {
        return Ok(());
    }
    Err(format_err(
        file,
        format!(
            "image of {}x{} with {} channel(s), expected {w}x{h} with {c} (used as it is, not \
             resized or converted)",
            image.width, image.height, image.channels
        ),
    ))
}

/// One PNG or JPEG file as `u8 [1, C, H, W]`; refused, naming the file, unless it is already
/// `input` (`[C, H, W]`) in size and channels.
pub fn read_exact(file: &Path, input: [usize; 3]) -> Result<Tensor> {
    let image = decode_native(file)?;
    check_exact(file, &image, input)?;
    let c = input[0];
    let planar: Vec<u8> = (0..c)
        .flat_map(|ch| image.pixels.iter().skip(ch).step_by(c).copied())
        .collect();
    Tensor::from_vec(planar, &[1, input[0], input[1], input[2]])
}

/// Decodes a PNG or JPEG file (told apart by its first bytes) to gray or RGB. A path that is not
/// a regular file, and an image of more than [`limits::IMAGE_PIXELS`] pixels, are refused before
/// anything is decoded.
pub fn decode(path: &Path, color: ColorMode) -> Result<Image> {
    Ok(convert(decode_native(path)?, color))
}

/// [`decode`] without the conversion: the file's own channel count (1 or 3, alpha dropped).
fn decode_native(path: &Path) -> Result<Image> {
    let (mut file, len) = limits::open_regular_file(path)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    let image = if bytes.starts_with(b"\x89PNG") {
        contained(path, "PNG", || decode_png(path, &bytes))?
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        contained(path, "JPEG", || decode_jpeg(path, &bytes))?
    } else {
        return Err(format_err(
            path,
            "not a PNG or JPEG file (unknown signature); expected .png, .jpg or .jpeg images",
        ));
    };
    Ok(image)
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<Image> {
    let err = |e: png::DecodingError| format_err(path, format!("unreadable PNG: {e}"));
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let header = decoder.read_header_info().map_err(err)?;
    check_pixels(path, header.width as usize, header.height as usize)?;
    let mut reader = decoder.read_info().map_err(err)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format_err(path, "PNG too large to decode"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(err)?;
    buf.truncate(info.buffer_size());
    let (width, height) = (info.width as usize, info.height as usize);
    // Drop alpha (as PIL's convert("RGB") does).
    let (channels, pixels) = match info.color_type {
        png::ColorType::Grayscale => (1, buf),
        png::ColorType::GrayscaleAlpha => (1, buf.chunks_exact(2).map(|p| p[0]).collect()),
        png::ColorType::Rgb => (3, buf),
        png::ColorType::Rgba => (
            3,
            buf.chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
        png::ColorType::Indexed => {
            return Err(format_err(path, "indexed PNG was not expanded to colour"))
        }
    };
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<Image> {
    // No side may exceed the pixel limit (the decoder's own default is 16384).
    let max_side = usize::try_from(limits::IMAGE_PIXELS.get()?).unwrap_or(usize::MAX);
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(max_side)
        .set_max_height(max_side);
    let unreadable = |e: DecodeErrors| format_err(path, format!("unreadable JPEG: {e:?}"));
    let mut decoder = JpegDecoder::new_with_options(bytes, options);
    decoder.decode_headers().map_err(unreadable)?;
    let (width, height) = decoder
        .info()
        .map_or((0, 0), |i| (i.width as usize, i.height as usize));
    check_pixels(path, width, height)?;
    let pixels = decoder.decode().map_err(unreadable)?;
    if pixels.len() != width * height * 3 {
        return Err(format_err(
            path,
            format!(
                "unreadable JPEG: {} bytes decoded for {width}x{height} RGB",
                pixels.len()
            ),
        ));
    }
    Ok(Image {
        width,
        height,
        channels: 3,
        pixels,
    })
}

/// Runs a third-party decoder over a file's bytes: a panic in it (a decoder bug that a bad file
/// reaches; the fuzz tests found some in both) becomes this file's error instead of taking the
/// process down.
fn contained<T>(path: &Path, format: &str, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(format_err(
            path,
            format!("unreadable {format}: the decoder failed"),
        ))
    })
}

/// Converts between gray and RGB.
fn convert(image: Image, color: ColorMode) -> Image {
    let pixels = match (image.channels, color) {
        (1, ColorMode::Gray) | (3, ColorMode::Rgb) => return image,
        (1, ColorMode::Rgb) => image.pixels.iter().flat_map(|&v| [v; 3]).collect(),
        _ => image
            .pixels
            .chunks_exact(3)
            .map(|p| {
                let l = 299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32;
                ((l + 500) / 1000) as u8
            })
            .collect(),
    };
    Image {
        channels: color.channels(),
        pixels,
        ..image
    }
}

/// Antialiased bilinear weights for resampling `from` samples to `to`, for the output samples
/// `outputs` (a sub-range of `0..to`): for each, the first input index and the normalised weights
/// (a triangle filter widened by the scale when shrinking, as PIL does).
fn weights(from: usize, to: usize, outputs: Range<usize>) -> Vec<(usize, Vec<f32>)> {
    let scale = from as f64 / to as f64;
    let support = scale.max(1.0);
    outputs
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(from);
            let mut w: Vec<f32> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - centre) / support).abs()).max(0.0) as f32)
                .collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // Only when the filter misses every sample (never for from, to >= 1).
                w = vec![1.0];
            }
            (lo, w)
        })
        .collect()
}

impl Image {
    /// The image of planar pixels `[C, H, W]` (`shape`), as a data set holds them.
    pub fn from_planar(pixels: &[u8], shape: [usize; 3]) -> Image {
        let [c, h, w] = shape;
        debug_assert_eq!(pixels.len(), c * h * w);
        let plane = h * w;
        Image {
            width: w,
            height: h,
            channels: c,
            pixels: (0..plane * c)
                .map(|i| pixels[(i % c) * plane + i / c])
                .collect(),
        }
    }

    /// Appends the pixels to `out` planar (`[C, H, W]`), as a data set holds them.
    pub fn extend_planar(&self, out: &mut Vec<u8>) {
        for ch in 0..self.channels {
            out.extend(self.pixels.iter().skip(ch).step_by(self.channels));
        }
    }
}

/// Resizes to `width` x `height` (antialiased bilinear).
pub fn resize(image: &Image, width: usize, height: usize) -> Image {
    resize_window(image, (width, height), (0, 0), (width, height))
}

/// The `out_w` x `out_h` window at (`left`, `top`) of the image resized to `width` x `height`,
/// computed without the rest of the resized image: only the window's columns, and the input rows
/// they read, go through the two passes, so a thin image resized "shorter side = size" costs the
/// crop, not the gigabytes of the whole resize. The pixels are those of the whole resize.
fn resize_window(
    image: &Image,
    (width, height): (usize, usize),
    (left, top): (usize, usize),
    (out_w, out_h): (usize, usize),
) -> Image {
    let c = image.channels;
    // Resampling n samples to n is the identity (weights 0, 1, 0), so no size needs a special case.
    let wx = weights(image.width, width, left..left + out_w);
    let wy = weights(image.height, height, top..top + out_h);
    // The input rows the window reads.
    let rows = wy.iter().map(|(lo, _)| *lo).min().unwrap_or(0)
        ..wy.iter().map(|(lo, w)| lo + w.len()).max().unwrap_or(0);
    // Horizontal pass: [rows, out_w, C].
    let mut tmp = vec![0f32; rows.len() * out_w * c];
    for (r, y) in rows.clone().enumerate() {
        let row = &image.pixels[y * image.width * c..][..image.width * c];
        for (x, (lo, w)) in wx.iter().enumerate() {
            for ch in 0..c {
                tmp[(r * out_w + x) * c + ch] = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * row[(lo + k) * c + ch] as f32)
                    .sum();
            }
        }
    }
    // Vertical pass: [out_h, out_w, C].
    let mut pixels = vec![0u8; out_h * out_w * c];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..out_w * c {
            let v: f32 = w
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * tmp[(lo + k - rows.start) * out_w * c + x])
                .sum();
            pixels[y * out_w * c + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Image {
        width: out_w,
        height: out_h,
        channels: c,
        pixels,
    }
}

/// Resizes so the shorter side is `size`, then crops the centre `size` x `size` square (only that
/// square is computed).
pub fn resize_and_crop(image: &Image, size: usize) -> Image {
    let (w, h) = (image.width, image.height);
    // The products in f64: exact for every real image, and no overflow for any.
    let (rw, rh) = if w <= h {
        (
            size,
            (h as f64 * size as f64 / w as f64).round().max(size as f64) as usize,
        )
    } else {
        (
            (w as f64 * size as f64 / h as f64).round().max(size as f64) as usize,
            size,
        )
    };
    let (left, top) = ((rw - size) / 2, (rh - size) / 2);
    resize_window(image, (rw, rh), (left, top), (size, size))
}

/// Encodes interleaved 8-bit pixels (1 channel gray, 3 RGB) as PNG and writes them atomically.
pub fn save_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<()> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        c => {
            return Err(format_err(
                path,
                format!("PNG encoding: {c} channels, expected 1 or 3"),
            ))
        }
    };
    if pixels.len() != width * height * channels || width == 0 || height == 0 {
        return Err(format_err(
            path,
            format!(
                "PNG encoding: {} bytes for a {width}x{height} image of {channels} channels",
                pixels.len()
            ),
        ));
    }
    let err = |e: png::EncodingError| format_err(path, format!("PNG encoding: {e}"));
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(pixels).map_err(err)?;
    }
    write_atomic(path, &bytes)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_err(dir))?;
    entries.retain(|p| {
        !p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    });
    entries.sort();
    Ok(entries)
}

impl Dataset {
    /// Reads `root/<class>/<image>` (PNG or JPEG; other files are skipped): classes are the
    /// sub-folders in sorted name order, images are made `options.size` square. All the images
    /// together may hold at most [`limits::DECOMPRESSED_BYTES`] bytes.
    pub fn from_folder(root: impl AsRef<Path>, options: FolderOptions) -> Result<Dataset> {
        let root = root.as_ref();
        if options.size == 0 {
            return Err(format_err(
                root,
                "image folder: size 0, expected at least 1",
            ));
        }
        limits::IMAGE_PIXELS
            .check(
                limits::product(&[options.size, options.size]),
                format!("image folder: images of {0}x{0}", options.size),
            )
            .map_err(|e| format_err(root, e.to_string()))?;
        let image_len = options.color.channels() * options.size * options.size;
        let class_dirs: Vec<PathBuf> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(format_err(
                root,
                "image folder has no class sub-folders (expected root/<class>/<image>.png)",
            ));
        }
        let c = options.color.channels();
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        let mut classes = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            let files: Vec<PathBuf> = sorted_entries(dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if files.is_empty() {
                return Err(format_err(
                    dir,
                    "class folder holds no .png, .jpg or .jpeg image",
                ));
            }
            for file in &files {
                limits::DECOMPRESSED_BYTES
                    .check(
                        (pixels.len() + image_len) as u128,
                        "image folder: the images read so far",
                    )
                    .map_err(|e| format_err(file, e.to_string()))?;
                let image = decode_native(file)?;
                if options.exact {
                    check_exact(file, &image, [c, options.size, options.size])?;
                }
                resize_and_crop(&convert(image, options.color), options.size)
                    .extend_planar(&mut pixels);
                labels.push(label as i64);
            }
            classes.push(
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let n = labels.len();
        Dataset::from_raw(pixels, [n, c, options.size, options.size], labels, classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("difftune-folder-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn two_class_folder_loads_with_sorted_labels() {
        let root = temp_dir("two");
        // "cats": 4x4 gray images of constant value; "ants" (sorted first): 2x4 RGB red ones.
        fs::create_dir_all(root.join("cats")).unwrap();
        fs::create_dir_all(root.join("ants")).unwrap();
        for (k, v) in [10u8, 200].iter().enumerate() {
            save_png(&root.join(format!("cats/{k}.png")), 4, 4, 1, &[*v; 16]).unwrap();
        }
        let red: Vec<u8> = [255u8, 0, 0].repeat(8);
        save_png(&root.join("ants/a.PNG"), 4, 2, 3, &red).unwrap();
        fs::write(root.join("ants/notes.txt"), "skipped").unwrap();

        let gray = FolderOptions {
            size: 2,
            color: ColorMode::Gray,
            exact: false,
        };
        let d = Dataset::from_folder(&root, gray).unwrap();
        assert_eq!(d.classes(), &["ants".to_string(), "cats".to_string()]);
        assert_eq!(d.labels(), &[0, 1, 1]);
        assert_eq!(d.shape(), [3, 1, 2, 2]);
        // Red's luma is 0.299 * 255 = 76; constant images stay constant through resizing.
        assert_eq!(d.image(0), &[76; 4]);
        assert_eq!(d.image(1), &[10; 4]);
        assert_eq!(d.image(2), &[200; 4]);

        let rgb = FolderOptions {
            size: 3,
            color: ColorMode::Rgb,
            exact: false,
        };
        let d = Dataset::from_folder(&root, rgb).unwrap();
        assert_eq!(d.shape(), [3, 3, 3, 3]);
        // Planar [C, H, W]: the red plane, then green and blue.
        assert_eq!(d.image(0), [[255; 9], [0; 9], [0; 9]].concat());
        assert_eq!(d.image(2), &[200; 27]);

        // Read exactly, the 4x2 RGB ant is refused, at either colour; the 4x4 gray cats pass.
        for color in [ColorMode::Gray, ColorMode::Rgb] {
            let exact = FolderOptions {
                size: 4,
                color,
                exact: true,
            };
            let e = Dataset::from_folder(&root, exact).unwrap_err().to_string();
            assert!(e.contains("a.PNG") && e.contains("4x2 with 3"), "{e}");
        }
        fs::remove_file(root.join("ants/a.PNG")).unwrap();
        save_png(&root.join("ants/a.png"), 4, 4, 1, &[7; 16]).unwrap();
        let exact = FolderOptions {
            size: 4,
            color: ColorMode::Gray,
            exact: true,
        };
        assert_eq!(
            Dataset::from_folder(&root, exact).unwrap().shape(),
            [3, 1, 4, 4]
        );

        // An unreadable image names the file.
        fs::write(root.join("cats/broken.png"), b"\x89PNG not really").unwrap();
        let e = Dataset::from_folder(&root, gray).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("unreadable PNG"),
            "{e}"
        );
        fs::write(root.join("cats/broken.png"), b"text").unwrap();
        let e = Dataset::from_folder(&root, gray).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("not a PNG or JPEG"),
            "{e}"
        );
        fs::write(root.join("cats/broken.png"), [0xff, 0xd8, 0xff, 0x00]).unwrap();
        let e = Dataset::from_folder(&root, gray).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("unreadable JPEG"),
            "{e}"
        );
        fs::remove_file(root.join("cats/broken.png")).unwrap();

        // An empty class folder, and a root with no class folders, are errors.
        fs::create_dir_all(root.join("dogs")).unwrap();
        let e = Dataset::from_folder(&root, gray).unwrap_err().to_string();
        assert!(e.contains("dogs") && e.contains("no .png"), "{e}");
        let e = Dataset::from_folder(root.join("dogs"), gray)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no class sub-folders"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn jpeg_images_decode_and_load() {
        // An 8x8 baseline JPEG of the colour (200, 40, 40), written by Pillow at quality 95.
        let root = temp_dir("jpeg");
        fs::create_dir_all(root.join("red")).unwrap();
        let path = root.join("red/r.jpg");
        fs::write(&path, include_bytes!("testdata/red-8x8.jpg")).unwrap();
        let image = decode(&path, ColorMode::Rgb).unwrap();
        assert_eq!((image.width, image.height, image.channels), (8, 8, 3));
        for p in image.pixels.chunks(3) {
            let err =
                (p[0] as i32 - 200).abs() + (p[1] as i32 - 40).abs() + (p[2] as i32 - 40).abs();
            assert!(err <= 9, "{p:?}");
        }
        let options = FolderOptions {
            size: 4,
            color: ColorMode::Gray,
            exact: false,
        };
        let d = Dataset::from_folder(&root, options).unwrap();
        assert_eq!(
            (d.shape(), d.classes()),
            ([1, 1, 4, 4], &["red".to_string()][..])
        );
        // Luma of (200, 40, 40) is 88.
        assert!(
            d.image(0).iter().all(|&v| v.abs_diff(88) <= 3),
            "{:?}",
            d.image(0)
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn resize_averages_when_shrinking_and_crops_the_centre() {
        // A 4x2 gray image: left half 0, right half 200 -> 2x1 by area gives 0 and 200 exactly
        // only without overlap; the antialiased filter mixes neighbours a little.
        let image = Image {
            width: 4,
            height: 2,
            channels: 1,
            pixels: vec![0, 0, 200, 200, 0, 0, 200, 200],
        };
        let small = resize(&image, 2, 1);
        assert_eq!((small.width, small.height), (2, 1));
        assert!(
            small.pixels[0] < 60 && small.pixels[1] > 140,
            "{:?}",
            small.pixels
        );
        assert_eq!(
            small.pixels[0] as u32 + small.pixels[1] as u32,
            200,
            "symmetric"
        );
        // Centre crop of a wide image keeps the middle columns.
        let wide = Image {
            width: 6,
            height: 2,
            channels: 1,
            pixels: vec![1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6],
        };
        let crop = resize_and_crop(&wide, 2);
        assert_eq!(crop.pixels, vec![3, 4, 3, 4]);
    }

    /// The resize before it computed only the crop: the whole image resized, then cropped.
    fn resize_then_crop(image: &Image, size: usize) -> Image {
        let (w, h) = (image.width, image.height);
        let (rw, rh) = if w <= h {
            (
                size,
                ((h * size) as f64 / w as f64).round().max(size as f64) as usize,
            )
        } else {
            (
                ((w * size) as f64 / h as f64).round().max(size as f64) as usize,
                size,
            )
        };
        let c = image.channels;
        let wx = weights(w, rw, 0..rw);
        let mut tmp = vec![0f32; h * rw * c];
        for y in 0..h {
            for (x, (lo, wk)) in wx.iter().enumerate() {
                for ch in 0..c {
                    tmp[(y * rw + x) * c + ch] = wk
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v * image.pixels[(y * w + lo + k) * c + ch] as f32)
                        .sum();
                }
            }
        }
        let mut resized = vec![0u8; rh * rw * c];
        for (y, (lo, wk)) in weights(h, rh, 0..rh).iter().enumerate() {
            for x in 0..rw * c {
                let v: f32 = wk
                    .iter()
                    .enumerate()
                    .map(|(k, v)| v * tmp[(lo + k) * rw * c + x])
                    .sum();
                resized[y * rw * c + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        let (left, top) = ((rw - size) / 2, (rh - size) / 2);
        let mut pixels = Vec::new();
        for y in top..top + size {
            pixels.extend_from_slice(&resized[(y * rw + left) * c..][..size * c]);
        }
        Image {
            width: size,
            height: size,
            channels: c,
            pixels,
        }
    }

    #[test]
    fn the_crop_is_the_crop_of_the_whole_resize() {
        // Random images, shrunk, enlarged, square, wide and tall, gray and RGB: the pixels are
        // those of resizing the whole image and cropping it, bit for bit.
        let mut state = 1u64;
        let mut next = move || {
            state = crate::data::loader::mix(state);
            state
        };
        for (w, h, c, size) in [
            (7, 5, 1, 3),
            (5, 7, 3, 3),
            (28, 28, 1, 28),
            (28, 28, 3, 16),
            (4, 9, 1, 12),
            (31, 17, 3, 8),
            (1, 40, 1, 5),
            (40, 1, 3, 6),
            (13, 13, 3, 32),
            (64, 48, 3, 29),
        ] {
            let image = Image {
                width: w,
                height: h,
                channels: c,
                pixels: (0..w * h * c).map(|_| next() as u8).collect(),
            };
            let expected = resize_then_crop(&image, size);
            assert_eq!(
                resize_and_crop(&image, size),
                expected,
                "{w}x{h}x{c} to {size}"
            );
        }
    }

    /// A PNG chunk: length, type, data and CRC.
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        [
            &(data.len() as u32).to_be_bytes()[..],
            kind,
            data,
            &crc.sum().to_be_bytes(),
        ]
        .concat()
    }

    /// A PNG of `width` x `height` pixels of 8 bits of `color` (0 gray, 3 indexed) whose image
    /// data holds `rows` (each starting with its filter byte), after `extra` chunks.
    fn png(width: u32, height: u32, color: u8, extra: &[u8], rows: &[u8]) -> Vec<u8> {
        let ihdr = [
            &width.to_be_bytes()[..],
            &height.to_be_bytes(),
            &[8, color, 0, 0, 0],
        ]
        .concat();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, rows).unwrap();
        [
            &b"\x89PNG\r\n\x1a\n"[..],
            &chunk(b"IHDR", &ihdr),
            extra,
            &chunk(b"IDAT", &z.finish().unwrap()),
            &chunk(b"IEND", &[]),
        ]
        .concat()
    }

    /// A PNG of `width` x `height` 8-bit gray whose image data is empty: only its header says how
    /// large it is.
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        png(width, height, 0, &[], &[])
    }

    #[test]
    fn a_decoder_panic_is_the_file_s_error() {
        // An indexed PNG whose palette is 4 bytes long (not whole RGB entries): the png crate
        // panics expanding it (found by tests/tests/fuzz.rs).
        let root = temp_dir("palette");
        let path = root.join("palette.png");
        fs::write(&path, png(1, 1, 3, &chunk(b"PLTE", &[1, 2, 3, 4]), &[0, 0])).unwrap();
        let e = decode(&path, ColorMode::Rgb).unwrap_err().to_string();
        assert!(
            e.contains("palette.png") && e.contains("unreadable PNG"),
            "{e}"
        );
        // The same image with a whole palette decodes.
        fs::write(&path, png(1, 1, 3, &chunk(b"PLTE", &[1, 2, 3]), &[0, 0])).unwrap();
        assert_eq!(decode(&path, ColorMode::Rgb).unwrap().pixels, [1, 2, 3]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn images_larger_than_the_pixel_limit_are_refused_before_decoding() {
        // 65 bytes or so that claim 200000 x 200000 pixels: allocating their 40 GB aborted the process.
        let root = temp_dir("huge");
        let path = root.join("huge.png");
        let bytes = png_header_only(200_000, 200_000);
        assert!(bytes.len() < 70);
        fs::write(&path, &bytes).unwrap();
        let e = decode(&path, ColorMode::Gray).unwrap_err().to_string();
        assert!(
            e.contains("huge.png")
                && e.contains("200000x200000")
                && e.contains("DIFFTUNE_MAX_IMAGE_PIXELS"),
            "{e}"
        );
        // A JPEG frame of 65535 x 65535 (the largest a JPEG can say) is over the limit too.
        let mut jpeg = include_bytes!("testdata/red-8x8.jpg").to_vec();
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let path = root.join("huge.jpg");
        fs::write(&path, &jpeg).unwrap();
        let e = decode(&path, ColorMode::Gray).unwrap_err().to_string();
        assert!(
            e.contains("huge.jpg")
                && e.contains("65535x65535")
                && e.contains("DIFFTUNE_MAX_IMAGE_PIXELS"),
            "{e}"
        );
        // An image folder of images over the limit is refused before reading any.
        let e = Dataset::from_folder(
            &root,
            FolderOptions {
                size: 1 << 20,
                color: ColorMode::Rgb,
                exact: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("1048576x1048576") && e.contains("IMAGE_PIXELS"),
            "{e}"
        );
        fs::remove_dir_all(root).unwrap();
    }
}
