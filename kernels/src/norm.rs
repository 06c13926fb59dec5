//! Launch wrappers for `cu/norm.cu`: softmax and log-softmax along rows (forward and backward),
//! and the row normalisation behind layer norm and group norm.

use std::sync::Arc;

use cudarc::driver::LaunchConfig;

use crate::launch::{launch, View};
use crate::reduce::rows_config;
use crate::{CUdeviceptr, Dims, Elem, Gpu, Result};

/// `y` = softmax (or, with `log`, log-softmax) of each row of the `[rows, len]` view `x`, written
/// through the view `y` of the output buffer (element `r · len + j` of both views pair up).
pub fn softmax(
    gpu: &Gpu,
    elem: Elem,
    log: bool,
    rows: usize,
    len: usize,
    x: View,
    y: View,
) -> Result<()> {
    elem.float_only("softmax")?;
    if rows == 0 || len == 0 {
        return Ok(());
    }
    let (log, rows64, len64) = (log as i32, rows as i64, len as i64);
    launch!(gpu, "norm", format!("softmax_{}", elem.suffix()), rows_config(rows, len);
        log, rows64, len64, x.dims, x.ptr, y.dims, y.ptr)
}

/// The gradient through softmax (or log-softmax) from its output `y` and the output gradient `g`,
/// row by row as [`softmax`], written through the view `out`.
#[allow(clippy::too_many_arguments)] // mirrors the kernel's argument list
pub fn softmax_backward(
    gpu: &Gpu,
    elem: Elem,
    log: bool,
    rows: usize,
    len: usize,
    y: View,
    g: View,
    out: View,
) -> Result<()> {
    elem.float_only("softmax_backward")?;
    if rows == 0 || len == 0 {
        return Ok(());
    }
    let (log, rows64, len64) = (log as i32, rows as i64, len as i64);
    launch!(gpu, "norm", format!("softmax_backward_{}", elem.suffix()), rows_config(rows, len);
        log, rows64, len64, y.dims, y.ptr, g.dims, g.ptr, out.dims, out.ptr)
}

/// The shape of a row normalisation: `rows` rows of `len` elements (contiguous runs of the
/// input's row-major order), element `j` of row `r` scaled by the affine parameter
/// `((r % groups) · len + j) / inner`. Layer norm: `groups = inner = 1`. Group norm of
/// `[N, C, *spatial]`: `rows = N · groups`, `len = C / groups · spatial`, `inner = spatial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowNorm {
    /// Rows normalised independently.
    pub rows: usize,
    /// Elements per row.
    pub len: usize,
    /// Rows per cycle of the affine parameters (group norm's group count).
    pub groups: usize,
    /// Consecutive elements sharing one parameter (group norm's spatial size).
    pub inner: usize,
}

impl RowNorm {
    /// Number of affine parameters.
    pub fn params(&self) -> usize {
        self.groups * self.len / self.inner
    }
}

/// The address and dims of an optional input (null address and an empty view when absent).
fn optional(v: Option<View>) -> (CUdeviceptr, Dims) {
    v.map_or((0, Dims::contiguous(0, 0)), |v| (v.ptr, v.dims))
}

/// Row normalisation forward: `y` (contiguous, like `x`) = `(x − mean)·rstd·w + b` with the
/// optional parameters `w` and `b`, and each row's `mean` and `rstd` = 1/√(var + eps) (biased
/// variance), contiguous, in the element type.
#[allow(clippy::too_many_arguments)] // mirrors the kernel's argument list
pub fn row_norm(
    gpu: &Gpu,
    elem: Elem,
    plan: RowNorm,
    eps: f64,
    x: View,
    (w, b): (Option<View>, Option<View>),
    y: CUdeviceptr,
    (mean, rstd): (CUdeviceptr, CUdeviceptr),
) -> Result<()> {
    elem.float_only("row_norm")?;
    if plan.rows == 0 || plan.len == 0 {
        return Ok(());
    }
    let (rows, len) = (plan.rows as i64, plan.len as i64);
    let (groups, inner) = (plan.groups as i64, plan.inner as i64);
    let ((wp, wd), (bp, bd)) = (optional(w), optional(b));
    launch!(gpu, "norm", format!("row_norm_{}", elem.suffix()), rows_config(plan.rows, plan.len);
        rows, len, groups, inner, eps, x.dims, x.ptr, wd, wp, bd, bp, y, mean, rstd)
}

