//! Per-image transforms of the loader: random resized crops, zero padding, horizontal flip and
//! scaling of `u8` pixels to `[-1, 1]` (and back, for pictures).

use tensor::{DType, Device, Error, Result, Tensor};

use super::folder::{resize, Image};

/// `0..=255` to `[-1, 1]`: `v / 127.5 - 1`.
pub fn to_signed_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// `[-1, 1]` to `0..=255`, clamped and rounded.
pub fn from_signed_unit(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Writes one image `src` (`u8 [C, H, W]`, `h` by `w`) into `out` (`f32 [C, H + 2 pad, W + 2 pad]`)
/// scaled to `[-1, 1]`, zero-padded (0 becomes -1) by `pad` pixels on every side, and mirrored
/// left to right when `flip` is set.
pub fn prepare_into(src: &[u8], hw: (usize, usize), pad: usize, flip: bool, out: &mut [f32]) {
    let (h, w) = hw;
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let channels = src.len() / (h * w).max(1);
    debug_assert_eq!(out.len(), channels * ph * pw);
    out.fill(-1.0);
    for c in 0..channels {
        for y in 0..h {
            let row = &src[(c * h + y) * w..][..w];
            let dst = &mut out[(c * ph + y + pad) * pw + pad..][..w];
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x };
                dst[x] = to_signed_unit(row[sx]);
            }
        }
    }
}

/// A square window of an image: `side` pixels from row `top` and column `left`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// The first row.
    pub top: usize,
    /// The first column.
    pub left: usize,
    /// Rows and columns.
    pub side: usize,
}

/// The `crop` window of one image `src` (`u8 [C, H, W]`, `shape`), resized back to `H x W`
/// (antialiased bilinear, [`resize`]): a random resized crop. The window must lie inside the
/// image.
pub fn crop_resized(src: &[u8], shape: [usize; 3], crop: Crop) -> Vec<u8> {
    let [c, h, w] = shape;
    let Crop { top, left, side } = crop;
    debug_assert!(top + side <= h && left + side <= w && src.len() == c * h * w);
    let mut window = Vec::with_capacity(c * side * side);
    for plane in src.chunks_exact(h * w) {
        for row in plane.chunks_exact(w).skip(top).take(side) {
            window.extend_from_slice(&row[left..left + side]);
        }
    }
    let mut out = Vec::with_capacity(src.len());
    resize(&Image::from_planar(&window, [c, side, side]), w, h).extend_planar(&mut out);
    out
}

fn nchw(op: &'static str, images: &Tensor) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(images.shape()).map_err(|_| {
        Error::shape(
            op,
            format!("images {:?}: expected [N, C, H, W]", images.shape()),
        )
    })
}

/// Pads images `[N, C, H, W]` (any dtype) with `pad` zero pixels on every side of H and W.
pub fn pad(images: &Tensor, pad: usize) -> Result<Tensor> {
    nchw("pad", images)?;
    images.pad(&[(0, 0), (0, 0), (pad, pad), (pad, pad)], 0.0)
}

/// Mirrors images `[N, C, H, W]` (any dtype) left to right.
pub fn hflip(images: &Tensor) -> Result<Tensor> {
    let [_, _, _, w] = nchw("hflip", images)?;
    let index: Vec<i64> = (0..w as i64).rev().collect();
    let index = Tensor::from_vec(index, &[w])?.to_device(images.device())?;
    images.index_select(3, &index)
}

/// `u8` images to `f32` in `[-1, 1]` (on the CPU).
pub fn scale(images: &Tensor) -> Result<Tensor> {
    if images.dtype() != DType::U8 {
        return Err(Error::dtype("scale", images.dtype(), "u8"));
    }
    let values = images.to_device(Device::Cpu)?.to_vec::<u8>()?;
    Tensor::from_vec(
        values.into_iter().map(to_signed_unit).collect::<Vec<f32>>(),
        images.shape(),
    )
}

