//! CPU kernels of the normalisations of `ops/norm.rs`, each forward beside its backward: softmax
//! and log-softmax along a dim, and one row-normalisation kernel that serves both layer norm and
//! group norm.
//!
//! Every kernel works on rows: the input is viewed so that each row is contiguous (copying only
//! when the view is not), rows are processed in parallel when the input is large, and sums run in
//! f64 so long f32 rows keep their digits.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::{contiguous_slice, float_op, lane_sums, simd, zeroed_rows};
use crate::layout::PAR_THRESHOLD;
use crate::ops::norm::{RowNorm, SoftmaxKind};
use crate::{Element, Error, Float, Result, Tensor};

/// Rows per parallel task: a few thousand elements each for large inputs, and every row in one
/// task (no threads at all) for small ones.
fn min_rows(total: usize, len: usize) -> usize {
    if total >= PAR_THRESHOLD {
        (4096 / len.max(1)).max(1)
    } else {
        usize::MAX
    }
}

/// The contiguous elements of `t` as `T`; a dtype error naming `op` when `t` holds another type.
fn elems<'a, T: Float>(op: &'static str, t: &'a Tensor) -> Result<Cow<'a, [T]>> {
    let v = T::slice(t.cpu_storage()).ok_or_else(|| {
        Error::dtype(
            op,
            t.dtype(),
            &format!("{} like the input", T::DTYPE.as_str()),
        )
    })?;
    Ok(contiguous_slice(v, t.layout()))
}

/// The per-row math of softmax and log-softmax.
impl SoftmaxKind {
    /// One row: subtracting the row max first keeps `exp` from overflowing.
    fn forward_row<T: Float>(self, x: &[T], out: &mut [T]) {
        let max = x.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - max).exp();
            sum += o.to_f64();
        }
        match self {
            SoftmaxKind::Plain => {
                let inv = T::from_f64(1.0 / sum);
                out.iter_mut().for_each(|o| *o *= inv);
            }
            SoftmaxKind::Log => {
                let log_sum = T::from_f64(sum.ln());
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v - max - log_sum;
                }
            }
        }
    }

    /// One row of the gradient, from the forward output `y` and the output gradient `g`:
    /// softmax `y·(g − Σ g·y)`, log-softmax `g − exp(y)·Σ g`.
    fn backward_row<T: Float>(self, y: &[T], g: &[T], out: &mut [T]) {
        match self {
            SoftmaxKind::Plain => {
                let dot = T::from_f64(y.iter().zip(g).map(|(&a, &b)| (a * b).to_f64()).sum());
                for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                    *o = y * (g - dot);
                }
            }
            SoftmaxKind::Log => {
                let sum = T::from_f64(g.iter().map(|v| v.to_f64()).sum());
                for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                    *o = g - y.exp() * sum;
                }
            }
        }
    }
}

/// The contiguous result of a row kernel run on the dim-last view `moved`, in the original order.
fn undo_dim_last(out: crate::CpuStorage, moved: &Tensor, undo: &[usize]) -> Result<Tensor> {
    Tensor::from_storage(out, moved.shape())?
        .permute(undo)?
        .contiguous()
}

/// Softmax (or log-softmax, by `kind`) of the rows of `x`, the input viewed with the softmax
/// dim (of length `len`) moved last; `undo` moves it back.
pub(crate) fn softmax(kind: SoftmaxKind, x: &Tensor, undo: &[usize], len: usize) -> Result<Tensor> {
    let out = float_op!(kind.name(), x.cpu_storage(), |v: T| {
        let x = contiguous_slice(v, x.layout());
        let out = zeroed_rows(x.len(), len, |r, o| {
            kind.forward_row(&x[r * len..(r + 1) * len], o)
        });
        T::into_storage(out)
    });
    undo_dim_last(out, x, undo)
}

/// The gradient through softmax (or log-softmax) from the rows of its output `y` and of the
/// output gradient `g`, both viewed with the softmax dim (of length `len`) moved last; `undo`
/// moves it back.
pub(crate) fn softmax_backward(
    kind: SoftmaxKind,
    y: &Tensor,
    g: &Tensor,
    undo: &[usize],
    len: usize,
) -> Result<Tensor> {
    let op = kind.backward_name();
    let out = float_op!(op, y.cpu_storage(), |v: T| {
        let (y, g) = (contiguous_slice(v, y.layout()), elems::<T>(op, g)?);
        let out = zeroed_rows(y.len(), len, |r, o| {
            let row = r * len..(r + 1) * len;
            kind.backward_row(&y[row.clone()], &g[row], o)
        });
        T::into_storage(out)
    });
    undo_dim_last(out, y, undo)
}

/// A row's mean and 1/√(var + eps).
type Stats<T> = (T, T);

/// The row loops of layer norm and group norm.
impl RowNorm {
    fn params(&self) -> usize {
        self.groups * self.len / self.inner
    }

