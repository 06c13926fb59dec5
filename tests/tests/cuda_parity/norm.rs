//! Softmax, log-softmax, layer norm and group norm, forward and backward
//! (`tensor/src/ops/norm.rs`).

use tensor::{Device, Tensor};

use super::harness::{randn, Parity, ViewFn, F64, TRAIN};

/// Softmax cases: base shape, scale of the normal inputs, view, dim.
type Rows = (&'static str, &'static [usize], f64, ViewFn, usize);

const SOFTMAX_CASES: &[Rows] = &[
    ("[7, 33] dim 1", &[7, 33], 1.0, |t| Ok(t.clone()), 1),
    ("[7, 33] dim 0", &[7, 33], 1.0, |t| Ok(t.clone()), 0),
    (
        "permuted [3, 5, 9] dim 1",
        &[3, 5, 9],
        1.0,
        |t| t.permute(&[2, 0, 1]),
        1,
    ),
    (
        "narrowed [4, 40][:, 3..34] dim 1",
        &[4, 40],
        1.0,
        |t| t.narrow(1, 3, 31),
        1,
    ),
    ("[1, 1] dim 1", &[1, 1], 1.0, |t| Ok(t.clone()), 1),
    ("long rows [3, 2050]", &[3, 2050], 1.0, |t| Ok(t.clone()), 1),
    (
        "longer rows [2, 10007]",
        &[2, 10007],
        1.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "many rows [1100, 17]",
        &[1100, 17],
        1.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "large logits (sd 30) [6, 50]",
        &[6, 50],
        30.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "attention scores [2, 3, 10, 10] dim 3",
        &[2, 3, 10, 10],
        1.0,
        |t| Ok(t.clone()),
        3,
    ),
];

