//! Non-finite values caught where they enter a run: the gradients before an update, and the
//! weights, their moving average and the optimizer state before a checkpoint. A diverged run then
//! stops with an error that names the step and the tensor, and the last good checkpoint stays the
//! latest.

use autograd::Grads;
use models::ParamStore;
use tensor::{Error, Result, Tensor};

use crate::optim::{AdamW, Ema};

/// The name of the first tensor with a NaN or an infinity, if any.
pub fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<Option<&'a str>> {
    for (name, t) in tensors {
        if !t.all_finite()? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Refuses to update from gradients whose global norm `norm` is not finite, naming the first
/// parameter whose gradient holds a NaN or an infinity.
pub fn check_gradients(step: u64, store: &ParamStore, grads: &Grads, norm: f64) -> Result<()> {
    if norm.is_finite() {
        return Ok(());
    }
    let values: Vec<(&str, Tensor)> = store
        .iter()
        .filter_map(|(name, var)| grads.get(var).map(|g| (name, g.clone())))
        .collect();
    let culprit = first_non_finite(values.iter().map(|(n, t)| (*n, t)))?;
    Err(Error::msg(format!(
        "step {step}: the gradient norm is {norm}{}; the weights were not updated \
         (lower `lr`, raise `warmup_steps` or set `grad_clip`)",
        culprit.map_or(String::new(), |n| format!(
            " (first non-finite gradient: `{n}`)"
        )),
    )))
}

/// Refuses to checkpoint a state with a NaN or an infinity in the weights, their moving average
/// or the optimizer's moments, naming the step and the tensor.
pub fn check_state(step: u64, store: &ParamStore, ema: &Ema, opt: &AdamW) -> Result<()> {
    let averages = ema.names().filter_map(|n| ema.get(n).map(|t| (n, t)));
    let moments = opt
        .names()
        .filter_map(|n| opt.moments(n).map(|(m, v)| (n, m, v)))
        .flat_map(|(n, m, v)| [(n, m), (n, v)]);
    let found = [
        ("the weight", store.first_non_finite()?),
        ("the moving average of", first_non_finite(averages)?),
        ("AdamW's moments of", first_non_finite(moments)?),
    ];
    let Some((what, name)) = found.into_iter().find_map(|(w, n)| n.map(|n| (w, n))) else {
        return Ok(());
    };
    Err(Error::msg(format!(
        "step {step}: {what} `{name}` is not finite; the run has diverged and this state is \
         not checkpointed (the latest checkpoint is still the last good one)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device};

    #[test]
    fn names_the_first_non_finite_tensor() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, f32::NAN], &[2]).unwrap();
        let c = Tensor::from_vec(vec![f32::NEG_INFINITY], &[1]).unwrap();
        assert_eq!(first_non_finite([("a", &a)]).unwrap(), None);
        assert_eq!(
            first_non_finite([("a", &a), ("b", &b), ("c", &c)]).unwrap(),
            Some("b")
        );
        assert_eq!(first_non_finite([("c", &c)]).unwrap(), Some("c"));
    }

    #[test]
    fn a_non_finite_weight_or_moving_average_is_refused_with_its_name() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        ps.constant("block.weight", &[3], 1.0).unwrap();
        let ema = Ema::new(&ps, 0.9);
        let opt = AdamW::new(Default::default());
        check_state(7, &ps, &ema, &opt).unwrap();
        ps.set(
            "block.weight",
            Tensor::from_vec(vec![1.0f32, f32::INFINITY, 0.0], &[3]).unwrap(),
        )
        .unwrap();
        let err = check_state(7, &ps, &ema, &opt).unwrap_err().to_string();
        assert!(
            err.contains("step 7") && err.contains("`block.weight`"),
            "{err}"
        );
        let mut ema = Ema::new(&ps, 0.9);
        ps.set(
            "block.weight",
            Tensor::from_vec(vec![1.0f32; 3], &[3]).unwrap(),
        )
        .unwrap();
        let err = check_state(8, &ps, &ema, &opt).unwrap_err().to_string();
        assert!(err.contains("moving average of `block.weight`"), "{err}");
        ema.update(&ps).unwrap();
        assert!(
            check_state(8, &ps, &ema, &opt).is_err(),
            "inf * decay stays inf"
        );
    }

    #[test]
    fn a_non_finite_gradient_is_refused_with_the_parameter_named() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        ps.constant("a", &[2], 1.0).unwrap();
        ps.constant("b", &[2], 1.0).unwrap();
        let mut grads = Grads::default();
        let a = ps.var("a").unwrap();
        grads
            .add(&a, Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap())
            .unwrap();
        check_gradients(3, &ps, &grads, 5f64.sqrt()).unwrap();
        let b = ps.var("b").unwrap();
        grads
            .add(&b, Tensor::from_vec(vec![f32::NAN, 2.0], &[2]).unwrap())
            .unwrap();
        let err = check_gradients(3, &ps, &grads, f64::NAN)
            .unwrap_err()
            .to_string();
        assert!(err.contains("step 3") && err.contains("`b`"), "{err}");
    }
}
