//! The CPU backend: kernels only. Each file holds the loops of one op family of `ops/` (the file
//! of the same name there has the public methods, their checks and the dispatch), forward and
//! backward side by side. Kernels are generic over [`Float`](crate::Float), so one piece of code
//! serves f32 and f64; the macros here pick the type from the storage. This module never reads
//! `cuda/`, and `cuda/` never reads it.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod isa;
pub(crate) mod matmul;
mod memory;
pub use memory::keep_freed_memory;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod pool;
pub(crate) mod reduce;

use rayon::prelude::*;

use std::mem::MaybeUninit;

pub(crate) use crate::cpu::isa::simd;
use crate::cpu::matmul::SendPtr;
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

/// Runs `f` on one of the CPU kernels' worker threads and returns its result.
///
/// Code that runs many ops in a row (a training step, a sampling loop) is faster there: each
/// parallel loop then splits its work with the other workers directly, where from another
/// thread it is a hand-off (a futex wake and sleep) and the idle workers spin for the cores
/// against the caller between loops. A program that trains should also call
/// [`keep_freed_memory`] at the start.
///
/// ```
/// let x = tensor::Tensor::from_vec(vec![1f32, 2., 3.], &[3]).unwrap();
/// let y = tensor::on_cpu_workers(|| x.exp()).unwrap();
/// assert_eq!(y.shape(), [3]);
/// ```
pub fn on_cpu_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// `Σ_j term([a_j, b_j, ..])` over the equal-length `slices`, each of the `K` sums in f64 over
/// [`LANES`] partial sums. One running sum is a chain of dependent adds that the compiler may not
/// reorder (float addition is not associative), so it runs at the adder's latency; independent
/// lanes vectorise.
#[inline(always)]
pub(crate) fn lane_sums<T: Copy, const N: usize, const K: usize>(
    slices: [&[T]; N],
    term: impl Fn([T; N]) -> [f64; K],
) -> [f64; K] {
    let n = slices.iter().map(|s| s.len()).min().unwrap_or(0);
    let whole = n - n % LANES;
    let mut lanes = [[0.0; LANES]; K];
    for start in (0..whole).step_by(LANES) {
        let chunk: [&[T; LANES]; N] =
            slices.map(|s| s[start..start + LANES].try_into().expect("LANES elements"));
        for lane in 0..LANES {
            let t = term(chunk.map(|c| c[lane]));
            for k in 0..K {
                lanes[k][lane] += t[k];
            }
        }
    }
    let mut sums = lanes.map(|l| l.iter().sum::<f64>());
    for j in whole..n {
        let t = term(slices.map(|s| s[j]));
        for k in 0..K {
            sums[k] += t[k];
        }
    }
    sums
}

/// Partial sums of [`lane_sums`]: one AVX-512 register of f64, or two of AVX2.
const LANES: usize = 8;

/// Elements per task of the elementwise loops: large enough to amortise rayon's scheduling,
/// small enough to stay in L2 and to keep both threads of a small op busy.
const CHUNK: usize = 8192;

/// A new vector of `len` elements, seen as rows of `row_len`, filled by `fill(row, col, piece)`
/// with `piece` the elements `col..col + piece.len()` of row `row`: pieces of at most
/// [`CHUNK`] elements, in parallel when large. The elements are written once, never zeroed first.
pub(crate) fn fill_rows<U: Send>(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let [out] = fill_rows_n(
        len,
        row_len,
        #[inline(always)]
        |row, col, [piece]| fill(row, col, piece),
    );
    out
}

/// [`fill_rows`] for `N` outputs of one shape written together: `fill` gets the same piece of
/// each of them.
pub(crate) fn fill_rows_n<U: Send, const N: usize>(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, usize, [&mut [MaybeUninit<U>]; N]) + Sync,
) -> [Vec<U>; N] {
    let mut outs: [Vec<U>; N] = std::array::from_fn(|_| Vec::with_capacity(len));
    if len > 0 {
        let seg = row_len.min(CHUNK);
        let segs = row_len.div_ceil(seg);
        let units = (len / row_len) * segs;
        let bases = outs
            .each_mut()
            .map(|out| SendPtr(out.spare_capacity_mut().as_mut_ptr()));
        let run = |u: usize| {
            let (row, col) = (u / segs, (u % segs) * seg);
            let n = seg.min(row_len - col);
            let pieces = bases.map(|base| {
                // SAFETY: each unit is a distinct piece of the first `len` elements of the
                // capacity of each output.
                unsafe { std::slice::from_raw_parts_mut(base.get().add(row * row_len + col), n) }
            });
            simd(
                #[inline(always)]
                || fill(row, col, pieces),
            );
        };
        if len >= PAR_THRESHOLD {
            (0..units)
                .into_par_iter()
                .with_min_len((CHUNK / seg).max(1))
                .for_each(run);
        } else {
            (0..units).for_each(run);
        }
    }
    for out in &mut outs {
        // SAFETY: every one of the `len` elements was written by `fill` above.
        unsafe { out.set_len(len) };
    }
    outs
}

