//! Scaled dot-product attention, forward and backward, over `[B, H, S, D]` views: the shape
//! checks, and the dispatch to the fused CPU loops (`cpu/attention.rs`) or, on CUDA, to
//! [`composite`], the same ops written as a composite of tensor ops until the flash kernels
//! arrive.
//!
//! Outputs are stored token-major (`[B, S, H, D]` in memory) and returned as `[B, H, S, D]`
//! views of that storage: the layout the output projection reads after merging the heads, so
//! `o.transpose(1, 2).reshape([B, S, H·D])` costs no copy.

use crate::cpu::attention as cpu;
use crate::{ensure_shape, CmpOp, Result, Tensor};

/// The sizes of an attention call: batch, heads, query length, key length, head dim, value dim.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) sq: usize,
    pub(crate) sk: usize,
    pub(crate) d: usize,
    pub(crate) dv: usize,
}

fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    q.same_kind(op, k)?;
    q.same_kind(op, v)?;
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    ensure_shape!(
        qs.len() == 4
            && ks.len() == 4
            && vs.len() == 4
            && qs[..2] == ks[..2]
            && ks[..2] == vs[..2]
            && qs[3] == ks[3]
            && ks[2] == vs[2]
            && qs[3] > 0,
        op,
        "q {qs:?}, k {ks:?}, v {vs:?} do not fit q [B, H, Sq, D], k [B, H, Sk, D], v [B, H, Sk, Dv]"
    );
    Ok(Dims {
        b: qs[0],
        h: qs[1],
        sq: qs[2],
        sk: ks[2],
        d: qs[3],
        dv: vs[3],
    })
}

impl Tensor {
    /// Scaled dot-product attention `softmax(scale · q kᵀ) v` of `q` `[B, H, Sq, D]`, `k`
    /// `[B, H, Sk, D]`, `v` `[B, H, Sk, Dv]` (any strides), with query `i` seeing keys `0..=i`
    /// when `causal`. Returns `(o, lse)`: `o` `[B, H, Sq, Dv]` (stored token-major, see the
    /// module docs) and the log-sum-exp of each row's scaled scores `[B, H, Sq]`, which
    /// [`Tensor::attention_backward`] needs.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let q = Tensor::from_vec(vec![1f32, 0., 0., 1.], &[1, 1, 2, 2]).unwrap();
    /// let v = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[1, 1, 2, 2]).unwrap();
    /// let (o, _) = q.attention(&q, &v, 1.0, true).unwrap();
    /// assert_eq!(o.to_vec::<f32>().unwrap()[..2], [1., 2.]); // the first query sees one key
    /// ```
    pub fn attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let n = check("attention", self, k, v)?;
        if self.is_cuda() {
            return composite::forward(self, k, v, scale, causal);
        }
        cpu::attention(self, k, v, n, scale, causal)
    }

    /// The backward of [`Tensor::attention`] (`self` is q): from its output `o`, its `lse` and
    /// the output's gradient `grad`, the gradients `(dq, dk, dv)`, each stored token-major. (The
    /// CPU loops recompute the softmax row term from the probabilities and do not read `o`; the
    /// composite and flash-style kernels take it from `o`.)
    pub fn attention_backward(
        &self,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        lse: &Tensor,
        grad: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let n = check("attention_backward", self, k, v)?;
        for t in [o, grad] {
            self.same_kind("attention_backward", t)?;
            ensure_shape!(
                t.shape() == [n.b, n.h, n.sq, n.dv],
                "attention_backward",
                "output or gradient {:?}, expected [{}, {}, {}, {}]",
                t.shape(),
                n.b,
                n.h,
                n.sq,
                n.dv
            );
        }
        self.same_kind("attention_backward", lse)?;
        ensure_shape!(
            lse.shape() == [n.b, n.h, n.sq],
            "attention_backward",
            "lse {:?}, expected [{}, {}, {}]",
            lse.shape(),
            n.b,
            n.h,
            n.sq
        );
        if self.is_cuda() {
            return composite::backward(self, k, v, o, lse, grad, scale, causal);
        }
        cpu::attention_backward(self, k, v, lse, grad, n, scale, causal)
    }
}

/// Attention from tensor ops (matmul, softmax pieces): what CUDA runs until its fused kernels
/// arrive, and the reference the fused CPU loops are tested against.
pub(crate) mod composite {
    use super::*;

    /// `[Sq, Sk]` u8 mask of the keys each query may not see (`j > i`), on `like`'s device.
    fn future(sq: usize, sk: usize, like: &Tensor) -> Result<Tensor> {
        let i = Tensor::arange(0.0, sq as f64, 1.0, crate::DType::F32, like.device())?;
        let j = Tensor::arange(0.0, sk as f64, 1.0, crate::DType::F32, like.device())?;
        j.reshape(&[1, sk])?.cmp(CmpOp::Gt, &i.reshape(&[sq, 1])?)
    }

    /// Scaled scores `scale · q kᵀ`, with the future masked to -inf when `causal`.
    fn scores(q: &Tensor, k: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
        let s = q.mul_scalar(scale)?.matmul(&k.transpose(2, 3)?)?;
        if !causal {
            return Ok(s);
        }
        let (sq, sk) = (s.shape()[2], s.shape()[3]);
        s.masked_fill(&future(sq, sk, &s)?, f64::NEG_INFINITY)
    }

    /// A `[B, H, S, D]` tensor moved to token-major storage.
    fn to_token_major(t: &Tensor) -> Result<Tensor> {
        t.transpose(1, 2)?.contiguous()?.transpose(1, 2)
    }

    pub(crate) fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let s = scores(q, k, scale, causal)?;
        let max = s.max(&[3], true)?;
        let sum = s.sub(&max)?.exp()?.sum(&[3], true)?;
        let lse = max.add(&sum.log()?)?;
        let o = s.sub(&lse)?.exp()?.matmul(v)?;
        Ok((to_token_major(&o)?, lse.squeeze(3)?))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        lse: &Tensor,
        grad: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let p = scores(q, k, scale, causal)?
            .sub(&lse.unsqueeze(3)?)?
            .exp()?;
        let dv = p.transpose(2, 3)?.matmul(grad)?;
        let row = grad.mul(o)?.sum(&[3], true)?;
        let ds = p
            .mul(&grad.matmul(&v.transpose(2, 3)?)?.sub(&row)?)?
            .mul_scalar(scale)?;
        let dq = ds.matmul(k)?;
        let dk = ds.transpose(2, 3)?.matmul(q)?;
        Ok((
            to_token_major(&dq)?,
            to_token_major(&dk)?,
            to_token_major(&dv)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Tensor};

    #[test]
    fn bad_shapes_name_the_op_and_shapes() {
        let t = Tensor::zeros(&[1, 2, 3, 4], DType::F32, Device::Cpu).unwrap();
        let k = Tensor::zeros(&[1, 2, 3, 5], DType::F32, Device::Cpu).unwrap();
        let err = t.attention(&k, &t, 1.0, false).unwrap_err().to_string();
        assert!(
            err.contains("attention") && err.contains("[1, 2, 3, 5]"),
            "{err}"
        );
        let flat = Tensor::zeros(&[3, 4], DType::F32, Device::Cpu).unwrap();
        assert!(flat.attention(&flat, &flat, 1.0, false).is_err());
    }
}
