//! CUDA kernels of the ops of `ops/index.rs`. cat and pad are strided copies into views of the
//! output (no kernel of their own); index_select and gather share the `gather` kernel, index_add
//! and scatter_add the `scatter_add` kernel (atomic adds into a zero-filled f32/f64 buffer).
//!
//! Indices are checked for dtype (i64), device and range, as on the CPU: the range check reads
//! the index's minimum and maximum back (one wait for the device per call), because an
//! out-of-range label is bad input that must be an error, not a silent zero. The kernels still
//! skip out-of-range indices, so nothing outside a buffer is touched either way.

use kernels::elementwise as ew;
use kernels::index as k;
use kernels::View;

use super::{check_float, dims, elem, kernel_error};
use crate::{contiguous_strides, ensure_shape, DType, Error, Layout, Result, Tensor};

/// The index must be an i64 tensor on `x`'s device with every value in `0..bound`.
fn check_index(op: &'static str, x: &Tensor, index: &Tensor, bound: usize) -> Result<()> {
    x.same_device(op, index)?;
    if index.dtype() != DType::I64 {
        return Err(Error::dtype(op, index.dtype(), "i64 indices"));
    }
    if index.elem_count() == 0 {
        return Ok(());
    }
    // f64 holds every index a tensor can have exactly.
    let all: Vec<usize> = (0..index.rank()).collect();
    let values = index.to_dtype(DType::F64)?;
    let lo = values.min(&all, false)?.reshape(&[1])?;
    let hi = values.max(&all, false)?.reshape(&[1])?;
    let range = Tensor::cat(&[&lo, &hi], 0)?.to_vec::<f64>()?;
    for v in range {
        if v < 0.0 || v >= bound as f64 {
            return Err(Error::shape(
                op,
                format!("index {v} out of range for a dim of size {bound}"),
            ));
        }
    }
    Ok(())
}

/// The view of `layout` (a tensor's, or a contiguous output's) over `shape`, with `dim`'s stride
/// set to 0: the base address of each index element, to which the kernels add
/// `index · stride[dim]`.
fn base_layout(layout: &Layout, shape: &[usize], dim: usize) -> Layout {
    let mut strides = layout.strides().to_vec();
    strides[dim] = 0;
    Layout::new(shape.to_vec(), strides, layout.offset())
}

/// A 1-D index tensor as a view over `shape`: index `i` along `dim`, broadcast elsewhere.
fn spread_index(index: &Tensor, shape: &[usize], dim: usize) -> Layout {
    let l = index.layout();
    let mut strides = vec![0; shape.len()];
    strides[dim] = l.strides()[0];
    Layout::new(shape.to_vec(), strides, l.offset())
}

/// A kernel input: the tensor's buffer seen through `layout`.
fn view_as(op: &'static str, x: &Tensor, layout: &Layout) -> Result<View> {
    Ok(View {
        ptr: x.cuda_ptr(),
        dims: dims(op, layout)?,
    })
}

/// [`Tensor::cat`] into a fresh tensor of `shape`: each input copied into its slab.
pub(crate) fn cat(tensors: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "cat";
    let first = tensors[0];
    let out = first.cuda_output(shape, first.dtype())?;
    let out_layout = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        let len = t.shape()[dim];
        let slab = view_as(OP, &out, &out_layout.narrow(dim, start, len)?)?;
        ew::copy(
            out.gpu(),
            elem(t.dtype()),
            t.elem_count(),
            t.cuda_view(OP)?,
            slab,
        )
        .map_err(kernel_error(OP, out.device()))?;
        start += len;
    }
    Ok(out)
}

/// [`Tensor::pad`]: `shape` filled with `value`, then `x` copied into the `inner` view.
pub(crate) fn pad(x: &Tensor, shape: &[usize], inner: &Layout, value: f64) -> Result<Tensor> {
    const OP: &str = "pad";
    let out = x.cuda_output(shape, x.dtype())?;
    let e = kernel_error(OP, x.device());
    let el = elem(x.dtype());
    ew::fill(x.gpu(), el, out.elem_count(), value, out.cuda_ptr()).map_err(&e)?;
    let interior = view_as(OP, &out, inner)?;
    ew::copy(x.gpu(), el, x.elem_count(), x.cuda_view(OP)?, interior).map_err(&e)?;
    Ok(out)
}

/// [`Tensor::index_select`] (`index` 1-D, `dim` checked).
pub(crate) fn index_select(x: &Tensor, dim: usize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_select";
    check_index(OP, x, index, x.shape()[dim])?;
    let mut shape = x.shape().to_vec();
    shape[dim] = index.elem_count();
    let out = x.cuda_output(&shape, x.dtype())?;
    k::gather(
        x.gpu(),
        elem(x.dtype()),
        out.elem_count(),
        x.shape()[dim],
        x.layout().strides()[dim],
        view_as(OP, x, &base_layout(x.layout(), &shape, dim))?,
        view_as(OP, index, &spread_index(index, &shape, dim))?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, x.device()))?;
    Ok(out)
}

