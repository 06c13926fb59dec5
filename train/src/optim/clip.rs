//! Gradient-norm clipping over the trainable parameters, as PyTorch's `clip_grad_norm_`.

use autograd::Grads;
use models::ParamStore;
use tensor::{DType, Result, Tensor};

/// The global L2 norm of the gradients of the trainable parameters of `store` (parameters
/// without a gradient count as zero), accumulated in f64.
pub fn grad_norm(store: &ParamStore, grads: &Grads) -> Result<f64> {
    // Summed where the gradients live, read once: one host synchronisation per step on a GPU.
    let mut sum: Option<Tensor> = None;
    for (_, var) in store.iter().filter(|(_, v)| v.requires_grad()) {
        if let Some(g) = grads.get(var) {
            let s = g.to_dtype(DType::F64)?.square()?.sum_all()?;
            sum = Some(match sum {
                Some(acc) => acc.add(&s)?,
                None => s,
            });
        }
    }
    Ok(sum
        .map(|s| s.to_scalar())
        .transpose()?
        .unwrap_or(0.0)
        .sqrt())
}

/// Scales the gradients of the trainable parameters of `store` so that their global L2 norm is
/// at most `max_norm`, and returns the norm before clipping. As PyTorch: the factor is
/// `max_norm / (norm + 1e-6)`, applied only when it is below 1, so gradients already within the
/// bound are left exactly as they are. A non-finite norm is returned with the gradients
/// untouched: the caller decides whether to skip the step.
pub fn clip_grad_norm(store: &ParamStore, grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(store, grads)?;
    let factor = max_norm / (norm + 1e-6);
    if !norm.is_finite() || factor >= 1.0 {
        return Ok(norm);
    }
    for (_, var) in store.iter().filter(|(_, v)| v.requires_grad()) {
        if let Some(g) = grads.remove(var) {
            grads.add(var, g.mul_scalar(factor)?)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device, Tensor};

    /// A store with trainable `a` [2], `b` [2] and frozen `c` [1], and gradients (3, 0), (0, 4)
    /// (global norm 5) for the trainable ones and 100 for the frozen one.
    fn setup() -> (ParamStore, Grads) {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        for (name, n) in [("a", 2), ("b", 2), ("c", 1)] {
            ps.constant(name, &[n], 1.0).unwrap();
        }
        ps.set_trainable("c", false);
        let mut grads = Grads::default();
        for (name, g) in [
            ("a", vec![3.0f32, 0.0]),
            ("b", vec![0.0, 4.0]),
            ("c", vec![100.0]),
        ] {
            let n = g.len();
            grads
                .add(&ps.var(name).unwrap(), Tensor::from_vec(g, &[n]).unwrap())
                .unwrap();
        }
        (ps, grads)
    }

    fn grad(ps: &ParamStore, grads: &Grads, name: &str) -> Vec<f32> {
        grads
            .get(&ps.var(name).unwrap())
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let (ps, mut grads) = setup();
        let norm = clip_grad_norm(&ps, &mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12, "{norm}");
        let f = 1.0 / (5.0 + 1e-6);
        let (a, b) = (grad(&ps, &grads, "a"), grad(&ps, &grads, "b"));
        assert!((a[0] as f64 - 3.0 * f).abs() < 1e-7 && a[1] == 0.0, "{a:?}");
        assert!((b[1] as f64 - 4.0 * f).abs() < 1e-7 && b[0] == 0.0, "{b:?}");
        let after = grad_norm(&ps, &grads).unwrap();
        assert!((after - 1.0).abs() < 1e-6, "{after}");
        // The frozen parameter's gradient is neither counted nor scaled.
        assert_eq!(grad(&ps, &grads, "c"), vec![100.0]);
    }

    #[test]
    fn small_gradients_are_left_alone() {
        let (ps, mut grads) = setup();
        let norm = clip_grad_norm(&ps, &mut grads, 10.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12, "{norm}");
        assert_eq!(grad(&ps, &grads, "a"), vec![3.0, 0.0]);
        assert_eq!(grad(&ps, &grads, "b"), vec![0.0, 4.0]);
    }

    #[test]
    fn a_non_finite_norm_is_returned_and_changes_nothing() {
        let (ps, mut grads) = setup();
        let a = ps.var("a").unwrap();
        grads.remove(&a);
        grads
            .add(&a, Tensor::from_vec(vec![f32::NAN, 1.0], &[2]).unwrap())
            .unwrap();
        let norm = clip_grad_norm(&ps, &mut grads, 1.0).unwrap();
        assert!(norm.is_nan(), "{norm}");
        assert_eq!(grad(&ps, &grads, "b"), vec![0.0, 4.0]);
    }
}
