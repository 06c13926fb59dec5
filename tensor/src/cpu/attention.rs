//! The fused CPU loops of scaled dot-product attention (`ops/attention.rs`), forward and
//! backward.
//!
//! One pass per (batch, head) keeps the `S × S` probabilities in a row buffer instead of a
//! tensor: no score tensor, no softmax tensor, no copies of the permuted q, k, v views that
//! multi-head attention makes. Only the log-sum-exp of each query row is saved for the backward
//! pass, which recomputes the probabilities (as flash attention does). Outputs are written
//! token-major (`[B, S, H, D]` in memory), as the module docs of `ops/attention.rs` explain.

use rayon::prelude::*;

use crate::cpu::matmul::{gemm_strided, MatView, SendPtr};
use crate::cpu::{float_op, lane_sums, simd};
use crate::ops::attention::Dims;
use crate::{Element, Float, Layout, Result, Tensor};

/// The number of keys query `i` may attend to.
fn keys_for(i: usize, sk: usize, causal: bool) -> usize {
    if causal {
        (i + 1).min(sk)
    } else {
        sk
    }
}

/// A `[B, H, S, D]` view over token-major storage `[B, S, H, D]`.
fn token_major<T: Element>(data: Vec<T>, [b, h, s, d]: [usize; 4]) -> Result<Tensor> {
    Tensor::from_vec(data, &[b, s, h, d])?.transpose(1, 2)
}

/// A strided matrix inside a slice: the offset of its first element and its strides.
#[derive(Clone, Copy)]
struct Mat {
    at: usize,
    view: MatView,
}

impl Mat {
    /// The `[S, D]` matrix of (batch `bi`, head `hi`) of a 4-D view.
    fn of(l: &Layout, bi: usize, hi: usize) -> Mat {
        let st = l.strides();
        Mat {
            at: l.offset() + bi * st[0] + hi * st[1],
            view: MatView {
                rs: st[2] as isize,
                cs: st[3] as isize,
            },
        }
    }

    /// The `[S, D]` block of (batch `bi`, head `hi`) in token-major `[B, S, H, D]` storage.
    fn token_major(n: Dims, s: usize, d: usize, bi: usize, hi: usize) -> Mat {
        Mat {
            at: (bi * s * n.h + hi) * d,
            view: MatView {
                rs: (n.h * d) as isize,
                cs: 1,
            },
        }
    }

    /// A dense row-major `[rows, cols]` buffer.
    fn dense(cols: usize) -> Mat {
        Mat {
            at: 0,
            view: MatView {
                rs: cols as isize,
                cs: 1,
            },
        }
    }

    /// The transpose (no copy: the strides swap).
    fn t(self) -> Mat {
        Mat {
            at: self.at,
            view: MatView {
                rs: self.view.cs,
                cs: self.view.rs,
            },
        }
    }
}

/// `dst = a · b` for `a` `[m, k]` and `b` `[k, n]`, each a (slice, matrix in it) pair, `dst` a
/// (base pointer, matrix from it) pair; on one thread (the callers run one (batch, head) per task).
///
/// # Safety
/// `dst` must address an `[m, n]` matrix no other thread touches; the `Mat`s of `a` and `b` must
/// lie inside their slices (they come from checked layouts).
unsafe fn product<T: Float>(
    (m, n, k): (usize, usize, usize),
    (dst, d): (*mut T, Mat),
    (a_data, a): (&[T], Mat),
    (b_data, b): (&[T], Mat),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (a_ptr, b_ptr) = (a_data.as_ptr().add(a.at), b_data.as_ptr().add(b.at));
        gemm_strided(
            (m, n, k),
            dst.add(d.at),
            d.view,
            false,
            a_ptr,
            a.view,
            b_ptr,
            b.view,
            false,
        )
    }
}

