//! The elementwise ops (`tensor/src/ops/elementwise.rs`): unary maps forward and backward,
//! broadcasting binary ops, comparisons, `where` and `masked_fill`.

use tensor::{BinaryOp, CmpOp, Device, Result, Tensor, UnaryOp};

use super::harness::{
    indices, is_half, randn, uniform, whole, Mode, Parity, ALL, F32, F64, TRAIN, VIEWS,
};

/// Every unary op, with the domain its inputs are drawn from.
fn unary_ops() -> Vec<(UnaryOp, f64, f64)> {
    use UnaryOp::*;
    let anywhere = [
        Neg, Exp, Abs, Square, Tanh, Sigmoid, Relu, Silu, GeluErf, GeluTanh,
    ];
    let mut ops: Vec<(UnaryOp, f64, f64)> = anywhere.iter().map(|&op| (op, -3.0, 3.0)).collect();
    ops.extend([
        (Log, 0.05, 4.0),
        (Sqrt, 0.05, 4.0),
        (Rsqrt, 0.05, 4.0),
        (Powf(2.5), 0.05, 3.0),
        (Powf(-1.5), 0.2, 3.0),
        (Powf(3.0), -2.0, 2.0),
        (Clamp(-0.5, 0.7), -2.0, 2.0),
        (AddScalar(0.3), -3.0, 3.0),
        (MulScalar(-1.7), -3.0, 3.0),
    ]);
    ops
}