    /// The parameters row `r` uses, in order: one per element for layer norm, one per channel
    /// (a segment of `inner` elements) for group norm.
    fn row_params(&self, r: usize) -> Range<usize> {
        let per_row = self.len / self.inner;
        let start = (r % self.groups) * per_row;
        start..start + per_row
    }

    /// Mean and 1/√(var + eps) of one row: two passes in f64, biased variance (as PyTorch).
    #[inline(always)]
    fn stats<T: Float>(row: &[T], eps: f64) -> (f64, f64) {
        let n = row.len() as f64;
        let [sum] = lane_sums([row], |[v]| [v.to_f64()]);
        let mean = sum / n;
        let [squares] = lane_sums([row], |[v]| [(v.to_f64() - mean).powi(2)]);
        (mean, 1.0 / (squares / n + eps).sqrt())
    }

    /// The normalised, affine-mapped `x`, and each row's mean and 1/√(var + eps). Missing
    /// parameters are ones and zeros, so every row runs the same branch-free loop.
    fn forward<T: Float>(
        &self,
        x: &[T],
        w: Option<&[T]>,
        b: Option<&[T]>,
        eps: f64,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let len = self.len;
        let stats: Vec<(f64, f64)> = x
            .par_chunks(len)
            .with_min_len(min_rows(x.len(), len))
            .map(|row| {
                simd(
                    #[inline(always)]
                    || Self::stats(row, eps),
                )
            })
            .collect();
        let (w, b) = (self.or_filled(w, T::ONE), self.or_filled(b, T::ZERO));
        let y = zeroed_rows(x.len(), len, |r, out| {
            // In f64: a mean rounded to f32 would cost digits when it is large against the spread.
            let (mean, rstd) = stats[r];
            let (x, params) = (&x[r * len..(r + 1) * len], self.row_params(r));
            let (w, b) = (&w[params.clone()], &b[params]);
            let norm = |v: T, w: T, b: T| {
                T::from_f64((v.to_f64() - mean) * rstd * w.to_f64() + b.to_f64())
            };
            simd(
                #[inline(always)]
                || {
                    if self.inner == 1 {
                        // Layer norm: a parameter per element, one loop that vectorises.
                        for (o, ((&v, &w), &b)) in out.iter_mut().zip(x.iter().zip(w).zip(b)) {
                            *o = norm(v, w, b);
                        }
                    } else {
                        let segments = out.chunks_mut(self.inner).zip(x.chunks(self.inner));
                        for ((out, x), (&w, &b)) in segments.zip(w.iter().zip(b)) {
                            out.iter_mut().zip(x).for_each(|(o, &v)| *o = norm(v, w, b));
                        }
                    }
                },
            )
        });
        let cast = |(m, r): (f64, f64)| (T::from_f64(m), T::from_f64(r));
        let (mean, rstd) = stats.into_iter().map(cast).unzip();
        (y, mean, rstd)
    }

