//! Launch wrappers for `cu/optim.cu`: fused optimizer updates, one launch per parameter.

use crate::launch::{launch, View};
use crate::{CUdeviceptr, Elem, Gpu, Result};

/// One AdamW step over `n` elements: from the views `[p, g, m, v]`, the new parameter, first and
/// second moments written to the contiguous buffers `[p_out, m_out, v_out]`. `scalars` are
/// `[b1, b2, decay, step_size, eps]` as `tensor::AdamWStep` defines them. The halves compute in
/// f32.
pub fn adamw(
    gpu: &Gpu,
    elem: Elem,
    n: usize,
    scalars: [f64; 5],
    inputs: [View; 4],
    outputs: [CUdeviceptr; 3],
) -> Result<()> {
    elem.float_only("adamw")?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    let [b1, b2, decay, step_size, eps] = scalars;
    let [p, g, m, v] = inputs;
    let [p_out, m_out, v_out] = outputs;
    launch!(gpu, "optim", format!("adamw_{}", elem.suffix()), gpu.grid_for(n);
        n64, b1, b2, decay, step_size, eps, p.dims, p.ptr, g.dims, g.ptr, m.dims, m.ptr,
        v.dims, v.ptr, p_out, m_out, v_out)
}