/// Turns the scores `s` (`[sq, sk]` rows) into probabilities `exp(scale · s − lse)` in place,
/// with each row's log-sum-exp `lse` read from `saved`, or computed and written to `lse_out`
/// (one exp per score either way); keys a causal query may not see get 0.
fn probabilities<T: Float>(s: &mut [T], sk: usize, scale: T, causal: bool, mut lse: Lse<'_, T>) {
    simd(
        #[inline(always)]
        move || {
            for (i, row) in s.chunks_mut(sk).enumerate() {
                let (seen, unseen) = row.split_at_mut(keys_for(i, sk, causal));
                unseen.fill(T::ZERO);
                match &mut lse {
                    Lse::Saved(lse) => seen
                        .iter_mut()
                        .for_each(|x| *x = (scale * *x - lse[i]).exp()),
                    Lse::Out(out) => {
                        let max = seen.iter().fold(T::NEG_INFINITY, |m, &x| m.max(scale * x));
                        // The exps first, the sum after: a sum inside the loop would keep the
                        // exps from vectorising.
                        seen.iter_mut().for_each(|x| *x = (scale * *x - max).exp());
                        let [sum] = lane_sums([&*seen], |[x]| [x.to_f64()]);
                        let sum = T::from_f64(sum);
                        seen.iter_mut().for_each(|x| *x = *x / sum);
                        out[i] = max + sum.ln();
                    }
                }
            }
        },
    )
}

