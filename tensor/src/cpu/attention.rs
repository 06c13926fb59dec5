//! Fused scaled dot-product attention, forward and backward, over `[B, H, S, D]` views.
//!
//! One pass per (batch, head) keeps the `S × S` probabilities in a row buffer instead of a
//! tensor: no score tensor, no softmax tensor, no copies of the permuted q, k, v views that
//! multi-head attention makes. Only the log-sum-exp of each query row is saved for the backward
//! pass, which recomputes the probabilities (as flash attention does).
//!
//! Outputs are stored token-major (`[B, S, H, D]` in memory) and returned as `[B, H, S, D]`
//! views of that storage: the layout the output projection reads after merging the heads, so
//! `o.transpose(1, 2).reshape([B, S, H·D])` costs no copy.
//!
//! On CUDA the same ops run as a composite of tensor ops until the flash kernels arrive.

use rayon::prelude::*;

use crate::cpu::float_op;
use crate::{ensure_shape, CmpOp, Element, Float, Layout, Result, Tensor};

/// The sizes of an attention call: batch, heads, query length, key length, head dim, value dim.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    h: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
}

fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    q.same_kind(op, k)?;
    q.same_kind(op, v)?;
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    ensure_shape!(
        qs.len() == 4
            && ks.len() == 4
            && vs.len() == 4
            && qs[..2] == ks[..2]
            && ks[..2] == vs[..2]
            && qs[3] == ks[3]
            && ks[2] == vs[2]
            && qs[3] > 0,
        op,
        "q {qs:?}, k {ks:?}, v {vs:?} do not fit q [B, H, Sq, D], k [B, H, Sk, D], v [B, H, Sk, Dv]"
    );
    Ok(Dims {
        b: qs[0],
        h: qs[1],
        sq: qs[2],
        sk: ks[2],
        d: qs[3],
        dv: vs[3],
    })
}

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

/// Copies the `[S, D]` matrix of (batch `bi`, head `hi`) of a 4-D view into a dense buffer.
fn gather_matrix<T: Copy>(src: &[T], l: &Layout, bi: usize, hi: usize) -> Vec<T> {
    let (st, sh) = (l.strides(), l.shape());
    let base = l.offset() + bi * st[0] + hi * st[1];
    let mut out = Vec::with_capacity(sh[2] * sh[3]);
    for i in 0..sh[2] {
        let row = base + i * st[2];
        if st[3] == 1 {
            out.extend_from_slice(&src[row..row + sh[3]]);
        } else {
            out.extend((0..sh[3]).map(|c| src[row + c * st[3]]));
        }
    }
    out
}

/// Writes per-(batch, head) `[S, D]` blocks into token-major `[B, S, H, D]` storage.
fn scatter_token_major<T: Float>(blocks: &[Vec<T>], [b, h, s, d]: [usize; 4]) -> Vec<T> {
    let mut out = vec![T::ZERO; b * h * s * d];
    for (bh, block) in blocks.iter().enumerate() {
        let (bi, hi) = (bh / h, bh % h);
        for i in 0..s {
            let at = ((bi * s + i) * h + hi) * d;
            out[at..at + d].copy_from_slice(&block[i * d..(i + 1) * d]);
        }
    }
    out
}

/// `y += alpha · x`: the loop every product below is made of, so that each vectorises over its
/// longest unit-stride dimension.
#[inline]
fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// The `[cols, rows]` transpose of a dense `[rows, cols]` block.
fn transpose<T: Float>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::ZERO; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// `out[j] = Σ_c x[c] · mt[c, j]` for `j < out.len()`: a row of `x · m` with `m` stored
/// transposed (`mt` `[x.len(), stride]`), vectorised over `j`.
#[inline]
fn row_times<T: Float>(out: &mut [T], x: &[T], mt: &[T], stride: usize) {
    out.fill(T::ZERO);
    for (c, &xc) in x.iter().enumerate() {
        let keys = out.len();
        axpy(out, xc, &mt[c * stride..c * stride + keys]);
    }
}

