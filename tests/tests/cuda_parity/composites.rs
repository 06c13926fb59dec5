//! Through autograd: the composite ops (attention, blocks, losses, dropout) and a backward
//! pass each.

use autograd::Var;
use tensor::{Conv2dParams, Generator, Result, Tensor};

use super::harness::{indices, is_half, randn, tolerance, Parity, FLOATS, TRAIN};

/// The tolerance of the composites of autograd in bf16 and f16, which round many intermediates.
const COMPOSITE_HALF_TOLERANCE: f64 = 3e-2;

/// `f` of Vars made from `inputs` (all but the last, which is the output's cotangent), then a
/// backward pass: the output and the gradient of every input.
fn forward_backward(inputs: &[Tensor], f: impl Fn(&[Var]) -> Result<Var>) -> Result<Vec<Tensor>> {
    let (cot, inputs) = inputs.split_last().expect("a cotangent");
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::leaf(t.clone(), t.dtype().is_float()))
        .collect();
    let out = f(&vars)?;
    let cot = cot.reshape(out.shape())?;
    let grads = out.mul(&Var::constant(cot))?.sum_all()?.backward()?;
    let mut outs = vec![out.value().clone()];
    for v in vars.iter().filter(|v| v.requires_grad()) {
        outs.push(
            grads
                .get(v)
                .cloned()
                .ok_or_else(|| tensor::Error::msg("a gradient is missing"))?,
        );
    }
    Ok(outs)
}

#[test]
fn autograd_parity() {
    let Some(mut p) = Parity::new("autograd_parity") else {
        return;
    };
    let causal = {
        let s = 10;
        let m: Vec<u8> = (0..s * s).map(|i| (i % s <= i / s) as u8).collect();
        Tensor::from_vec(m, &[s, s]).unwrap()
    };
    for dtype in TRAIN {
        // In bf16 and f16 the composites round every intermediate (scores, probabilities,
        // activations) to the half dtype on the GPU and not in the f32 reference.
        let tol = if is_half(dtype) {
            COMPOSITE_HALF_TOLERANCE
        } else {
            tolerance(dtype)
        };
        p.close_within(
            "attention, causal mask, heads broadcast",
            dtype,
            tol,
            &[
                randn(&[2, 3, 10, 8], 1),
                randn(&[2, 1, 10, 8], 2),
                randn(&[2, 3, 10, 6], 3),
                causal.clone(),
                randn(&[2, 3, 10, 6], 4),
            ],
            |x| {
                forward_backward(x, |v| {
                    v[0].scaled_dot_product_attention(&v[1], &v[2], Some(v[3].value()), None)
                })
            },
        );
        p.close_within(
            "attention of transposed q, k, v (tokens-major), no mask",
            dtype,
            tol,
            &[
                randn(&[2, 17, 4, 16], 5),
                randn(&[2, 17, 4, 16], 6),
                randn(&[2, 17, 4, 16], 7),
                randn(&[2, 4, 17, 16], 8),
            ],
            |x| {
                forward_backward(x, |v| {
                    let (q, k, w) = (
                        v[0].transpose(1, 2)?,
                        v[1].transpose(1, 2)?,
                        v[2].transpose(1, 2)?,
                    );
                    q.scaled_dot_product_attention(&k, &w, None, Some(0.3))
                })
            },
        );
        p.close_within(
            "MLP block: layer_norm, matmul, gelu_tanh, matmul, residual",
            dtype,
            tol,
            &[
                randn(&[2, 9, 24], 10),
                randn(&[24, 64], 11),
                randn(&[64, 24], 12),
                randn(&[24], 13),
                randn(&[2, 9, 24], 14),
            ],
            |x| {
                forward_backward(x, |v| {
                    let h = v[0].layer_norm(1, Some(&v[3]), None, 1e-6)?;
                    let h = h.matmul(&v[1])?.gelu_tanh()?.matmul(&v[2])?;
                    h.add(&v[0])
                })
            },
        );
        p.close_within(
            "conv block: group_norm, silu, conv2d, avg_pool, upsample",
            dtype,
            tol,
            &[
                randn(&[2, 8, 12, 10], 20),
                randn(&[8], 21),
                randn(&[8], 22),
                randn(&[6, 8, 3, 3], 23),
                randn(&[6], 24),
                randn(&[2, 6, 12, 10], 25),
            ],
            |x| {
                forward_backward(x, |v| {
                    let h = v[0].group_norm(4, Some(&v[1]), Some(&v[2]), 1e-5)?.silu()?;
                    let params = Conv2dParams {
                        padding: (1, 1),
                        ..Default::default()
                    };
                    h.conv2d(&v[3], Some(&v[4]), &params)?
                        .avg_pool2d((2, 2), (2, 2), (0, 0))?
                        .upsample_nearest2d(2, 2)
                })
            },
        );
        p.close_within(
            "mse_loss and softmax",
            dtype,
            tol,
            &[randn(&[6, 7], 30), randn(&[6, 7], 31), randn(&[1], 32)],
            |x| forward_backward(x, |v| v[0].softmax(1)?.mse_loss(&v[1])),
        );
    }
    for dtype in FLOATS {
        p.close(
            "cross_entropy of transposed logits",
            dtype,
            &[randn(&[10, 6], 40), indices(&[6], 10, 41), randn(&[1], 42)],
            |x| forward_backward(x, |v| v[0].transpose(0, 1)?.cross_entropy(v[1].value())),
        );
        p.close(
            "embedding and dropout with one seed",
            dtype,
            &[
                randn(&[12, 5], 50),
                indices(&[3, 4], 12, 51),
                randn(&[3, 4, 5], 52),
            ],
            |x| {
                forward_backward(x, |v| {
                    v[0].embedding(v[1].value())?
                        .dropout(0.3, &mut Generator::new(7), true)
                })
            },
        );
        p.close(
            "var, max, min, mean",
            dtype,
            &[randn(&[5, 8], 60), randn(&[1], 61)],
            |x| {
                forward_backward(x, |v| {
                    let a = v[0].var(&[1], false, true)?.sum_all()?;
                    let b = v[0]
                        .max(&[0], false)?
                        .sub(&v[0].min(&[0], false)?)?
                        .mean_all()?;
                    a.add(&b)?.reshape(&[1])
                })
            },
        );
    }
    p.finish();
}
