//! Resampling of NCHW images: nearest-neighbour upsampling and average pooling, each with its
//! backward beside it.

use std::ops::Range;

use super::conv::window_out_len;
use crate::cpu::{contiguous_slice, float_op, for_each_row};
use crate::{ensure_shape, Element, Float, Result, Tensor};

/// The four dims of an NCHW tensor, or a shape error naming `op`.
fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match *shape {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(crate::Error::shape(
            op,
            format!("expected an [N, C, H, W] tensor, got shape {shape:?}"),
        )),
    }
}

/// The input rows (or columns) that output `o` of a pooling window covers, padding excluded.
fn window(o: usize, stride: usize, padding: usize, kernel: usize, len: usize) -> Range<usize> {
    let start = (o * stride) as isize - padding as isize;
    let lo = start.clamp(0, len as isize);
    let hi = (start + kernel as isize).clamp(lo, len as isize);
    lo as usize..hi as usize
}

/// The checked sizes of one average pooling.
struct Pool {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

impl Pool {
    fn new(
        op: &'static str,
        shape: &[usize],
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Pool> {
        let [_, _, h, w] = nchw(op, shape)?;
        ensure_shape!(
            kernel.0 > 0 && kernel.1 > 0 && stride.0 > 0 && stride.1 > 0,
            op,
            "input {shape:?}: kernel {kernel:?} and stride {stride:?} must be positive"
        );
        let out = window_out_len(h, kernel.0, stride.0, padding.0, 1)
            .zip(window_out_len(w, kernel.1, stride.1, padding.1, 1));
        let Some((ho, wo)) = out else {
            return Err(crate::Error::shape(
                op,
                format!(
                    "input {shape:?}: kernel {kernel:?} is larger than the input padded by {padding:?}"
                ),
            ));
        };
        Ok(Pool {
            h,
            w,
            ho,
            wo,
            kernel,
            stride,
            padding,
        })
    }

    /// Calls `f(oy, ox, rows, cols)` for every output pixel and the input window it averages.
    fn for_each_window(&self, mut f: impl FnMut(usize, usize, Range<usize>, Range<usize>)) {
        for oy in 0..self.ho {
            let rows = window(oy, self.stride.0, self.padding.0, self.kernel.0, self.h);
            for ox in 0..self.wo {
                let cols = window(ox, self.stride.1, self.padding.1, self.kernel.1, self.w);
                f(oy, ox, rows.clone(), cols);
            }
        }
    }

    /// 1 / (kernel area): padding counts as zeros (PyTorch's `count_include_pad = true`).
    fn scale<T: Float>(&self) -> T {
        T::from_f64(1.0 / (self.kernel.0 * self.kernel.1) as f64)
    }
}

impl Tensor {
    /// Nearest-neighbour upsampling of an `[N, C, H, W]` tensor by integer factors:
    /// `[N, C, H·scale_h, W·scale_w]`, each pixel repeated over a `scale_h × scale_w` block.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        const OP: &str = "upsample_nearest2d";
        let [n, c, h, w] = nchw(OP, self.shape())?;
        ensure_shape!(
            scale_h > 0 && scale_w > 0,
            OP,
            "input {:?}: scales ({scale_h}, {scale_w}) must be positive",
            self.shape()
        );
        let (ho, wo) = (h * scale_h, w * scale_w);
        let out = float_op!(OP, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; n * c * ho * wo];
            for_each_row(&mut out, wo, |r, row| {
                let src = &x[(r / ho * h + r % ho / scale_h) * w..][..w];
                for (ox, o) in row.iter_mut().enumerate() {
                    *o = src[ox / scale_w];
                }
            });
            T::into_storage(out)
        });
        self.with_storage(out, &[n, c, ho, wo])
    }

    /// The backward of [`Tensor::upsample_nearest2d`]: `self` is the output gradient; each
    /// `scale_h × scale_w` block is summed.
    pub fn upsample_nearest2d_backward(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        const OP: &str = "upsample_nearest2d_backward";
        let [n, c, ho, wo] = nchw(OP, self.shape())?;
        ensure_shape!(
            scale_h > 0 && scale_w > 0 && ho % scale_h == 0 && wo % scale_w == 0,
            OP,
            "grad {:?} is not made of ({scale_h}, {scale_w}) blocks",
            self.shape()
        );
        let (h, w) = (ho / scale_h, wo / scale_w);
        self.reshape(&[n, c, h, scale_h, w, scale_w])?
            .sum(&[3, 5], false)
    }

    /// Average pooling of an `[N, C, H, W]` tensor over `kernel` windows moved by `stride`, the
    /// input zero-padded by `padding` (padding counts in the average, as PyTorch's default).
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d";
        let pool = Pool::new(OP, self.shape(), kernel, stride, padding)?;
        let [n, c, h, w] = nchw(OP, self.shape())?;
        let out = float_op!(OP, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; n * c * pool.ho * pool.wo];
            let scale: T = pool.scale();
            for_each_row(&mut out, pool.ho * pool.wo, |plane, o| {
                let x = &x[plane * h * w..][..h * w];
                pool.for_each_window(|oy, ox, rows, cols| {
                    let sum: T = rows
                        .flat_map(|y| x[y * w..][cols.clone()].iter().copied())
                        .sum();
                    o[oy * pool.wo + ox] = sum * scale;
                });
            });
            T::into_storage(out)
        });
        self.with_storage(out, &[n, c, pool.ho, pool.wo])
    }

    /// The backward of [`Tensor::avg_pool2d`]: `self` is the output gradient, `input_shape` the
    /// input's shape; each output's gradient is spread evenly over its window.
    pub fn avg_pool2d_backward(
        &self,
        input_shape: &[usize],
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d_backward";
        let pool = Pool::new(OP, input_shape, kernel, stride, padding)?;
        let [n, c, h, w] = nchw(OP, input_shape)?;
        ensure_shape!(
            self.shape() == [n, c, pool.ho, pool.wo],
            OP,
            "grad {:?} for input {input_shape:?}: expected [{n}, {c}, {}, {}]",
            self.shape(),
            pool.ho,
            pool.wo
        );
        let out = float_op!(OP, self.cpu_storage(), |v: T| {
            let g = contiguous_slice(v, self.layout());
            let mut dx = vec![T::ZERO; n * c * h * w];
            let scale: T = pool.scale();
            for_each_row(&mut dx, h * w, |plane, d| {
                let g = &g[plane * pool.ho * pool.wo..][..pool.ho * pool.wo];
                pool.for_each_window(|oy, ox, rows, cols| {
                    let share = g[oy * pool.wo + ox] * scale;
                    for y in rows {
                        d[y * w..][cols.clone()]
                            .iter_mut()
                            .for_each(|v| *v += share);
                    }
                });
            });
            T::into_storage(dx)
        });
        self.with_storage(out, input_shape)
    }
}
