//! CUDA kernel of the fused optimizer update of `ops/optim.rs`: one launch per parameter.

use kernels::optim as k;

use super::{elem, kernel_error};
use crate::{AdamWStep, Result, Tensor};

/// The new `(p, m, v)` of [`Tensor::adamw_update`]; the arguments were checked there.
pub(crate) fn adamw_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "adamw_update";
    let out = || p.cuda_output(p.shape(), p.dtype());
    let outs = [out()?, out()?, out()?];
    k::adamw(
        p.gpu(),
        elem(p.dtype()),
        p.elem_count(),
        [s.b1, s.b2, s.decay, s.step_size, s.eps],
        [
            p.cuda_view(OP)?,
            g.cuda_view(OP)?,
            m.cuda_view(OP)?,
            v.cuda_view(OP)?,
        ],
        [outs[0].cuda_ptr(), outs[1].cuda_ptr(), outs[2].cuda_ptr()],
    )
    .map_err(kernel_error(OP, p.device()))?;
    let [p, m, v] = outs;
    Ok((p, m, v))
}
