//! Batched matrix product on the `gemm` crate (cache-blocked, SIMD, multi-threaded), for
//! `ops/matmul.rs`. Views are passed to it with their strides, so transposes cost no copy.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu::float_op2;
use crate::{Element, Float, Layout, Result, Tensor};

/// One strided matrix: row stride and column stride, in elements.
#[derive(Clone, Copy)]
pub(crate) struct MatView {
    pub rs: isize,
    pub cs: isize,
}

/// dst[m×n] (= or +=) lhs[m×k] · rhs[k×n], all strided.
///
/// # Safety
/// The pointers with their strides must address valid, non-overlapping (dst) memory.
pub(crate) unsafe fn gemm_strided<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dv: MatView,
    accumulate: bool,
    lhs: *const T,
    lv: MatView,
    rhs: *const T,
    rv: MatView,
    parallel: bool,
) {
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dv.cs,
            dv.rs,
            accumulate,
            lhs,
            lv.cs,
            lv.rs,
            rhs,
            rv.cs,
            rv.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// Raw pointer that may cross threads: each task writes a disjoint output matrix.
pub(crate) struct SendPtr<T>(pub *mut T);
// By hand: a derive would ask `T: Copy`, and a pointer is copyable whatever it points to.
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole Send wrapper, not the raw field).
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// `a · b` with `la`, `lb` their layouts already broadcast to `[batch.., m, k]` and
/// `[batch.., k, n]`; a fresh contiguous `[batch.., m, n]` output.
pub(crate) fn matmul(
    a: &Tensor,
    la: &Layout,
    b: &Tensor,
    lb: &Layout,
    (m, n, k): (usize, usize, usize),
    batch: &[usize],
) -> Result<Tensor> {
    let out_shape = [batch, &[m, n]].concat();
    let out = float_op2!("matmul", a.cpu_storage(), b.cpu_storage(), |x, y: T| {
        T::into_storage(batched_gemm(
            x,
            la,
            y,
            lb,
            (m, n, k),
            batch.iter().product(),
        ))
    });
    a.with_storage(out, &out_shape)
}

fn batched_gemm<T: Float>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    (m, n, k): (usize, usize, usize),
    batches: usize,
) -> Vec<T> {
    let len = batches * m * n;
    if len == 0 || k == 0 {
        return vec![T::ZERO; len];
    }
    // Not zeroed first: gemm overwrites every element when it does not accumulate.
    let mut out = Vec::<T>::with_capacity(len);
    let r = la.shape().len();
    let view = |l: &Layout| MatView {
        rs: l.strides()[r - 2] as isize,
        cs: l.strides()[r - 1] as isize,
    };
    let (av, bv, ov) = (
        view(la),
        view(lb),
        MatView {
            rs: n as isize,
            cs: 1,
        },
    );
    let batch_dims = &la.shape()[..r - 2];
    let offset = |l: &Layout, mut i: usize| {
        let mut off = l.offset();
        for d in (0..r - 2).rev() {
            off += (i % batch_dims[d]) * l.strides()[d];
            i /= batch_dims[d];
        }
        off
    };
    let dst = SendPtr(out.as_mut_ptr());
    // Big matrices: one at a time, gemm spreads each over the threads. Small ones: one per thread.
    let parallel_inside = m * n * k >= 64 * 64 * 64 || batches == 1;
    let run = |i: usize| {
        // SAFETY: `a`/`b` offsets and strides come from layouts inside their storages (checked when
        // the views were made); each batch writes its own m×n block of `out`.
        unsafe {
            let (pa, pb) = (a.as_ptr().add(offset(la, i)), b.as_ptr().add(offset(lb, i)));
            gemm_strided(
                (m, n, k),
                dst.get().add(i * m * n),
                ov,
                false,
                pa,
                av,
                pb,
                bv,
                parallel_inside,
            );
        }
    };
    if parallel_inside {
        (0..batches).for_each(run);
    } else {
        (0..batches).into_par_iter().for_each(run);
    }
    // SAFETY: the batches' m×n blocks cover all `len` elements, each written by gemm above.
    unsafe { out.set_len(len) };
    out
}
