//! Ops that move elements: cat, stack, pad, index_select / index_add, gather / scatter_add.
//! Each `*_add` op is the backward of the selecting op beside it. Shapes are checked here; the
//! indices' values (dtype, device, range) are checked by each backend where it reads them.

use crate::cpu::index as cpu;
use crate::cuda::index as cuda;
use crate::{ensure_shape, Error, Layout, Result, Tensor};

impl Tensor {
    /// Concatenation along `dim`; all shapes must agree elsewhere.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::shape("cat", "no tensors to concatenate"))?;
        first.dim("cat", dim)?;
        let mut shape = first.shape().to_vec();
        shape[dim] = 0;
        for t in tensors {
            first.same_kind("cat", t)?;
            let same = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
            ensure_shape!(
                same,
                "cat",
                "shapes {:?} and {:?} differ outside dim {dim}",
                first.shape(),
                t.shape()
            );
            shape[dim] += t.shape()[dim];
        }
        if first.is_cuda() {
            return cuda::cat(tensors, dim, &shape);
        }
        cpu::cat(tensors, dim, &shape)
    }

    /// Stacks equal-shaped tensors along a new dim `dim`.
    pub fn stack(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let views = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&views.iter().collect::<Vec<_>>(), dim)
    }

    /// Pads the last `pads.len()` dims with `value`: `pads[i] = (before, after)` for dim
    /// `rank - pads.len() + i`. E.g. `[(1, 1), (2, 2)]` pads H by 1 and W by 2 of an NCHW tensor.
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
        ensure_shape!(
            pads.len() <= self.rank(),
            "pad",
            "{} pads for shape {:?}",
            pads.len(),
            self.shape()
        );
        let lead = self.rank() - pads.len();
        let mut shape = self.shape().to_vec();
        for (i, &(b, a)) in pads.iter().enumerate() {
            shape[lead + i] += b + a;
        }
        let mut inner = Layout::contiguous(&shape);
        for (i, &(b, _)) in pads.iter().enumerate() {
            inner = inner.narrow(lead + i, b, self.shape()[lead + i])?;
        }
        if self.is_cuda() {
            return cuda::pad(self, &shape, &inner, value);
        }
        cpu::pad(self, &shape, &inner, value)
    }

    /// The slices `index[i]` along `dim` (index: 1-D i64), as torch.index_select; with dim 0 this
    /// is an embedding lookup.
    pub fn index_select(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        ensure_shape!(
            index.rank() == 1,
            "index_select",
            "index must be 1-D, got shape {:?}",
            index.shape()
        );
        self.dim("index_select", dim)?;
        if self.is_cuda() {
            return cuda::index_select(self, dim, index);
        }
        cpu::index_select(self, dim, index)
    }

    /// Adds the slices of `self` (the gradient of an index_select) into zeros of `shape` at
    /// `index` along `dim`: the backward of [`Tensor::index_select`].
    pub fn index_add(&self, dim: usize, index: &Tensor, shape: &[usize]) -> Result<Tensor> {
        ensure_shape!(
            dim < shape.len(),
            "index_add",
            "dim {dim} out of range for shape {shape:?}"
        );
        if self.is_cuda() {
            return cuda::index_add(self, dim, index, shape);
        }
        cpu::index_add(self, dim, index, shape)
    }

    /// `out[.., i, ..] = self[.., index[.., i, ..], ..]` along `dim`, as torch.gather: `index` has
    /// the rank of `self` and is no larger in any other dim.
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        check_fits("gather", dim, index.shape(), self.shape())?;
        if self.is_cuda() {
            return cuda::gather(self, dim, index);
        }
        cpu::gather(self, dim, index)
    }

    /// Adds `self` (shaped like `index`) into zeros of `shape` at `index` along `dim`: the
    /// backward of [`Tensor::gather`].
    pub fn scatter_add(&self, dim: usize, index: &Tensor, shape: &[usize]) -> Result<Tensor> {
        ensure_shape!(
            self.shape() == index.shape(),
            "scatter_add",
            "source {:?} and index {:?} differ",
            self.shape(),
            index.shape()
        );
        check_fits("scatter_add", dim, index.shape(), shape)?;
        if self.is_cuda() {
            return cuda::scatter_add(self, dim, index, shape);
        }
        cpu::scatter_add(self, dim, index, shape)
    }
}

/// Checks that an index of shape `ishape` fits a tensor of `shape` along `dim` (gather's rule).
fn check_fits(op: &'static str, dim: usize, ishape: &[usize], shape: &[usize]) -> Result<()> {
    ensure_shape!(
        ishape.len() == shape.len()
            && dim < shape.len()
            && (0..shape.len()).all(|d| d == dim || ishape[d] <= shape[d]),
        op,
        "index {ishape:?} does not fit shape {shape:?} along dim {dim}"
    );
    Ok(())
}