/// Where [`probabilities`] takes each row's log-sum-exp from: the saved ones, or computed and
/// written to an `[sq]` output.
enum Lse<'a, T> {
    Saved(&'a [T]),
    Out(&'a mut [T]),
}

/// One (batch, head) of the forward pass: scores and probabilities in a `[Sq, Sk]` buffer, two
/// GEMMs, the output written into its block `o` of the token-major output, the rows'
/// log-sum-exp into `lse`.
#[allow(clippy::too_many_arguments)]
fn forward_block<T: Float>(
    [qd, kd, vd]: [&[T]; 3],
    [q, k, v]: [Mat; 3],
    out: SendPtr<T>,
    o: Mat,
    lse: &mut [T],
    n: Dims,
    scale: T,
    causal: bool,
) {
    if n.sk == 0 {
        // No keys: an empty sum, so o stays 0 and each lse is ln 0.
        lse.fill(T::NEG_INFINITY);
        return;
    }
    let mut p = vec![T::ZERO; n.sq * n.sk];
    let pm = Mat::dense(n.sk);
    // SAFETY: p is [sq, sk]; q, k, v come from checked layouts; this task alone writes block o.
    unsafe {
        product(
            (n.sq, n.sk, n.d),
            (p.as_mut_ptr(), pm),
            (qd, q),
            (kd, k.t()),
        );
        probabilities(&mut p, n.sk, scale, causal, Lse::Out(lse));
        product((n.sq, n.dv, n.sk), (out.get(), o), (&p, pm), (vd, v));
    }
}

/// One (batch, head) of the backward pass: recomputes the probabilities from `lse`, forms the
/// scores' gradient, and writes dq, dk, dv into their token-major blocks with five GEMMs.
#[allow(clippy::too_many_arguments)]
fn backward_block<T: Float>(
    [qd, kd, vd, gd]: [&[T]; 4],
    [q, k, v, g]: [Mat; 4],
    [dq, dk, dv]: [SendPtr<T>; 3],
    [dq_at, dk_at, dv_at]: [Mat; 3],
    lse: &[T],
    n: Dims,
    scale: T,
    causal: bool,
) {
    if n.sk == 0 {
        return; // dq stays 0; dk and dv are empty
    }
    let (mut p, mut ds) = (vec![T::ZERO; n.sq * n.sk], vec![T::ZERO; n.sq * n.sk]);
    let dense = Mat::dense(n.sk);
    // SAFETY: p and ds are [sq, sk]; inputs come from checked layouts; this task alone writes
    // its blocks of dq, dk and dv.
    unsafe {
        product(
            (n.sq, n.sk, n.d),
            (p.as_mut_ptr(), dense),
            (qd, q),
            (kd, k.t()),
        );
        probabilities(&mut p, n.sk, scale, causal, Lse::Saved(lse));
        product(
            (n.sq, n.sk, n.dv),
            (ds.as_mut_ptr(), dense),
            (gd, g),
            (vd, v.t()),
        );
    }
    for (pi, dsi) in p.chunks(n.sk).zip(ds.chunks_mut(n.sk)) {
        // The softmax backward's row term Σ_j p_ij (g_i · v_j) / Σ_j p_ij (= g_i · o_i), summed
        // in f64 from the very p and g·v used here, so that each row of ds sums to zero up to
        // rounding, as it does in exact arithmetic.
        let (dot, mass) = pi
            .iter()
            .zip(dsi.iter())
            .fold((0.0, 0.0), |(s, m), (&p, &d)| {
                (s + p.to_f64() * d.to_f64(), m + p.to_f64())
            });
        let row = T::from_f64(dot / mass);
        for (d, &pj) in dsi.iter_mut().zip(pi) {
            *d = pj * (*d - row) * scale;
        }
    }
    // SAFETY: as above.
    unsafe {
        product(
            (n.sk, n.dv, n.sq),
            (dv.get(), dv_at),
            (&p, dense.t()),
            (gd, g),
        );
        product((n.sq, n.d, n.sk), (dq.get(), dq_at), (&ds, dense), (kd, k));
        product(
            (n.sk, n.d, n.sq),
            (dk.get(), dk_at),
            (&ds, dense.t()),
            (qd, q),
        );
        center_keys(dk.get().add(dk_at.at), dk_at.view, n.sk, n.d);
    }
}

/// Removes each column's mean over the keys from a `[sk, d]` block of dk.
///
/// Shifting every key by one vector shifts each query's scores by a constant, which softmax
/// ignores, so Σ_j dk_j = 0 exactly. The f32 GEMM leaves rounding noise in that sum (what a key
/// bias's gradient reads); projecting it out only removes error.
///
/// # Safety
/// `dk` with `view` must address an `[sk, d]` matrix this thread alone touches.
unsafe fn center_keys<T: Float>(dk: *mut T, view: MatView, sk: usize, d: usize) {
    let at = |j: usize, c: usize| j as isize * view.rs + c as isize * view.cs;
    for c in 0..d {
        // SAFETY: (j, c) lies inside the block, by the caller's contract.
        unsafe {
            let mean = (0..sk)
                .map(|j| (*dk.offset(at(j, c))).to_f64())
                .sum::<f64>()
                / sk as f64;
            for j in 0..sk {
                let x = dk.offset(at(j, c));
                *x = T::from_f64((*x).to_f64() - mean);
            }
        }
    }
}

/// [`Tensor::attention`] of `q`, `k`, `v` (checked, of sizes `n`): `(o, lse)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n: Dims,
    scale: f64,
    causal: bool,
) -> Result<(Tensor, Tensor)> {
    let ls = [q, k, v].map(|t| t.layout());
    float_op!("attention", q.cpu_storage(), |qd: T| {
        let [kd, vd] = [k, v].map(|t| T::slice(t.cpu_storage()).expect("same dtype"));
        let mut o = vec![T::ZERO; n.b * n.h * n.sq * n.dv];
        let mut lse = vec![T::ZERO; n.b * n.h * n.sq];
        let out = SendPtr(o.as_mut_ptr());
        lse.par_chunks_mut(n.sq.max(1))
            .enumerate()
            .for_each(|(bh, lse)| {
                let (bi, hi) = (bh / n.h, bh % n.h);
                let mats = [0, 1, 2].map(|t| Mat::of(ls[t], bi, hi));
                let o_at = Mat::token_major(n, n.sq, n.dv, bi, hi);
                let scale = T::from_f64(scale);
                forward_block([qd, kd, vd], mats, out, o_at, lse, n, scale, causal);
            });
        Ok((
            token_major(o, [n.b, n.h, n.sq, n.dv])?,
            Tensor::from_vec(lse, &[n.b, n.h, n.sq])?,
        ))
    })
}

