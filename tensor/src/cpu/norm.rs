//! Fused normalisation kernels, each forward beside its backward: softmax and log-softmax along a
//! dim, and one row-normalisation kernel that serves both layer norm and group norm.
//!
//! Every kernel works on rows: the input is viewed so that each row is contiguous (copying only
//! when the view is not), rows are processed in parallel when the input is large, and sums run in
//! f64 so long f32 rows keep their digits.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::{contiguous_slice, float_op, for_each_row, lane_sums, simd};
use crate::cuda::norm as cuda;
use crate::layout::PAR_THRESHOLD;
use crate::{ensure_shape, Element, Error, Float, Result, Tensor};

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

/// Softmax or its logarithm; both share the row walk and differ only in the per-row math.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SoftmaxKind {
    Plain,
    Log,
}

impl SoftmaxKind {
    fn name(self) -> &'static str {
        match self {
            SoftmaxKind::Plain => "softmax",
            SoftmaxKind::Log => "log_softmax",
        }
    }

    fn backward_name(self) -> &'static str {
        match self {
            SoftmaxKind::Plain => "softmax_backward",
            SoftmaxKind::Log => "log_softmax_backward",
        }
    }

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

/// `x` viewed with `dim` moved last (so rows along `dim` are contiguous after a copy at most),
/// and the permutation that moves it back.
fn dim_last(op: &'static str, x: &Tensor, dim: usize) -> Result<(Tensor, Vec<usize>)> {
    let n = x.rank();
    ensure_shape!(
        dim < n,
        op,
        "dim {dim} out of range for shape {:?}",
        x.shape()
    );
    let perm: Vec<usize> = (0..n).filter(|&d| d != dim).chain([dim]).collect();
    let undo = (0..n)
        .map(|d| match d.cmp(&dim) {
            std::cmp::Ordering::Less => d,
            std::cmp::Ordering::Equal => n - 1,
            std::cmp::Ordering::Greater => d - 1,
        })
        .collect();
    Ok((x.permute(&perm)?, undo))
}

/// The contiguous result of a row kernel run on the dim-last view `moved`, in the original order.
fn undo_dim_last(out: crate::CpuStorage, moved: &Tensor, undo: &[usize]) -> Result<Tensor> {
    Tensor::from_storage(out, moved.shape())?
        .permute(undo)?
        .contiguous()
}

impl Tensor {
    fn softmax_kind(&self, kind: SoftmaxKind, dim: usize) -> Result<Tensor> {
        let (x, undo) = dim_last(kind.name(), self, dim)?;
        if self.is_cuda() {
            return cuda::softmax(self, dim, kind == SoftmaxKind::Log);
        }
        let len = self.shape()[dim];
        let out = float_op!(kind.name(), x.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, x.layout());
            let mut out = vec![T::ZERO; x.len()];
            for_each_row(&mut out, len, |r, o| {
                kind.forward_row(&x[r * len..(r + 1) * len], o)
            });
            T::into_storage(out)
        });
        undo_dim_last(out, &x, &undo)
    }

    fn softmax_kind_backward(
        &self,
        kind: SoftmaxKind,
        grad: &Tensor,
        dim: usize,
    ) -> Result<Tensor> {
        let op = kind.backward_name();
        ensure_shape!(
            self.shape() == grad.shape(),
            op,
            "output {:?} and gradient {:?} differ",
            self.shape(),
            grad.shape()
        );
        let (y, undo) = dim_last(op, self, dim)?;
        let (g, _) = dim_last(op, grad, dim)?;
        if self.is_cuda() || grad.is_cuda() {
            return cuda::softmax_backward(self, grad, dim, kind == SoftmaxKind::Log);
        }
        let len = self.shape()[dim];
        let out = float_op!(op, y.cpu_storage(), |v: T| {
            let (y, g) = (contiguous_slice(v, y.layout()), elems::<T>(op, &g)?);
            let mut out = vec![T::ZERO; y.len()];
            for_each_row(&mut out, len, |r, o| {
                let row = r * len..(r + 1) * len;
                kind.backward_row(&y[row.clone()], &g[row], o)
            });
            T::into_storage(out)
        });
        undo_dim_last(out, &y, &undo)
    }

    /// Softmax along `dim`, computed stably (the row max is subtracted first).
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_kind(SoftmaxKind::Plain, dim)
    }

    /// Log-softmax along `dim`: `x − max − ln Σ exp(x − max)`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_kind(SoftmaxKind::Log, dim)
    }

    /// The gradient through softmax, where `self` is its output `y`: `y·(grad − Σ_dim grad·y)`.
    pub fn softmax_backward(&self, grad: &Tensor, dim: usize) -> Result<Tensor> {
        self.softmax_kind_backward(SoftmaxKind::Plain, grad, dim)
    }

    /// The gradient through log-softmax, where `self` is its output `y`:
    /// `grad − exp(y)·Σ_dim grad`.
    pub fn log_softmax_backward(&self, grad: &Tensor, dim: usize) -> Result<Tensor> {
        self.softmax_kind_backward(SoftmaxKind::Log, grad, dim)
    }
}