/// Images in `[-1, 1]` (any float dtype) to `u8`, clamped and rounded; `u8` images are returned
/// as they are. The result is on the CPU.
pub fn unscale(images: &Tensor) -> Result<Tensor> {
    let images = images.to_device(Device::Cpu)?;
    if images.dtype() == DType::U8 {
        return Ok(images);
    }
    if images.dtype() == DType::I64 {
        return Err(Error::dtype("unscale", DType::I64, "u8 or a float dtype"));
    }
    let values = images.to_dtype(DType::F32)?.to_vec::<f32>()?;
    Tensor::from_vec(
        values
            .into_iter()
            .map(from_signed_unit)
            .collect::<Vec<u8>>(),
        images.shape(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-channel 2x3 image:
    /// ```text
    ///   0  51 255
    /// 102 153 204
    /// ```
    const IMAGE: [u8; 6] = [0, 51, 255, 102, 153, 204];

    #[test]
    fn scale_maps_bytes_to_signed_unit() {
        let x = Tensor::from_slice(&IMAGE, &[1, 1, 2, 3]).unwrap();
        let y = scale(&x).unwrap().to_vec::<f32>().unwrap();
        let want = [-1.0, -0.6, 1.0, -0.2, 0.2, 0.6];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        assert_eq!(
            unscale(&scale(&x).unwrap())
                .unwrap()
                .to_vec::<u8>()
                .unwrap(),
            IMAGE
        );
    }

    #[test]
    fn flip_mirrors_each_row() {
        let x = Tensor::from_slice(&IMAGE, &[1, 1, 2, 3]).unwrap();
        let y = hflip(&x).unwrap();
        assert_eq!(y.to_vec::<u8>().unwrap(), vec![255, 51, 0, 204, 153, 102]);
    }

    #[test]
    fn pad_surrounds_with_zeros() {
        let x = Tensor::from_slice(&IMAGE, &[1, 1, 2, 3]).unwrap();
        let y = pad(&x, 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 5]);
        #[rustfmt::skip]
        let want = vec![
            0, 0, 0, 0, 0,
            0, 0, 51, 255, 0,
            0, 102, 153, 204, 0,
            0, 0, 0, 0, 0,
        ];
        assert_eq!(y.to_vec::<u8>().unwrap(), want);
    }

    #[test]
    fn a_crop_is_its_window_resized_back() {
        // 4x4, two channels; the window rows 1..3, columns 2..4 of channel 0 is
        //   0 255
        //   0 255
        // which upsamples (bilinear, pixel centres) to columns 0, 64, 191, 255 on every row.
        let mut src = vec![7u8; 2 * 16];
        for y in 1..3 {
            src[y * 4 + 2] = 0;
            src[y * 4 + 3] = 255;
            src[16 + y * 4 + 2] = 90;
            src[16 + y * 4 + 3] = 90;
        }
        let crop = Crop {
            top: 1,
            left: 2,
            side: 2,
        };
        let out = crop_resized(&src, [2, 4, 4], crop);
        assert_eq!(&out[..16], [0, 64, 191, 255].repeat(4));
        // A constant window stays constant.
        assert_eq!(&out[16..], [90; 16]);
        // The whole image as the window is the image.
        let whole = Crop {
            top: 0,
            left: 0,
            side: 4,
        };
        assert_eq!(crop_resized(&src, [2, 4, 4], whole), src);
    }

    #[test]
    fn prepare_into_agrees_with_the_tensor_transforms() {
        // Two channels, so the channel stride is exercised too.
        let src: Vec<u8> = IMAGE.iter().chain(IMAGE.iter().rev()).copied().collect();
        let x = Tensor::from_slice(&src, &[1, 2, 2, 3]).unwrap();
        for flip in [false, true] {
            let mut out = vec![0f32; 2 * 6 * 7];
            prepare_into(&src, (2, 3), 2, flip, &mut out);
            let t = if flip { hflip(&x).unwrap() } else { x.clone() };
            let want = scale(&pad(&t, 2).unwrap()).unwrap();
            assert_eq!(out, want.to_vec::<f32>().unwrap(), "flip {flip}");
        }
    }
}