/// One (batch, head) of the forward pass: `(o [Sq, Dv], lse [Sq])`.
fn forward_block<T: Float>(
    q: &[T],
    k: &[T],
    v: &[T],
    n: Dims,
    scale: T,
    causal: bool,
) -> (Vec<T>, Vec<T>) {
    let kt = transpose(k, n.sk, n.d);
    let (mut o, mut lse) = (vec![T::ZERO; n.sq * n.dv], Vec::with_capacity(n.sq));
    let mut p = vec![T::ZERO; n.sk];
    for i in 0..n.sq {
        let p = &mut p[..keys_for(i, n.sk, causal)];
        row_times(p, &q[i * n.d..(i + 1) * n.d], &kt, n.sk);
        let mut max = T::NEG_INFINITY;
        for pj in p.iter_mut() {
            *pj = scale * *pj;
            max = max.max(*pj);
        }
        let mut sum = T::ZERO;
        for pj in p.iter_mut() {
            *pj = (*pj - max).exp();
            sum += *pj;
        }
        let oi = &mut o[i * n.dv..(i + 1) * n.dv];
        for (j, &pj) in p.iter().enumerate() {
            axpy(oi, pj / sum, &v[j * n.dv..(j + 1) * n.dv]);
        }
        lse.push(max + sum.ln());
    }
    (o, lse)
}

/// One (batch, head) of the backward pass: `(dq, dk, dv)` as dense `[S, D]` blocks.
#[allow(clippy::type_complexity)]
fn backward_block<T: Float>(
    [q, k, v, g]: [&[T]; 4],
    lse: &[T],
    n: Dims,
    scale: T,
    causal: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (kt, vt) = (transpose(k, n.sk, n.d), transpose(v, n.sk, n.dv));
    let mut dq = vec![T::ZERO; n.sq * n.d];
    // dK and dV are accumulated transposed, so every update runs along the keys; dK in f64,
    // because a key bias's gradient (Σ_j dk_j) is zero in theory and f32 sums of the dk terms
    // would leave it at 1e-6 of the other gradients instead of at rounding.
    let mut dkt = vec![0f64; n.d * n.sk];
    let mut dvt = vec![T::ZERO; n.dv * n.sk];
    let (mut p, mut ds) = (vec![T::ZERO; n.sk], vec![T::ZERO; n.sk]);
    for i in 0..n.sq {
        let keys = keys_for(i, n.sk, causal);
        let (p, ds) = (&mut p[..keys], &mut ds[..keys]);
        let (qi, gi) = (&q[i * n.d..(i + 1) * n.d], &g[i * n.dv..(i + 1) * n.dv]);
        row_times(p, qi, &kt, n.sk);
        for pj in p.iter_mut() {
            *pj = (scale * *pj - lse[i]).exp();
        }
        row_times(ds, gi, &vt, n.sk);
        // The softmax backward's row term Σ_j p_ij (g_i · v_j) / Σ_j p_ij (= g_i · o_i), summed
        // in f64 from the very p and g·v the next line uses, so that Σ_j ds_ij cancels to
        // rounding as it does in exact arithmetic.
        let (dot, mass) = p
            .iter()
            .zip(ds.iter())
            .fold((0.0, 0.0), |(s, m), (&p, &d)| {
                (s + p.to_f64() * d.to_f64(), m + p.to_f64())
            });
        let row = T::from_f64(dot / mass);
        for (d, &pj) in ds.iter_mut().zip(p.iter()) {
            *d = pj * (*d - row) * scale;
        }
        for c in 0..n.dv {
            axpy(&mut dvt[c * n.sk..c * n.sk + keys], gi[c], p);
        }
        for c in 0..n.d {
            let (dk, qc) = (&mut dkt[c * n.sk..c * n.sk + keys], qi[c].to_f64());
            dk.iter_mut()
                .zip(ds.iter())
                .for_each(|(y, &x)| *y += qc * x.to_f64());
        }
        let dqi = &mut dq[i * n.d..(i + 1) * n.d];
        for (j, &dsj) in ds.iter().enumerate() {
            axpy(dqi, dsj, &k[j * n.d..(j + 1) * n.d]);
        }
    }
    let dkt: Vec<T> = dkt.into_iter().map(T::from_f64).collect();
    (dq, transpose(&dkt, n.d, n.sk), transpose(&dvt, n.dv, n.sk))
}

