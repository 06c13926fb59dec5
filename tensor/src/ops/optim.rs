//! Fused optimizer updates: AdamW's new parameter, first and second moments in one pass over the
//! elements, where the same step written as elementwise tensor ops takes 13 passes (and 13
//! temporaries) per parameter. The arguments are checked here; `cpu/optim.rs` and
//! `cuda/optim.rs` run the pass.

use crate::cpu::optim as cpu;
use crate::cuda::optim as cuda;
use crate::{Error, Result, Tensor};

/// The scalars of one AdamW step at step `t`, shared by every parameter, with the bias
/// corrections folded in (Kingma & Ba's "more efficient" order):
///
/// ```text
/// m ← b1·m + (1 − b1)·g          v ← b2·v + (1 − b2)·g²
/// p ← decay·p − step_size · m / (√v + eps)
/// ```
///
/// which is PyTorch's AdamW with `decay = 1 − lr·wd`, `step_size = lr·√(1 − β2^t)/(1 − β1^t)` and
/// `eps = eps·√(1 − β2^t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Decay rate of the first moment, β1.
    pub b1: f64,
    /// Decay rate of the second moment, β2.
    pub b2: f64,
    /// The factor of decoupled weight decay, `1 − lr·wd` (1 for none).
    pub decay: f64,
    /// `lr·√(1 − β2^t)/(1 − β1^t)`.
    pub step_size: f64,
    /// `eps·√(1 − β2^t)`, added to `√v`.
    pub eps: f64,
}

/// Name of the op in errors.
const OP: &str = "adamw_update";

impl Tensor {
    /// One AdamW step of the parameter `self` with gradient `grad` and moments `m` and `v`: the
    /// new `(parameter, m, v)` (formula at [`AdamWStep`]), in one pass over the elements and, on
    /// CUDA, one kernel launch. The four tensors must have the same shape, dtype and device;
    /// any layout is read (the CPU copies a non-contiguous view first, CUDA reads it in place),
    /// and the outputs are contiguous.
    ///
    /// The arithmetic is in the dtype (f32 or f64 on the CPU; on CUDA also bf16 and f16, computed
    /// in f32), in the order of the elementwise ops it replaces, so that on the CPU the results
    /// equal theirs bit for bit.
    pub fn adamw_update(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        step: &AdamWStep,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
            if t.shape() != self.shape() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "`{name}` is {:?} but the parameter is {:?}",
                        t.shape(),
                        self.shape()
                    ),
                ));
            }
            if t.dtype() != self.dtype() {
                return Err(Error::DType {
                    op: OP,
                    msg: format!(
                        "`{name}` is {} but the parameter is {}",
                        t.dtype(),
                        self.dtype()
                    ),
                });
            }
            if t.device() != self.device() {
                return Err(Error::Device {
                    op: OP,
                    device: t.device(),
                    msg: format!("`{name}` is here but the parameter is on {}", self.device()),
                });
            }
        }
        if self.is_cuda() {
            return cuda::adamw_update(self, grad, m, v, step);
        }
        cpu::adamw_update(self, grad, m, v, step)
    }
}
