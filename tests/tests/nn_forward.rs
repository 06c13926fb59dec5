//! Forward checks of the nn ops on Vars against explicit formulas: attention, dropout, the
//! losses; the fused norm gradients against the same norms composed of basic ops on inputs large
//! enough to take the parallel path; and the errors for bad arguments.

use autograd::Var;
use tensor::{DType, Device, Generator, Result, Tensor};

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::randn(shape, 0.0, 1.0, dtype, Device::Cpu, &mut gen).unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

/// Attention of one head by the textbook formula: q [sq, d], k [sk, d], v [sk, dv], with
/// `allowed(i, j)` saying whether query i may see key j.
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (sq, sk, d, dv): (usize, usize, usize, usize),
    scale: f64,
    allowed: impl Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let mut out = vec![0.0; sq * dv];
    for i in 0..sq {
        let scores: Vec<f64> = (0..sk)
            .map(|j| {
                let dot: f64 = (0..d).map(|t| q[i * d + t] * k[j * d + t]).sum();
                if allowed(i, j) {
                    (dot * scale).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = scores.iter().sum();
        for (j, s) in scores.iter().enumerate() {
            for t in 0..dv {
                out[i * dv + t] += s / total * v[j * dv + t];
            }
        }
    }
    out
}

#[test]
fn attention_matches_the_explicit_formula() {
    // q [2 batch, 3 heads, 4, 5]; k and v shared across heads ([2, 1, 6, ..]); a causal-like
    // mask [4, 6] shared by all.
    let (sq, sk, d, dv) = (4, 6, 5, 3);
    let q = randn(&[2, 3, sq, d], DType::F64, 1);
    let k = randn(&[2, 1, sk, d], DType::F64, 2);
    let v = randn(&[2, 1, sk, dv], DType::F64, 3);
    let allowed = |i: usize, j: usize| j <= i + 2;
    let mask: Vec<u8> = (0..sq * sk)
        .map(|x| allowed(x / sk, x % sk) as u8)
        .collect();
    let mask = Tensor::from_vec(mask, &[sq, sk]).unwrap();
    let (qv, kv, vv) = (
        Var::constant(q.clone()),
        Var::constant(k.clone()),
        Var::constant(v.clone()),
    );
    let out = qv
        .scaled_dot_product_attention(&kv, &vv, Some(&mask), None)
        .unwrap();
    assert_eq!(out.shape(), &[2, 3, sq, dv]);
    let got = out.value().to_f64_vec().unwrap();
    let (qf, kf, vf) = (
        q.to_f64_vec().unwrap(),
        k.to_f64_vec().unwrap(),
        v.to_f64_vec().unwrap(),
    );
    for b in 0..2 {
        for h in 0..3 {
            let qh = &qf[(b * 3 + h) * sq * d..][..sq * d];
            let (kb, vb) = (&kf[b * sk * d..][..sk * d], &vf[b * sk * dv..][..sk * dv]);
            let expect = attention_ref(
                qh,
                kb,
                vb,
                (sq, sk, d, dv),
                1.0 / (d as f64).sqrt(),
                allowed,
            );
            close(&got[(b * 3 + h) * sq * dv..][..sq * dv], &expect, 1e-12);
        }
    }
    // No mask and an explicit scale, f32.
    let q32 = Var::constant(q.to_dtype(DType::F32).unwrap());
    let (k32, v32) = (
        Var::constant(k.to_dtype(DType::F32).unwrap()),
        Var::constant(v.to_dtype(DType::F32).unwrap()),
    );
    let out = q32
        .scaled_dot_product_attention(&k32, &v32, None, Some(0.3))
        .unwrap();
    let got = out.value().to_f64_vec().unwrap();
    let expect = attention_ref(
        &qf[..sq * d],
        &kf[..sk * d],
        &vf[..sk * dv],
        (sq, sk, d, dv),
        0.3,
        |_, _| true,
    );
    close(&got[..sq * dv], &expect, 1e-5);
}

fn dropout(x: &Tensor, p: f64, seed: u64, train: bool) -> Result<Tensor> {
    let y = Var::param(x.clone()).dropout(p, &mut Generator::new(seed), train)?;
    Ok(y.value().clone())
}

#[test]
fn dropout_is_seeded_keeps_about_1_minus_p_and_scales_kept_values() {
    let x = Tensor::randn(
        &[100, 100],
        3.0,
        0.1,
        DType::F32,
        Device::Cpu,
        &mut Generator::new(4),
    )
    .unwrap();
    let p = 0.3;
    let a = dropout(&x, p, 11, true).unwrap().to_f64_vec().unwrap();
    let b = dropout(&x, p, 11, true).unwrap().to_f64_vec().unwrap();
    assert_eq!(a, b, "the same seed must give the same mask");
    let c = dropout(&x, p, 12, true).unwrap().to_f64_vec().unwrap();
    assert_ne!(a, c, "another seed must give another mask");
    let xv = x.to_f64_vec().unwrap();
    let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - (1.0 - p)).abs() < 0.02, "kept fraction {kept}");
    for (y, x) in a.iter().zip(&xv) {
        assert!(*y == 0.0 || (y - x / (1.0 - p)).abs() < 1e-5, "{y} vs {x}");
    }
    // Identity outside training and at p = 0.
    assert_eq!(dropout(&x, p, 11, false).unwrap().to_f64_vec().unwrap(), xv);
    assert_eq!(
        dropout(&x, 0.0, 11, true).unwrap().to_f64_vec().unwrap(),
        xv
    );
    // p outside [0, 1) is an error, in training or not.
    for bad in [1.0, -0.1, f64::NAN] {
        for train in [true, false] {
            let e = dropout(&x, bad, 11, train).expect_err("bad p").to_string();
            assert!(e.contains("dropout") && e.contains("[0, 1)"), "{e}");
        }
    }
}