impl Tensor {
    /// Scaled dot-product attention `softmax(scale · q kᵀ) v` of `q` `[B, H, Sq, D]`, `k`
    /// `[B, H, Sk, D]`, `v` `[B, H, Sk, Dv]` (any strides), with query `i` seeing keys `0..=i`
    /// when `causal`. Returns `(o, lse)`: `o` `[B, H, Sq, Dv]` (stored token-major, see the
    /// module docs) and the log-sum-exp of each row's scaled scores `[B, H, Sq]`, which
    /// [`Tensor::attention_backward`] needs.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let q = Tensor::from_vec(vec![1f32, 0., 0., 1.], &[1, 1, 2, 2]).unwrap();
    /// let v = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[1, 1, 2, 2]).unwrap();
    /// let (o, _) = q.attention(&q, &v, 1.0, true).unwrap();
    /// assert_eq!(o.to_vec::<f32>().unwrap()[..2], [1., 2.]); // the first query sees one key
    /// ```
    pub fn attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let n = check("attention", self, k, v)?;
        if self.is_cuda() {
            return composite::forward(self, k, v, scale, causal);
        }
        let (lq, lk, lv) = (self.layout(), k.layout(), v.layout());
        float_op!("attention", self.cpu_storage(), |qd: T| {
            let kd = T::slice(k.cpu_storage()).expect("same dtype checked");
            let vd = T::slice(v.cpu_storage()).expect("same dtype checked");
            let blocks: Vec<(Vec<T>, Vec<T>)> = (0..n.b * n.h)
                .into_par_iter()
                .map(|bh| {
                    let (bi, hi) = (bh / n.h, bh % n.h);
                    let q = gather_matrix(qd, lq, bi, hi);
                    let k = gather_matrix(kd, lk, bi, hi);
                    let v = gather_matrix(vd, lv, bi, hi);
                    forward_block(&q, &k, &v, n, T::from_f64(scale), causal)
                })
                .collect();
            let (o, lse): (Vec<_>, Vec<_>) = blocks.into_iter().unzip();
            let o = scatter_token_major(&o, [n.b, n.h, n.sq, n.dv]);
            let lse: Vec<T> = lse.concat();
            Ok((
                token_major(o, [n.b, n.h, n.sq, n.dv])?,
                Tensor::from_vec(lse, &[n.b, n.h, n.sq])?,
            ))
        })
    }

    /// The backward of [`Tensor::attention`] (`self` is q): from its output `o`, its `lse` and
    /// the output's gradient `grad`, the gradients `(dq, dk, dv)`, each stored token-major. (The
    /// CPU loops recompute the softmax row term from the probabilities and do not read `o`; the
    /// composite and flash-style kernels take it from `o`.)
    pub fn attention_backward(
        &self,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        lse: &Tensor,
        grad: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let n = check("attention_backward", self, k, v)?;
        for t in [o, grad] {
            self.same_kind("attention_backward", t)?;
            ensure_shape!(
                t.shape() == [n.b, n.h, n.sq, n.dv],
                "attention_backward",
                "output or gradient {:?}, expected [{}, {}, {}, {}]",
                t.shape(),
                n.b,
                n.h,
                n.sq,
                n.dv
            );
        }
        self.same_kind("attention_backward", lse)?;
        ensure_shape!(
            lse.shape() == [n.b, n.h, n.sq],
            "attention_backward",
            "lse {:?}, expected [{}, {}, {}]",
            lse.shape(),
            n.b,
            n.h,
            n.sq
        );
        if self.is_cuda() {
            return composite::backward(self, k, v, o, lse, grad, scale, causal);
        }
        let lse = lse.contiguous()?;
        let ls = [self, k, v, grad].map(|t| t.layout());
        float_op!("attention_backward", self.cpu_storage(), |qd: T| {
            // The row term comes from the recomputed probabilities; `o` is not read here.
            let data = [k, v, grad].map(|t| T::slice(t.cpu_storage()).expect("same dtype"));
            let lse_all = T::slice(lse.cpu_storage()).expect("same dtype");
            let range = lse.layout().contiguous_range().expect("contiguous above");
            let lse_all = &lse_all[range];
            let blocks: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..n.b * n.h)
                .into_par_iter()
                .map(|bh| {
                    let (bi, hi) = (bh / n.h, bh % n.h);
                    let q = gather_matrix(qd, ls[0], bi, hi);
                    let [k, v, g] = [0, 1, 2].map(|t| gather_matrix(data[t], ls[t + 1], bi, hi));
                    let lse = &lse_all[bh * n.sq..(bh + 1) * n.sq];
                    backward_block([&q, &k, &v, &g], lse, n, T::from_f64(scale), causal)
                })
                .collect();
            let mut dq = Vec::with_capacity(blocks.len());
            let (mut dk, mut dv) = (
                Vec::with_capacity(blocks.len()),
                Vec::with_capacity(blocks.len()),
            );
            for (a, b, c) in blocks {
                dq.push(a);
                dk.push(b);
                dv.push(c);
            }
            Ok((
                token_major(
                    scatter_token_major(&dq, [n.b, n.h, n.sq, n.d]),
                    [n.b, n.h, n.sq, n.d],
                )?,
                token_major(
                    scatter_token_major(&dk, [n.b, n.h, n.sk, n.d]),
                    [n.b, n.h, n.sk, n.d],
                )?,
                token_major(
                    scatter_token_major(&dv, [n.b, n.h, n.sk, n.dv]),
                    [n.b, n.h, n.sk, n.dv],
                )?,
            ))
        })
    }
}

