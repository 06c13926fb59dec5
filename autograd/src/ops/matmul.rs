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
                        a.transpose(ra - 2, ra - 1)?.matmul(g)?.sum_to(b.shape())
                    })?,
                ])
            },
        ))
    }
}
