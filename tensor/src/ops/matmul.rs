//! Matrix product over the last two dims with broadcast batch dims: the checks, the batch
//! broadcast, and the dispatch to the `gemm` crate on the CPU (`cpu/matmul.rs`) or one batched
//! GEMM launch on CUDA (`cuda/matmul.rs`). Both read the operands through their views, so
//! transposes cost no copy.

use crate::cpu::matmul as cpu;
use crate::cuda::matmul as cuda;
use crate::layout::broadcast_shapes;
use crate::{ensure_shape, Error, Result, Tensor};

impl Tensor {
    /// Matrix product over the last two dims, broadcasting the batch dims:
    /// `[.., m, k] x [.., k, n] -> [.., m, n]`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![1f32, 0., 0., 1.], &[1, 2, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.same_kind("matmul", rhs)?;
        let (a, b) = (self.shape(), rhs.shape());
        ensure_shape!(
            a.len() >= 2 && b.len() >= 2,
            "matmul",
            "lhs {a:?} and rhs {b:?}: both need at least 2 dims"
        );
        let (m, k, k2, n) = (
            a[a.len() - 2],
            a[a.len() - 1],
            b[b.len() - 2],
            b[b.len() - 1],
        );
        ensure_shape!(
            k == k2,
            "matmul",
            "lhs {a:?} and rhs {b:?}: inner dimensions {k} and {k2} differ"
        );
        let batch =
            broadcast_shapes("matmul", &a[..a.len() - 2], &b[..b.len() - 2]).map_err(|_| {
                Error::shape(
                    "matmul",
                    format!("lhs {a:?} and rhs {b:?}: batch dimensions do not broadcast"),
                )
            })?;
        // [.., m, k] x [k, n] with the lhs rows evenly strided: its batch dims fold into the
        // rows of one GEMM (a Linear layer's shape), where a batched GEMM would run many small ones.
        if b.len() == 2 && a.len() > 2 {
            let rows = a[..a.len() - 1].iter().product();
            if let Some(flat) = self.layout().reshape(&[rows, k]) {
                let out_shape = [&a[..a.len() - 1], &[n]].concat();
                return self.view(flat).matmul(rhs)?.reshape(&out_shape);
            }
        }
        let la = self
            .layout()
            .broadcast_as(&[&batch[..], &[m, k]].concat())?;
        let lb = rhs.layout().broadcast_as(&[&batch[..], &[k, n]].concat())?;
        if self.is_cuda() {
            return cuda::matmul(self, &la, rhs, &lb, (m, n, k), &batch);
        }
        cpu::matmul(self, &la, rhs, &lb, (m, n, k), &batch)
    }
}