#[test]
fn softmax_and_log_softmax_forward_and_backward() {
    let Some(mut p) = Parity::new("softmax_and_log_softmax_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, scale, view, dim)) in SOFTMAX_CASES.iter().enumerate() {
            let seed = seed as u64;
            let out_shape = view(&Tensor::zeros(shape, F64, Device::Cpu).unwrap())
                .unwrap()
                .shape()
                .to_vec();
            let x = randn(shape, seed).mul_scalar(scale).unwrap();
            // The saved outputs the backward reads are inputs, computed once (in f64): the
            // backward kernels are compared on the very values the forward is compared on.
            let v = view(&x).unwrap();
            let (y, log_y) = (v.softmax(dim).unwrap(), v.log_softmax(dim).unwrap());
            let inputs = [x, randn(&out_shape, seed + 1), y, log_y];
            p.close(&format!("softmax {name}"), dtype, &inputs, |x| {
                Ok(vec![
                    view(&x[0])?.softmax(dim)?,
                    x[2].softmax_backward(&x[1], dim)?,
                ])
            });
            p.close(&format!("log_softmax {name}"), dtype, &inputs, |x| {
                Ok(vec![
                    view(&x[0])?.log_softmax(dim)?,
                    x[3].log_softmax_backward(&x[1], dim)?,
                ])
            });
        }
        // A strided saved output and a strided output gradient.
        let x = randn(&[9, 6], 70);
        let (y, log_y) = (x.softmax(1).unwrap(), x.log_softmax(1).unwrap());
        p.close(
            "backward of transposed y and grad",
            dtype,
            &[y, log_y, randn(&[9, 6], 71)],
            |x| {
                let g = x[2].transpose(0, 1)?;
                Ok(vec![
                    x[0].transpose(0, 1)?.softmax_backward(&g, 0)?,
                    x[1].transpose(0, 1)?.log_softmax_backward(&g, 0)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn layer_norm_forward_and_backward() {
    let Some(mut p) = Parity::new("layer_norm_forward_and_backward") else {
        return;
    };
    // (name, x base shape, view, normalised dims, weight, bias, mean shift)
    type Case = (
        &'static str,
        &'static [usize],
        ViewFn,
        usize,
        bool,
        bool,
        f64,
    );
    let cases: &[Case] = &[
        (
            "[6, 33] last dim, affine",
            &[6, 33],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "[6, 33] last dim, no affine",
            &[6, 33],
            |t| Ok(t.clone()),
            1,
            false,
            false,
            0.0,
        ),
        (
            "[4, 5, 7] last 2 dims, affine",
            &[4, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
            true,
            0.0,
        ),
        (
            "[4, 5, 7] last 2 dims, weight only",
            &[4, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
            false,
            0.0,
        ),
        (
            "[3, 8] bias only",
            &[3, 8],
            |t| Ok(t.clone()),
            1,
            false,
            true,
            0.0,
        ),
        (
            "permuted [7, 3, 5] to [3, 5, 7]",
            &[7, 3, 5],
            |t| t.permute(&[1, 2, 0]),
            1,
            true,
            true,
            0.0,
        ),
        (
            "narrowed [5, 40][:, 2..35]",
            &[5, 40],
            |t| t.narrow(1, 2, 33),
            1,
            true,
            true,
            0.0,
        ),
        (
            "long rows [3, 2050]",
            &[3, 2050],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "long rows [2, 3, 4099] last 2 dims",
            &[2, 3, 4099],
            |t| Ok(t.clone()),
            2,
            true,
            true,
            0.0,
        ),
        (
            "many rows [1100, 24]",
            &[1100, 24],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "mean far from zero (x + 5)",
            &[8, 96],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            5.0,
        ),
        (
            "DiT tokens [2, 17, 48]",
            &[2, 17, 48],
            |t| Ok(t.clone()),
            1,
            false,
            false,
            0.0,
        ),
    ];
    for dtype in TRAIN {
        for (seed, &(name, shape, view, k, weight, bias, shift)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let x0 = view(&randn(shape, seed)).unwrap();
            let param = x0.shape()[x0.rank() - k..].to_vec();
            let inputs = [
                randn(shape, seed).add_scalar(shift).unwrap(),
                randn(&param, seed + 1),
                randn(&param, seed + 2),
                randn(x0.shape(), seed + 3),
            ];
            for eps in [1e-5, 1e-6] {
                p.close(&format!("{name}, eps {eps}"), dtype, &inputs, |t| {
                    let x = view(&t[0])?;
                    let (w, b) = (weight.then_some(&t[1]), bias.then_some(&t[2]));
                    let (y, mean, rstd) = x.layer_norm(k, w, b, eps)?;
                    let (dx, dw, db) = x.layer_norm_backward(&t[3], &mean, &rstd, w, k)?;
                    Ok(vec![y, dx, dw, db, mean, rstd])
                });
            }
        }
    }
    p.finish();
}

#[test]
fn group_norm_forward_and_backward() {
    let Some(mut p) = Parity::new("group_norm_forward_and_backward") else {
        return;
    };
    // (name, x base shape, view, groups, affine)
    type Case = (&'static str, &'static [usize], ViewFn, usize, bool);
    let cases: &[Case] = &[
        (
            "[2, 6, 5, 7] 1 group",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            1,
            true,
        ),
        (
            "[2, 6, 5, 7] 2 groups",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
        ),
        (
            "[2, 6, 5, 7] 3 groups, no affine",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            3,
            false,
        ),
        (
            "[2, 6, 5, 7] 6 groups (instance norm)",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            6,
            true,
        ),
        (
            "[3, 8] no spatial dims, 4 groups",
            &[3, 8],
            |t| Ok(t.clone()),
            4,
            true,
        ),
        (
            "[2, 4, 7] narrowed to [2, 4, 5], 2 groups",
            &[2, 4, 7],
            |t| t.narrow(2, 1, 5),
            2,
            true,
        ),
        (
            "channels-last [2, 9, 11, 6] to [2, 6, 9, 11], 3 groups",
            &[2, 9, 11, 6],
            |t| t.permute(&[0, 3, 1, 2]),
            3,
            true,
        ),
        (
            "UNet-like [2, 32, 9, 11], 8 groups",
            &[2, 32, 9, 11],
            |t| Ok(t.clone()),
            8,
            true,
        ),
        (
            "large groups [2, 64, 33, 17], 4 groups",
            &[2, 64, 33, 17],
            |t| Ok(t.clone()),
            4,
            true,
        ),
        (
            "3-D spatial [1, 4, 3, 5, 7], 2 groups",
            &[1, 4, 3, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
        ),
    ];
    for dtype in TRAIN {
        for (seed, &(name, shape, view, groups, affine)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let x0 = view(&randn(shape, seed)).unwrap();
            let c = x0.shape()[1];
            let inputs = [
                randn(shape, seed)
                    .mul_scalar(2.0)
                    .unwrap()
                    .add_scalar(0.5)
                    .unwrap(),
                randn(&[c], seed + 1),
                randn(&[c], seed + 2),
                randn(x0.shape(), seed + 3),
            ];
            p.close(name, dtype, &inputs, |t| {
                let x = view(&t[0])?;
                let (w, b) = (affine.then_some(&t[1]), affine.then_some(&t[2]));
                let (y, mean, rstd) = x.group_norm(groups, w, b, 1e-5)?;
                let (dx, dw, db) = x.group_norm_backward(&t[3], &mean, &rstd, w, groups)?;
                Ok(vec![y, dx, dw, db, mean, rstd])
            });
        }
    }
    p.finish();
}