/// [`Tensor::index_add`]: `src`'s slices added into zeros of `shape` at `index` along `dim`
/// (`dim < shape.len()` checked).
pub(crate) fn index_add(
    src: &Tensor,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "index_add";
    check_float(OP, src)?;
    check_index(OP, src, index, shape[dim])?;
    let index = index.reshape(&[index.elem_count()])?;
    // The CPU op reads the source as [outer, len(index), inner]; here every dim but `dim` must
    // match, since a mismatch would address memory outside the output.
    ensure_shape!(
        src.rank() == shape.len()
            && src.shape()[dim] == index.elem_count()
            && (0..shape.len()).all(|d| d == dim || src.shape()[d] == shape[d]),
        OP,
        "source {:?} does not fit shape {shape:?} with {} slices along dim {dim}",
        src.shape(),
        index.elem_count()
    );
    let idx = spread_index(&index, src.shape(), dim);
    scatter_add_into(OP, src, dim, &index, &idx, shape)
}

/// [`Tensor::gather`] (shapes checked).
pub(crate) fn gather(x: &Tensor, dim: usize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "gather";
    check_index(OP, x, index, x.shape()[dim])?;
    let out = x.cuda_output(index.shape(), x.dtype())?;
    k::gather(
        x.gpu(),
        elem(x.dtype()),
        out.elem_count(),
        x.shape()[dim],
        x.layout().strides()[dim],
        view_as(OP, x, &base_layout(x.layout(), index.shape(), dim))?,
        index.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, x.device()))?;
    Ok(out)
}

/// [`Tensor::scatter_add`] (shapes checked: `src` shaped like `index`, which fits `shape`).
pub(crate) fn scatter_add(
    src: &Tensor,
    dim: usize,
    index: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "scatter_add";
    check_float(OP, src)?;
    check_index(OP, src, index, shape[dim])?;
    scatter_add_into(OP, src, dim, index, index.layout(), shape)
}

/// Adds each element of `src` into zeros of `shape` at its own position with `dim` replaced by
/// the index read through `idx` (a view of `index` over `src`'s shape). The sums accumulate in
/// f32 (f64 for f64) and are cast to `src`'s dtype at the end.
fn scatter_add_into(
    op: &'static str,
    src: &Tensor,
    dim: usize,
    index: &Tensor,
    idx: &Layout,
    shape: &[usize],
) -> Result<Tensor> {
    let e = kernel_error(op, src.device());
    let acc_dtype = if src.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let acc = src.cuda_output(shape, acc_dtype)?;
    ew::fill(
        src.gpu(),
        elem(acc_dtype),
        acc.elem_count(),
        0.0,
        acc.cuda_ptr(),
    )
    .map_err(&e)?;
    let strides = contiguous_strides(shape);
    k::scatter_add(
        src.gpu(),
        elem(src.dtype()),
        src.elem_count(),
        shape[dim],
        strides[dim],
        dims(
            op,
            &base_layout(&Layout::contiguous(shape), src.shape(), dim),
        )?,
        view_as(op, index, idx)?,
        src.cuda_view(op)?,
        acc.cuda_ptr(),
    )
    .map_err(&e)?;
    acc.to_dtype(src.dtype())
}

