//! CPU kernels of the ops of `ops/index.rs`: strided copies for cat and pad, and loops over the
//! indices (read back and range-checked here) for the selecting ops and their `*_add` backward.

use crate::cpu::{contiguous_slice, float_op};
use crate::layout::Rows;
use crate::{ensure_shape, with_dtype, CpuStorage, Element, Error, Float, Layout, Result, Tensor};

/// Copies the view `sl` of `src` into the view `dl` of `dst` (same shapes).
pub(crate) fn copy_strided<T: Copy>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
    let rows = Rows::new([dl, sl]);
    let [dd, sd] = rows.stride;
    for row in 0..rows.count {
        let [d0, s0] = rows.start(row);
        if (dd, sd) == (1, 1) {
            // Contiguous runs (a cat along a leading dim, a pad's rows): a memcpy each.
            dst[d0..d0 + rows.len].copy_from_slice(&src[s0..s0 + rows.len]);
            continue;
        }
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

/// [`Tensor::cat`] into a fresh tensor of `shape` (checked): each input copied into its slab.
pub(crate) fn cat(tensors: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    let first = tensors[0];
    let out_layout = Layout::contiguous(shape);
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
    Tensor::from_storage(storage, shape)
}

/// [`Tensor::pad`]: `shape` filled with `value`, then `x` copied into the `inner` view.
pub(crate) fn pad(x: &Tensor, shape: &[usize], inner: &Layout, value: f64) -> Result<Tensor> {
    let storage = with_dtype!(x.dtype(), T => {
        let mut out = vec![T::from_f64(value); inner.elem_count().max(shape.iter().product())];
        copy_strided(&mut out, inner, T::slice(x.cpu_storage()).expect("own dtype"), x.layout());
        T::into_storage(out)
    });
    Tensor::from_storage(storage, shape)
}

/// [`Tensor::index_select`] (`index` 1-D, `dim` checked).
pub(crate) fn index_select(x: &Tensor, dim: usize, index: &Tensor) -> Result<Tensor> {
    let (outer, size, inner) = around(x.shape(), dim);
    let idx = indices("index_select", index, size)?;
    let mut shape = x.shape().to_vec();
    shape[dim] = idx.len();
    let storage = with_dtype!(x.dtype(), T => {
        let src = contiguous_slice(T::slice(x.cpu_storage()).expect("own dtype"), x.layout());
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

/// [`Tensor::index_add`]: `source`'s slices added into zeros of `shape` at `index` along `dim`
/// (`dim < shape.len()` checked).
pub(crate) fn index_add(
    source: &Tensor,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    let (outer, size, inner) = around(shape, dim);
    let idx = indices("index_add", index, size)?;
    ensure_shape!(
        source.dim("index_add", dim)? == idx.len(),
        "index_add",
        "source {:?} has not {} slices along dim {dim}",
        source.shape(),
        idx.len()
    );
    let storage = float_op!("index_add", source.cpu_storage(), |v: T| {
        let src = contiguous_slice(v, source.layout());
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

/// [`Tensor::gather`] (shapes checked).
pub(crate) fn gather(x: &Tensor, dim: usize, index: &Tensor) -> Result<Tensor> {
    let targets = gather_targets("gather", dim, index, x.shape())?;
    let storage = with_dtype!(x.dtype(), T => {
        let src = T::slice(x.cpu_storage()).expect("own dtype");
        T::into_storage(targets.iter().map(|t| src[x.layout().index_of(t)]).collect())
    });
    Tensor::from_storage(storage, index.shape())
}

/// [`Tensor::scatter_add`] (shapes checked: `source` shaped like `index`, which fits `shape`).
pub(crate) fn scatter_add(
    source: &Tensor,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    let targets = gather_targets("scatter_add", dim, index, shape)?;
    let out_layout = Layout::contiguous(shape);
    let storage = float_op!("scatter_add", source.cpu_storage(), |v: T| {
        let src = contiguous_slice(v, source.layout());
        let mut out = vec![T::ZERO; out_layout.elem_count()];
        for (k, t) in targets.iter().enumerate() {
            out[out_layout.index_of(t)] += src[k];
        }
        T::into_storage(out)
    });
    Tensor::from_storage(storage, shape)
}

/// For each element of `index` (row-major), the multi-index it points to in a tensor of `shape`:
/// its own position with `dim` replaced by the index value (the shapes checked by `ops`).
fn gather_targets(
    op: &'static str,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Vec<Vec<usize>>> {
    let ishape = index.shape();
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
