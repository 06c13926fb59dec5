//! Elementwise ops: broadcasting arithmetic, the pointwise functions of [`UnaryOp`], `where`, and
//! dtype casts.

use tensor::{DType, Result, Saved, Tensor, UnaryOp};

use crate::{Op, Var};

fn unary_op_name(op: UnaryOp) -> Op {
    match op {
        UnaryOp::Neg => Op::Neg,
        UnaryOp::Exp => Op::Exp,
        UnaryOp::Log => Op::Log,
        UnaryOp::Sqrt => Op::Sqrt,
        UnaryOp::Rsqrt => Op::Rsqrt,
        UnaryOp::Abs => Op::Abs,
        UnaryOp::Square => Op::Square,
        UnaryOp::Tanh => Op::Tanh,
        UnaryOp::Sigmoid => Op::Sigmoid,
        UnaryOp::Relu => Op::Relu,
        UnaryOp::Silu => Op::Silu,
        UnaryOp::GeluErf => Op::Gelu,
        UnaryOp::GeluTanh => Op::GeluTanh,
        UnaryOp::Powf(_) => Op::Powf,
        UnaryOp::Clamp(..) => Op::Clamp,
        UnaryOp::AddScalar(_) => Op::AddScalar,
        UnaryOp::MulScalar(_) => Op::MulScalar,
    }
}

macro_rules! var_unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl Var {
            $($(#[$doc])* pub fn $name(&self) -> Result<Var> {
                self.unary($op)
            })*
        }
    };
}

tensor::unary_method_list!(var_unary_methods);

impl Var {
    /// A pointwise function; its backward is `grad · f'(x)` from the op's derivative table.
    pub fn unary(&self, op: UnaryOp) -> Result<Var> {
        let y = self.value().unary(op)?;
        // Keep only what the derivative needs (see `UnaryOp::saves`).
        let saved = match op.saves() {
            Saved::Nothing => None,
            Saved::Input => Some(self.value().clone()),
            Saved::Output => Some(y.clone()),
        };
        Ok(Var::from_op(unary_op_name(op), y, &[self], move |g, _| {
            Ok(vec![Some(g.unary_backward(op, saved.as_ref())?)])
        }))
    }

    /// x^e
    pub fn powf(&self, e: f64) -> Result<Var> {
        self.unary(UnaryOp::Powf(e))
    }

    /// x clamped to [lo, hi] (no gradient where clamped).
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Var> {
        self.unary(UnaryOp::Clamp(lo, hi))
    }

    /// x + c
    pub fn add_scalar(&self, c: f64) -> Result<Var> {
        self.unary(UnaryOp::AddScalar(c))
    }

    /// x · c
    pub fn mul_scalar(&self, c: f64) -> Result<Var> {
        self.unary(UnaryOp::MulScalar(c))
    }

    /// self + other, broadcasting.
    pub fn add(&self, other: &Var) -> Result<Var> {
        let y = self.value().add(other.value())?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(Var::from_op(Op::Add, y, &[self, other], move |g, needs| {
            Ok(vec![
                grad_if(needs[0], || g.sum_to(&sa))?,
                grad_if(needs[1], || g.sum_to(&sb))?,
            ])
        }))
    }

    /// self - other, broadcasting.
    pub fn sub(&self, other: &Var) -> Result<Var> {
        let y = self.value().sub(other.value())?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(Var::from_op(Op::Sub, y, &[self, other], move |g, needs| {
            Ok(vec![
                grad_if(needs[0], || g.sum_to(&sa))?,
                grad_if(needs[1], || g.neg()?.sum_to(&sb))?,
            ])
        }))
    }

    /// self · other, broadcasting.
    pub fn mul(&self, other: &Var) -> Result<Var> {
        let y = self.value().mul(other.value())?;
        let (a, b) = (self.value().clone(), other.value().clone());
        Ok(Var::from_op(Op::Mul, y, &[self, other], move |g, needs| {
            Ok(vec![
                grad_if(needs[0], || g.mul(&b)?.sum_to(a.shape()))?,
                grad_if(needs[1], || g.mul(&a)?.sum_to(b.shape()))?,
            ])
        }))
    }

    /// self / other, broadcasting.
    pub fn div(&self, other: &Var) -> Result<Var> {
        let y = self.value().div(other.value())?;
        let (b, out) = (other.value().clone(), y.clone());
        let sa = self.shape().to_vec();
        Ok(Var::from_op(Op::Div, y, &[self, other], move |g, needs| {
            let ga = g.div(&b)?;
            // d(a/b)/db = -(a/b)/b = -out/b
            let gb = grad_if(needs[1], || ga.mul(&out)?.neg()?.sum_to(b.shape()))?;
            Ok(vec![grad_if(needs[0], || ga.sum_to(&sa))?, gb])
        }))
    }

    /// Elements of `on_true` where the mask `self` (a constant) is set, else of `on_false`; the
    /// three broadcast together.
    pub fn where_cond(mask: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        let y = mask.where_cond(on_true.value(), on_false.value())?;
        let (st, sf, mask) = (
            on_true.shape().to_vec(),
            on_false.shape().to_vec(),
            mask.clone(),
        );
        Ok(Var::from_op(
            Op::Where,
            y,
            &[on_true, on_false],
            move |g, needs| {
                let zero = Tensor::zeros(&[], g.dtype(), g.device())?;
                Ok(vec![
                    grad_if(needs[0], || mask.where_cond(g, &zero)?.sum_to(&st))?,
                    grad_if(needs[1], || mask.where_cond(&zero, g)?.sum_to(&sf))?,
                ])
            },
        ))
    }

    /// `value` where `mask` is set, else self (no gradient flows to the filled places).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Var> {
        let fill = Var::constant(Tensor::full(
            &[],
            value,
            self.value().dtype(),
            self.value().device(),
        )?);
        Var::where_cond(mask, &fill, self)
    }

    /// The value converted to `dtype`; the gradient is converted back.
    pub fn to_dtype(&self, dtype: DType) -> Result<Var> {
        let from = self.value().dtype();
        if from == dtype {
            return Ok(self.clone());
        }
        let y = self.value().to_dtype(dtype)?;
        Ok(Var::from_op(Op::ToDtype, y, &[self], move |g, _| {
            Ok(vec![Some(g.to_dtype(from)?)])
        }))
    }
}

/// `f()` when the gradient is needed, else `None`: skips work for inputs that need no gradient.
pub(crate) fn grad_if(need: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    need.then(f).transpose()
}
