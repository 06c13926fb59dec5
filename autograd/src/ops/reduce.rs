//! Reductions: sum, mean, max, min and variance over dims.

use tensor::{CmpOp, Result};

use crate::{Op, Var};

/// The shape of a reduction's output with the reduced dims kept as size 1.
fn keepdim_shape(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if dims.contains(&d) { 1 } else { n })
        .collect()
}

impl Var {
    /// Sum over `dims`; `keepdim` keeps them as size 1.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Var> {
        let y = self.value().sum(dims, keepdim)?;
        let (shape, kept) = (self.shape().to_vec(), keepdim_shape(self.shape(), dims));
        Ok(Var::from_op(Op::Sum, y, &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&kept)?.broadcast_as(&shape)?)])
        }))
    }

    /// Sum of all elements (a 0-d Var).
    pub fn sum_all(&self) -> Result<Var> {
        self.sum(&(0..self.shape().len()).collect::<Vec<_>>(), false)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Var> {
        let n: usize = dims.iter().filter_map(|&d| self.shape().get(d)).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / n as f64)
    }

    /// Mean of all elements (a 0-d Var).
    pub fn mean_all(&self) -> Result<Var> {
        self.mean(&(0..self.shape().len()).collect::<Vec<_>>(), false)
    }

    /// Maximum over `dims`; ties share the gradient equally.
    pub fn max(&self, dims: &[usize], keepdim: bool) -> Result<Var> {
        self.extremum(Op::Max, dims, keepdim)
    }

    /// Minimum over `dims`; ties share the gradient equally.
    pub fn min(&self, dims: &[usize], keepdim: bool) -> Result<Var> {
        self.extremum(Op::Min, dims, keepdim)
    }

    fn extremum(&self, op: Op, dims: &[usize], keepdim: bool) -> Result<Var> {
        let x = self.value().clone();
        let y = if op == Op::Max {
            x.max(dims, keepdim)?
        } else {
            x.min(dims, keepdim)?
        };
        let kept = keepdim_shape(x.shape(), dims);
        let (dims, out) = (dims.to_vec(), y.clone());
        Ok(Var::from_op(op, y, &[self], move |g, _| {
            let hit = x
                .cmp(CmpOp::Eq, &out.reshape(&kept)?)?
                .to_dtype(x.dtype())?;
            let share = g.reshape(&kept)?.div(&hit.sum(&dims, true)?)?;
            Ok(vec![Some(hit.mul(&share)?)])
        }))
    }

    /// Variance over `dims`, unbiased (divides by n - 1) or not.
    pub fn var(&self, dims: &[usize], keepdim: bool, unbiased: bool) -> Result<Var> {
        let n: usize = dims.iter().filter_map(|&d| self.shape().get(d)).product();
        let centered = self.sub(&self.mean(dims, true)?)?;
        let denom = if unbiased { n.saturating_sub(1) } else { n };
        centered
            .square()?
            .sum(dims, keepdim)?
            .mul_scalar(1.0 / denom as f64)
    }
}
