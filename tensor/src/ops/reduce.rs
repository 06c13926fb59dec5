//! Reductions over dims: sum, max, min (with keepdim), argmax, and `sum_to`, which undoes a
//! broadcast (the backward of every broadcasting op). The dims are checked and permuted last
//! here; `cpu/reduce.rs` and `cuda/reduce.rs` reduce the rows of that view.

use crate::cpu::reduce as cpu;
use crate::cuda::reduce as cuda;
use crate::{ensure_shape, Result, Tensor};

/// A reduction of rows to one value each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    /// The op's name, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// Checks `dims` (distinct, in range) and returns the permutation that moves them last, and the
/// output shape.
pub(crate) fn reduce_plan(
    op: &'static str,
    shape: &[usize],
    dims: &[usize],
    keepdim: bool,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut reduced = vec![false; shape.len()];
    for &d in dims {
        ensure_shape!(
            d < shape.len() && !reduced[d],
            op,
            "dims {dims:?} invalid for shape {shape:?} (out of range or repeated)"
        );
        reduced[d] = true;
    }
    let kept = (0..shape.len()).filter(|&d| !reduced[d]);
    let perm: Vec<usize> = kept.clone().chain(dims.iter().copied()).collect();
    let out_shape = if keepdim {
        shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if reduced[d] { 1 } else { n })
            .collect()
    } else {
        kept.map(|d| shape[d]).collect()
    };
    Ok((perm, out_shape))
}

impl Tensor {
    fn reduce(&self, op: ReduceOp, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let (perm, out_shape) = reduce_plan(op.name(), self.shape(), dims, keepdim)?;
        let row_len: usize = dims.iter().map(|&d| self.shape()[d]).product();
        ensure_shape!(
            row_len > 0 || op == ReduceOp::Sum,
            op.name(),
            "cannot take the {} over empty dims {dims:?} of shape {:?}",
            op.name(),
            self.shape()
        );
        let x = self.permute(&perm)?;
        if self.is_cuda() {
            return cuda::reduce(op, &x, row_len, &out_shape);
        }
        cpu::reduce(op, self, dims, &x, row_len, &out_shape)
    }

    /// Sum over `dims`; with `keepdim` the reduced dims stay as size 1.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim)
    }

    /// Maximum over `dims`.
    pub fn max(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim)
    }

    /// Minimum over `dims`.
    pub fn min(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let n: usize = dims.iter().filter_map(|&d| self.shape().get(d)).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / n as f64)
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Sums the dims that broadcasting from `shape` to `self.shape()` expanded, giving a tensor of
    /// `shape`: the backward of a broadcast.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let n = self.rank();
        ensure_shape!(
            shape.len() <= n,
            "sum_to",
            "cannot sum {:?} to the larger rank {shape:?}",
            self.shape()
        );
        let lead = n - shape.len();
        let dims: Vec<usize> = (0..n)
            .filter(|&d| d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1))
            .collect();
        for d in lead..n {
            ensure_shape!(
                shape[d - lead] == self.shape()[d] || shape[d - lead] == 1,
                "sum_to",
                "{shape:?} does not broadcast to {:?}",
                self.shape()
            );
        }
        self.sum(&dims, true)?.reshape(shape)
    }

    /// Index of the largest element along `dim` (the first on ties), as i64.
    pub fn argmax(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        let (perm, out_shape) = reduce_plan("argmax", self.shape(), &[dim], keepdim)?;
        let len = self.shape()[dim];
        ensure_shape!(
            len > 0,
            "argmax",
            "dim {dim} of shape {:?} is empty",
            self.shape()
        );
        let x = self.permute(&perm)?;
        if self.is_cuda() {
            return cuda::argmax(&x, len, &out_shape);
        }
        cpu::argmax(&x, len, &out_shape)
    }
}
