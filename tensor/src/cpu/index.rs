//! Ops that move elements: cat, pad, index_select / index_add, gather / scatter_add. Each
//! `*_add` op is the backward of the selecting op beside it.

use crate::cpu::{contiguous_slice, float_op};
use crate::cuda::index as cuda;
use crate::layout::Rows;
use crate::{ensure_shape, with_dtype, CpuStorage, Element, Error, Float, Layout, Result, Tensor};

/// Copies the view `sl` of `src` into the view `dl` of `dst` (same shapes).
pub(crate) fn copy_strided<T: Copy>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
    let rows = Rows::new([dl, sl]);
    let [dd, sd] = rows.stride;
    for row in 0..rows.count {
        let [d0, s0] = rows.start(row);
        for i in 0..rows.len {
            dst[d0 + i * dd] = src[s0 + i * sd];
        }
    }
}

/// The indices of an i64 tensor as usize, each checked against `bound`.
fn indices(op: &'static str, index: &Tensor, bound: usize) -> Result<Vec<usize>> {
    // The CPU paths come here with CPU data: a CUDA index is a device mismatch, not a panic.
    if index.is_cuda() {
        return Err(Error::Device {
            op,
            device: index.device(),
            msg: "expected cpu, the device of the indexed tensor".into(),
        });
    }
    let CpuStorage::I64(_) = index.cpu_storage() else {
        return Err(Error::dtype(op, index.dtype(), "i64 indices"));
    };
    index
        .to_vec::<i64>()?
        .into_iter()
        .map(|i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < bound)
                .ok_or_else(|| {
                    Error::shape(
                        op,
                        format!("index {i} out of range for a dim of size {bound}"),
                    )
                })
        })
        .collect()
}

/// Splits `shape` around `dim`: (product before, size, product after).
fn around(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

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
        let out_layout = Layout::contiguous(&shape);
        let storage = with_dtype!(first.dtype(), T => {
            let mut out = vec![T::default(); out_layout.elem_count()];
            let mut start = 0;
            for t in tensors {
                let src = T::slice(t.cpu_storage()).expect("dtype checked");
                copy_strided(&mut out, &out_layout.narrow(dim, start, t.shape()[dim])?, src, t.layout());
                start += t.shape()[dim];
            }
            T::into_storage(out)
        });
        Tensor::from_storage(storage, &shape)
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
        let storage = with_dtype!(self.dtype(), T => {
            let mut out = vec![T::from_f64(value); inner.elem_count().max(shape.iter().product())];
            copy_strided(&mut out, &inner, T::slice(self.cpu_storage()).expect("own dtype"), self.layout());
            T::into_storage(out)
        });
        Tensor::from_storage(storage, &shape)
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
        let (outer, size, inner) = around(self.shape(), dim);
        let idx = indices("index_select", index, size)?;
        let mut shape = self.shape().to_vec();
        shape[dim] = idx.len();
        let storage = with_dtype!(self.dtype(), T => {
            let src = contiguous_slice(T::slice(self.cpu_storage()).expect("own dtype"), self.layout());
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in &idx {
                    let start = (o * size + i) * inner;
                    out.extend_from_slice(&src[start..start + inner]);
                }
            }
            T::into_storage(out)
        });
        Tensor::from_storage(storage, &shape)
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
        let (outer, size, inner) = around(shape, dim);
        let idx = indices("index_add", index, size)?;
        ensure_shape!(
            self.dim("index_add", dim)? == idx.len(),
            "index_add",
            "source {:?} has not {} slices along dim {dim}",
            self.shape(),
            idx.len()
        );
        let storage = float_op!("index_add", self.cpu_storage(), |v: T| {
            let src = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; outer * size * inner];
            for o in 0..outer {
                for (j, &i) in idx.iter().enumerate() {
                    let (d, s) = ((o * size + i) * inner, (o * idx.len() + j) * inner);
                    for k in 0..inner {
                        out[d + k] += src[s + k];
                    }
                }
            }
            T::into_storage(out)
        });
        Tensor::from_storage(storage, shape)
    }

    /// `out[.., i, ..] = self[.., index[.., i, ..], ..]` along `dim`, as torch.gather: `index` has
    /// the rank of `self` and is no larger in any other dim.
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        if self.is_cuda() {
            check_fits("gather", dim, index.shape(), self.shape())?;
            return cuda::gather(self, dim, index);
        }
        let targets = gather_targets("gather", dim, index, self.shape())?;
        let storage = with_dtype!(self.dtype(), T => {
            let src = T::slice(self.cpu_storage()).expect("own dtype");
            T::into_storage(targets.iter().map(|t| src[self.layout().index_of(t)]).collect())
        });
        Tensor::from_storage(storage, index.shape())
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
        if self.is_cuda() {
            check_fits("scatter_add", dim, index.shape(), shape)?;
            return cuda::scatter_add(self, dim, index, shape);
        }
        let targets = gather_targets("scatter_add", dim, index, shape)?;
        let out_layout = Layout::contiguous(shape);
        let storage = float_op!("scatter_add", self.cpu_storage(), |v: T| {
            let src = contiguous_slice(v, self.layout());
            let mut out = vec![T::ZERO; out_layout.elem_count()];
            for (k, t) in targets.iter().enumerate() {
                out[out_layout.index_of(t)] += src[k];
            }
            T::into_storage(out)
        });
        Tensor::from_storage(storage, shape)
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

/// For each element of `index` (row-major), the multi-index it points to in a tensor of `shape`:
/// its own position with `dim` replaced by the index value.
fn gather_targets(
    op: &'static str,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Vec<Vec<usize>>> {
    let ishape = index.shape();
    check_fits(op, dim, ishape, shape)?;
    let idx = indices(op, index, shape[dim])?;
    let mut pos = vec![0; ishape.len()];
    let mut out = Vec::with_capacity(idx.len());
    for &i in &idx {
        let mut target = pos.clone();
        target[dim] = i;
        out.push(target);
        for d in (0..ishape.len()).rev() {
            pos[d] += 1;
            if pos[d] < ishape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(out)
}