    /// `p`, or all parameters set to `value` when there is none.
    fn or_filled<'a, T: Float>(&self, p: Option<&'a [T]>, value: T) -> Cow<'a, [T]> {
        p.map_or_else(|| Cow::Owned(vec![value; self.params()]), Cow::Borrowed)
    }

    /// dx, and the per-parameter sums Σ dy·x̂ (dweight) and Σ dy (dbias), in one parallel pass:
    /// each task accumulates its own parameter sums, which are then added up.
    fn backward<T: Float>(
        &self,
        x: &[T],
        stats: (&[T], &[T]),
        w: Option<&[T]>,
        dy: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let len = self.len;
        let w = self.or_filled(w, T::ONE);
        let zeros = || (vec![0.0; self.params()], vec![0.0; self.params()]);
        let mut dx = vec![T::ZERO; x.len()];
        let (dw, db) = dx
            .par_chunks_mut(len)
            .enumerate()
            .with_min_len(min_rows(x.len(), len))
            .fold(zeros, |(mut dw, mut db), (r, dx_row)| {
                let (row, params) = (r * len..(r + 1) * len, self.row_params(r));
                let grads = RowGrads {
                    dx: dx_row,
                    dw: &mut dw[params.clone()],
                    db: &mut db[params.clone()],
                };
                let (x, dy, stats) = (&x[row.clone()], &dy[row], (stats.0[r], stats.1[r]));
                simd(
                    #[inline(always)]
                    || self.backward_row(x, stats, &w[params], dy, grads),
                );
                (dw, db)
            })
            .reduce(zeros, |(mut dw, mut db), (dw2, db2)| {
                dw.iter_mut().zip(dw2).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(db2).for_each(|(a, b)| *a += b);
                (dw, db)
            });
        let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect();
        (dx, cast(dw), cast(db))
    }

    /// One row of the backward (`w`, `out.dw` and `out.db` are the row's parameters), with
    /// x̂ = (x − mean)·rstd and dx̂ = dy·w: dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)).
    #[inline(always)]
    fn backward_row<T: Float>(
        &self,
        x: &[T],
        (mean, rstd): Stats<T>,
        w: &[T],
        dy: &[T],
        out: RowGrads<'_, T>,
    ) {
        let (mean, rstd) = (mean.to_f64(), rstd.to_f64());
        let xhat = |v: T| (v.to_f64() - mean) * rstd;
        let n = x.len() as f64;
        let dx = |v: T, d: T, w: T, [m1, m2]: [f64; 2]| {
            T::from_f64(rstd * (d.to_f64() * w.to_f64() - m1 - xhat(v) * m2))
        };
        if self.inner == 1 {
            // Layer norm: a parameter per element; every loop runs over whole rows and vectorises.
            let sums = lane_sums([x, dy, w], |[v, d, w]| {
                let dxhat = d.to_f64() * w.to_f64();
                [dxhat, dxhat * xhat(v)]
            });
            let means = sums.map(|s| s / n);
            let grads = out
                .dx
                .iter_mut()
                .zip(out.dw.iter_mut().zip(out.db.iter_mut()));
            for ((dx_j, (dw, db)), ((&v, &d), &w)) in grads.zip(x.iter().zip(dy).zip(w)) {
                *dw += d.to_f64() * xhat(v);
                *db += d.to_f64();
                *dx_j = dx(v, d, w, means);
            }
        } else {
            // Group norm: a parameter per channel, a segment of `inner` elements.
            let seg = self.inner;
            let mut sums = [0.0; 2];
            for (q, (x, dy)) in x.chunks(seg).zip(dy.chunks(seg)).enumerate() {
                let [d, d_xhat] = lane_sums([x, dy], |[v, d]| [d.to_f64(), d.to_f64() * xhat(v)]);
                out.dw[q] += d_xhat;
                out.db[q] += d;
                sums[0] += d * w[q].to_f64();
                sums[1] += d_xhat * w[q].to_f64();
            }
            let means = sums.map(|s| s / n);
            let segments = out
                .dx
                .chunks_mut(seg)
                .zip(x.chunks(seg).zip(dy.chunks(seg)));
            for ((dx_seg, (x, dy)), &w) in segments.zip(w) {
                for (o, (&v, &d)) in dx_seg.iter_mut().zip(x.iter().zip(dy)) {
                    *o = dx(v, d, w, means);
                }
            }
        }
    }
}

/// Where one row's backward writes: its dx row and the task's parameter-gradient sums.
struct RowGrads<'a, T> {
    dx: &'a mut [T],
    dw: &'a mut [f64],
    db: &'a mut [f64],
}

/// Row normalisation forward of `x` by `plan` (weight and bias checked): `(y, mean, rstd)`, the
/// last two of `stat_shape`.
pub(crate) fn row_norm(
    op: &'static str,
    x: &Tensor,
    plan: RowNorm,
    (weight, bias): (Option<&Tensor>, Option<&Tensor>),
    eps: f64,
    stat_shape: &[usize],
) -> Result<(Tensor, Tensor, Tensor)> {
    let (y, mean, rstd) = float_op!(op, x.cpu_storage(), |v: T| {
        let xs = contiguous_slice(v, x.layout());
        let w = weight.map(|w| elems::<T>(op, w)).transpose()?;
        let b = bias.map(|b| elems::<T>(op, b)).transpose()?;
        let (y, mean, rstd) = plan.forward(&xs, w.as_deref(), b.as_deref(), eps);
        (
            T::into_storage(y),
            T::into_storage(mean),
            T::into_storage(rstd),
        )
    });
    Ok((
        Tensor::from_storage(y, x.shape())?,
        Tensor::from_storage(mean, stat_shape)?,
        Tensor::from_storage(rstd, stat_shape)?,
    ))
}

/// Row normalisation backward (`x` the forward's input; shapes and the weight checked):
/// `(dx, dweight, dbias)`, the last two of `param_shape`.
pub(crate) fn row_norm_backward(
    op: &'static str,
    x: &Tensor,
    plan: RowNorm,
    grad: &Tensor,
    (mean, rstd): (&Tensor, &Tensor),
    weight: Option<&Tensor>,
    param_shape: &[usize],
) -> Result<(Tensor, Tensor, Tensor)> {
    let (dx, dw, db) = float_op!(op, x.cpu_storage(), |v: T| {
        let xs = contiguous_slice(v, x.layout());
        let g = elems::<T>(op, grad)?;
        let (m, r) = (elems::<T>(op, mean)?, elems::<T>(op, rstd)?);
        let w = weight.map(|w| elems::<T>(op, w)).transpose()?;
        let (dx, dw, db) = plan.backward(&xs, (&m, &r), w.as_deref(), &g);
        (
            T::into_storage(dx),
            T::into_storage(dw),
            T::into_storage(db),
        )
    });
    Ok((
        Tensor::from_storage(dx, x.shape())?,
        Tensor::from_storage(dw, param_shape)?,
        Tensor::from_storage(db, param_shape)?,
    ))
}
