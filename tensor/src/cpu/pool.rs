//! CPU kernels of the resampling ops of `ops/pool.rs`: one NCHW plane (or output row) per
//! parallel task, each output a loop over its window.

use std::ops::Range;

use crate::cpu::{contiguous_slice, float_op, zeroed_rows};
use crate::ops::pool::{nchw, Pool};
use crate::{Element, Float, Result, Tensor};

/// The input rows (or columns) that output `o` of a pooling window covers, padding excluded.
fn window(o: usize, stride: usize, padding: usize, kernel: usize, len: usize) -> Range<usize> {
    let start = (o * stride) as isize - padding as isize;
    let lo = start.clamp(0, len as isize);
    let hi = (start + kernel as isize).clamp(lo, len as isize);
    lo as usize..hi as usize
}

/// The CPU's walk over the pooling windows.
impl Pool {
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

/// [`Tensor::upsample_nearest2d`] of `x` (`[n, c, h, w]`, scales checked).
pub(crate) fn upsample_nearest2d(x: &Tensor, scale_h: usize, scale_w: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d";
    let [n, c, h, w] = nchw(OP, x.shape())?;
    let (ho, wo) = (h * scale_h, w * scale_w);
    let out = float_op!(OP, x.cpu_storage(), |v: T| {
        let x = contiguous_slice(v, x.layout());
        let out = zeroed_rows(n * c * ho * wo, wo, |r, row| {
            let src = &x[(r / ho * h + r % ho / scale_h) * w..][..w];
            for (ox, o) in row.iter_mut().enumerate() {
                *o = src[ox / scale_w];
            }
        });
        T::into_storage(out)
    });
    x.with_storage(out, &[n, c, ho, wo])
}

/// [`Tensor::upsample_nearest2d_backward`] of the gradient `g`: a sum over each block. One
/// input row sums the `scale_h` output rows it was copied to, `scale_w` neighbours at a time (a
/// generic reduction over dims 3 and 5 of `[n, c, h, scale_h, w, scale_w]` took 5x as long).
pub(crate) fn upsample_nearest2d_backward(
    g: &Tensor,
    scale_h: usize,
    scale_w: usize,
) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d_backward";
    let [n, c, ho, wo] = nchw(OP, g.shape())?;
    let (h, w) = (ho / scale_h, wo / scale_w);
    let out = float_op!(OP, g.cpu_storage(), |v: T| {
        let g = contiguous_slice(v, g.layout());
        // Input row r (plane r / h, row r % h) was copied to output rows r·scale_h onwards.
        let out = zeroed_rows(n * c * h * w, w, |r, row| {
            for src in g[r * scale_h * wo..][..scale_h * wo].chunks_exact(wo) {
                for (o, block) in row.iter_mut().zip(src.chunks_exact(scale_w)) {
                    *o += block.iter().copied().sum::<T>();
                }
            }
        });
        T::into_storage(out)
    });
    g.with_storage(out, &[n, c, h, w])
}

/// Average pooling of `x` (`[n, c, h, w]`) over the windows of `pool`: the padding counted in
/// each average (`include_pad`) or left out.
pub(crate) fn avg_pool2d(
    x: &Tensor,
    op: &'static str,
    pool: &Pool,
    include_pad: bool,
) -> Result<Tensor> {
    let [n, c, h, w] = nchw(op, x.shape())?;
    let out = float_op!(op, x.cpu_storage(), |v: T| {
        let x = contiguous_slice(v, x.layout());
        let scale: T = pool.scale();
        let out = zeroed_rows(n * c * pool.ho * pool.wo, pool.ho * pool.wo, |plane, o| {
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
    x.with_storage(out, &[n, c, pool.ho, pool.wo])
}

/// [`Tensor::max_pool2d`] of `x` (`[n, c, h, w]`) over the windows of `pool`.
pub(crate) fn max_pool2d(x: &Tensor, pool: &Pool) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    let [n, c, h, w] = nchw(OP, x.shape())?;
    let out = float_op!(OP, x.cpu_storage(), |v: T| {
        let x = contiguous_slice(v, x.layout());
        let out = zeroed_rows(n * c * pool.ho * pool.wo, pool.ho * pool.wo, |plane, o| {
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
    x.with_storage(out, &[n, c, pool.ho, pool.wo])
}

/// [`Tensor::resize_bilinear2d`] of `x` (`[n, c, h, w]`, all sizes positive) to `(out_h, out_w)`.
pub(crate) fn resize_bilinear2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    const OP: &str = "resize_bilinear2d";
    let [n, c, h, w] = nchw(OP, x.shape())?;
    let (ty, tx) = (bilinear_taps(h, out_h), bilinear_taps(w, out_w));
    let out = float_op!(OP, x.cpu_storage(), |v: T| {
        let x = contiguous_slice(v, x.layout());
        let tx: Vec<(usize, usize, T, T)> = tx
            .iter()
            .map(|t| (t.i0, t.i1, T::from_f64(t.w0), T::from_f64(t.w1)))
            .collect();
        let out = zeroed_rows(n * c * out_h * out_w, out_w, |r, row| {
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
    x.with_storage(out, &[n, c, out_h, out_w])
}

/// [`Tensor::avg_pool2d_backward`] of the gradient `g` (checked) to `input_shape`.
pub(crate) fn avg_pool2d_backward(
    g: &Tensor,
    pool: &Pool,
    input_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "avg_pool2d_backward";
    let [n, c, h, w] = nchw(OP, input_shape)?;
    let out = float_op!(OP, g.cpu_storage(), |v: T| {
        let g = contiguous_slice(v, g.layout());
        let scale: T = pool.scale();
        let dx = zeroed_rows(n * c * h * w, h * w, |plane, d| {
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
    g.with_storage(out, input_shape)
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
