//! Optimizers. [`AdamW`] keeps its moments per parameter position and returns updated parameters
//! (tensors are immutable, so a step makes new leaves).

use autograd::{Grads, Var};
use tensor::{Error, Result, Tensor};

/// Adam with decoupled weight decay (Loshchilov & Hutter).
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moments.
    pub betas: (f64, f64),
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    step: u64,
    moments: Vec<Option<(Tensor, Tensor)>>,
}

impl AdamW {
    /// AdamW with the usual betas (0.9, 0.999) and eps 1e-8.
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamW {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            step: 0,
            moments: Vec::new(),
        }
    }

    /// One update of every trainable parameter in `params` from `grads`; parameters without a
    /// gradient are left as they are.
    pub fn step(&mut self, params: &mut [Var], grads: &Grads) -> Result<()> {
        self.step += 1;
        self.moments.resize(params.len(), None);
        let (b1, b2) = self.betas;
        let (c1, c2) = (
            1.0 - b1.powi(self.step as i32),
            1.0 - b2.powi(self.step as i32),
        );
        for (i, p) in params.iter_mut().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            if g.shape() != p.shape() {
                return Err(Error::shape(
                    "AdamW::step",
                    format!(
                        "parameter {i} is {:?} but its gradient is {:?}",
                        p.shape(),
                        g.shape()
                    ),
                ));
            }
            let (m, v) = match self.moments[i].take() {
                Some((m, v)) => (
                    m.mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?,
                    v.mul_scalar(b2)?.add(&g.square()?.mul_scalar(1.0 - b2)?)?,
                ),
                None => (g.mul_scalar(1.0 - b1)?, g.square()?.mul_scalar(1.0 - b2)?),
            };
            let update = m
                .mul_scalar(1.0 / c1)?
                .div(&v.mul_scalar(1.0 / c2)?.sqrt()?.add_scalar(self.eps)?)?;
            let decayed = p.value().mul_scalar(1.0 - self.lr * self.weight_decay)?;
            *p = Var::param(decayed.sub(&update.mul_scalar(self.lr)?)?);
            self.moments[i] = Some((m, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_quadratic() {
        let target = Tensor::from_vec(vec![1.0f64, -2.0, 0.5], &[3]).unwrap();
        let mut params = vec![Var::param(Tensor::from_vec(vec![0.0f64; 3], &[3]).unwrap())];
        let mut opt = AdamW::new(0.05, 0.0);
        for _ in 0..500 {
            let loss = params[0]
                .sub(&Var::constant(target.clone()))
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&mut params, &grads).unwrap();
        }
        assert!(
            params[0].value().max_abs_diff(&target).unwrap() < 1e-3,
            "{:?}",
            params[0]
        );
    }
}