/// Attention from tensor ops (matmul, softmax pieces): what CUDA runs until its fused kernels
/// arrive, and the reference the fused CPU loops are tested against.
pub(crate) mod composite {
    use super::*;

    /// `[Sq, Sk]` u8 mask of the keys each query may not see (`j > i`), on `like`'s device.
    fn future(sq: usize, sk: usize, like: &Tensor) -> Result<Tensor> {
        let i = Tensor::arange(0.0, sq as f64, 1.0, crate::DType::F32, like.device())?;
        let j = Tensor::arange(0.0, sk as f64, 1.0, crate::DType::F32, like.device())?;
        j.reshape(&[1, sk])?.cmp(CmpOp::Gt, &i.reshape(&[sq, 1])?)
    }

    /// Scaled scores `scale · q kᵀ`, with the future masked to -inf when `causal`.
    fn scores(q: &Tensor, k: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
        let s = q.mul_scalar(scale)?.matmul(&k.transpose(2, 3)?)?;
        if !causal {
            return Ok(s);
        }
        let (sq, sk) = (s.shape()[2], s.shape()[3]);
        s.masked_fill(&future(sq, sk, &s)?, f64::NEG_INFINITY)
    }

    /// A `[B, H, S, D]` tensor moved to token-major storage.
    fn to_token_major(t: &Tensor) -> Result<Tensor> {
        t.transpose(1, 2)?.contiguous()?.transpose(1, 2)
    }

    pub(crate) fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let s = scores(q, k, scale, causal)?;
        let max = s.max(&[3], true)?;
        let sum = s.sub(&max)?.exp()?.sum(&[3], true)?;
        let lse = max.add(&sum.log()?)?;
        let o = s.sub(&lse)?.exp()?.matmul(v)?;
        Ok((to_token_major(&o)?, lse.squeeze(3)?))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        lse: &Tensor,
        grad: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let p = scores(q, k, scale, causal)?
            .sub(&lse.unsqueeze(3)?)?
            .exp()?;
        let dv = p.transpose(2, 3)?.matmul(grad)?;
        let row = grad.mul(o)?.sum(&[3], true)?;
        let ds = p
            .mul(&grad.matmul(&v.transpose(2, 3)?)?.sub(&row)?)?
            .mul_scalar(scale)?;
        let dq = ds.matmul(k)?;
        let dk = ds.transpose(2, 3)?.matmul(q)?;
        Ok((
            to_token_major(&dq)?,
            to_token_major(&dk)?,
            to_token_major(&dv)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Device, Generator};

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

    #[test]
    fn bad_shapes_name_the_op_and_shapes() {
        let t = Tensor::zeros(&[1, 2, 3, 4], DType::F32, Device::Cpu).unwrap();
        let k = Tensor::zeros(&[1, 2, 3, 5], DType::F32, Device::Cpu).unwrap();
        let err = t.attention(&k, &t, 1.0, false).unwrap_err().to_string();
        assert!(
            err.contains("attention") && err.contains("[1, 2, 3, 5]"),
            "{err}"
        );
        let flat = Tensor::zeros(&[3, 4], DType::F32, Device::Cpu).unwrap();
        assert!(flat.attention(&flat, &flat, 1.0, false).is_err());
    }
}
