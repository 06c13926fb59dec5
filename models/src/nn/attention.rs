//! Multi-head attention over token sequences, as diffusers' `Attention` names it (`to_q`, `to_k`,
//! `to_v`, `to_out.0`): self-attention, or cross-attention when keys and values come from a
//! context of another width (the ANL transfer method's semantic tokens, text embeddings).

use autograd::Var;
use tensor::{Error, Result, Tensor};

use crate::nn::Linear;
use crate::params::{join, ParamStore};

/// Queries from `x` `[N, L, dim]`, keys and values from `x` or a context `[N, M, context_dim]`,
/// `heads` heads of `dim / heads`, then the output projection.
#[derive(Clone, Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    /// Adds `prefix.{to_q, to_k, to_v, to_out.0}`; `context_dim` is the width keys and values
    /// are computed from (`dim` for self-attention).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        dim: usize,
        context_dim: usize,
        heads: usize,
        bias: bool,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::msg(format!(
                "{prefix}: {heads} heads do not divide the width {dim}"
            )));
        }
        let p = |name| join(prefix, name);
        Linear::new(ps, &p("to_q"), dim, dim, bias)?;
        Linear::new(ps, &p("to_k"), context_dim, dim, bias)?;
        Linear::new(ps, &p("to_v"), context_dim, dim, bias)?;
        Linear::new(ps, &p("to_out.0"), dim, dim, true)?;
        Ok(Attention::existing(prefix, heads, bias))
    }

    /// An attention over parameters already in the store under `prefix` (added by
    /// [`Attention::new`] or a checkpoint); the width must be divisible by `heads`, checked in
    /// [`Attention::forward`].
    pub fn existing(prefix: &str, heads: usize, bias: bool) -> Self {
        let p = |name| join(prefix, name);
        Attention {
            to_q: Linear::existing(&p("to_q"), bias),
            to_k: Linear::existing(&p("to_k"), bias),
            to_v: Linear::existing(&p("to_v"), bias),
            to_out: Linear::existing(&p("to_out.0"), true),
            heads,
        }
    }

    /// `x` `[N, L, dim]` attending to `context` `[N, M, context_dim]` (itself when `None`);
    /// `mask` (broadcastable to `[N, heads, L, M]`, nonzero = may attend) optional.
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Var,
        context: Option<&Var>,
        mask: Option<&Tensor>,
    ) -> Result<Var> {
        let &[n, l, dim] = x.shape() else {
            return Err(Error::shape(
                "Attention",
                format!("expected x [N, L, dim], got {:?}", x.shape()),
            ));
        };
        if self.heads == 0 || !dim.is_multiple_of(self.heads) {
            return Err(Error::msg(format!(
                "Attention: {} heads do not divide the width {dim}",
                self.heads
            )));
        }
        let context = context.unwrap_or(x);
        let (heads, d) = (self.heads, dim / self.heads);
        let split = |lin: &Linear, input: &Var| -> Result<Var> {
            let len = input.shape()[1];
            lin.forward(ps, input)?
                .reshape(&[n, len, heads, d])?
                .permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = (
            split(&self.to_q, x)?,
            split(&self.to_k, context)?,
            split(&self.to_v, context)?,
        );
        let o = q
            .scaled_dot_product_attention(&k, &v, mask, None)?
            .permute(&[0, 2, 1, 3])?
            .reshape(&[n, l, dim])?;
        self.to_out.forward(ps, &o)
    }
}

#[cfg(test)]
mod tests {
    use tensor::{DType, Device, Generator};

    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Var {
        Var::constant(
            Tensor::randn(
                shape,
                0.0,
                1.0,
                DType::F64,
                Device::Cpu,
                &mut Generator::new(seed),
            )
            .unwrap(),
        )
    }

    #[test]
    fn cross_attention_follows_the_context_and_self_attention_is_its_special_case() {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let cross = Attention::new(&mut ps, "cross", 8, 5, 2, false).unwrap();
        let (x, ctx) = (randn(&[2, 3, 8], 1), randn(&[2, 4, 5], 2));
        let out = cross.forward(&ps, &x, Some(&ctx), None).unwrap();
        assert_eq!(out.shape(), &[2, 3, 8]);
        let other = cross
            .forward(&ps, &x, Some(&randn(&[2, 4, 5], 3)), None)
            .unwrap();
        assert!(out.value().max_abs_diff(other.value()).unwrap() > 1e-6);
        assert!(
            cross.forward(&ps, &x, None, None).is_err(),
            "x is not of the context's width"
        );

        // A context that is x itself gives self-attention; all keys masked but the first gives v_0.
        let selfattn = Attention::new(&mut ps, "self", 8, 8, 2, true).unwrap();
        let a = selfattn.forward(&ps, &x, None, None).unwrap();
        let b = selfattn.forward(&ps, &x, Some(&x), None).unwrap();
        assert_eq!(a.value().max_abs_diff(b.value()).unwrap(), 0.0);
        let first = Tensor::from_vec(vec![1u8, 0, 0], &[1, 1, 1, 3]).unwrap();
        let masked = selfattn.forward(&ps, &x, None, Some(&first)).unwrap();
        let rows = masked.value().to_f64_vec().unwrap();
        assert!(
            rows[..8]
                .iter()
                .zip(&rows[8..16])
                .all(|(p, q)| (p - q).abs() < 1e-12),
            "every query sees only key 0"
        );
    }
}