/// `f` applied to every element of the view `layout` of `src`, in row-major order.
pub(crate) fn map1<T: Copy + Send + Sync, U: Copy + Send + Sync>(
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let rows = Rows::new([layout]);
    let [stride] = rows.stride;
    fill_rows(
        layout.elem_count(),
        rows.len,
        #[inline(always)]
        |row, col, out| {
            let (start, len) = (rows.start(row)[0] + col * stride, out.len());
            if stride == 1 {
                // A unit stride known to the compiler lets the loop vectorise.
                for (o, &x) in out.iter_mut().zip(&src[start..start + len]) {
                    o.write(f(x));
                }
            } else {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(f(src[start + i * stride]));
                }
            }
        },
    )
}

/// `f` applied elementwise to two views of the same shape, in row-major order.
pub(crate) fn map2<A: Copy + Send + Sync, B: Copy + Send + Sync, U: Copy + Send + Sync>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    let rows = Rows::new([la, lb]);
    let [da, db] = rows.stride;
    fill_rows(
        la.elem_count(),
        rows.len,
        #[inline(always)]
        |row, col, out| {
            let [sa, sb] = rows.start(row);
            let (sa, sb, len) = (sa + col * da, sb + col * db, out.len());
            match (da, db) {
                // Unit and zero (broadcast) strides known to the compiler let the loops vectorise.
                (1, 1) => {
                    for ((o, &x), &y) in out.iter_mut().zip(&a[sa..sa + len]).zip(&b[sb..sb + len])
                    {
                        o.write(f(x, y));
                    }
                }
                (1, 0) => {
                    let y = b[sb];
                    for (o, &x) in out.iter_mut().zip(&a[sa..sa + len]) {
                        o.write(f(x, y));
                    }
                }
                (0, 1) => {
                    let x = a[sa];
                    for (o, &y) in out.iter_mut().zip(&b[sb..sb + len]) {
                        o.write(f(x, y));
                    }
                }
                _ => {
                    for (i, o) in out.iter_mut().enumerate() {
                        o.write(f(a[sa + i * da], b[sb + i * db]));
                    }
                }
            }
        },
    )
}

/// A new vector of `len` elements, `fill(row, chunk)` called on each `row_len`-sized chunk (the
/// last may be shorter) after the chunk is set to zeros (`U::default()`), in parallel when
/// large. Each task zeroes its own chunks just before filling them: `vec![0; len]` zeroed the
/// whole output first on one thread (a `memset` over memory the allocator reuses), then the
/// fill found it out of cache.
pub(crate) fn zeroed_rows<U: Default + Send>(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, &mut [U]) + Sync,
) -> Vec<U> {
    zeroed_rows_with(len, row_len, || (), |_, r, chunk| fill(r, chunk))
}

/// [`zeroed_rows`] with a scratch value per task: `fill(scratch, row, chunk)`, each task's
/// scratch made by `scratch()` and kept across its rows.
pub(crate) fn zeroed_rows_with<U: Default + Send, S>(
    len: usize,
    row_len: usize,
    scratch: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [U]) + Sync,
) -> Vec<U> {
    if row_len == 0 {
        return std::iter::repeat_with(U::default).take(len).collect();
    }
    let mut out = Vec::with_capacity(len);
    let run = |s: &mut S, (r, chunk): (usize, &mut [MaybeUninit<U>])| {
        for x in chunk.iter_mut() {
            x.write(U::default());
        }
        // SAFETY: every element of the chunk was written just above.
        fill(s, r, unsafe {
            &mut *(chunk as *mut [MaybeUninit<U>] as *mut [U])
        });
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if len >= PAR_THRESHOLD {
        let min_rows = (4096 / row_len).max(1);
        spare
            .par_chunks_mut(row_len)
            .with_min_len(min_rows)
            .enumerate()
            .for_each_init(scratch, run);
    } else {
        let mut s = scratch();
        spare
            .chunks_mut(row_len)
            .enumerate()
            .for_each(|rc| run(&mut s, rc));
    }
    // SAFETY: the chunks cover the first `len` elements, and each was written (a panic in
    // `fill` leaves the length at zero).
    unsafe { out.set_len(len) };
    out
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
