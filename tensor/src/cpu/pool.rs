//! Resampling of NCHW images: nearest-neighbour upsampling and average pooling, each with its
//! backward beside it; and, forward only (for inference networks such as Inception-v3), max
//! pooling, average pooling that leaves the padding out of the count, and bilinear resizing.

use std::ops::Range;

use crate::cpu::{contiguous_slice, float_op, for_each_row};
use crate::cuda::pool as cuda;
use crate::ops::conv::window_out_len;
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

    /// The geometry as the CUDA kernels take it.
    fn geometry(&self) -> kernels::pool::Pool2d {
        cuda::pool2d(
            (self.h, self.w),
            (self.ho, self.wo),
            self.kernel,
            self.stride,
            self.padding,
        )
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

    /// PyTorch's rule for the forward-only pools here: padding at most half the kernel, so that
    /// every window holds at least one input element.
    fn check_half_kernel_padding(&self, op: &'static str, shape: &[usize]) -> Result<()> {
        ensure_shape!(
            self.padding.0 <= self.kernel.0 / 2 && self.padding.1 <= self.kernel.1 / 2,
            op,
            "input {shape:?}: padding {:?} must be at most half the kernel {:?}",
            self.padding,
            self.kernel
        );
        Ok(())
    }
}

/// Source taps of bilinear resizing along one axis, as PyTorch's `align_corners = False` without
/// antialiasing: output `o` reads inputs `i0` and `i1` with weights `w0` and `w1`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Taps {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// The taps of every output along an axis resized from `len` to `out_len` (both positive):
/// source coordinate `(o + 0.5) · len / out_len - 0.5`, clamped at 0.
fn bilinear_taps(len: usize, out_len: usize) -> Vec<Taps> {
    let scale = len as f64 / out_len as f64;
    (0..out_len)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(len - 1);
            let i1 = (i0 + 1).min(len - 1);
            let w1 = src - i0 as f64;
            Taps {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
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
        if self.is_cuda() {
            return cuda::upsample_nearest2d(self, scale_h, scale_w);
        }
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
        if self.is_cuda() {
            return cuda::upsample_nearest2d_backward(self, scale_h, scale_w);
        }
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
        self.avg_pool("avg_pool2d", kernel, stride, padding, true)
    }

    /// Average pooling as [`Tensor::avg_pool2d`], but each window is averaged over the input
    /// elements it covers only, the padding left out of the count (PyTorch's
    /// `count_include_pad = False`, TensorFlow's `SAME` average pooling). Forward only; `padding`
    /// must be at most half the kernel.
    ///
    /// ```
    /// use tensor::{DType, Device, Tensor};
    /// let x = Tensor::ones(&[1, 1, 2, 2], DType::F32, Device::Cpu).unwrap();
    /// let y = x.avg_pool2d_exclude_pad((3, 3), (1, 1), (1, 1)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0; 4]); // a mean of ones, whatever the count
    /// ```
    pub fn avg_pool2d_exclude_pad(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d_exclude_pad";
        Pool::new(OP, self.shape(), kernel, stride, padding)?
            .check_half_kernel_padding(OP, self.shape())?;
        self.avg_pool(OP, kernel, stride, padding, false)
    }

    /// The average pooling of [`Tensor::avg_pool2d`] (`include_pad`) and
    /// [`Tensor::avg_pool2d_exclude_pad`].
    fn avg_pool(
        &self,
        op: &'static str,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        include_pad: bool,
    ) -> Result<Tensor> {
        let pool = Pool::new(op, self.shape(), kernel, stride, padding)?;
        if self.is_cuda() {
            return cuda::avg_pool2d(self, op, pool.geometry(), include_pad);
        }
        let [n, c, h, w] = nchw(op, self.shape())?;
        let out = float_op!(op, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; n * c * pool.ho * pool.wo];
            let scale: T = pool.scale();
            for_each_row(&mut out, pool.ho * pool.wo, |plane, o| {
                let x = &x[plane * h * w..][..h * w];
                pool.for_each_window(|oy, ox, rows, cols| {
                    let count = rows.len() * cols.len();
                    let sum: T = rows
                        .flat_map(|y| x[y * w..][cols.clone()].iter().copied())
                        .sum();
                    o[oy * pool.wo + ox] = if include_pad {
                        sum * scale
                    } else {
                        sum / T::from_f64(count as f64)
                    };
                });
            });
            T::into_storage(out)
        });
        self.with_storage(out, &[n, c, pool.ho, pool.wo])
    }

    /// Max pooling of an `[N, C, H, W]` tensor over `kernel` windows moved by `stride`, the
    /// input padded by `padding` with -∞ (PyTorch's `F.max_pool2d` without dilation or ceil
    /// mode); a NaN in a window gives NaN. Forward only; `padding` must be at most half the
    /// kernel.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1f32, 5., 2., 3., 4., 0., 7., 6., 8.], &[1, 1, 3, 3]).unwrap();
    /// let y = x.max_pool2d((2, 2), (1, 1), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5., 5., 7., 8.]);
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let pool = Pool::new(OP, self.shape(), kernel, stride, padding)?;
        pool.check_half_kernel_padding(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::max_pool2d(self, pool.geometry());
        }
        let [n, c, h, w] = nchw(OP, self.shape())?;
        let out = float_op!(OP, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; n * c * pool.ho * pool.wo];
            for_each_row(&mut out, pool.ho * pool.wo, |plane, o| {
                let x = &x[plane * h * w..][..h * w];
                pool.for_each_window(|oy, ox, rows, cols| {
                    o[oy * pool.wo + ox] = rows
                        .flat_map(|y| x[y * w..][cols.clone()].iter().copied())
                        .fold(T::NEG_INFINITY, |m, v| {
                            // NaN wins: once `m` is NaN no `v > m` replaces it.
                            if v > m || v.partial_cmp(&v).is_none() {
                                v
                            } else {
                                m
                            }
                        });
                });
            });
            T::into_storage(out)
        });
        self.with_storage(out, &[n, c, pool.ho, pool.wo])
    }

    /// Bilinear resizing of an `[N, C, H, W]` tensor to `[N, C, out_h, out_w]`, as PyTorch's
    /// `F.interpolate(x, size=(out_h, out_w), mode='bilinear', align_corners=False)` (no
    /// antialiasing): output `o` samples the input at `(o + 0.5) · in / out - 0.5`, clamped to the
    /// image, and blends its two neighbours along each axis. Forward only.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0f32, 4.], &[1, 1, 1, 2]).unwrap();
    /// let y = x.resize_bilinear2d(1, 4).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0., 1., 3., 4.]);
    /// ```
    pub fn resize_bilinear2d(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        const OP: &str = "resize_bilinear2d";
        let [n, c, h, w] = nchw(OP, self.shape())?;
        ensure_shape!(
            h > 0 && w > 0 && out_h > 0 && out_w > 0,
            OP,
            "input {:?} to ({out_h}, {out_w}): both sizes must be non-empty",
            self.shape()
        );
        if self.is_cuda() {
            return cuda::resize_bilinear2d(self, out_h, out_w);
        }
        let (ty, tx) = (bilinear_taps(h, out_h), bilinear_taps(w, out_w));
        let out = float_op!(OP, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let tx: Vec<(usize, usize, T, T)> = tx
                .iter()
                .map(|t| (t.i0, t.i1, T::from_f64(t.w0), T::from_f64(t.w1)))
                .collect();
            let mut out = vec![T::ZERO; n * c * out_h * out_w];
            for_each_row(&mut out, out_w, |r, row| {
                let (plane, oy) = (r / out_h, r % out_h);
                let t = ty[oy];
                let (wy0, wy1) = (T::from_f64(t.w0), T::from_f64(t.w1));
                let x0 = &x[(plane * h + t.i0) * w..][..w];
                let x1 = &x[(plane * h + t.i1) * w..][..w];
                for (o, &(i0, i1, wx0, wx1)) in row.iter_mut().zip(&tx) {
                    *o = wy0 * (wx0 * x0[i0] + wx1 * x0[i1]) + wy1 * (wx0 * x1[i0] + wx1 * x1[i1]);
                }
            });
            T::into_storage(out)
        });
        self.with_storage(out, &[n, c, out_h, out_w])
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
        if self.is_cuda() {
            return cuda::avg_pool2d_backward(self, pool.geometry());
        }
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

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Tensor};

    fn image(values: &[f64], h: usize, w: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[1, 1, h, w]).unwrap()
    }

    fn one_to_nine() -> Tensor {
        image(&[1., 2., 3., 4., 5., 6., 7., 8., 9.], 3, 3)
    }

    #[test]
    fn max_pool2d_pads_with_minus_infinity() {
        // Negative inputs: a zero padding would win every border window.
        let x = one_to_nine().neg().unwrap();
        let y = x.max_pool2d((3, 3), (2, 2), (1, 1)).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_vec::<f64>().unwrap(), vec![-1., -2., -4., -5.]);
        let y = one_to_nine().max_pool2d((3, 3), (2, 2), (0, 0)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), vec![9.]);
    }

    #[test]
    fn max_pool2d_propagates_nan_and_reads_views() {
        let x = image(&[1., f64::NAN, 3., 4.], 2, 2);
        let y = x.max_pool2d((1, 2), (1, 1), (0, 0)).unwrap();
        let y = y.to_vec::<f64>().unwrap();
        assert!(y[0].is_nan() && y[1] == 4.0, "{y:?}");
        // The transposed view [[1, 4], [2, 5], [3, 6]] of the first two rows, f32.
        let x = one_to_nine().to_dtype(DType::F32).unwrap();
        let t = x.narrow(2, 0, 2).unwrap().transpose(2, 3).unwrap();
        let y = t.max_pool2d((2, 1), (1, 1), (0, 0)).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![2., 5., 3., 6.]);
    }

    #[test]
    fn avg_pool2d_exclude_pad_averages_only_the_covered_inputs() {
        // PyTorch: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) of 1..9 as a 3x3 image.
        let y = one_to_nine()
            .avg_pool2d_exclude_pad((3, 3), (1, 1), (1, 1))
            .unwrap();
        let want = [3., 3.5, 4., 4.5, 5., 5.5, 6., 6.5, 7.];
        assert_eq!(y.to_vec::<f64>().unwrap(), want);
        // Without padding it is the ordinary average pooling.
        let a = one_to_nine()
            .avg_pool2d_exclude_pad((2, 2), (1, 1), (0, 0))
            .unwrap();
        let b = one_to_nine().avg_pool2d((2, 2), (1, 1), (0, 0)).unwrap();
        assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        assert_eq!(a.to_vec::<f64>().unwrap(), vec![3., 4., 6., 7.]);
    }

    #[test]
    fn forward_only_pools_refuse_padding_over_half_the_kernel() {
        let x = Tensor::ones(&[1, 1, 4, 4], DType::F32, Device::Cpu).unwrap();
        let e = x
            .max_pool2d((2, 2), (1, 1), (2, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_pool2d") && e.contains("half the kernel"),
            "{e}"
        );
        let e = x
            .avg_pool2d_exclude_pad((3, 3), (1, 1), (2, 2))
            .unwrap_err();
        assert!(e.to_string().contains("avg_pool2d_exclude_pad"), "{e}");
        let e = x
            .max_pool2d((5, 5), (1, 1), (0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than the input"), "{e}");
        let e = x
            .reshape(&[4, 4])
            .unwrap()
            .max_pool2d((1, 1), (1, 1), (0, 0));
        assert!(e.unwrap_err().to_string().contains("[N, C, H, W]"));
    }

    #[test]
    fn resize_bilinear2d_matches_pytorch_align_corners_false() {
        // Values from F.interpolate(..., mode='bilinear', align_corners=False).
        let up = image(&[0., 1., 2., 3.], 2, 2)
            .resize_bilinear2d(3, 3)
            .unwrap();
        let want = [0., 0.5, 1., 1., 1.5, 2., 2., 2.5, 3.];
        assert_eq!(up.to_vec::<f64>().unwrap(), want);
        let down = image(&[0., 1., 2., 3.], 1, 4)
            .resize_bilinear2d(1, 2)
            .unwrap();
        assert_eq!(down.to_vec::<f64>().unwrap(), vec![0.5, 2.5]);
        let odd = image(&[0., 10., 20.], 1, 3)
            .resize_bilinear2d(2, 5)
            .unwrap();
        let row = [0., 4., 10., 16., 20.];
        let got = odd.to_vec::<f64>().unwrap();
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(row.iter().chain(&row)) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn resize_bilinear2d_to_the_same_size_is_the_identity() {
        let x = Tensor::arange(0.0, 24.0, 1.0, DType::F32, Device::Cpu)
            .unwrap()
            .reshape(&[2, 1, 3, 4])
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let y = x.resize_bilinear2d(4, 3).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
        let e = x.resize_bilinear2d(0, 3).unwrap_err().to_string();
        assert!(e.contains("resize_bilinear2d"), "{e}");
    }
}
