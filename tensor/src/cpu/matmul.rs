//! Batched matrix product with broadcasting batch dims, on the `gemm` crate (cache-blocked, SIMD,
//! multi-threaded). Views are passed to it with their strides, so transposes cost no copy.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu::float_op2;
use crate::layout::broadcast_shapes;
use crate::{ensure_shape, Element, Error, Float, Layout, Result, Tensor};

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

impl Tensor {
    /// Matrix product over the last two dims, broadcasting the batch dims:
    /// `[.., m, k] x [.., k, n] -> [.., m, n]`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![1f32, 0., 0., 1.], &[1, 2, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.same_kind("matmul", rhs)?;
        let (a, b) = (self.shape(), rhs.shape());
        ensure_shape!(
            a.len() >= 2 && b.len() >= 2,
            "matmul",
            "lhs {a:?} and rhs {b:?}: both need at least 2 dims"
        );
        let (m, k, k2, n) = (
            a[a.len() - 2],
            a[a.len() - 1],
            b[b.len() - 2],
            b[b.len() - 1],
        );
        ensure_shape!(
            k == k2,
            "matmul",
            "lhs {a:?} and rhs {b:?}: inner dimensions {k} and {k2} differ"
        );
        let batch =
            broadcast_shapes("matmul", &a[..a.len() - 2], &b[..b.len() - 2]).map_err(|_| {
                Error::shape(
                    "matmul",
                    format!("lhs {a:?} and rhs {b:?}: batch dimensions do not broadcast"),
                )
            })?;
        // [.., m, k] x [k, n] with the lhs rows evenly strided: its batch dims fold into the
        // rows of one GEMM (a Linear layer's shape), where a batched GEMM would run many small ones.
        if b.len() == 2 && a.len() > 2 {
            let rows = a[..a.len() - 1].iter().product();
            if let Some(flat) = self.layout().reshape(&[rows, k]) {
                let out_shape = [&a[..a.len() - 1], &[n]].concat();
                return self.view(flat).matmul(rhs)?.reshape(&out_shape);
            }
        }
        let la = self
            .layout()
            .broadcast_as(&[&batch[..], &[m, k]].concat())?;
        let lb = rhs.layout().broadcast_as(&[&batch[..], &[k, n]].concat())?;
        if self.is_cuda() {
            return crate::cuda::matmul::matmul(self, &la, rhs, &lb, (m, n, k), &batch);
        }
        let out_shape = [&batch[..], &[m, n]].concat();
        let out = float_op2!(
            "matmul",
            self.cpu_storage(),
            rhs.cpu_storage(),
            |x, y: T| {
                T::into_storage(batched_gemm(
                    x,
                    &la,
                    y,
                    &lb,
                    (m, n, k),
                    batch.iter().product(),
                ))
            }
        );
        self.with_storage(out, &out_shape)
    }
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