/// The one kernel behind layer norm and group norm: `rows` rows of `len` contiguous elements,
/// each normalised to zero mean and unit (biased) variance, then scaled and shifted by the affine
/// parameter `((row % groups) · len + j) / inner` for its element `j`. Layer norm uses
/// `groups = inner = 1` (the parameter is the position in the row); group norm uses its group
/// count and the spatial size (the parameter is the element's channel).
#[derive(Clone, Copy, Debug)]
struct RowNorm {
    rows: usize,
    len: usize,
    groups: usize,
    inner: usize,
}

/// A row's mean and 1/√(var + eps).
type Stats<T> = (T, T);

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

    /// The same plan for the CUDA kernels.
    fn cuda(&self) -> cuda::RowNorm {
        cuda::RowNorm {
            rows: self.rows,
            len: self.len,
            groups: self.groups,
            inner: self.inner,
        }
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
        let mut y = vec![T::ZERO; x.len()];
        for_each_row(&mut y, len, |r, out| {
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

/// Checks an optional affine parameter: `shape` exactly, and the input's dtype and device.
fn check_param(
    op: &'static str,
    what: &str,
    param: Option<&Tensor>,
    shape: &[usize],
    x: &Tensor,
) -> Result<()> {
    let Some(p) = param else { return Ok(()) };
    ensure_shape!(
        p.shape() == shape,
        op,
        "{what} has shape {:?}, expected {shape:?} for input {:?}",
        p.shape(),
        x.shape()
    );
    x.same_kind(op, p)
}

impl Tensor {
    /// Runs the row-normalisation forward; `stat_shape` is the shape of the mean and rstd.
    fn row_norm(
        &self,
        op: &'static str,
        plan: RowNorm,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        stat_shape: &[usize],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.is_cuda() {
            let plan = plan.cuda();
            return cuda::row_norm(op, self, plan, (weight, bias), eps, stat_shape);
        }
        let (y, mean, rstd) = float_op!(op, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let w = weight.map(|w| elems::<T>(op, w)).transpose()?;
            let b = bias.map(|b| elems::<T>(op, b)).transpose()?;
            let (y, mean, rstd) = plan.forward(&x, w.as_deref(), b.as_deref(), eps);
            (
                T::into_storage(y),
                T::into_storage(mean),
                T::into_storage(rstd),
            )
        });
        Ok((
            Tensor::from_storage(y, self.shape())?,
            Tensor::from_storage(mean, stat_shape)?,
            Tensor::from_storage(rstd, stat_shape)?,
        ))
    }

    /// Runs the row-normalisation backward; `param_shape` is the shape of dweight and dbias.
    fn row_norm_backward(
        &self,
        op: &'static str,
        plan: RowNorm,
        grad: &Tensor,
        (mean, rstd): (&Tensor, &Tensor),
        weight: Option<&Tensor>,
        param_shape: &[usize],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        ensure_shape!(
            grad.shape() == self.shape(),
            op,
            "gradient {:?} does not match input {:?}",
            grad.shape(),
            self.shape()
        );
        ensure_shape!(
            mean.elem_count() == plan.rows && rstd.elem_count() == plan.rows,
            op,
            "mean {:?} and rstd {:?} must hold one value per normalised row ({})",
            mean.shape(),
            rstd.shape(),
            plan.rows
        );
        if [self, grad, mean, rstd].iter().any(|t| t.is_cuda()) {
            let (plan, stats) = (plan.cuda(), (mean, rstd));
            return cuda::row_norm_backward(op, self, plan, grad, stats, weight, param_shape);
        }
        let (dx, dw, db) = float_op!(op, self.cpu_storage(), |v: T| {
            let x = contiguous_slice(v, self.layout());
            let g = elems::<T>(op, grad)?;
            let (m, r) = (elems::<T>(op, mean)?, elems::<T>(op, rstd)?);
            let w = weight.map(|w| elems::<T>(op, w)).transpose()?;
            let (dx, dw, db) = plan.backward(&x, (&m, &r), w.as_deref(), &g);
            (
                T::into_storage(dx),
                T::into_storage(dw),
                T::into_storage(db),
            )
        });
        Ok((
            Tensor::from_storage(dx, self.shape())?,
            Tensor::from_storage(dw, param_shape)?,
            Tensor::from_storage(db, param_shape)?,
        ))
    }

    /// The plan of a layer norm over the last `k` dims, and the index of the first of them.
    fn layer_norm_plan(&self, op: &'static str, k: usize) -> Result<(RowNorm, usize)> {
        let shape = self.shape();
        ensure_shape!(
            k >= 1 && k <= shape.len(),
            op,
            "cannot normalise over the last {k} dims of shape {shape:?}"
        );
        let lead = shape.len() - k;
        let len: usize = shape[lead..].iter().product();
        ensure_shape!(
            len > 0,
            op,
            "the normalised dims {:?} of shape {shape:?} are empty",
            &shape[lead..]
        );
        let rows = shape[..lead].iter().product();
        let plan = RowNorm {
            rows,
            len,
            groups: 1,
            inner: 1,
        };
        Ok((plan, lead))
    }

    /// Layer norm over the last `normalized_dims` dims, with optional `weight` and `bias` of
    /// the shape of those dims. Returns `(y, mean, rstd)`: mean and 1/√(var + eps) of each
    /// normalised row, shaped as the leading dims, for [`Tensor::layer_norm_backward`].
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm";
        let (plan, lead) = self.layer_norm_plan(op, normalized_dims)?;
        let (lead_shape, param_shape) = self.shape().split_at(lead);
        check_param(op, "weight", weight, param_shape, self)?;
        check_param(op, "bias", bias, param_shape, self)?;
        self.row_norm(op, plan, weight, bias, eps, lead_shape)
    }

    /// The backward of [`Tensor::layer_norm`] (`self` is its input): `(dx, dweight, dbias)`,
    /// the last two shaped as the normalised dims (computed even when there is no weight or bias).
    pub fn layer_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        weight: Option<&Tensor>,
        normalized_dims: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm_backward";
        let (plan, lead) = self.layer_norm_plan(op, normalized_dims)?;
        let param_shape = &self.shape()[lead..];
        check_param(op, "weight", weight, param_shape, self)?;
        self.row_norm_backward(op, plan, grad, (mean, rstd), weight, param_shape)
    }

    /// The plan of a group norm of `[N, C, *spatial]` in `groups` groups.
    fn group_norm_plan(&self, op: &'static str, groups: usize) -> Result<RowNorm> {
        let shape = self.shape();
        ensure_shape!(
            shape.len() >= 2,
            op,
            "expected [N, C, *spatial], got shape {shape:?}"
        );
        let (n, c) = (shape[0], shape[1]);
        ensure_shape!(
            groups > 0 && c % groups == 0,
            op,
            "{groups} groups do not divide the {c} channels of shape {shape:?}"
        );
        let inner: usize = shape[2..].iter().product();
        ensure_shape!(
            c > 0 && inner > 0,
            op,
            "cannot normalise empty groups of shape {shape:?}"
        );
        Ok(RowNorm {
            rows: n * groups,
            len: c / groups * inner,
            groups,
            inner,
        })
    }

    /// Group norm of `self` (`[N, C, *spatial]`): channels split into `groups` groups, each
    /// normalised over its channels and positions, then an optional per-channel `weight` and
    /// `bias` (`[C]`). Returns `(y, mean, rstd)` with mean and rstd of shape `[N, groups]`.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "group_norm";
        let plan = self.group_norm_plan(op, groups)?;
        let channels = [self.shape()[1]];
        check_param(op, "weight", weight, &channels, self)?;
        check_param(op, "bias", bias, &channels, self)?;
        self.row_norm(op, plan, weight, bias, eps, &[self.shape()[0], groups])
    }

    /// The backward of [`Tensor::group_norm`] (`self` is its input): `(dx, dweight, dbias)`,
    /// the last two of shape `[C]` (computed even when there is no weight or bias).
    pub fn group_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        weight: Option<&Tensor>,
        groups: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "group_norm_backward";
        let plan = self.group_norm_plan(op, groups)?;
        let channels = [self.shape()[1]];
        check_param(op, "weight", weight, &channels, self)?;
        self.row_norm_backward(op, plan, grad, (mean, rstd), weight, &channels)
    }
}
