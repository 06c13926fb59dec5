//! Neural-network ops: softmax and log-softmax, layer and group norm (over the fused CPU kernels,
//! which hand their row statistics to the backward), scaled dot-product attention, dropout, and
//! the MSE and cross-entropy losses.

use tensor::{broadcast_shapes, ensure_shape, CmpOp, DType, Error, Generator, Result, Tensor};

use crate::{Op, Var};

impl Var {
    /// Softmax along `dim`.
    pub fn softmax(&self, dim: usize) -> Result<Var> {
        let y = self.value().softmax(dim)?;
        let out = y.clone();
        Ok(Var::from_op(Op::Softmax, y, &[self], move |g, _| {
            Ok(vec![Some(out.softmax_backward(g, dim)?)])
        }))
    }

    /// Log-softmax along `dim`.
    pub fn log_softmax(&self, dim: usize) -> Result<Var> {
        let y = self.value().log_softmax(dim)?;
        let out = y.clone();
        Ok(Var::from_op(Op::LogSoftmax, y, &[self], move |g, _| {
            Ok(vec![Some(out.log_softmax_backward(g, dim)?)])
        }))
    }

    /// Layer norm over the last `normalized_dims` dims, with optional `weight` and `bias` shaped
    /// as those dims; gradients flow to all three.
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Var>,
        bias: Option<&Var>,
        eps: f64,
    ) -> Result<Var> {
        let (y, mean, rstd) = self.value().layer_norm(
            normalized_dims,
            weight.map(Var::value),
            bias.map(Var::value),
            eps,
        )?;
        Ok(
            self.record_norm(Op::LayerNorm, y, weight, bias, move |x, g, w| {
                x.layer_norm_backward(g, &mean, &rstd, w, normalized_dims)
            }),
        )
    }

    /// Group norm of `[N, C, *spatial]` in `groups` groups, with optional per-channel `weight`
    /// and `bias` (`[C]`); gradients flow to all three.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Var>,
        bias: Option<&Var>,
        eps: f64,
    ) -> Result<Var> {
        let (y, mean, rstd) =
            self.value()
                .group_norm(groups, weight.map(Var::value), bias.map(Var::value), eps)?;
        Ok(
            self.record_norm(Op::GroupNorm, y, weight, bias, move |x, g, w| {
                x.group_norm_backward(g, &mean, &rstd, w, groups)
            }),
        )
    }

    /// Records a normalisation of `self` with its optional affine parameters; one kernel call
    /// gives all three gradients (`backward(x, grad, weight) -> (dx, dweight, dbias)`), and each
    /// is handed on only where it is needed.
    fn record_norm(
        &self,
        op: Op,
        y: Tensor,
        weight: Option<&Var>,
        bias: Option<&Var>,
        backward: impl FnOnce(&Tensor, &Tensor, Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)>
            + Send
            + 'static,
    ) -> Var {
        let inputs: Vec<&Var> = [Some(self), weight, bias].into_iter().flatten().collect();
        let (x, w, has_bias) = (
            self.value().clone(),
            weight.map(|w| w.value().clone()),
            bias.is_some(),
        );
        Var::from_op(op, y, &inputs, move |g, needs| {
            let (dx, dw, db) = backward(&x, g, w.as_ref())?;
            let mut needs = needs.iter().copied();
            let mut grads = vec![needs.next().unwrap_or(false).then_some(dx)];
            if w.is_some() {
                grads.push(needs.next().unwrap_or(false).then_some(dw));
            }
            if has_bias {
                grads.push(needs.next().unwrap_or(false).then_some(db));
            }
            Ok(grads)
        })
    }

    /// Scaled dot-product attention `softmax(q·kᵀ·scale + mask)·v` with `self` as q:
    /// q `[.., Sq, D]`, k `[.., Sk, D]`, v `[.., Sk, Dv]`, batch and head dims broadcasting.
    /// `mask` (u8 or i64, broadcastable to `[.., Sq, Sk]`) marks with nonzero the keys a query
    /// may attend to, as PyTorch's boolean `attn_mask`; a query that may attend to none gets NaN,
    /// as in PyTorch. `scale` defaults to 1/√D.
    ///
    /// On the CPU this is a composite of matmul, mul_scalar, masked_fill, softmax and matmul, so
    /// its gradient is theirs and the tape records those ops; the CUDA backend will bring a fused
    /// kernel.
    pub fn scaled_dot_product_attention(
        &self,
        k: &Var,
        v: &Var,
        mask: Option<&Tensor>,
        scale: Option<f64>,
    ) -> Result<Var> {
        let op = "scaled_dot_product_attention";
        let (qs, ks, vs) = (self.shape(), k.shape(), v.shape());
        let valid = qs.len() >= 2
            && ks.len() >= 2
            && vs.len() >= 2
            && qs[qs.len() - 1] == ks[ks.len() - 1]
            && qs[qs.len() - 1] > 0
            && ks[ks.len() - 2] == vs[vs.len() - 2];
        ensure_shape!(
            valid,
            op,
            "q {qs:?}, k {ks:?}, v {vs:?} do not fit q [.., Sq, D], k [.., Sk, D], v [.., Sk, Dv]"
        );
        let d = qs[qs.len() - 1];
        let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
        let rk = ks.len();
        // Scaling q ([.., Sq, D]) rather than the scores ([.., Sq, Sk]) is the smaller pass.
        let scores = self
            .mul_scalar(scale)?
            .matmul(&k.transpose(rk - 2, rk - 1)?)?;
        let scores = match mask {
            Some(mask) => {
                scores.masked_fill(&blocked(op, mask, scores.shape())?, f64::NEG_INFINITY)?
            }
            None => scores,
        };
        let last = scores.shape().len() - 1;
        scores.softmax(last)?.matmul(v)
    }

    /// Dropout: in training, each element is zeroed with probability `p` (drawn from `gen`, so a
    /// seed fixes the mask) and the rest are scaled by 1/(1 − p); the identity when `!train` or
    /// `p == 0`. `p` must lie in [0, 1).
    pub fn dropout(&self, p: f64, gen: &mut Generator, train: bool) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!(
                "dropout: p = {p} is outside [0, 1) (input {:?})",
                self.shape()
            )));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let x = self.value();
        let u = Tensor::rand(x.shape(), 0.0, 1.0, DType::F64, x.device(), gen)?;
        let keep = u.cmp(CmpOp::Ge, &Tensor::full(&[], p, DType::F64, x.device())?)?;
        let mask = keep.to_dtype(x.dtype())?.mul_scalar(1.0 / (1.0 - p))?;
        let y = x.mul(&mask)?;
        Ok(Var::from_op(Op::Dropout, y, &[self], move |g, _| {
            Ok(vec![Some(g.mul(&mask)?)])
        }))
    }

    /// Mean squared error between `self` and `target` (same shape), averaged over all elements.
    /// A composite of sub, square and mean; gradients flow to both.
    pub fn mse_loss(&self, target: &Var) -> Result<Var> {
        ensure_shape!(
            self.shape() == target.shape(),
            "mse_loss",
            "prediction {:?} and target {:?} differ",
            self.shape(),
            target.shape()
        );
        self.sub(target)?.square()?.mean_all()
    }

    /// Cross-entropy of logits `self` (`[N, C]`) against class indices `targets` (i64 `[N]`),
    /// averaged over the batch: −mean(log_softmax(logits)[n, targets[n]]). A composite of
    /// log_softmax, gather and mean.
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Var> {
        let op = "cross_entropy";
        let shape = self.shape();
        ensure_shape!(shape.len() == 2, op, "logits must be [N, C], got {shape:?}");
        let (n, c) = (shape[0], shape[1]);
        ensure_shape!(
            targets.shape() == [n],
            op,
            "targets {:?} do not match logits {shape:?} (expected [{n}])",
            targets.shape()
        );
        if targets.dtype() != DType::I64 {
            return Err(Error::dtype(op, targets.dtype(), "i64 class indices"));
        }
        let classes = targets.to_vec::<i64>()?;
        if let Some(bad) = classes.iter().find(|&&t| t < 0 || t >= c as i64) {
            return Err(Error::msg(format!(
                "{op}: target class {bad} is out of range for C = {c} classes"
            )));
        }
        self.log_softmax(1)?
            .gather(1, &targets.reshape(&[n, 1])?)?
            .mean_all()?
            .neg()
    }
}

/// The u8 mask of the places attention may not look at (`mask == 0`), after checking that
/// `mask` is an integer tensor that broadcasts to the `scores` shape.
fn blocked(op: &'static str, mask: &Tensor, scores: &[usize]) -> Result<Tensor> {
    if mask.dtype().is_float() {
        return Err(Error::dtype(op, mask.dtype(), "a u8 or i64 mask"));
    }
    let fits = broadcast_shapes(op, mask.shape(), scores).is_ok_and(|s| s == scores);
    ensure_shape!(
        fits,
        op,
        "mask {:?} does not broadcast to the scores [.., Sq, Sk] = {scores:?}",
        mask.shape()
    );
    mask.cmp(CmpOp::Eq, &Tensor::zeros(&[], mask.dtype(), mask.device())?)
}
