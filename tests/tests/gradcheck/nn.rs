use autograd::{Op, Var};
use tensor::{Generator, Tensor};

use super::common::{case, here, ids, randn, Case};

/// A layer norm case: x of `shape` over its last `k` dims, affine or not, through `view`.
fn layer_norm(name: &str, shape: &[usize], k: usize, affine: bool, seed: u64) -> Case {
    let param_shape = &shape[shape.len() - k..];
    let mut inputs = vec![randn(shape, seed)];
    if affine {
        inputs.push(randn(param_shape, seed + 1));
        inputs.push(randn(param_shape, seed + 2));
    }
    case(name, inputs, move |v| {
        v[0].layer_norm(k, v.get(1), v.get(2), 1e-5)
    })
}

/// A group norm case of `[2, c, 3, 2]` in `groups` groups, affine or not.
fn group_norm(c: usize, groups: usize, affine: bool, seed: u64) -> Case {
    let mut inputs = vec![randn(&[2, c, 3, 2], seed)];
    if affine {
        inputs.push(randn(&[c], seed + 1));
        inputs.push(randn(&[c], seed + 2));
    }
    let name = format!("group_norm C={c} groups={groups} affine={affine}");
    case(&name, inputs, move |v| {
        v[0].group_norm(groups, v.get(1), v.get(2), 1e-5)
    })
}

/// A lower-triangular (causal) u8 mask of `[s, s]`: query i may attend to keys 0..=i.
fn causal(s: usize) -> Tensor {
    let m: Vec<u8> = (0..s * s).map(|i| (i % s <= i / s) as u8).collect();
    here(Tensor::from_vec(m, &[s, s]).unwrap())
}

