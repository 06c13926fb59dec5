//! Batched matrix product.

use tensor::Result;

use crate::ops::elementwise::grad_if;
use crate::{Op, Var};

impl Var {
    /// `[.., m, k] x [.., k, n] -> [.., m, n]`, broadcasting batch dims.
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        let y = self.value().matmul(rhs.value())?;
        let (a, b) = (self.value().clone(), rhs.value().clone());
        Ok(Var::from_op(
            Op::Matmul,
            y,
            &[self, rhs],
            move |g, needs| {
                let (ra, rb) = (a.rank(), b.rank());
                Ok(vec![
                    grad_if(needs[0], || {
                        g.matmul(&b.transpose(rb - 2, rb - 1)?)?.sum_to(a.shape())
                    })?,
                    grad_if(needs[1], || {
                        if rb == 2 && ra > 2 {
                            // A weight shared by every row: one GEMM over all rows, not a
                            // product per batch entry summed afterwards.
                            let (k, n) = (b.shape()[0], b.shape()[1]);
                            let rows = a.elem_count() / k;
                            let (a, g) = (a.reshape(&[rows, k])?, g.reshape(&[rows, n])?);
                            return a.transpose(0, 1)?.matmul(&g);
                        }
                        a.transpose(ra - 2, ra - 1)?.matmul(g)?.sum_to(b.shape())
                    })?,
                ])
            },
        ))
    }
}