#[test]
fn cross_entropy_is_minus_log_softmax_at_the_target() {
    let logits = randn(&[3, 4], DType::F64, 5);
    let targets = Tensor::from_vec(vec![2i64, 0, 3], &[3]).unwrap();
    let loss = Var::constant(logits.clone())
        .cross_entropy(&targets)
        .unwrap();
    let l = logits.to_f64_vec().unwrap();
    let expect: f64 = [2usize, 0, 3]
        .iter()
        .enumerate()
        .map(|(n, &t)| {
            let row = &l[n * 4..n * 4 + 4];
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - row[t]
        })
        .sum::<f64>()
        / 3.0;
    close(&[loss.value().to_scalar().unwrap()], &[expect], 1e-12);
}

#[test]
fn mse_loss_is_the_mean_squared_difference() {
    let (a, b) = (randn(&[2, 5], DType::F32, 6), randn(&[2, 5], DType::F32, 7));
    let loss = Var::constant(a.clone())
        .mse_loss(&Var::constant(b.clone()))
        .unwrap();
    let (av, bv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let expect = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        / 10.0;
    close(&[loss.value().to_scalar().unwrap()], &[expect], 1e-6);
}

/// Normalises `x` over `dims` from basic Var ops: (x − mean)/√(var + eps), biased variance.
fn normalize_composite(x: &Var, dims: &[usize], eps: f64) -> Result<Var> {
    let centered = x.sub(&x.mean(dims, true)?)?;
    let std = x.var(dims, true, false)?.add_scalar(eps)?.sqrt()?;
    centered.div(&std)
}

/// Gradients of sum(f(x, w, b) · cot) with respect to x, w and b.
fn grads_of(
    f: impl Fn(&Var, &Var, &Var) -> Result<Var>,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
) -> Vec<Vec<f64>> {
    let vars = [x, w, b].map(|t| Var::param(t.clone()));
    let y = f(&vars[0], &vars[1], &vars[2]).unwrap();
    let cot = Var::constant(randn(y.shape(), y.value().dtype(), 99));
    let grads = y.mul(&cot).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|v| grads.get(v).unwrap().to_f64_vec().unwrap())
        .collect()
}

#[test]
fn fused_norm_gradients_match_composites_on_large_inputs() {
    // [80, 512] and [4, 32, 16, 16]: both past the size where the kernels go parallel.
    let (x, w, b) = (
        randn(&[80, 512], DType::F64, 8),
        randn(&[512], DType::F64, 9),
        randn(&[512], DType::F64, 10),
    );
    let fused = grads_of(
        |x, w, b| x.layer_norm(1, Some(w), Some(b), 1e-5),
        &x,
        &w,
        &b,
    );
    let composite = grads_of(
        |x, w, b| normalize_composite(x, &[1], 1e-5)?.mul(w)?.add(b),
        &x,
        &w,
        &b,
    );
    for (f, c) in fused.iter().zip(&composite) {
        close(f, c, 1e-9);
    }

    let (x, w, b) = (
        randn(&[4, 32, 16, 16], DType::F64, 11),
        randn(&[32], DType::F64, 12),
        randn(&[32], DType::F64, 13),
    );
    let fused = grads_of(
        |x, w, b| x.group_norm(8, Some(w), Some(b), 1e-5),
        &x,
        &w,
        &b,
    );
    let composite = grads_of(
        |x, w, b| {
            let grouped = x.reshape(&[4, 8, 4 * 256])?;
            let y = normalize_composite(&grouped, &[2], 1e-5)?.reshape(&[4, 32, 16, 16])?;
            y.mul(&w.reshape(&[32, 1, 1])?)?
                .add(&b.reshape(&[32, 1, 1])?)
        },
        &x,
        &w,
        &b,
    );
    for (f, c) in fused.iter().zip(&composite) {
        close(f, c, 1e-9);
    }
}

