//! Pictures without a plotting library: an RGB canvas with scatter and line panels, saved as PNG.

use std::path::Path;

use tensor::{Error, Result};

use crate::files::write_atomic;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// An RGB image, white to start with.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// A rectangle of the canvas showing the data range `x` by `y`.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    /// Left edge, in pixels.
    pub left: usize,
    /// Top edge, in pixels.
    pub top: usize,
    /// Width and height, in pixels.
    pub size: (usize, usize),
    /// Data range shown horizontally.
    pub x: (f64, f64),
    /// Data range shown vertically (the first value at the bottom).
    pub y: (f64, f64),
}

impl Panel {
    fn pixel_of(&self, x: f64, y: f64) -> Option<(usize, usize)> {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        ((0.0..=1.0).contains(&fx) && (0.0..=1.0).contains(&fy)).then(|| {
            let px = self.left + (fx * (self.size.0 - 1) as f64).round() as usize;
            let py = self.top + ((1.0 - fy) * (self.size.1 - 1) as f64).round() as usize;
            (px, py)
        })
    }
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A frame around the panel.
    pub fn frame(&mut self, p: &Panel, c: Rgb) {
        let (r, b) = (p.left + p.size.0 - 1, p.top + p.size.1 - 1);
        for x in p.left..=r {
            self.set(x, p.top, c);
            self.set(x, b, c);
        }
        for y in p.top..=b {
            self.set(p.left, y, c);
            self.set(r, y, c);
        }
    }

    /// Points as small squares of side `2 * radius + 1`; points outside the panel are skipped.
    pub fn scatter(&mut self, p: &Panel, points: &[(f64, f64)], radius: usize, c: Rgb) {
        for &(x, y) in points {
            if let Some((px, py)) = p.pixel_of(x, y) {
                for dy in 0..=2 * radius {
                    for dx in 0..=2 * radius {
                        self.set(
                            (px + dx).saturating_sub(radius),
                            (py + dy).saturating_sub(radius),
                            c,
                        );
                    }
                }
            }
        }
    }

    /// A polyline through `points`, sampled densely enough to look continuous.
    pub fn line(&mut self, p: &Panel, points: &[(f64, f64)], c: Rgb) {
        for w in points.windows(2) {
            let steps = 2 * p.size.0.max(p.size.1) / points.len().max(1) + 2;
            for s in 0..=steps {
                let f = s as f64 / steps as f64;
                let (x, y) = (
                    w[0].0 + f * (w[1].0 - w[0].0),
                    w[0].1 + f * (w[1].1 - w[0].1),
                );
                if let Some((px, py)) = p.pixel_of(x, y) {
                    self.set(px, py, c);
                }
            }
        }
    }

    /// Encodes the canvas as PNG and writes it atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        let png_err = |e: png::EncodingError| Error::Format {
            path: path.to_path_buf(),
            msg: format!("PNG encoding: {e}"),
        };
        {
            let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(png_err)?;
            writer.write_image_data(&self.pixels).map_err(png_err)?;
        }
        write_atomic(path, &bytes)
    }
}
