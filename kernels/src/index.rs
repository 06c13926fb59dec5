//! Launch wrappers for `cu/index.cu`: gather (index_select, gather) and scatter_add (index_add,
//! scatter_add) along one dim.
//!
//! Both take the data tensor's `base` view over the index's shape with the indexed dim's stride
//! set to 0: element `i` of the index addresses `base[i] + index[i] · dim_stride`. An index
//! outside `0..size` cannot raise an error inside a kernel: gather reads it as zero and
//! scatter_add skips it (the CPU ops reject it).

use crate::launch::{launch, View};
use crate::Gpu;
use crate::{CUdeviceptr, Dims, Elem, Result};

/// `out[i] = x[base(i) + index[i] · dim_stride]` for the `n` elements of the index's shape, `x`
/// being the data's buffer with `x.dims` its base view; any element type.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    gpu: &Gpu,
    elem: Elem,
    n: usize,
    size: usize,
    dim_stride: usize,
    x: View,
    index: View,
    out: CUdeviceptr,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (n64, size, dim_stride) = (n as i64, size as i64, dim_stride as i64);
    launch!(gpu, "index", format!("gather_{}", elem.suffix()), gpu.grid_for(n);
        n64, size, dim_stride, x.dims, x.ptr, index.dims, index.ptr, out)
}

/// `acc[base(i) + index[i] · dim_stride] += src[i]` with atomic adds, for the `n` elements of the
/// index's shape. `acc` is a zero-filled contiguous buffer of the arithmetic type (f64 for f64
/// sources, f32 for f32, bf16 and f16) that `base` views; float element types only.
#[allow(clippy::too_many_arguments)]
pub fn scatter_add(
    gpu: &Gpu,
    elem: Elem,
    n: usize,
    size: usize,
    dim_stride: usize,
    base: Dims,
    index: View,
    src: View,
    acc: CUdeviceptr,
) -> Result<()> {
    elem.float_only("scatter_add")?;
    if n == 0 {
        return Ok(());
    }
    let (n64, size, dim_stride) = (n as i64, size as i64, dim_stride as i64);
    launch!(gpu, "index", format!("scatter_add_{}", elem.suffix()), gpu.grid_for(n);
        n64, size, dim_stride, base, index.dims, index.ptr, src.dims, src.ptr, acc)
}
