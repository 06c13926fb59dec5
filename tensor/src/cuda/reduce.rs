//! CUDA kernels of the reductions of `ops/reduce.rs`. `ops` checks the dims and permutes the
//! reduced ones last; here that view is read as `[rows, len]` (no copy, whatever its strides) and
//! reduced into a fresh contiguous output. `mean`, `sum_all` and `sum_to` are built on `sum`.

use kernels::reduce::{self as k, reduce_code};

use super::{elem, kernel_error};
use crate::ops::reduce::ReduceOp;
use crate::{DType, Result, Tensor};

/// `op` over the last `len` elements of each row of `x` (the input with its reduced dims
/// permuted last), as a tensor of `out_shape` (one element per row).
pub(crate) fn reduce(op: ReduceOp, x: &Tensor, len: usize, out_shape: &[usize]) -> Result<Tensor> {
    let code = match op {
        ReduceOp::Sum => reduce_code::SUM,
        ReduceOp::Max => reduce_code::MAX,
        ReduceOp::Min => reduce_code::MIN,
    };
    let op = op.name();
    let out = x.cuda_output(out_shape, x.dtype())?;
    k::reduce(
        x.gpu(),
        elem(x.dtype()),
        code,
        out.elem_count(),
        len,
        x.cuda_view(op)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(op, x.device()))?;
    Ok(out)
}

/// The i64 index of the largest of the last `len` elements of each row of `x` (the input with
/// the reduced dim permuted last), as a tensor of `out_shape`.
pub(crate) fn argmax(x: &Tensor, len: usize, out_shape: &[usize]) -> Result<Tensor> {
    let out = x.cuda_output(out_shape, DType::I64)?;
    k::argmax(
        x.gpu(),
        elem(x.dtype()),
        out.elem_count(),
        len,
        x.cuda_view("argmax")?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error("argmax", x.device()))?;
    Ok(out)
}