#[test]
fn unary_ops_forward() {
    let Some(mut p) = Parity::new("unary_ops_forward") else {
        return;
    };
    for dtype in TRAIN {
        for (op, lo, hi) in unary_ops() {
            for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
                p.close(
                    &format!("{} {name}", op.name()),
                    dtype,
                    &[uniform(shape, lo, hi, seed as u64)],
                    |x| Ok(vec![view(&x[0])?.unary(op)?]),
                );
            }
        }
        // The named methods are the same ops.
        p.close(
            "named unary methods",
            dtype,
            &[uniform(&[5, 9], 0.1, 2.0, 9)],
            |x| {
                let x = &x[0];
                Ok(vec![
                    x.neg()?,
                    x.exp()?,
                    x.log()?,
                    x.sqrt()?,
                    x.rsqrt()?,
                    x.abs()?,
                    x.square()?,
                    x.tanh()?,
                    x.sigmoid()?,
                    x.relu()?,
                    x.silu()?,
                    x.gelu()?,
                    x.gelu_tanh()?,
                    x.powf(1.5)?,
                    x.clamp(0.5, 1.5)?,
                    x.add_scalar(-1.0)?,
                    x.mul_scalar(3.0)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn unary_ops_backward() {
    let Some(mut p) = Parity::new("unary_ops_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (op, lo, hi) in unary_ops() {
            for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
                let seed = seed as u64;
                let out_shape = view(&Tensor::zeros(shape, F32, Device::Cpu).unwrap())
                    .unwrap()
                    .shape()
                    .to_vec();
                // The gradient, and a saved output, are reversed-dims views of their own bases,
                // so that both operands of the fused kernel are strided.
                let rev: Vec<usize> = (0..out_shape.len()).rev().collect();
                let mut grad_base = out_shape.clone();
                grad_base.reverse();
                let x = uniform(shape, lo, hi, seed);
                // A saved output is an input too, computed once (in f64): the backward kernel
                // is compared on the very values the forward is compared on separately.
                let y = view(&x)
                    .and_then(|v| v.unary(op))
                    .and_then(|y| y.permute(&rev))
                    .and_then(|y| y.contiguous())
                    .unwrap();
                let inputs = [x, randn(&grad_base, 100 + seed), y];
                let rev = &rev;
                p.close(
                    &format!("{} backward {name}", op.name()),
                    dtype,
                    &inputs,
                    |x| {
                        let g = x[1].permute(rev)?;
                        let saved = match op.saves() {
                            tensor::Saved::Nothing => None,
                            tensor::Saved::Input => Some(view(&x[0])?),
                            tensor::Saved::Output => Some(x[2].permute(rev)?),
                        };
                        Ok(vec![g.unary_backward(op, saved.as_ref())?])
                    },
                );
            }
        }
    }
    p.finish();
}

/// Operand pairs of the binary ops: shapes that broadcast, scalars, strided views.
type Pair = (
    &'static str,
    &'static [usize],
    &'static [usize],
    fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
);

const PAIRS: &[Pair] = &[
    ("equal shapes [7, 33]", &[7, 33], &[7, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "broadcast [3, 1, 33] and [5, 33]",
        &[3, 1, 33],
        &[5, 33],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    ("broadcast [4, 1] and [1, 5]", &[4, 1], &[1, 5], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("scalar and [7, 33]", &[], &[7, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[7, 33] and scalar", &[7, 33], &[], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "transposed [33, 7]^T and narrowed [7, 40][:, 5..38]",
        &[33, 7],
        &[7, 40],
        |a, b| Ok((a.transpose(0, 1)?, b.narrow(1, 5, 33)?)),
    ),
    (
        "permuted [5, 3, 9] and broadcast [9]",
        &[5, 3, 9],
        &[9],
        |a, b| Ok((a.permute(&[1, 2, 0])?.narrow(2, 1, 4)?, b.unsqueeze(1)?)),
    ),
    ("large [257, 300] and [300]", &[257, 300], &[300], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
];

#[test]
fn binary_ops() {
    let Some(mut p) = Parity::new("binary_ops") else {
        return;
    };
    use BinaryOp::*;
    for dtype in TRAIN {
        for op in [Add, Sub, Mul, Div, Maximum, Minimum] {
            for (seed, &(name, sa, sb, pair)) in PAIRS.iter().enumerate() {
                let seed = seed as u64;
                // Divisors away from zero, both signs.
                let b = if op == Div {
                    uniform(sb, 0.5, 2.0, seed + 50)
                        .mul(
                            &whole(sb, 2, seed)
                                .mul_scalar(2.0)
                                .unwrap()
                                .add_scalar(-1.0)
                                .unwrap(),
                        )
                        .unwrap()
                } else {
                    randn(sb, seed + 50)
                };
                p.close(
                    &format!("{} {name}", op.name()),
                    dtype,
                    &[randn(sa, seed), b],
                    |x| {
                        let (a, b) = pair(&x[0], &x[1])?;
                        Ok(vec![a.binary(op, &b)?])
                    },
                );
            }
        }
        p.close(
            "named binary methods",
            dtype,
            &[randn(&[3, 4], 1), uniform(&[4], 0.5, 2.0, 2)],
            |x| {
                let (a, b) = (&x[0], &x[1]);
                Ok(vec![
                    a.add(b)?,
                    a.sub(b)?,
                    a.mul(b)?,
                    a.div(b)?,
                    a.maximum(b)?,
                    a.minimum(b)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn comparisons_where_and_masked_fill() {
    let Some(mut p) = Parity::new("comparisons_where_and_masked_fill") else {
        return;
    };
    use CmpOp::*;
    // Whole numbers below 4: many ties, so == and <= are exercised.
    for dtype in ALL {
        for op in [Eq, Ne, Lt, Le, Gt, Ge] {
            for (seed, &(name, sa, sb, pair)) in PAIRS.iter().enumerate() {
                let seed = seed as u64;
                p.exact(
                    &format!("cmp {op:?} {name}"),
                    dtype,
                    &[whole(sa, 4, seed), whole(sb, 4, seed + 9)],
                    |x| {
                        let (a, b) = pair(&x[0], &x[1])?;
                        Ok(vec![a.cmp(op, &b)?])
                    },
                );
            }
        }
    }
    // Mixed dtypes, the wider first.
    p.on("cmp of f64 with f32", F64, Mode::Exact, |d| {
        let a = whole(&[5, 6], 4, 1).to_device(d)?;
        let b = whole(&[6], 4, 2).to_dtype(F32)?.to_device(d)?;
        Ok(vec![a.cmp(Le, &b)?, a.cmp(Eq, &b)?])
    });
    for dtype in TRAIN {
        // A half where is a selection: exact; the f32 reference of rounded values is too.
        let mode = if is_half(dtype) {
            Mode::Close
        } else {
            Mode::Exact
        };
        let masks = [
            (
                "u8 mask [3, 1]",
                Tensor::from_vec(vec![1u8, 0, 1], &[3, 1]).unwrap(),
            ),
            ("i64 mask [3, 4]", indices(&[3, 4], 2, 7)),
            ("float mask of 0, 1, 2", whole(&[3, 4], 3, 8)),
        ];
        for (name, mask) in masks {
            let inputs = [mask, randn(&[4, 3], 1), randn(&[4], 2)];
            let what = format!("where {name}, transposed [4, 3]^T and [4]");
            let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                let t = x[1].transpose(0, 1)?;
                Ok(vec![
                    x[0].where_cond(&t, &x[2])?,
                    x[0].where_cond(&x[2], &t)?,
                ])
            };
            p.check(&what, dtype, mode, &inputs, f);
        }
        let what = "masked_fill where x > 0, of a transposed x";
        let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let t = x[0].transpose(0, 1)?;
            let zero = Tensor::zeros(&[], t.dtype(), t.device())?;
            let mask = t.cmp(Gt, &zero)?;
            Ok(vec![t.masked_fill(&mask, -4.0)?, mask])
        };
        p.check(what, dtype, mode, &[randn(&[9, 5], 3)], f);
    }
    p.finish();
}
