//! Elementwise ops: unary maps (each with its derivative beside it), broadcasting binary ops,
//! comparisons and `where`. The enums here define each op's arithmetic; the CPU evaluates it
//! directly (`cpu/elementwise.rs`), CUDA by the op codes of its kernels (`cuda/elementwise.rs`).

use crate::cpu::elementwise as cpu;
use crate::cuda::elementwise as cuda;
use crate::layout::broadcast_shapes;
use crate::{ensure_shape, Error, Float, Result, Tensor};

/// A pointwise function of one tensor, with its derivative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// -x
    Neg,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// |x|
    Abs,
    /// x²
    Square,
    /// tanh x
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// x · sigmoid(x)
    Silu,
    /// x · Φ(x), the exact GELU.
    GeluErf,
    /// GELU's tanh approximation (as in DiT's MLP).
    GeluTanh,
    /// x^e
    Powf(f64),
    /// x clamped to [lo, hi]
    Clamp(f64, f64),
    /// x + c
    AddScalar(f64),
    /// x · c
    MulScalar(f64),
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044715;

impl UnaryOp {
    /// The op's name, for errors and graph printing.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Square => "square",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Silu => "silu",
            UnaryOp::GeluErf => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp(..) => "clamp",
            UnaryOp::AddScalar(_) => "add_scalar",
            UnaryOp::MulScalar(_) => "mul_scalar",
        }
    }

    /// f(x). Always inlined: callers specialise it to one variant, and the match folds away.
    #[inline(always)]
    pub fn forward<T: Float>(self, x: T) -> T {
        let c = T::from_f64;
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => T::ONE / x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Square => x * x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Relu => x.max(T::ZERO),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::GeluErf => {
                c(0.5) * x * (T::ONE + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
            UnaryOp::GeluTanh => {
                c(0.5)
                    * x
                    * (T::ONE + (c(SQRT_2_OVER_PI) * (x + c(GELU_TANH_C) * x * x * x)).tanh())
            }
            UnaryOp::Powf(e) => x.powf(c(e)),
            UnaryOp::Clamp(lo, hi) => x.max(c(lo)).min(c(hi)),
            UnaryOp::AddScalar(v) => x + c(v),
            UnaryOp::MulScalar(v) => x * c(v),
        }
    }

    /// What the backward pass keeps of the forward: each derivative needs the input, the output,
    /// or nothing, never both, so the tape holds at most one tensor per pointwise op.
    pub fn saves(self) -> Saved {
        match self {
            UnaryOp::Neg | UnaryOp::AddScalar(_) | UnaryOp::MulScalar(_) => Saved::Nothing,
            UnaryOp::Exp | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Tanh | UnaryOp::Sigmoid => {
                Saved::Output
            }
            _ => Saved::Input,
        }
    }

    /// f', from the value [`UnaryOp::saves`] names (x, y = f(x), or anything when nothing).
    #[inline(always)]
    pub fn derivative<T: Float>(self, v: T) -> T {
        let c = T::from_f64;
        let (x, y) = (v, v);
        match self {
            UnaryOp::Neg => -T::ONE,
            UnaryOp::Exp => y,
            UnaryOp::Log => T::ONE / x,
            UnaryOp::Sqrt => c(0.5) / y,
            UnaryOp::Rsqrt => c(-0.5) * y * y * y,
            UnaryOp::Abs => step(x) - step(-x),
            UnaryOp::Square => c(2.0) * x,
            UnaryOp::Tanh => T::ONE - y * y,
            UnaryOp::Sigmoid => y * (T::ONE - y),
            UnaryOp::Relu => step(x),
            UnaryOp::Silu => {
                let s = sigmoid(x);
                s * (T::ONE + x * (T::ONE - s))
            }
            UnaryOp::GeluErf => {
                let cdf = c(0.5) * (T::ONE + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (c(-0.5) * x * x).exp() * c(0.398_942_280_401_432_7);
                cdf + x * pdf
            }
            UnaryOp::GeluTanh => {
                let t = (c(SQRT_2_OVER_PI) * (x + c(GELU_TANH_C) * x * x * x)).tanh();
                let du = c(SQRT_2_OVER_PI) * (T::ONE + c(3.0 * GELU_TANH_C) * x * x);
                c(0.5) * (T::ONE + t) + c(0.5) * x * (T::ONE - t * t) * du
            }
            UnaryOp::Powf(e) => c(e) * x.powf(c(e - 1.0)),
            UnaryOp::Clamp(lo, hi) => {
                if x >= c(lo) && x <= c(hi) {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryOp::AddScalar(_) => T::ONE,
            UnaryOp::MulScalar(v) => c(v),
        }
    }
}

/// The forward value a pointwise op's derivative is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// A constant derivative.
    Nothing,
    /// The input x.
    Input,
    /// The output y = f(x).
    Output,
}

#[inline]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

#[inline]
fn step<T: Float>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else {
        T::ZERO
    }
}

/// A broadcasting arithmetic op of two tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b
    Div,
    /// max(a, b)
    Maximum,
    /// min(a, b)
    Minimum,
}

impl BinaryOp {
    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }

    /// a op b. Always inlined, so that the CPU's `specialised_binary!` folds its constant
    /// variant away.
    #[inline(always)]
    pub(crate) fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => a.max(b),
            BinaryOp::Minimum => a.min(b),
        }
    }
}

