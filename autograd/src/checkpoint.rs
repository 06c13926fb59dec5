//! Gradient checkpointing as a property of the graph: a block's forward runs without recording,
//! and its backward runs the forward again, recorded, to differentiate it. Activations inside the
//! block are never kept; only its inputs and output are.

use tensor::{Error, Result};

use crate::{no_grad, Op, Var};

/// Runs `f` on `inputs` without keeping its intermediate activations. `params` lists every Var
/// that `f` reads besides its inputs (a block's weights): gradients reach them through the
/// recomputation. `f` must compute the same thing both times (no fresh randomness).
///
/// ```
/// use autograd::{checkpoint, Var};
/// use tensor::Tensor;
/// let w = Var::param(Tensor::from_vec(vec![0.5f64, -0.25], &[2, 1]).unwrap());
/// let x = Var::param(Tensor::from_vec(vec![1.0f64, 2.0], &[1, 2]).unwrap());
/// let wc = w.clone();
/// let y = checkpoint(&[&x], &[&w], move |v| v[0].matmul(&wc)?.tanh()).unwrap();
/// let grads = y.sum_all().unwrap().backward().unwrap();
/// assert!(grads.get(&w).is_some() && grads.get(&x).is_some());
/// ```
pub fn checkpoint(
    inputs: &[&Var],
    params: &[&Var],
    f: impl Fn(&[Var]) -> Result<Var> + Send + 'static,
) -> Result<Var> {
    let detached: Vec<Var> = inputs
        .iter()
        .map(|v| Var::constant(v.value().clone()))
        .collect();
    let y = no_grad(|| f(&detached))?;
    let n_inputs = inputs.len();
    let all: Vec<&Var> = inputs.iter().chain(params).copied().collect();
    let (values, param_vars): (Vec<_>, Vec<Var>) = (
        inputs.iter().map(|v| v.value().clone()).collect::<Vec<_>>(),
        params.iter().map(|&p| p.clone()).collect(),
    );
    Ok(Var::from_op(
        Op::Checkpoint,
        y.value().clone(),
        &all,
        move |g, needs| {
            let leaves: Vec<Var> = values
                .iter()
                .zip(needs)
                .map(|(v, &need)| Var::leaf(v.clone(), need))
                .collect();
            let y = f(&leaves)?;
            if !y.requires_grad() {
                return Ok(vec![None; needs.len()]);
            }
            if y.shape() != g.shape() {
                return Err(Error::shape(
                    "checkpoint",
                    format!(
                        "the recomputed output is {:?}, the first was {:?}",
                        y.shape(),
                        g.shape()
                    ),
                ));
            }
            let grads = y.mul(&Var::constant(g.clone()))?.sum_all()?.backward()?;
            let mut out: Vec<Option<tensor::Tensor>> =
                leaves.iter().map(|l| grads.get(l).cloned()).collect();
            out.extend(param_vars.iter().map(|p| grads.get(p).cloned()));
            debug_assert_eq!(out.len(), n_inputs + param_vars.len());
            Ok(out)
        },
    ))
}
