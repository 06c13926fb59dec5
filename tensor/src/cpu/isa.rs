//! The CPU's vector instructions, chosen at run time: AVX-512, else AVX2 with FMA, else the
//! baseline x86-64 the binary is built for. No build flag is needed and no binary fails on an
//! older CPU.
//!
//! Two ways to use them:
//! - [`simd`] compiles a closure for the best level, so that the compiler vectorises its loops
//!   16 floats wide (AVX-512) or 8 (AVX2) instead of 4: the element loops, reductions and norms.
//! - [`with_vector`] runs a kernel written against the [`Vector`] trait, for code whose register
//!   blocking the compiler would not find by itself: the direct convolution.

use std::sync::OnceLock;

/// The vector instruction level of this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 F, with AVX2 and FMA beside it.
    Avx512,
    /// AVX2 and FMA.
    Avx2,
    /// What the binary was built for (SSE2 on x86-64), or another architecture.
    Baseline,
}

/// The level of this CPU, detected once. `DIFFTUNE_ISA=avx2` or `baseline` caps it, to compare
/// the paths on one machine (a level the CPU lacks is never chosen).
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("DIFFTUNE_ISA").as_deref() {
            Ok("baseline") => Isa::Baseline,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        let found = detect();
        match (cap, found) {
            (Isa::Baseline, _) | (_, Isa::Baseline) => Isa::Baseline,
            (Isa::Avx2, _) | (_, Isa::Avx2) => Isa::Avx2,
            _ => Isa::Avx512,
        }
    })
}

/// The levels with vectors that this CPU has, for tests that check each against the others.
#[cfg(test)]
pub(crate) fn vector_levels() -> Vec<Isa> {
    match detect() {
        Isa::Avx512 => vec![Isa::Avx512, Isa::Avx2],
        Isa::Avx2 => vec![Isa::Avx2],
        Isa::Baseline => vec![],
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Runs `f` compiled for the CPU's best [`Isa`]. `f` and what it inlines (the element loops of a
/// kernel and the op inside them) are then vectorised for that level. Pass `f` (and any closure
/// it calls) as an `#[inline(always)]` closure: one the compiler chooses not to inline is
/// compiled as a function of its own, for baseline x86-64, and only called from here.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    match isa() {
        // SAFETY: the CPU has the features these were compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2(f) },
        _ => f(),
    }
}

/// A kernel generic over the [`Vector`] it computes with, for [`with_vector`].
pub(crate) trait VectorKernel {
    /// What the kernel returns.
    type Output;
    /// The kernel, for vectors `V`. Mark it `#[inline(always)]`, so that it is compiled inside
    /// the function that enables `V`'s instructions.
    fn run<V: Vector>(self) -> Self::Output;
}

/// Runs `kernel` with the [`Vector`] of f32 of `level` (usually [`isa`]; tests run each level the
/// CPU has); `None` at [`Isa::Baseline`].
#[inline(always)]
pub(crate) fn with_vector<K: VectorKernel>(level: Isa, kernel: K) -> Option<K::Output> {
    assert!(
        level == Isa::Baseline || detect() == Isa::Avx512 || level == detect(),
        "with_vector: {level:?} on a CPU with at most {:?}",
        detect()
    );
    match level {
        // SAFETY: the CPU has the features these were compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(unsafe {
            x86::avx512(
                #[inline(always)]
                || kernel.run::<x86::F32x16>(),
            )
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unsafe {
            x86::avx2(
                #[inline(always)]
                || kernel.run::<x86::F32x8>(),
            )
        }),
        _ => None,
    }
}