/// CUDA against CPU; each test returns early (passing) on a machine without a GPU.
#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_close, cuda as gpu};
    use crate::{DType, Device, Generator, Tensor};

    /// A [2, 3, 4, 5] f64 tensor seen through a transpose (non-contiguous), on the CPU.
    fn sample(gen: &mut Generator) -> Tensor {
        Tensor::randn(&[2, 3, 5, 4], 0.0, 1.0, DType::F64, Device::Cpu, gen)
            .unwrap()
            .transpose(2, 3)
            .unwrap()
    }

    fn index(values: &[i64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape).unwrap()
    }

    #[test]
    fn cat_stack_and_pad_match_the_cpu_for_every_dtype() {
        let Some(dev) = gpu() else { return };
        let mut gen = Generator::new(1);
        let (a, b) = (sample(&mut gen), sample(&mut gen).narrow(1, 0, 2).unwrap());
        for dtype in DType::ALL {
            let (a, b) = (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
            let (ga, gb) = (a.to_device(dev).unwrap(), b.to_device(dev).unwrap());
            let want = Tensor::cat(&[&a, &b, &a], 1).unwrap();
            assert_close(
                "index",
                &Tensor::cat(&[&ga, &gb, &ga], 1).unwrap(),
                &want,
                0.0,
            );
            let want = Tensor::stack(&[&a, &a], 2).unwrap();
            assert_close("index", &Tensor::stack(&[&ga, &ga], 2).unwrap(), &want, 0.0);
            let want = a.pad(&[(1, 2), (0, 3)], 7.0).unwrap();
            assert_close(
                "index",
                &ga.pad(&[(1, 2), (0, 3)], 7.0).unwrap(),
                &want,
                0.0,
            );
        }
    }

    #[test]
    fn index_select_and_gather_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let x = sample(&mut Generator::new(2));
        let gx = x.to_device(dev).unwrap();
        for dim in [0, 1, 3] {
            let size = x.shape()[dim] as i64;
            // A strided index (stride 2): column 0 of [[size - 1, 9], [0, 9], [size / 2, 9], [0, 9]].
            let full = index(&[size - 1, 9, 0, 9, size / 2, 9, 0, 9], &[4, 2]);
            let column = |t: &Tensor| t.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
            let (i, gi) = (column(&full), column(&full.to_device(dev).unwrap()));
            assert_close(
                "index",
                &gx.index_select(dim, &gi).unwrap(),
                &x.index_select(dim, &i).unwrap(),
                0.0,
            );
        }
        // gather along dim 2 with an index smaller than the input in dim 3.
        let vals: Vec<i64> = (0..2 * 3 * 6 * 3).map(|k| (k * 7 % 4) as i64).collect();
        let i = index(&vals, &[2, 3, 6, 3]);
        let gi = i.to_device(dev).unwrap();
        for dtype in [DType::F32, DType::I64, DType::BF16] {
            let (x, gx) = (x.to_dtype(dtype).unwrap(), gx.to_dtype(dtype).unwrap());
            assert_close(
                "index",
                &gx.gather(2, &gi).unwrap(),
                &x.gather(2, &i).unwrap(),
                0.0,
            );
        }
    }

    #[test]
    fn index_add_and_scatter_add_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let mut gen = Generator::new(3);
        // An embedding-style backward: repeated rows along dim 0.
        let src = Tensor::randn(&[6, 5], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let i = index(&[2, 0, 2, 7, 2, 1], &[6]);
        let gi = i.to_device(dev).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let src = src.to_dtype(dtype).unwrap();
            let want = src.to_dtype(DType::F64).unwrap();
            let want = want.index_add(0, &i, &[8, 5]).unwrap();
            let got = src
                .to_device(dev)
                .unwrap()
                .index_add(0, &gi, &[8, 5])
                .unwrap();
            assert_eq!(got.dtype(), dtype);
            assert_close("index", &got, &want, tol);
        }
        // Along dim 1 of a transposed source.
        let src = Tensor::randn(&[4, 3], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen)
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let i = index(&[1, 1, 0, 3], &[4]);
        let want = src.index_add(1, &i, &[3, 5]).unwrap();
        let got = src
            .to_device(dev)
            .unwrap()
            .index_add(1, &i.to_device(dev).unwrap(), &[3, 5])
            .unwrap();
        assert_close("index", &got, &want, 1e-6);
        // scatter_add, the backward of gather.
        let src =
            Tensor::randn(&[2, 3, 6, 3], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
        let vals: Vec<i64> = (0..2 * 3 * 6 * 3).map(|k| (k * 5 % 4) as i64).collect();
        let i = index(&vals, &[2, 3, 6, 3]);
        let want = src.scatter_add(2, &i, &[2, 3, 4, 5]).unwrap();
        let got = src
            .to_device(dev)
            .unwrap()
            .scatter_add(2, &i.to_device(dev).unwrap(), &[2, 3, 4, 5])
            .unwrap();
        assert_close("index", &got, &want, 1e-5);
    }

    #[test]
    fn out_of_range_and_non_integer_indices_are_errors() {
        let Some(dev) = gpu() else { return };
        let x = Tensor::ones(&[3, 2], DType::F32, dev).unwrap();
        for bad in [[0i64, 5, 1], [0, -1, 2]] {
            let i = index(&bad, &[3]).to_device(dev).unwrap();
            let err = x.index_select(0, &i).unwrap_err().to_string();
            assert!(
                err.contains("index_select") && err.contains("out of range"),
                "{err}"
            );
            assert!(x.index_add(0, &i, &[4, 2]).is_err());
        }
        let f = index(&[0, 1, 2], &[3]).to_device(dev).unwrap();
        assert!(x.index_select(0, &f.to_dtype(DType::F32).unwrap()).is_err());
    }
}
