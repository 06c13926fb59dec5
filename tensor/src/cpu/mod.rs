//! CPU kernels. Each file adds the public ops of one family to [`Tensor`](crate::Tensor), with the
//! kernels their backward passes need beside them. Kernels are generic over [`Float`](crate::Float),
//! so one piece of code serves f32 and f64; the macros here pick the type from the storage.

mod attention;
pub(crate) mod conv;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod pool;
mod reduce;

pub use conv::Conv2dParams;
pub use elementwise::{BinaryOp, CmpOp, Saved, UnaryOp};

use rayon::prelude::*;

use crate::layout::{Rows, PAR_THRESHOLD};
use crate::Layout;

/// Runs `$body` with `$v` bound to the float elements of `$storage` and `$T` to their type;
/// other dtypes are an error naming `$op`.
macro_rules! float_op {
    ($op:expr, $storage:expr, |$v:ident: $T:ident| $body:expr) => {
        match $storage {
            $crate::CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            other => {
                return Err($crate::Error::dtype(
                    $op,
                    other.dtype(),
                    "f32 or f64 (cast other dtypes first)",
                ))
            }
        }
    };
}
pub(crate) use float_op;

/// As [`float_op`] for two storages that must share one float dtype.
macro_rules! float_op2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident: $T:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::CpuStorage::F32($x), $crate::CpuStorage::F32($y)) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            ($crate::CpuStorage::F64($x), $crate::CpuStorage::F64($y)) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            (a, b) => {
                return Err($crate::Error::DType {
                    op: $op,
                    msg: format!(
                        "operands are {} and {}, expected both f32 or both f64",
                        a.dtype(),
                        b.dtype()
                    ),
                })
            }
        }
    };
}
pub(crate) use float_op2;

/// `f` applied to every element of the view `layout` of `src`, in row-major order.
pub(crate) fn map1<T: Copy + Send + Sync, U: Copy + Default + Send + Sync>(
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    if let Some(range) = layout.contiguous_range() {
        let src = &src[range];
        return if src.len() >= PAR_THRESHOLD {
            src.par_iter().with_min_len(4096).map(|&x| f(x)).collect()
        } else {
            src.iter().map(|&x| f(x)).collect()
        };
    }
    let rows = Rows::new([layout]);
    let mut out = vec![U::default(); layout.elem_count()];
    let fill_row = |row: usize, chunk: &mut [U]| {
        let [start] = rows.start(row);
        let [stride] = rows.stride;
        if stride == 1 {
            // A unit stride known to the compiler lets the loop vectorise.
            let len = chunk.len();
            for (o, &x) in chunk.iter_mut().zip(&src[start..start + len]) {
                *o = f(x);
            }
            return;
        }
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = f(src[start + i * stride]);
        }
    };
    for_each_row(&mut out, rows.len, fill_row);
    out
}

/// `f` applied elementwise to two views of the same shape, in row-major order.
pub(crate) fn map2<
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    U: Copy + Default + Send + Sync,
>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        return if a.len() >= PAR_THRESHOLD {
            a.par_iter()
                .zip(b.par_iter())
                .with_min_len(4096)
                .map(|(&x, &y)| f(x, y))
                .collect()
        } else {
            a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
        };
    }
    let rows = Rows::new([la, lb]);
    let mut out = vec![U::default(); la.elem_count()];
    let fill_row = |row: usize, chunk: &mut [U]| {
        let [sa, sb] = rows.start(row);
        let [da, db] = rows.stride;
        let len = chunk.len();
        match (da, db) {
            // Unit and zero (broadcast) strides known to the compiler let the loops vectorise.
            (1, 1) => {
                for ((o, &x), &y) in chunk.iter_mut().zip(&a[sa..sa + len]).zip(&b[sb..sb + len]) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[sb];
                for (o, &x) in chunk.iter_mut().zip(&a[sa..sa + len]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[sa];
                for (o, &y) in chunk.iter_mut().zip(&b[sb..sb + len]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = f(a[sa + i * da], b[sb + i * db]);
                }
            }
        }
    };
    for_each_row(&mut out, rows.len, fill_row);
    out
}

/// Calls `fill(row, chunk)` for each `row_len`-sized chunk of `out`, in parallel when large.
pub(crate) fn for_each_row<U: Send>(
    out: &mut [U],
    row_len: usize,
    fill: impl Fn(usize, &mut [U]) + Sync,
) {
    if row_len == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD {
        let min_rows = (4096 / row_len).max(1);
        out.par_chunks_mut(row_len)
            .with_min_len(min_rows)
            .enumerate()
            .for_each(|(r, c)| fill(r, c));
    } else {
        out.chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, c)| fill(r, c));
    }
}

/// The contiguous elements of a float view: borrowed when already contiguous, else copied.
pub(crate) fn contiguous_slice<'a, T: Copy + Default + Send + Sync>(
    src: &'a [T],
    layout: &Layout,
) -> std::borrow::Cow<'a, [T]> {
    match layout.contiguous_range() {
        Some(r) => std::borrow::Cow::Borrowed(&src[r]),
        None => std::borrow::Cow::Owned(map1(src, layout, |x| x)),
    }
}