/// A SIMD register of f32 lanes. The methods are unsafe: they need the CPU features of the
/// type (which [`with_vector`] checks), and the pointers must address `LANES` valid floats
/// (one for [`Vector::splat`]).
pub(crate) trait Vector: Copy {
    /// Floats per register.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `*p`.
    unsafe fn splat(p: *const f32) -> Self;
    /// `LANES` floats from `p`, any alignment.
    unsafe fn load(p: *const f32) -> Self;
    /// The lanes to `p`, any alignment.
    unsafe fn store(self, p: *mut f32);
    /// `a · b + self`, one rounding.
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    /// The first `n < LANES` floats from `p` (only those are read), the other lanes zero.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    /// The first `n < LANES` lanes to `p` (only those are written).
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// `self + other`, lane by lane.
    unsafe fn add(self, other: Self) -> Self;
    /// The `LANES × LANES` block at `from` (row `r` at `from + r · stride`) transposed into
    /// `to`, contiguous: `to[c · LANES + r] = from[r · stride + c]`.
    unsafe fn transpose(from: *const f32, stride: usize, to: *mut f32);
}

/// Copies `n` floats from `from` to `to` (not overlapping) in whole vectors and a masked tail,
/// with no call: rows of a few floats, where a `memcpy` call per row costs more than the copy.
///
/// # Safety
/// `from` and `to` address `n` floats, and the CPU has `V`'s features.
#[inline(always)]
pub(crate) unsafe fn copy_floats<V: Vector>(from: *const f32, to: *mut f32, n: usize) {
    // SAFETY: forwarded from the caller; every access is below `n`.
    unsafe {
        let mut i = 0;
        while i + V::LANES <= n {
            V::load(from.add(i)).store(to.add(i));
            i += V::LANES;
        }
        if i < n {
            V::load_first(from.add(i), n - i).store_first(to.add(i), n - i);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Vector;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// 16 f32 lanes of AVX-512.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x16(__m512);

    impl Vector for F32x16 {
        const LANES: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> Self {
            F32x16(_mm512_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(p: *const f32) -> Self {
            F32x16(_mm512_set1_ps(unsafe { *p }))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> Self {
            F32x16(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            F32x16(_mm512_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load_first(p: *const f32, n: usize) -> Self {
            F32x16(unsafe { _mm512_maskz_loadu_ps(mask_512(n), p) })
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store_first(self, p: *mut f32, n: usize) {
            unsafe { _mm512_mask_storeu_ps(p, mask_512(n), self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(self, other: Self) -> Self {
            F32x16(_mm512_add_ps(self.0, other.0))
        }
        /// Four rounds of shuffles: pairs of rows interleaved by 32 then 64 bits, which leaves
        /// in lane `k` of `u[4i + q]` column `4k + q` of rows `4i..4i + 4`; then the 128-bit
        /// lanes gathered across `u[q]`, `u[4 + q]`, `u[8 + q]`, `u[12 + q]`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn transpose(from: *const f32, stride: usize, to: *mut f32) {
            let r: [__m512; 16] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(from.add(i * stride)) });
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (g, q) = (i / 4 * 4, i % 4);
                let (a, b) = (t[g + q / 2], t[g + 2 + q / 2]);
                if q % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                }
            });
            for q in 0..4 {
                let a = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
                let b = _mm512_shuffle_f32x4::<0xDD>(u[q], u[4 + q]);
                let c = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
                let d = _mm512_shuffle_f32x4::<0xDD>(u[8 + q], u[12 + q]);
                let out = [
                    _mm512_shuffle_f32x4::<0x88>(a, c),
                    _mm512_shuffle_f32x4::<0x88>(b, d),
                    _mm512_shuffle_f32x4::<0xDD>(a, c),
                    _mm512_shuffle_f32x4::<0xDD>(b, d),
                ];
                for (k, v) in out.into_iter().enumerate() {
                    unsafe { _mm512_storeu_ps(to.add((4 * k + q) * 16), v) };
                }
            }
        }
    }

    /// The AVX-512 mask of lanes `0..n` (`n < 16`).
    #[inline(always)]
    fn mask_512(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// 8 f32 lanes of AVX2.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x8(__m256);

    impl Vector for F32x8 {
        const LANES: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> Self {
            F32x8(_mm256_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn splat(p: *const f32) -> Self {
            F32x8(_mm256_set1_ps(unsafe { *p }))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(p: *const f32) -> Self {
            F32x8(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            F32x8(_mm256_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load_first(p: *const f32, n: usize) -> Self {
            F32x8(unsafe { _mm256_maskload_ps(p, mask_256(n)) })
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store_first(self, p: *mut f32, n: usize) {
            unsafe { _mm256_maskstore_ps(p, mask_256(n), self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn add(self, other: Self) -> Self {
            F32x8(_mm256_add_ps(self.0, other.0))
        }
        /// Pairs of rows interleaved by 32 then 64 bits, which leaves in half `h` of `u[4i + q]`
        /// column `4h + q` of rows `4i..4i + 4`; then the halves of `u[q]` and `u[4 + q]` joined.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn transpose(from: *const f32, stride: usize, to: *mut f32) {
            let r: [__m256; 8] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(from.add(i * stride)) });
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            let u: [__m256; 8] = std::array::from_fn(|i| {
                let (g, q) = (i / 4 * 4, i % 4);
                let (a, b) = (t[g + q / 2], t[g + 2 + q / 2]);
                if q % 2 == 0 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xEE>(a, b)
                }
            });
            for q in 0..4 {
                let low = _mm256_permute2f128_ps::<0x20>(u[q], u[4 + q]);
                let high = _mm256_permute2f128_ps::<0x31>(u[q], u[4 + q]);
                unsafe {
                    _mm256_storeu_ps(to.add(q * 8), low);
                    _mm256_storeu_ps(to.add((4 + q) * 8), high);
                }
            }
        }
    }

    /// The AVX2 mask of lanes `0..n` (`n < 8`): all ones in the lanes below `n`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask_256(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `from` into a buffer of sentinels with [`copy_floats`].
    struct CopyKernel<'a> {
        from: &'a [f32],
        to: &'a mut [f32],
    }

    impl VectorKernel for CopyKernel<'_> {
        type Output = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            assert!(self.to.len() >= self.from.len());
            // SAFETY: both hold `from.len()` floats; `with_vector` checked the CPU.
            unsafe { copy_floats::<V>(self.from.as_ptr(), self.to.as_mut_ptr(), self.from.len()) }
        }
    }

    /// Transposes a block of distinct values with [`Vector::transpose`].
    struct TransposeKernel<'a> {
        from: &'a [f32],
        stride: usize,
        to: &'a mut [f32],
    }

    impl VectorKernel for TransposeKernel<'_> {
        type Output = usize;
        #[inline(always)]
        fn run<V: Vector>(self) -> usize {
            assert!(self.from.len() >= (V::LANES - 1) * self.stride + V::LANES);
            assert!(self.to.len() >= V::LANES * V::LANES);
            // SAFETY: sizes checked above; `with_vector` checked the CPU.
            unsafe { V::transpose(self.from.as_ptr(), self.stride, self.to.as_mut_ptr()) };
            V::LANES
        }
    }

    #[test]
    fn transpose_transposes() {
        let stride = 19;
        let from: Vec<f32> = (0..16 * stride).map(|i| i as f32).collect();
        for level in vector_levels() {
            let mut to = vec![-1.0; 256];
            let lanes = with_vector(
                level,
                TransposeKernel {
                    from: &from,
                    stride,
                    to: &mut to,
                },
            )
            .expect("a vector level");
            for c in 0..lanes {
                for r in 0..lanes {
                    assert_eq!(
                        to[c * lanes + r],
                        from[r * stride + c],
                        "{level:?}: ({c}, {r})"
                    );
                }
            }
        }
    }

    /// Every length up to past two vectors, at every vector level: the floats are copied, and
    /// the masked tail writes nothing past them.
    #[test]
    fn copy_floats_copies_exactly_n() {
        let from: Vec<f32> = (0..40).map(|i| i as f32 + 0.5).collect();
        for level in vector_levels() {
            for n in 0..from.len() {
                let mut to = vec![-1.0; from.len() + 1];
                with_vector(
                    level,
                    CopyKernel {
                        from: &from[..n],
                        to: &mut to,
                    },
                )
                .expect("a vector level");
                assert_eq!(&to[..n], &from[..n], "{level:?}, n = {n}");
                assert!(
                    to[n..].iter().all(|&v| v == -1.0),
                    "{level:?}, n = {n}: wrote past n"
                );
            }
        }
    }
}