/// A broadcasting comparison; the result is a u8 mask of 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// a == b
    Eq,
    /// a != b
    Ne,
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
}

impl CmpOp {
    /// a op b.
    #[inline]
    pub(crate) fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// Calls `$define! { /// doc  name => op; ... }` with the named pointwise functions of
/// [`UnaryOp`](crate::UnaryOp): one list gives `Tensor` and autograd's `Var` the same methods.
#[macro_export]
macro_rules! unary_method_list {
    ($define:ident) => {
        $define! {
            /// -x elementwise.
            neg => $crate::UnaryOp::Neg;
            /// e^x elementwise.
            exp => $crate::UnaryOp::Exp;
            /// ln x elementwise.
            log => $crate::UnaryOp::Log;
            /// √x elementwise.
            sqrt => $crate::UnaryOp::Sqrt;
            /// 1/√x elementwise.
            rsqrt => $crate::UnaryOp::Rsqrt;
            /// |x| elementwise.
            abs => $crate::UnaryOp::Abs;
            /// x² elementwise.
            square => $crate::UnaryOp::Square;
            /// tanh elementwise.
            tanh => $crate::UnaryOp::Tanh;
            /// The logistic sigmoid elementwise.
            sigmoid => $crate::UnaryOp::Sigmoid;
            /// max(x, 0) elementwise.
            relu => $crate::UnaryOp::Relu;
            /// x · sigmoid(x) elementwise.
            silu => $crate::UnaryOp::Silu;
            /// The exact (erf) GELU elementwise.
            gelu => $crate::UnaryOp::GeluErf;
            /// The tanh-approximated GELU elementwise.
            gelu_tanh => $crate::UnaryOp::GeluTanh;
        }
    };
}

macro_rules! tensor_unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$doc])* pub fn $name(&self) -> Result<Tensor> {
                self.unary($op)
            })*
        }
    };
}

unary_method_list!(tensor_unary_methods);

impl Tensor {
    /// `op` applied to every element.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        if self.is_cuda() {
            return cuda::unary(self, op);
        }
        cpu::unary(self, op)
    }

    /// The gradient through `op`: `self · f'`, with `self` the output's gradient and `saved` the
    /// value [`UnaryOp::saves`] names (`None` when it saves nothing). One fused pass.
    pub fn unary_backward(&self, op: UnaryOp, saved: Option<&Tensor>) -> Result<Tensor> {
        let Some(saved) = saved else {
            return self.mul_scalar(op.derivative(0.0));
        };
        ensure_shape!(
            saved.shape() == self.shape(),
            op.name(),
            "saved value {:?} and gradient {:?} differ",
            saved.shape(),
            self.shape()
        );
        if self.is_cuda() {
            return cuda::unary_backward(self, op, saved);
        }
        cpu::unary_backward(self, op, saved)
    }

    /// x^e elementwise.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(e))
    }

    /// Elements clamped to `[lo, hi]`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Clamp(lo, hi))
    }

    /// x + c elementwise.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.unary(UnaryOp::AddScalar(c))
    }

    /// x · c elementwise.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.unary(UnaryOp::MulScalar(c))
    }

    /// `op(self, other)` with numpy broadcasting.
    /// `op(self, other)` with numpy broadcasting.
    pub fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        self.same_kind(op.name(), other)?;
        let shape = broadcast_shapes(op.name(), self.shape(), other.shape())?;
        if self.is_cuda() {
            return cuda::binary(self, op, other, &shape);
        }
        cpu::binary(self, op, other, &shape)
    }

    /// self + other, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other)
    }

    /// self - other, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, other)
    }

    /// self · other, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other)
    }

    /// self / other, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, other)
    }

    /// Elementwise maximum, broadcasting.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, other)
    }

    /// Elementwise minimum, broadcasting.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, other)
    }

    /// The u8 mask of `op(self, other)`, broadcasting; any dtypes.
    pub fn cmp(&self, op: CmpOp, other: &Tensor) -> Result<Tensor> {
        self.same_device("cmp", other)?;
        let shape = broadcast_shapes("cmp", self.shape(), other.shape())?;
        if self.is_cuda() {
            return cuda::cmp(self, op, other, &shape);
        }
        cpu::cmp(self, op, other, &shape)
    }

    /// Elements of `on_true` where `self` (a mask, any dtype, nonzero = true) is set, else of
    /// `on_false`; the three broadcast together.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        on_true.same_kind("where", on_false)?;
        let shape = broadcast_shapes("where", self.shape(), on_true.shape())?;
        let shape = broadcast_shapes("where", &shape, on_false.shape())?;
        if on_true.is_cuda() {
            on_true.same_device("where", self)?;
            return cuda::where_cond(self, on_true, on_false, &shape);
        }
        cpu::where_cond(self, on_true, on_false, &shape)
    }

    /// `value` where the mask `mask` is set, else self.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full(&[], value, self.dtype(), self.device())?;
        mask.where_cond(&fill, self)
    }

    /// Elementwise `self == other` over any dtypes as f64, for tests: the largest absolute difference.
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f64> {
        if self.shape() != other.shape() {
            return Err(Error::shape(
                "max_abs_diff",
                format!("{:?} vs {:?}", self.shape(), other.shape()),
            ));
        }
        let (a, b) = (self.to_f64_vec()?, other.to_f64_vec()?);
        Ok(a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max))
    }
}
