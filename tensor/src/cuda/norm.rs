//! CUDA kernels of the normalisations of `ops/norm.rs`: softmax and log-softmax along a dim with
//! their backward, and the row normalisation behind layer norm and group norm. `ops` checks
//! shapes and builds the plan; here tensors become views and the kernels run.

use kernels::norm::{self as k, RowNormGrads};

use super::{elem, kernel_error};
use crate::ops::norm::RowNorm;
use crate::{Result, Tensor};

/// The plan as the kernels take it.
fn kernel_plan(plan: RowNorm) -> k::RowNorm {
    k::RowNorm {
        rows: plan.rows,
        len: plan.len,
        groups: plan.groups,
        inner: plan.inner,
    }
}

/// The permutation that moves `dim` last, keeping the other dims in order.
fn dim_last(rank: usize, dim: usize) -> Vec<usize> {
    (0..rank).filter(|&d| d != dim).chain([dim]).collect()
}

/// Softmax (or, with `log`, log-softmax) of `x` along `dim` (checked by the caller). The kernel
/// reads `x` and writes the output both through their views with `dim` last, so rows pair up
/// and the output keeps `x`'s shape in row-major order.
pub(crate) fn softmax(x: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    let out = x.cuda_output(x.shape(), x.dtype())?;
    let len = x.shape()[dim];
    if out.elem_count() == 0 {
        return Ok(out);
    }
    let perm = dim_last(x.rank(), dim);
    k::softmax(
        x.gpu(),
        elem(x.dtype()),
        log,
        out.elem_count() / len,
        len,
        x.permute(&perm)?.cuda_view(op)?,
        out.permute(&perm)?.cuda_view(op)?,
    )
    .map_err(kernel_error(op, x.device()))?;
    Ok(out)
}

/// The gradient through softmax (or log-softmax) along `dim`, from its output `y` and the output
/// gradient `grad` (same shape, checked by the caller).
pub(crate) fn softmax_backward(y: &Tensor, grad: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
    let op = if log {
        "log_softmax_backward"
    } else {
        "softmax_backward"
    };
    y.same_kind(op, grad)?;
    let out = y.cuda_output(y.shape(), y.dtype())?;
    let len = y.shape()[dim];
    if out.elem_count() == 0 {
        return Ok(out);
    }
    let perm = dim_last(y.rank(), dim);
    k::softmax_backward(
        y.gpu(),
        elem(y.dtype()),
        log,
        out.elem_count() / len,
        len,
        y.permute(&perm)?.cuda_view(op)?,
        grad.permute(&perm)?.cuda_view(op)?,
        out.permute(&perm)?.cuda_view(op)?,
    )
    .map_err(kernel_error(op, y.device()))?;
    Ok(out)
}

/// Row normalisation forward of `x` (weight and bias already checked): `(y, mean, rstd)`, the
/// last two of `stat_shape` in `x`'s dtype.
pub(crate) fn row_norm(
    op: &'static str,
    x: &Tensor,
    plan: RowNorm,
    (weight, bias): (Option<&Tensor>, Option<&Tensor>),
    eps: f64,
    stat_shape: &[usize],
) -> Result<(Tensor, Tensor, Tensor)> {
    let y = x.cuda_output(x.shape(), x.dtype())?;
    let mean = x.cuda_output(stat_shape, x.dtype())?;
    let rstd = x.cuda_output(stat_shape, x.dtype())?;
    let w = weight.map(|w| w.cuda_view(op)).transpose()?;
    let b = bias.map(|b| b.cuda_view(op)).transpose()?;
    k::row_norm(
        x.gpu(),
        elem(x.dtype()),
        kernel_plan(plan),
        eps,
        x.cuda_view(op)?,
        (w, b),
        y.cuda_ptr(),
        (mean.cuda_ptr(), rstd.cuda_ptr()),
    )
    .map_err(kernel_error(op, x.device()))?;
    Ok((y, mean, rstd))
}

/// Row normalisation backward (`x` the forward's input; shapes and the weight already checked):
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
    for t in [grad, mean, rstd] {
        x.same_kind(op, t)?;
    }
    let dx = x.cuda_output(x.shape(), x.dtype())?;
    let dw = x.cuda_output(param_shape, x.dtype())?;
    let db = x.cuda_output(param_shape, x.dtype())?;
    let inputs = RowNormGrads {
        x: x.cuda_view(op)?,
        dy: grad.cuda_view(op)?,
        mean: mean.cuda_view(op)?,
        rstd: rstd.cuda_view(op)?,
        w: weight.map(|w| w.cuda_view(op)).transpose()?,
    };
    k::row_norm_backward(
        x.gpu(),
        elem(x.dtype()),
        kernel_plan(plan),
        inputs,
        dx.cuda_ptr(),
        (dw.cuda_ptr(), db.cuda_ptr()),
    )
    .map_err(kernel_error(op, x.device()))?;
    Ok((dx, dw, db))
}