#[test]
fn frozen_norm_parameters_get_no_gradient() {
    let x = Var::param(randn(&[2, 4, 3], DType::F32, 14));
    // A frozen weight of ones, so that each group's sum of outputs is constant in x.
    let w = Var::constant(Tensor::ones(&[4], DType::F32, Device::Cpu).unwrap());
    let b = Var::param(randn(&[4], DType::F32, 16));
    let y = x.group_norm(2, Some(&w), Some(&b), 1e-5).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&w).is_none(), "a frozen weight gets no gradient");
    // d(sum y)/db = the number of elements per channel.
    close(
        &grads.get(&b).unwrap().to_f64_vec().unwrap(),
        &[6.0; 4],
        1e-6,
    );
    // The sum of a normalised group does not depend on x.
    let gx = grads.get(&x).unwrap().to_f64_vec().unwrap();
    assert!(gx.iter().all(|g| g.abs() < 1e-4), "{gx:?}");
}

fn err_text(r: Result<Var>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_arguments_are_errors_naming_the_op() {
    let q = Var::constant(randn(&[2, 4, 8], DType::F32, 17));
    let k = Var::constant(randn(&[2, 5, 8], DType::F32, 18));
    let v = Var::constant(randn(&[2, 5, 3], DType::F32, 19));
    let bad_k = Var::constant(randn(&[2, 5, 7], DType::F32, 20));
    let e = err_text(q.scaled_dot_product_attention(&bad_k, &v, None, None));
    assert!(
        e.contains("scaled_dot_product_attention") && e.contains("[2, 5, 7]"),
        "{e}"
    );
    let e = err_text(q.scaled_dot_product_attention(&k, &q, None, None));
    assert!(e.contains("scaled_dot_product_attention"), "{e}");
    let wide = Tensor::ones(&[4, 6], DType::U8, Device::Cpu).unwrap();
    let e = err_text(q.scaled_dot_product_attention(&k, &v, Some(&wide), None));
    assert!(
        e.contains("mask") && e.contains("[4, 6]") && e.contains("[2, 4, 5]"),
        "{e}"
    );
    let float_mask = Tensor::ones(&[4, 5], DType::F32, Device::Cpu).unwrap();
    let e = err_text(q.scaled_dot_product_attention(&k, &v, Some(&float_mask), None));
    assert!(e.contains("mask") && e.contains("f32"), "{e}");

    let logits = Var::constant(randn(&[3, 4], DType::F32, 21));
    let e = err_text(logits.cross_entropy(&Tensor::from_vec(vec![0i64, 4, 1], &[3]).unwrap()));
    assert!(
        e.contains("cross_entropy") && e.contains("class 4") && e.contains("C = 4"),
        "{e}"
    );
    let e = err_text(logits.cross_entropy(&Tensor::from_vec(vec![0i64, -1, 1], &[3]).unwrap()));
    assert!(e.contains("class -1"), "{e}");
    let e = err_text(logits.cross_entropy(&Tensor::from_vec(vec![0i64, 1], &[2]).unwrap()));
    assert!(e.contains("cross_entropy") && e.contains("[2]"), "{e}");
    let e = err_text(logits.cross_entropy(&Tensor::from_vec(vec![0f32, 1., 2.], &[3]).unwrap()));
    assert!(e.contains("cross_entropy") && e.contains("i64"), "{e}");
    let e = err_text(q.cross_entropy(&Tensor::from_vec(vec![0i64, 1], &[2]).unwrap()));
    assert!(e.contains("[N, C]"), "{e}");

    let e = err_text(logits.mse_loss(&Var::constant(randn(&[4, 3], DType::F32, 22))));
    assert!(e.contains("mse_loss") && e.contains("[4, 3]"), "{e}");
    let e = err_text(logits.layer_norm(
        1,
        Some(&Var::constant(randn(&[3], DType::F32, 23))),
        None,
        1e-5,
    ));
    assert!(e.contains("layer_norm") && e.contains("weight"), "{e}");
    let e =
        err_text(Var::constant(randn(&[2, 6, 3], DType::F32, 24)).group_norm(4, None, None, 1e-5));
    assert!(e.contains("group_norm") && e.contains("6 channels"), "{e}");
    let e = err_text(logits.softmax(2));
    assert!(e.contains("softmax") && e.contains("dim 2"), "{e}");
}
