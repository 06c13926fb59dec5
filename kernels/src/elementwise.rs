//! Launch wrappers for `cu/elementwise.cu`: pointwise maps, broadcasting binary ops, comparisons,
//! where, fills, casts and strided copies. Outputs are contiguous buffers of `n` elements.

use crate::launch::{launch, View};
use crate::{CUdeviceptr, Dims, Elem, Gpu, Result};

/// Unary op codes, in the order of the `U_*` constants of `elementwise.cu`.
#[allow(missing_docs)]
pub mod unary_code {
    pub const NEG: i32 = 0;
    pub const EXP: i32 = 1;
    pub const LOG: i32 = 2;
    pub const SQRT: i32 = 3;
    pub const RSQRT: i32 = 4;
    pub const ABS: i32 = 5;
    pub const SQUARE: i32 = 6;
    pub const TANH: i32 = 7;
    pub const SIGMOID: i32 = 8;
    pub const RELU: i32 = 9;
    pub const SILU: i32 = 10;
    pub const GELU_ERF: i32 = 11;
    pub const GELU_TANH: i32 = 12;
    pub const POWF: i32 = 13;
    pub const CLAMP: i32 = 14;
    pub const ADD_SCALAR: i32 = 15;
    pub const MUL_SCALAR: i32 = 16;
}

/// A unary op: its code and up to two parameters (exponent, bounds or scalar).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unary {
    /// One of [`unary_code`].
    pub code: i32,
    /// First parameter (`Powf`'s exponent, `Clamp`'s low bound, the scalar).
    pub p0: f64,
    /// Second parameter (`Clamp`'s high bound).
    pub p1: f64,
}

/// Binary op codes: add, sub, mul, div, maximum, minimum (the `B_*` constants).
#[allow(missing_docs)]
pub mod binary_code {
    pub const ADD: i32 = 0;
    pub const SUB: i32 = 1;
    pub const MUL: i32 = 2;
    pub const DIV: i32 = 3;
    pub const MAXIMUM: i32 = 4;
    pub const MINIMUM: i32 = 5;
}

/// Comparison codes: eq, ne, lt, le, gt, ge (the `C_*` constants).
#[allow(missing_docs)]
pub mod cmp_code {
    pub const EQ: i32 = 0;
    pub const NE: i32 = 1;
    pub const LT: i32 = 2;
    pub const LE: i32 = 3;
    pub const GT: i32 = 4;
    pub const GE: i32 = 5;
}

/// `y[i] = op(x[i])` for `n` elements.
pub fn unary(gpu: &Gpu, elem: Elem, op: Unary, n: usize, x: View, y: CUdeviceptr) -> Result<()> {
    elem.float_only("unary")?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("unary_{}", elem.suffix()), gpu.grid_for(n);
        n64, op.code, op.p0, op.p1, x.dims, x.ptr, y)
}

/// `out[i] = f'(saved[i]) · grad[i]`, the gradient through a unary op.
pub fn unary_backward(
    gpu: &Gpu,
    elem: Elem,
    op: Unary,
    n: usize,
    saved: View,
    grad: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("unary backward")?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("unary_backward_{}", elem.suffix()), gpu.grid_for(n);
        n64, op.code, op.p0, op.p1, saved.dims, saved.ptr, grad.dims, grad.ptr, out)
}

/// `out[i] = op(a[i], b[i])` over views broadcast to `n` elements.
pub fn binary(
    gpu: &Gpu,
    elem: Elem,
    op: i32,
    n: usize,
    a: View,
    b: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("binary")?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("binary_{}", elem.suffix()), gpu.grid_for(n);
        n64, op, a.dims, a.ptr, b.dims, b.ptr, out)
}

/// The u8 mask `out[i] = op(a[i], b[i])`.
pub fn cmp(
    gpu: &Gpu,
    elem: Elem,
    op: i32,
    n: usize,
    a: View,
    b: View,
    out: CUdeviceptr,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("cmp_{}", elem.suffix()), gpu.grid_for(n);
        n64, op, a.dims, a.ptr, b.dims, b.ptr, out)
}

/// `out[i] = mask[i] ? t[i] : f[i]` with a u8 mask.
pub fn where_cond(
    gpu: &Gpu,
    elem: Elem,
    n: usize,
    mask: View,
    t: View,
    f: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("where")?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("where_{}", elem.suffix()), gpu.grid_for(n);
        n64, mask.dims, mask.ptr, t.dims, t.ptr, f.dims, f.ptr, out)
}

/// `n` elements of `out` set to `value` (converted to the element type).
pub fn fill(gpu: &Gpu, elem: Elem, n: usize, value: f64, out: CUdeviceptr) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("fill_{}", elem.suffix()), gpu.grid_for(n);
        n64, value, out)
}

/// Copies the view `x` into the view `y` element by element (same element type).
pub fn copy(gpu: &Gpu, elem: Elem, n: usize, x: View, y: View) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("copy_{}", elem.suffix()), gpu.grid_for(n);
        n64, x.dims, x.ptr, y.dims, y.ptr)
}

/// The view `x` of `from` elements converted to a contiguous buffer of `to` elements.
pub fn cast(gpu: &Gpu, from: Elem, to: Elem, n: usize, x: View, y: CUdeviceptr) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "elementwise", format!("to_{}_{}", to.suffix(), from.suffix()), gpu.grid_for(n);
        n64, x.dims, x.ptr, y)
}

/// The dims of a contiguous output of `n` elements (for [`copy`] into a fresh buffer).
pub fn dense(n: usize) -> Dims {
    Dims::contiguous(n, 0)
}