/// [`Tensor::attention_backward`] from `q`, `k`, `v`, the forward's `lse` and the output's
/// gradient `grad` (checked, of sizes `n`): `(dq, dk, dv)`. The row term comes from the
/// recomputed probabilities, so the forward's output is not read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lse: &Tensor,
    grad: &Tensor,
    n: Dims,
    scale: f64,
    causal: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let lse = lse.contiguous()?;
    let ls = [q, k, v, grad].map(|t| t.layout());
    float_op!("attention_backward", q.cpu_storage(), |qd: T| {
        // The row term comes from the recomputed probabilities; `o` is not read here.
        let [kd, vd, gd] = [k, v, grad].map(|t| T::slice(t.cpu_storage()).expect("same dtype"));
        let lse_all = T::slice(lse.cpu_storage()).expect("same dtype");
        let lse_all = &lse_all[lse.layout().contiguous_range().expect("contiguous above")];
        let mut dq = vec![T::ZERO; n.b * n.h * n.sq * n.d];
        let mut dk = vec![T::ZERO; n.b * n.h * n.sk * n.d];
        let mut dv = vec![T::ZERO; n.b * n.h * n.sk * n.dv];
        let outs = [&mut dq, &mut dk, &mut dv].map(|t| SendPtr(t.as_mut_ptr()));
        (0..n.b * n.h).into_par_iter().for_each(|bh| {
            let (bi, hi) = (bh / n.h, bh % n.h);
            let mats = [0, 1, 2, 3].map(|t| Mat::of(ls[t], bi, hi));
            let at = [
                Mat::token_major(n, n.sq, n.d, bi, hi),
                Mat::token_major(n, n.sk, n.d, bi, hi),
                Mat::token_major(n, n.sk, n.dv, bi, hi),
            ];
            let lse = &lse_all[bh * n.sq..(bh + 1) * n.sq];
            let scale = T::from_f64(scale);
            backward_block([qd, kd, vd, gd], mats, outs, at, lse, n, scale, causal);
        });
        Ok((
            token_major(dq, [n.b, n.h, n.sq, n.d])?,
            token_major(dk, [n.b, n.h, n.sk, n.d])?,
            token_major(dv, [n.b, n.h, n.sk, n.dv])?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use crate::ops::attention::composite;
    use crate::{DType, Device, Generator, Tensor};

    fn randn(shape: &[usize], gen: &mut Generator) -> Tensor {
        Tensor::randn(shape, 0.0, 1.0, DType::F64, Device::Cpu, gen).unwrap()
    }

    /// The fused loops agree with the composite of tensor ops, forward and backward, on strided
    /// (permuted) views, with and without the causal mask, including Sq != Sk and Dv != D.
    #[test]
    fn fused_matches_composite() {
        let mut gen = Generator::new(0);
        for causal in [false, true] {
            // q/k/v as multi-head attention makes them: permuted views of [B, S, H, D].
            let q = randn(&[2, 5, 3, 4], &mut gen).transpose(1, 2).unwrap();
            let k = randn(&[2, 7, 3, 4], &mut gen).transpose(1, 2).unwrap();
            let v = randn(&[2, 7, 3, 6], &mut gen).transpose(1, 2).unwrap();
            let g = randn(&[2, 3, 5, 6], &mut gen);
            let (o, lse) = q.attention(&k, &v, 0.4, causal).unwrap();
            let (o_ref, lse_ref) = composite::forward(&q, &k, &v, 0.4, causal).unwrap();
            assert!(o.max_abs_diff(&o_ref).unwrap() < 1e-12);
            assert!(lse.max_abs_diff(&lse_ref).unwrap() < 1e-12);
            // Stored token-major: merging the heads is a free view.
            assert!(o.transpose(1, 2).unwrap().is_contiguous());
            let fused = q
                .attention_backward(&k, &v, &o, &lse, &g, 0.4, causal)
                .unwrap();
            let reference = composite::backward(&q, &k, &v, &o, &lse, &g, 0.4, causal).unwrap();
            for (a, b) in [
                (fused.0, reference.0),
                (fused.1, reference.1),
                (fused.2, reference.2),
            ] {
                assert_eq!(a.shape(), b.shape());
                assert!(a.max_abs_diff(&b).unwrap() < 1e-12);
            }
        }
    }

    #[test]
    fn attention_equals_softmax_of_scores_times_values() {
        let mut gen = Generator::new(1);
        let (q, k, v) = (
            randn(&[1, 2, 3, 4], &mut gen),
            randn(&[1, 2, 3, 4], &mut gen),
            randn(&[1, 2, 3, 2], &mut gen),
        );
        let (o, _) = q.attention(&k, &v, 0.5, false).unwrap();
        let expected = q
            .mul_scalar(0.5)
            .unwrap()
            .matmul(&k.transpose(2, 3).unwrap())
            .unwrap()
            .softmax(3)
            .unwrap()
            .matmul(&v)
            .unwrap();
        assert!(o.max_abs_diff(&expected).unwrap() < 1e-12);
    }

    /// Σ_j dk_j = 0 exactly (softmax ignores a shift shared by all keys): in f32 it stays at
    /// rounding, where a key bias's gradient reads it.
    #[test]
    fn key_gradients_sum_to_zero() {
        let mut gen = Generator::new(2);
        let mut r = |s: &[usize]| randn(s, &mut gen).to_dtype(DType::F32).unwrap();
        let (q, k, v, g) = (
            r(&[2, 3, 49, 24]),
            r(&[2, 3, 49, 24]),
            r(&[2, 3, 49, 24]),
            r(&[2, 3, 49, 24]),
        );
        for causal in [false, true] {
            let (o, lse) = q.attention(&k, &v, 0.35, causal).unwrap();
            let (_, dk, _) = q
                .attention_backward(&k, &v, &o, &lse, &g, 0.35, causal)
                .unwrap();
            let zero = Tensor::zeros(&[2, 3, 24], DType::F32, Device::Cpu).unwrap();
            let scale = dk.max_abs_diff(&dk.zeros_like().unwrap()).unwrap();
            let drift = dk.sum(&[2], false).unwrap().max_abs_diff(&zero).unwrap();
            // Measured: 1.1e-7 and 0.7e-7 of max |dk|; an f32 GEMM alone leaves 4.5e-7 and 2.6e-7.
            assert!(
                drift < 2e-7 * scale,
                "Σ dk = {drift:.3e} against |dk| {scale}"
            );
        }
    }

    #[test]
    fn no_keys_give_zero_output_and_empty_gradients() {
        let q = Tensor::ones(&[1, 2, 3, 4], DType::F32, Device::Cpu).unwrap();
        let k = Tensor::zeros(&[1, 2, 0, 4], DType::F32, Device::Cpu).unwrap();
        let v = Tensor::zeros(&[1, 2, 0, 5], DType::F32, Device::Cpu).unwrap();
        let (o, lse) = q.attention(&k, &v, 1.0, false).unwrap();
        assert_eq!(o.to_vec::<f32>().unwrap(), vec![0.0; 30]);
        assert!(lse
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|&l| l == f32::NEG_INFINITY));
        let g = Tensor::ones(&[1, 2, 3, 5], DType::F32, Device::Cpu).unwrap();
        let (dq, dk, dv) = q
            .attention_backward(&k, &v, &o, &lse, &g, 1.0, false)
            .unwrap();
        assert_eq!(dq.to_vec::<f32>().unwrap(), vec![0.0; 24]);
        assert_eq!((dk.elem_count(), dv.elem_count()), (0, 0));
    }
}
