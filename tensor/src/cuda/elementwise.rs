//! CUDA kernels of the elementwise ops of `ops/elementwise.rs`, plus fills, casts and copies.

use kernels::elementwise::{self as k, binary_code, cmp_code, unary_code, Unary};

use super::{elem, kernel_error};
use crate::{BinaryOp, CmpOp, DType, Device, Result, Tensor, UnaryOp};

fn unary_code(op: UnaryOp) -> Unary {
    let plain = |code| Unary {
        code,
        p0: 0.0,
        p1: 0.0,
    };
    match op {
        UnaryOp::Neg => plain(unary_code::NEG),
        UnaryOp::Exp => plain(unary_code::EXP),
        UnaryOp::Log => plain(unary_code::LOG),
        UnaryOp::Sqrt => plain(unary_code::SQRT),
        UnaryOp::Rsqrt => plain(unary_code::RSQRT),
        UnaryOp::Abs => plain(unary_code::ABS),
        UnaryOp::Square => plain(unary_code::SQUARE),
        UnaryOp::Tanh => plain(unary_code::TANH),
        UnaryOp::Sigmoid => plain(unary_code::SIGMOID),
        UnaryOp::Relu => plain(unary_code::RELU),
        UnaryOp::Silu => plain(unary_code::SILU),
        UnaryOp::GeluErf => plain(unary_code::GELU_ERF),
        UnaryOp::GeluTanh => plain(unary_code::GELU_TANH),
        UnaryOp::Powf(e) => Unary {
            code: unary_code::POWF,
            p0: e,
            p1: 0.0,
        },
        UnaryOp::Clamp(lo, hi) => Unary {
            code: unary_code::CLAMP,
            p0: lo,
            p1: hi,
        },
        UnaryOp::AddScalar(c) => Unary {
            code: unary_code::ADD_SCALAR,
            p0: c,
            p1: 0.0,
        },
        UnaryOp::MulScalar(c) => Unary {
            code: unary_code::MUL_SCALAR,
            p0: c,
            p1: 0.0,
        },
    }
}

pub(crate) fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let out = x.cuda_output(x.shape(), x.dtype())?;
    let e = kernel_error(op.name(), x.device());
    k::unary(
        x.gpu(),
        elem(x.dtype()),
        unary_code(op),
        x.elem_count(),
        x.cuda_view(op.name())?,
        out.cuda_ptr(),
    )
    .map_err(e)?;
    Ok(out)
}

pub(crate) fn unary_backward(grad: &Tensor, op: UnaryOp, saved: &Tensor) -> Result<Tensor> {
    grad.same_kind(op.name(), saved)?;
    let out = grad.cuda_output(grad.shape(), grad.dtype())?;
    let e = kernel_error(op.name(), grad.device());
    k::unary_backward(
        grad.gpu(),
        elem(grad.dtype()),
        unary_code(op),
        grad.elem_count(),
        saved.cuda_view(op.name())?,
        grad.cuda_view(op.name())?,
        out.cuda_ptr(),
    )
    .map_err(e)?;
    Ok(out)
}

/// `op(a, b)` broadcast to `shape`.
pub(crate) fn binary(a: &Tensor, op: BinaryOp, b: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let code = match op {
        BinaryOp::Add => binary_code::ADD,
        BinaryOp::Sub => binary_code::SUB,
        BinaryOp::Mul => binary_code::MUL,
        BinaryOp::Div => binary_code::DIV,
        BinaryOp::Maximum => binary_code::MAXIMUM,
        BinaryOp::Minimum => binary_code::MINIMUM,
    };
    let out = a.cuda_output(shape, a.dtype())?;
    let e = kernel_error(op.name(), a.device());
    k::binary(
        a.gpu(),
        elem(a.dtype()),
        code,
        out.elem_count(),
        a.cuda_view_as(op.name(), shape)?,
        b.cuda_view_as(op.name(), shape)?,
        out.cuda_ptr(),
    )
    .map_err(e)?;
    Ok(out)
}

/// The u8 mask of `op(a, b)` broadcast to `shape`.
pub(crate) fn cmp(a: &Tensor, op: CmpOp, b: &Tensor, shape: &[usize]) -> Result<Tensor> {
    // Mixed dtypes compare as f64, as on the CPU.
    let (a, b) = if b.dtype() == a.dtype() {
        (a.clone(), b.clone())
    } else {
        (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?)
    };
    let (a, b) = (&a, &b);
    let code = match op {
        CmpOp::Eq => cmp_code::EQ,
        CmpOp::Ne => cmp_code::NE,
        CmpOp::Lt => cmp_code::LT,
        CmpOp::Le => cmp_code::LE,
        CmpOp::Gt => cmp_code::GT,
        CmpOp::Ge => cmp_code::GE,
    };
    let out = a.cuda_output(shape, DType::U8)?;
    k::cmp(
        a.gpu(),
        elem(a.dtype()),
        code,
        out.elem_count(),
        a.cuda_view_as("cmp", shape)?,
        b.cuda_view_as("cmp", shape)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error("cmp", a.device()))?;
    Ok(out)
}

pub(crate) fn where_cond(mask: &Tensor, t: &Tensor, f: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::U8)?;
    let out = t.cuda_output(shape, t.dtype())?;
    k::where_cond(
        t.gpu(),
        elem(t.dtype()),
        out.elem_count(),
        mask.cuda_view_as("where", shape)?,
        t.cuda_view_as("where", shape)?,
        f.cuda_view_as("where", shape)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error("where", t.device()))?;
    Ok(out)
}

pub(crate) fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
    let out = Tensor::cuda_uninit(shape, dtype, device)?;
    k::fill(
        out.gpu(),
        elem(dtype),
        out.elem_count(),
        value,
        out.cuda_ptr(),
    )
    .map_err(kernel_error("full", device))?;
    Ok(out)
}

pub(crate) fn to_dtype(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let out = x.cuda_output(x.shape(), dtype)?;
    k::cast(
        x.gpu(),
        elem(x.dtype()),
        elem(dtype),
        x.elem_count(),
        x.cuda_view("to_dtype")?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error("to_dtype", x.device()))?;
    Ok(out)
}

pub(crate) fn contiguous(x: &Tensor) -> Result<Tensor> {
    let out = x.cuda_output(x.shape(), x.dtype())?;
    let n = x.elem_count();
    let dst = kernels::View {
        ptr: out.cuda_ptr(),
        dims: k::dense(n),
    };
    k::copy(x.gpu(), elem(x.dtype()), n, x.cuda_view("contiguous")?, dst)
        .map_err(kernel_error("contiguous", x.device()))?;
    Ok(out)
}
