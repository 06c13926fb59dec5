//! CPU kernels of the elementwise ops (`ops/elementwise.rs`): each op's arithmetic, specialised to
//! its variant, over the strided rows of [`map1`] and [`map2`].

use crate::cpu::{float_op, float_op2, map1, map2};
use crate::layout::Rows;
use crate::{BinaryOp, CmpOp, CpuStorage, DType, Element, Result, Tensor, UnaryOp};

/// `$run` with `$f` bound to the function `op.$method` specialised to `op`'s variant: each arm
/// writes the variant as a constant inside the closure, which captures at most the variant's
/// parameters, so after inlining the match folds away and the element loops vectorise (a closure
/// that carried the op itself would match on it for every element).
macro_rules! specialised {
    ($op:expr, $method:ident, |$f:ident| $run:expr) => {{
        macro_rules! arm {
            ($v:expr) => {{
                let $f = move |x| ($v).$method(x);
                $run
            }};
        }
        match $op {
            UnaryOp::Neg => arm!(UnaryOp::Neg),
            UnaryOp::Exp => arm!(UnaryOp::Exp),
            UnaryOp::Log => arm!(UnaryOp::Log),
            UnaryOp::Sqrt => arm!(UnaryOp::Sqrt),
            UnaryOp::Rsqrt => arm!(UnaryOp::Rsqrt),
            UnaryOp::Abs => arm!(UnaryOp::Abs),
            UnaryOp::Square => arm!(UnaryOp::Square),
            UnaryOp::Tanh => arm!(UnaryOp::Tanh),
            UnaryOp::Sigmoid => arm!(UnaryOp::Sigmoid),
            UnaryOp::Relu => arm!(UnaryOp::Relu),
            UnaryOp::Silu => arm!(UnaryOp::Silu),
            UnaryOp::GeluErf => arm!(UnaryOp::GeluErf),
            UnaryOp::GeluTanh => arm!(UnaryOp::GeluTanh),
            UnaryOp::Powf(e) => arm!(UnaryOp::Powf(e)),
            UnaryOp::Clamp(lo, hi) => arm!(UnaryOp::Clamp(lo, hi)),
            UnaryOp::AddScalar(c) => arm!(UnaryOp::AddScalar(c)),
            UnaryOp::MulScalar(c) => arm!(UnaryOp::MulScalar(c)),
        }
    }};
}

/// As [`specialised`], for a [`BinaryOp`]: `$run` with `$f` bound to `op.apply` for `op`'s
/// variant, written as a constant.
macro_rules! specialised_binary {
    ($op:expr, |$f:ident| $run:expr) => {{
        macro_rules! arm {
            ($v:expr) => {{
                let $f = move |x, y| ($v).apply(x, y);
                $run
            }};
        }
        match $op {
            BinaryOp::Add => arm!(BinaryOp::Add),
            BinaryOp::Sub => arm!(BinaryOp::Sub),
            BinaryOp::Mul => arm!(BinaryOp::Mul),
            BinaryOp::Div => arm!(BinaryOp::Div),
            BinaryOp::Maximum => arm!(BinaryOp::Maximum),
            BinaryOp::Minimum => arm!(BinaryOp::Minimum),
        }
    }};
}

/// `op` applied to every element of `x`.
pub(crate) fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let l = x.layout();
    let out = float_op!(op.name(), x.cpu_storage(), |v: T| {
        specialised!(op, forward, |f| T::into_storage(map1(v, l, f)))
    });
    x.with_storage(out, x.shape())
}

/// `grad · f'(saved)` in one pass (shapes checked).
pub(crate) fn unary_backward(grad: &Tensor, op: UnaryOp, saved: &Tensor) -> Result<Tensor> {
    let (lv, lg) = (saved.layout(), grad.layout());
    let d = float_op2!(
        op.name(),
        saved.cpu_storage(),
        grad.cpu_storage(),
        |v, g: T| specialised!(op, derivative, |d| T::into_storage(map2(
            v,
            lv,
            g,
            lg,
            |a, b| d(a) * b
        )))
    );
    grad.with_storage(d, grad.shape())
}

/// `op(a, b)` broadcast to `shape`.
pub(crate) fn binary(a: &Tensor, op: BinaryOp, b: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let (la, lb) = (
        a.layout().broadcast_as(shape)?,
        b.layout().broadcast_as(shape)?,
    );
    let out = float_op2!(
        op.name(),
        a.cpu_storage(),
        b.cpu_storage(),
        |x, y: T| specialised_binary!(op, |f| T::into_storage(map2(x, &la, y, &lb, f)))
    );
    a.with_storage(out, shape)
}

/// The u8 mask of `op(a, b)` broadcast to `shape`, compared as f64.
pub(crate) fn cmp(a: &Tensor, op: CmpOp, b: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = (
        a.broadcast_as(shape)?.to_f64_vec()?,
        b.broadcast_as(shape)?.to_f64_vec()?,
    );
    let mask = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| op.apply(x, y) as u8)
        .collect();
    Tensor::from_vec::<u8>(mask, shape)
}

/// Elements of `on_true` where `mask` is nonzero, else of `on_false`, all broadcast to `shape`.
pub(crate) fn where_cond(
    mask: &Tensor,
    on_true: &Tensor,
    on_false: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    let m8 = mask.broadcast_as(shape)?.to_dtype(DType::U8)?;
    let (lm, lt, lf) = (
        m8.layout().clone(),
        on_true.layout().broadcast_as(shape)?,
        on_false.layout().broadcast_as(shape)?,
    );
    let CpuStorage::U8(m) = m8.cpu_storage() else {
        unreachable!("cast to u8 above")
    };
    let rows = Rows::new([&lm, &lt, &lf]);
    let out = float_op2!(
        "where",
        on_true.cpu_storage(),
        on_false.cpu_storage(),
        |t, f: T| {
            let out = crate::cpu::zeroed_rows(lm.elem_count(), rows.len, |row, chunk| {
                let [sm, st, sf] = rows.start(row);
                let [dm, dt, df] = rows.stride;
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = if m[sm + i * dm] != 0 {
                        t[st + i * dt]
                    } else {
                        f[sf + i * df]
                    };
                }
            });
            T::into_storage(out)
        }
    );
    mask.with_storage(out, shape)
}