pub fn cases(op: Op) -> Vec<Case> {
    match op {
        Op::Softmax => vec![
            case("softmax dim 1 of [3, 5]", vec![randn(&[3, 5], 1)], |v| {
                v[0].softmax(1)
            }),
            case(
                "softmax dim 0 of permuted [2, 4, 3]",
                vec![randn(&[2, 4, 3], 2)],
                |v| v[0].permute(&[2, 0, 1])?.softmax(0),
            ),
            case(
                "softmax last dim of narrowed [3, 6]",
                vec![randn(&[3, 6], 3)],
                |v| v[0].narrow(1, 1, 4)?.softmax(1),
            ),
        ],
        Op::LogSoftmax => vec![
            case(
                "log_softmax dim 1 of [4, 3]",
                vec![randn(&[4, 3], 4)],
                |v| v[0].log_softmax(1),
            ),
            case(
                "log_softmax dim 1 of transposed [5, 2, 3]",
                vec![randn(&[5, 2, 3], 5)],
                |v| v[0].transpose(0, 2)?.log_softmax(1),
            ),
        ],
        Op::LayerNorm => vec![
            layer_norm("layer_norm last dim, no affine", &[4, 6], 1, false, 10),
            layer_norm("layer_norm last dim, affine", &[3, 2, 5], 1, true, 20),
            layer_norm(
                "layer_norm last 2 dims, no affine",
                &[3, 2, 4],
                2,
                false,
                30,
            ),
            layer_norm("layer_norm last 2 dims, affine", &[2, 3, 4], 2, true, 40),
            case(
                "layer_norm of permuted x, weight only",
                vec![randn(&[5, 3, 2], 50), randn(&[5], 51)],
                |v| {
                    v[0].permute(&[1, 2, 0])?
                        .layer_norm(1, Some(&v[1]), None, 1e-5)
                },
            ),
            case(
                "layer_norm frozen weight, trained bias",
                vec![randn(&[3, 4], 60), randn(&[4], 61)],
                |v| {
                    let w = Var::constant(randn(&[4], 62));
                    v[0].layer_norm(1, Some(&w), Some(&v[1]), 1e-5)
                },
            ),
        ],
        Op::GroupNorm => vec![
            group_norm(4, 1, false, 10),
            group_norm(4, 2, false, 20),
            group_norm(4, 4, false, 30),
            group_norm(6, 1, true, 40),
            group_norm(6, 2, true, 50),
            group_norm(6, 6, true, 60),
            case(
                "group_norm of narrowed x [2, 4, 7][:, :, 1..6], groups 2, affine",
                vec![randn(&[2, 4, 7], 70), randn(&[4], 71), randn(&[4], 72)],
                |v| {
                    v[0].narrow(2, 1, 5)?
                        .group_norm(2, Some(&v[1]), Some(&v[2]), 1e-5)
                },
            ),
            case(
                "group_norm of [N, C] with no spatial dims",
                vec![randn(&[3, 4], 80)],
                |v| v[0].group_norm(2, None, None, 1e-5),
            ),
        ],
        Op::ScaledDotProductAttention => vec![
            case(
                "attention [2, 3, 4] no mask",
                vec![
                    randn(&[2, 3, 4], 1),
                    randn(&[2, 5, 4], 2),
                    randn(&[2, 5, 3], 3),
                ],
                |v| v[0].scaled_dot_product_attention(&v[1], &v[2], None, None),
            ),
            case(
                "attention causal mask, heads broadcast, scale 0.7",
                vec![
                    randn(&[2, 2, 4, 3], 4),
                    randn(&[2, 1, 4, 3], 5),
                    randn(&[1, 2, 4, 2], 6),
                    causal(4),
                ],
                |v| {
                    let mask = v[3].value();
                    v[0].scaled_dot_product_attention(&v[1], &v[2], Some(mask), Some(0.7))
                },
            ),
            case(
                "attention q from a transpose, per-batch mask [2, 1, 1, 3]",
                vec![
                    randn(&[2, 4, 2, 3], 7),
                    randn(&[2, 2, 3, 3], 8),
                    randn(&[2, 2, 3, 3], 9),
                    ids(&[1, 1, 0, 0, 1, 1], &[2, 1, 1, 3]),
                ],
                |v| {
                    let q = v[0].transpose(1, 2)?;
                    let mask = v[3].value();
                    q.scaled_dot_product_attention(&v[1], &v[2], Some(mask), None)
                },
            ),
        ],
        Op::Attention => vec![
            case(
                "fused attention of permuted [B, S, H, D] views",
                vec![
                    randn(&[2, 3, 2, 4], 11),
                    randn(&[2, 5, 2, 4], 12),
                    randn(&[2, 5, 2, 3], 13),
                ],
                |v| {
                    let [q, k, v] = [&v[0], &v[1], &v[2]].map(|x| x.transpose(1, 2));
                    q?.attention(&k?, &v?, None, false)
                },
            ),
            case(
                "fused causal attention, scale 0.6",
                vec![
                    randn(&[1, 2, 4, 3], 14),
                    randn(&[1, 2, 4, 3], 15),
                    randn(&[1, 2, 4, 2], 16),
                ],
                |v| v[0].attention(&v[1], &v[2], Some(0.6), true),
            ),
        ],
        Op::Dropout => vec![
            case("dropout p 0.3 seed 7", vec![randn(&[4, 5], 1)], |v| {
                v[0].dropout(0.3, &mut Generator::new(7), true)
            }),
            case(
                "dropout p 0.5 of transposed [3, 4]",
                vec![randn(&[3, 4], 2)],
                |v| {
                    v[0].transpose(0, 1)?
                        .dropout(0.5, &mut Generator::new(8), true)
                },
            ),
        ],
        Op::MseLoss => vec![
            case(
                "mse_loss [3, 4]",
                vec![randn(&[3, 4], 1), randn(&[3, 4], 2)],
                |v| v[0].mse_loss(&v[1]),
            ),
            case(
                "mse_loss permuted prediction, frozen target",
                vec![randn(&[4, 2, 3], 3)],
                |v| {
                    let target = Var::constant(randn(&[3, 4, 2], 4));
                    v[0].permute(&[2, 0, 1])?.mse_loss(&target)
                },
            ),
        ],
        Op::CrossEntropy => vec![
            case(
                "cross_entropy [4, 5]",
                vec![randn(&[4, 5], 1), ids(&[0, 4, 2, 2], &[4])],
                |v| v[0].cross_entropy(v[1].value()),
            ),
            case(
                "cross_entropy of transposed logits [3, 4]^T",
                vec![randn(&[3, 4], 2), ids(&[2, 0, 1, 1], &[4])],
                |v| v[0].transpose(0, 1)?.cross_entropy(v[1].value()),
            ),
        ],
        _ => vec![],
    }
}