/// The inputs of the row normalisation backward: the forward's input, the output gradient, the
/// forward's per-row mean and rstd, and its optional weight.
#[derive(Clone, Copy, Debug)]
pub struct RowNormGrads {
    /// The forward's input.
    pub x: View,
    /// The gradient of the forward's output.
    pub dy: View,
    /// One mean per row.
    pub mean: View,
    /// One 1/√(var + eps) per row.
    pub rstd: View,
    /// The affine weight, if any.
    pub w: Option<View>,
}

/// Row normalisation backward: `dx` (contiguous, like `x`), and `dw` = Σ dy·x̂ and `db` = Σ dy
/// per affine parameter ([`RowNorm::params`] each, written even without a weight).
pub fn row_norm_backward(
    gpu: &Arc<Gpu>,
    elem: Elem,
    plan: RowNorm,
    inp: RowNormGrads,
    dx: CUdeviceptr,
    (dw, db): (CUdeviceptr, CUdeviceptr),
) -> Result<()> {
    elem.float_only("row_norm_backward")?;
    let s = elem.suffix();
    let params = plan.params();
    if plan.rows == 0 || plan.len == 0 {
        // No element: the parameter gradients are zero sums.
        crate::elementwise::fill(gpu, elem, params, 0.0, dw)?;
        return crate::elementwise::fill(gpu, elem, params, 0.0, db);
    }
    let (rows, len) = (plan.rows as i64, plan.len as i64);
    let (groups, inner) = (plan.groups as i64, plan.inner as i64);
    let (x, g, m, r) = (inp.x, inp.dy, inp.mean, inp.rstd);
    let (wp, wd) = optional(inp.w);
    launch!(gpu, "norm", format!("row_norm_backward_{s}"), rows_config(plan.rows, plan.len);
        rows, len, groups, inner, x.dims, x.ptr, g.dims, g.ptr, m.dims, m.ptr, r.dims, r.ptr,
        wd, wp, dx)?;

    // dw and db: column sums over [cycles, cols] in `chunks` slices of `per` cycles, enough
    // slices for about 2^18 threads, then one row group per parameter over its partials.
    let cols = plan.groups * plan.len;
    let cycles = plan.rows / plan.groups;
    let per = cycles.div_ceil((1usize << 18).div_ceil(cols).clamp(1, 1024));
    let chunks = cycles.div_ceil(per);
    let part = gpu.alloc(2 * chunks * cols * std::mem::size_of::<f64>())?;
    let part_w = part.ptr();
    let part_b = part_w + (chunks * cols * std::mem::size_of::<f64>()) as u64;
    let threads = 256;
    let partial_cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(threads).min(1 << 16) as u32, chunks as u32, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (cycles64, cols64, per64) = (cycles as i64, cols as i64, per as i64);
    launch!(gpu, "norm", format!("norm_param_partial_{s}"), partial_cfg;
        cycles64, cols64, len, per64, x.dims, x.ptr, g.dims, g.ptr, m.dims, m.ptr, r.dims, r.ptr,
        part_w, part_b)?;
    let (params64, chunks64) = (params as i64, chunks as i64);
    launch!(gpu, "norm", format!("norm_param_finish_{s}"),
        rows_config(params, chunks * plan.inner);
        params64, chunks64, cols64, inner, part_w, part_b, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_norm_parameters_are_channels() {
        // [N=2, C=6, 4 positions] in 3 groups: rows of 2 channels × 4 positions.
        let plan = RowNorm {
            rows: 6,
            len: 8,
            groups: 3,
            inner: 4,
        };
        assert_eq!(plan.params(), 6);
        let layer = RowNorm {
            rows: 10,
            len: 768,
            groups: 1,
            inner: 1,
        };
        assert_eq!(layer.params(), 768);
    }
}
