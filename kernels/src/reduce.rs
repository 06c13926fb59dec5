//! Launch wrappers for `cu/reduce.cu`: sum, max, min and argmax over the rows of a strided view.
//!
//! The input view has shape `[rows, len]` in row-major order (the caller permutes the reduced
//! dims last; any number of dims may sit on each side); the output is a contiguous buffer of one
//! value per row.

use std::sync::Arc;

use cudarc::driver::LaunchConfig;

use crate::launch::{launch, View};
use crate::{CUdeviceptr, Elem, Error, Gpu, Result};

/// Reduction codes: the `R_*` constants of `reduce.cu`.
#[allow(missing_docs)]
pub mod reduce_code {
    pub const SUM: i32 = 0;
    pub const MAX: i32 = 1;
    pub const MIN: i32 = 2;
}

/// Rows of at most this many elements get a thread each (`*_short` kernels).
const SHORT_ROW: usize = 32;

/// Blocks launched at most for a row kernel; the kernels loop over further rows.
const MAX_BLOCKS: usize = 1 << 16;

/// Launch shape of the row kernels (`FOR_ROWS` in the .cu files): a warp per row, 8 rows a block,
/// for rows up to 512 elements; a whole block per row above, 256 or 512 threads (at most the
/// kernels' `MAX_THREADS`).
pub(crate) fn rows_config(rows: usize, len: usize) -> LaunchConfig {
    let (tx, ty) = match len {
        0..=512 => (32, 8),
        513..=4096 => (256, 1),
        _ => (512, 1),
    };
    let blocks = rows.div_ceil(ty).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (tx as u32, ty as u32, 1),
        shared_mem_bytes: 0,
    }
}

/// How many blocks share each row in the split path, or `None` for one row group a row. Splitting
/// pays when a few rows are long (a full sum): each part still gets 4096 elements or more, and
/// about a thousand blocks fill the GPU.
fn splits_for(rows: usize, len: usize) -> Option<usize> {
    if rows >= 128 || len < 16_384 {
        return None;
    }
    Some(len.div_ceil(4096).min(1024usize.div_ceil(rows)))
}

/// `out[r]` = the `op` ([`reduce_code`]) of row `r` of the `[rows, len]` view `x`, in `x`'s element
/// type. Sums accumulate in f64 for f32 and f64, in f32 for bf16 and f16; max and min skip NaNs.
/// A sum over empty rows is 0 (max and min of an empty row are ±inf: the caller rejects them).
pub fn reduce(
    gpu: &Arc<Gpu>,
    elem: Elem,
    op: i32,
    rows: usize,
    len: usize,
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("reduce")?;
    if rows == 0 {
        return Ok(());
    }
    let s = elem.suffix();
    let (rows64, len64) = (rows as i64, len as i64);
    if len <= SHORT_ROW {
        return launch!(gpu, "reduce", format!("reduce_short_{s}"), gpu.grid_for(rows);
            op, rows64, len64, x.dims, x.ptr, out);
    }
    let Some(splits) = splits_for(rows, len) else {
        return launch!(gpu, "reduce", format!("reduce_rows_{s}"), rows_config(rows, len);
            op, rows64, len64, x.dims, x.ptr, out);
    };
    // f64 partials, one per (row, part); freed in stream order after the finishing kernel.
    let partial = gpu.alloc(rows * splits * std::mem::size_of::<f64>())?;
    let (part_ptr, splits64) = (partial.ptr(), splits as i64);
    let blocks = LaunchConfig {
        grid_dim: ((rows * splits) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(gpu, "reduce", format!("reduce_split_{s}"), blocks;
        op, rows64, len64, splits64, x.dims, x.ptr, part_ptr)?;
    launch!(gpu, "reduce", format!("reduce_finish_{s}"), rows_config(rows, splits);
        op, rows64, splits64, part_ptr, out)
}

/// `out[r]` (i64) = the index of the largest element of row `r` of the `[rows, len]` view `x`, the
/// first on ties; a NaN wins only at index 0 (as the CPU's fold). `len` must be positive.
pub fn argmax(
    gpu: &Gpu,
    elem: Elem,
    rows: usize,
    len: usize,
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("argmax")?;
    if len == 0 {
        return Err(Error::msg("argmax over an empty dim"));
    }
    if rows == 0 {
        return Ok(());
    }
    let s = elem.suffix();
    let (rows64, len64) = (rows as i64, len as i64);
    let (name, cfg) = if len <= SHORT_ROW {
        (format!("argmax_short_{s}"), gpu.grid_for(rows))
    } else {
        (format!("argmax_rows_{s}"), rows_config(rows, len))
    };
    launch!(gpu, "reduce", name, cfg; rows64, len64, x.dims, x.ptr, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_are_warps_for_short_rows_and_blocks_for_long_ones() {
        let c = rows_config(1000, 10);
        assert_eq!((c.block_dim, c.grid_dim.0), ((32, 8, 1), 125));
        assert_eq!(rows_config(3, 1000).block_dim, (256, 1, 1));
        assert_eq!(rows_config(3, 100_000).block_dim, (512, 1, 1));
        assert_eq!(rows_config(1 << 30, 10).grid_dim.0 as usize, MAX_BLOCKS);
    }

    #[test]
    fn only_few_long_rows_split() {
        assert_eq!(splits_for(1, 100_000_000), Some(1024));
        assert_eq!(splits_for(4, 20_000), Some(5));
        assert_eq!(splits_for(1000, 100_000), None);
        assert_eq!(splits_for(1, 1000), None);
    }
}
