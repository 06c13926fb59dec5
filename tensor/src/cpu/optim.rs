//! CPU kernel of the fused optimizer update of `ops/optim.rs`: AdamW's new parameter and moments
//! in one pass over the elements.

use crate::cpu::{contiguous_slice, fill_rows_n, float_op};
use crate::{AdamWStep, Element, Float, Result, Tensor};

/// The new `(p, m, v)` of [`Tensor::adamw_update`]; the arguments were checked there.
pub(crate) fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "adamw_update";
    let [p, m, v] = float_op!(OP, param.cpu_storage(), |ps: T| {
        let p = contiguous_slice(ps, param.layout());
        let g = contiguous_slice(elements::<T>(grad), grad.layout());
        let m = contiguous_slice(elements::<T>(m), m.layout());
        let v = contiguous_slice(elements::<T>(v), v.layout());
        adamw(&p, &g, &m, &v, step).map(T::into_storage)
    });
    Ok((
        param.with_storage(p, param.shape())?,
        param.with_storage(m, param.shape())?,
        param.with_storage(v, param.shape())?,
    ))
}

/// The elements of a CPU tensor whose dtype is known to be `T`.
fn elements<T: Element>(t: &Tensor) -> &[T] {
    T::slice(t.cpu_storage()).expect("dtype checked by `Tensor::adamw_update`")
}

/// The new `[p, m, v]` of [`Tensor::adamw_update`] from contiguous elements of one length, in
/// one pass ([`fill_rows_n`]: pieces in parallel when large, each output written once).
fn adamw<T: Float>(p: &[T], g: &[T], m: &[T], v: &[T], s: &AdamWStep) -> [Vec<T>; 3] {
    let n = p.len();
    let c = T::from_f64;
    // The scalars as the composite's `mul_scalar` and `add_scalar` round them.
    let (b1, rest1, b2, rest2) = (c(s.b1), c(1.0 - s.b1), c(s.b2), c(1.0 - s.b2));
    let (decay, step_size, eps) = (c(s.decay), c(s.step_size), c(s.eps));
    fill_rows_n(
        n,
        n,
        #[inline(always)]
        |_, start, [po, mo, vo]| {
            let len = po.len();
            // Slices of one known length let the loop drop its bounds checks and vectorise.
            let (p, g) = (&p[start..start + len], &g[start..start + len]);
            let (m, v) = (&m[start..start + len], &v[start..start + len]);
            let (mo, vo) = (&mut mo[..len], &mut vo[..len]);
            for i in 0..len {
                let gi = g[i];
                let mi = m[i] * b1 + gi * rest1;
                let vi = v[i] * b2 + gi * (gi * rest2);
                po[i].write(p[i] * decay - mi / (vi.sqrt() + eps) * step_size);
                mo[i].write(mi);
                vo[i].write(vi);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::PAR_THRESHOLD;
    use crate::{DType, Device};

    const STEP: AdamWStep = AdamWStep {
        b1: 0.9,
        b2: 0.99,
        decay: 0.95,
        step_size: 0.1,
        eps: 1e-3,
    };

    fn t(v: Vec<f64>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape).unwrap()
    }

    #[test]
    fn one_element_by_hand() {
        let (p, g, m, v) = (2.0, 0.5, 0.1, 0.04);
        let m1 = 0.9 * m + (1.0 - 0.9) * g;
        let v1 = 0.99 * v + g * (g * (1.0 - 0.99));
        let p1 = p * 0.95 - m1 / (f64::sqrt(v1) + 1e-3) * 0.1;
        let (pn, mn, vn) = t(vec![p], &[1])
            .adamw_update(
                &t(vec![g], &[1]),
                &t(vec![m], &[1]),
                &t(vec![v], &[1]),
                &STEP,
            )
            .unwrap();
        assert_eq!(pn.to_vec::<f64>().unwrap(), [p1]);
        assert_eq!(mn.to_vec::<f64>().unwrap(), [m1]);
        assert_eq!(vn.to_vec::<f64>().unwrap(), [v1]);
    }

    #[test]
    fn strided_inputs_give_what_their_contiguous_copies_give() {
        // Over two pieces of CHUNK and in parallel, so every branch of the loop runs.
        let n = PAR_THRESHOLD + 3;
        let rand = |seed| {
            Tensor::rand(
                &[n / 3, 3],
                0.1,
                1.0,
                DType::F32,
                Device::Cpu,
                &mut crate::Generator::new(seed),
            )
            .unwrap()
        };
        let [p, g, m, v] = [1, 2, 3, 4].map(rand);
        let [pt, gt, mt, vt] = [&p, &g, &m, &v].map(|x| x.transpose(0, 1).unwrap());
        let strided = pt.adamw_update(&gt, &mt, &vt, &STEP).unwrap();
        let [pc, gc, mc, vc] = [&pt, &gt, &mt, &vt].map(|x| x.contiguous().unwrap());
        let dense = pc.adamw_update(&gc, &mc, &vc, &STEP).unwrap();
        for (a, b) in [
            (strided.0, dense.0),
            (strided.1, dense.1),
            (strided.2, dense.2),
        ] {
            assert_eq!(a.shape(), [3, n / 3]);
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        }
    }

    #[test]
    fn mismatched_arguments_are_errors_naming_the_tensor() {
        let p = t(vec![1.0, 2.0, 3.0], &[3]);
        let short = t(vec![1.0, 2.0], &[2]);
        let f32s = p.to_dtype(DType::F32).unwrap();
        let err = p
            .adamw_update(&p, &short, &p, &STEP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("adamw_update") && err.contains("`m`"), "{err}");
        let err = p
            .adamw_update(&p, &p, &f32s, &STEP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("adamw_update") && err.contains("`v`"), "{err}");
        let ints = p.to_dtype(DType::I64).unwrap();
        let err = ints
            .adamw_update(&ints, &ints, &ints, &STEP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("adamw_update"), "{err}");
    }
}
