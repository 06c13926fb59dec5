//! The reductions (`tensor/src/ops/reduce.rs`): sum, mean, max, min, `sum_to`, argmax.

use tensor::{Result, Tensor};

use super::harness::{is_half, randn, whole, Parity, ViewFn, FLOATS, TRAIN};

/// Reduction cases: base shape, view, dims.
type Reduction = (&'static str, &'static [usize], ViewFn, &'static [usize]);

const REDUCTIONS: &[Reduction] = &[
    ("[5, 7, 9] dim 0", &[5, 7, 9], |t| Ok(t.clone()), &[0]),
    ("[5, 7, 9] dim 1", &[5, 7, 9], |t| Ok(t.clone()), &[1]),
    ("[5, 7, 9] dim 2", &[5, 7, 9], |t| Ok(t.clone()), &[2]),
    (
        "[5, 7, 9] dims [0, 2]",
        &[5, 7, 9],
        |t| Ok(t.clone()),
        &[0, 2],
    ),
    (
        "[5, 7, 9] all dims",
        &[5, 7, 9],
        |t| Ok(t.clone()),
        &[0, 1, 2],
    ),
    (
        "permuted [5, 7, 9] dim 1",
        &[5, 7, 9],
        |t| t.permute(&[2, 0, 1]),
        &[1],
    ),
    (
        "narrowed [6, 11, 3][:, 2..9] dims [0, 1]",
        &[6, 11, 3],
        |t| t.narrow(1, 2, 7),
        &[0, 1],
    ),
    (
        "broadcast [1, 13] to [6, 13] dim 0",
        &[1, 13],
        |t| t.broadcast_as(&[6, 13]),
        &[0],
    ),
    (
        "long rows [3, 5001] dim 1",
        &[3, 5001],
        |t| Ok(t.clone()),
        &[1],
    ),
    (
        "long columns [4099, 3] dim 0",
        &[4099, 3],
        |t| Ok(t.clone()),
        &[0],
    ),
    (
        "everything of [1234, 17]",
        &[1234, 17],
        |t| Ok(t.clone()),
        &[0, 1],
    ),
    (
        "transposed [300, 70]^T dim 1",
        &[300, 70],
        |t| t.transpose(0, 1),
        &[1],
    ),
];

#[test]
fn sum_mean_max_min() {
    let Some(mut p) = Parity::new("sum_mean_max_min") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, view, dims)) in REDUCTIONS.iter().enumerate() {
            let x = [randn(shape, seed as u64)];
            for keepdim in [false, true] {
                let k = if keepdim { ", keepdim" } else { "" };
                p.close(&format!("sum, mean {name}{k}"), dtype, &x, |x| {
                    let v = view(&x[0])?;
                    Ok(vec![v.sum(dims, keepdim)?, v.mean(dims, keepdim)?])
                });
                // The largest and smallest of the same values: exact in the CPU's dtypes.
                let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                    let v = view(&x[0])?;
                    Ok(vec![v.max(dims, keepdim)?, v.min(dims, keepdim)?])
                };
                if is_half(dtype) {
                    p.close(&format!("max, min {name}{k}"), dtype, &x, f);
                } else {
                    p.exact(&format!("max, min {name}{k}"), dtype, &x, f);
                }
            }
        }
        p.close("sum_all", dtype, &[randn(&[37, 29], 1)], |x| {
            Ok(vec![x[0].sum_all()?, x[0].transpose(0, 1)?.sum_all()?])
        });
    }
    p.finish();
}

#[test]
fn sum_to_the_backward_of_broadcasting() {
    let Some(mut p) = Parity::new("sum_to_the_backward_of_broadcasting") else {
        return;
    };
    let targets: [&[usize]; 6] = [&[3, 1], &[1, 5], &[5], &[], &[4, 1, 1], &[4, 3, 5]];
    for dtype in TRAIN {
        for target in targets {
            p.close(
                &format!("[4, 3, 5] to {target:?}"),
                dtype,
                &[randn(&[4, 3, 5], 1)],
                |x| Ok(vec![x[0].sum_to(target)?]),
            );
            p.close(
                &format!("permuted [5, 4, 3] to {target:?}"),
                dtype,
                &[randn(&[5, 4, 3], 2)],
                |x| Ok(vec![x[0].permute(&[1, 2, 0])?.sum_to(target)?]),
            );
        }
        p.close(
            "broadcast view [3, 1] to [2, 3, 7], summed back",
            dtype,
            &[randn(&[3, 1], 3)],
            |x| Ok(vec![x[0].broadcast_as(&[2, 3, 7])?.sum_to(&[3, 1])?]),
        );
        p.close(
            "large [1000, 65] to [65]",
            dtype,
            &[randn(&[1000, 65], 4)],
            |x| Ok(vec![x[0].sum_to(&[65])?]),
        );
    }
    p.finish();
}

#[test]
fn argmax() {
    let Some(mut p) = Parity::new("argmax") else {
        return;
    };
    for dtype in FLOATS {
        for dim in 0..3 {
            for keepdim in [false, true] {
                p.exact(
                    &format!("[5, 7, 9] dim {dim} keepdim {keepdim}"),
                    dtype,
                    &[randn(&[5, 7, 9], 1)],
                    |x| Ok(vec![x[0].argmax(dim, keepdim)?]),
                );
            }
            p.exact(
                &format!("permuted view, dim {dim}"),
                dtype,
                &[randn(&[5, 7, 9], 2)],
                |x| {
                    Ok(vec![x[0]
                        .permute(&[1, 2, 0])?
                        .narrow(1, 1, 6)?
                        .argmax(dim, false)?])
                },
            );
        }
        // Ties: the first index wins.
        p.exact(
            "ties in whole numbers below 3",
            dtype,
            &[whole(&[6, 40], 3, 3)],
            |x| Ok(vec![x[0].argmax(1, false)?, x[0].argmax(0, true)?]),
        );
        p.exact("long rows [3, 5001]", dtype, &[randn(&[3, 5001], 4)], |x| {
            Ok(vec![x[0].argmax(1, false)?])
        });
    }
    p.finish();
}
