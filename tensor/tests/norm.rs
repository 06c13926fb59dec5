//! Forward checks of the fused softmax, log-softmax, layer-norm and group-norm kernels against
//! explicit loops, on contiguous, permuted and large (parallel) inputs, in f32 and f64; and the
//! errors they give for bad arguments.

use tensor::{DType, Device, Generator, Tensor};

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(
        shape,
        0.0,
        1.0,
        dtype,
        Device::Cpu,
        &mut Generator::new(seed),
    )
    .unwrap()
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

/// Softmax of the rows of a [rows, len] buffer, by the textbook formula.
fn softmax_rows(x: &[f64], len: usize) -> Vec<f64> {
    x.chunks(len)
        .flat_map(|row| {
            let sum: f64 = row.iter().map(|v| v.exp()).sum();
            row.iter().map(move |v| v.exp() / sum)
        })
        .collect()
}

/// (x − mean)/√(var + eps)·w + b over rows of `len`, with the parameter of element j of row r at
/// `param(r, j)`; biased variance.
fn normalize_rows(
    x: &[f64],
    len: usize,
    eps: f64,
    affine: Option<(&[f64], &[f64])>,
    param: impl Fn(usize, usize) -> usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    for (r, row) in x.chunks(len).enumerate() {
        let mean = row.iter().sum::<f64>() / len as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
        for (j, v) in row.iter().enumerate() {
            let (w, b) = affine.map_or((1.0, 0.0), |(w, b)| (w[param(r, j)], b[param(r, j)]));
            out.push((v - mean) / (var + eps).sqrt() * w + b);
        }
    }
    out
}

#[test]
fn softmax_rows_sum_to_one_and_match_the_formula() {
    for dtype in [DType::F32, DType::F64] {
        let x = randn(&[3, 4, 5], dtype, 1);
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-12 };
        // Along the last dim the rows are the contiguous chunks.
        let y = x.softmax(2).unwrap();
        assert!(y.is_contiguous());
        close(
            &y.to_f64_vec().unwrap(),
            &softmax_rows(&x.to_f64_vec().unwrap(), 5),
            tol,
        );
        let sums = y.sum(&[2], false).unwrap().to_f64_vec().unwrap();
        close(&sums, &[1.0; 12], tol);
        // Along the middle dim: compare with the last-dim softmax of the transposed input.
        let y1 = x.softmax(1).unwrap();
        let via_t = x.transpose(1, 2).unwrap().softmax(2).unwrap();
        close(
            &y1.to_f64_vec().unwrap(),
            &via_t.transpose(1, 2).unwrap().to_f64_vec().unwrap(),
            tol,
        );
        assert_eq!(y1.shape(), &[3, 4, 5]);
    }
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let x = Tensor::from_vec(vec![1000f32, 1001., 999., -1000.], &[1, 4]).unwrap();
    let y = x.softmax(1).unwrap().to_f64_vec().unwrap();
    let expect = softmax_rows(&[1.0, 2.0, 0.0, -2000.0], 4);
    close(&y, &expect, 1e-6);
    let ly = x.log_softmax(1).unwrap().to_f64_vec().unwrap();
    assert!(ly.iter().all(|v| v.is_finite()), "{ly:?}");
}

#[test]
fn log_softmax_is_the_log_of_softmax() {
    let x = randn(&[4, 6, 3], DType::F64, 2);
    let x = x.permute(&[2, 0, 1]).unwrap(); // non-contiguous
    for dim in 0..3 {
        let ls = x.log_softmax(dim).unwrap().to_f64_vec().unwrap();
        let s = x.softmax(dim).unwrap().log().unwrap().to_f64_vec().unwrap();
        close(&ls, &s, 1e-12);
    }
}

#[test]
fn softmax_backward_kernels_match_their_formulas() {
    let (y, g) = (
        randn(&[2, 3], DType::F64, 3).softmax(1).unwrap(),
        randn(&[2, 3], DType::F64, 4),
    );
    let (yv, gv) = (y.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
    let mut expect_s = Vec::new();
    let mut expect_ls = Vec::new();
    for r in 0..2 {
        let (yr, gr) = (&yv[r * 3..r * 3 + 3], &gv[r * 3..r * 3 + 3]);
        let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        let sum: f64 = gr.iter().sum();
        for j in 0..3 {
            expect_s.push(yr[j] * (gr[j] - dot));
            expect_ls.push(gr[j] - yr[j].exp() * sum);
        }
    }
    let got_s = y.softmax_backward(&g, 1).unwrap().to_f64_vec().unwrap();
    close(&got_s, &expect_s, 1e-12);
    let got_ls = y.log_softmax_backward(&g, 1).unwrap().to_f64_vec().unwrap();
    close(&got_ls, &expect_ls, 1e-12);
}

#[test]
fn large_softmax_runs_in_parallel_and_matches() {
    let x = randn(&[96, 700], DType::F32, 5);
    let y = x.softmax(1).unwrap();
    close(
        &y.to_f64_vec().unwrap(),
        &softmax_rows(&x.to_f64_vec().unwrap(), 700),
        1e-5,
    );
}

#[test]
fn layer_norm_matches_mean_and_biased_variance() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        // Over the last 2 dims ([3, 4]) of a permuted input.
        let x = randn(&[4, 2, 3], dtype, 6).permute(&[1, 2, 0]).unwrap();
        let (w, b) = (randn(&[3, 4], dtype, 7), randn(&[3, 4], dtype, 8));
        let (y, mean, rstd) = x.layer_norm(2, Some(&w), Some(&b), 1e-5).unwrap();
        let xv = x.to_f64_vec().unwrap();
        let (wv, bv) = (w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        let expect = normalize_rows(&xv, 12, 1e-5, Some((&wv, &bv)), |_, j| j);
        close(&y.to_f64_vec().unwrap(), &expect, tol);
        assert_eq!(mean.shape(), &[2]);
        assert_eq!(rstd.shape(), &[2]);
        let row = &xv[..12];
        let m = row.iter().sum::<f64>() / 12.0;
        let var = row.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 12.0;
        close(&[mean.to_f64_vec().unwrap()[0]], &[m], tol);
        close(
            &[rstd.to_f64_vec().unwrap()[0]],
            &[1.0 / (var + 1e-5).sqrt()],
            tol,
        );
        // Without affine parameters, over the last dim only.
        let (y1, ..) = x.layer_norm(1, None, None, 1e-5).unwrap();
        close(
            &y1.to_f64_vec().unwrap(),
            &normalize_rows(&xv, 4, 1e-5, None, |_, j| j),
            tol,
        );
    }
}

#[test]
fn group_norm_matches_per_group_statistics() {
    for (c, groups) in [(6, 1), (6, 2), (6, 3), (6, 6)] {
        let x = randn(&[2, c, 2, 3], DType::F64, 9);
        let (w, b) = (randn(&[c], DType::F64, 10), randn(&[c], DType::F64, 11));
        let (y, mean, rstd) = x.group_norm(groups, Some(&w), Some(&b), 1e-5).unwrap();
        let per_group = c / groups * 6;
        let (wv, bv) = (w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        // Element j of row r (= n·groups + g) is in channel g·(c/groups) + j/6.
        let channel = |r: usize, j: usize| (r % groups) * (c / groups) + j / 6;
        let expect = normalize_rows(
            &x.to_f64_vec().unwrap(),
            per_group,
            1e-5,
            Some((&wv, &bv)),
            channel,
        );
        close(&y.to_f64_vec().unwrap(), &expect, 1e-12);
        assert_eq!(mean.shape(), &[2, groups]);
        assert_eq!(rstd.shape(), &[2, groups]);
    }
}

#[test]
fn group_norm_of_a_non_contiguous_f32_input() {
    let x = randn(&[3, 2, 4, 5], DType::F32, 12)
        .transpose(0, 1)
        .unwrap(); // [2, 3, 4, 5]
    let (y, ..) = x.group_norm(3, None, None, 1e-6).unwrap();
    let expect = normalize_rows(&x.to_f64_vec().unwrap(), 20, 1e-6, None, |_, _| 0);
    close(&y.to_f64_vec().unwrap(), &expect, 1e-5);
}

#[test]
fn large_norms_run_in_parallel_and_match() {
    let x = randn(&[128, 384], DType::F32, 13);
    let (w, b) = (randn(&[384], DType::F32, 14), randn(&[384], DType::F32, 15));
    let (y, ..) = x.layer_norm(1, Some(&w), Some(&b), 1e-5).unwrap();
    let (wv, bv) = (w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let expect = normalize_rows(
        &x.to_f64_vec().unwrap(),
        384,
        1e-5,
        Some((&wv, &bv)),
        |_, j| j,
    );
    close(&y.to_f64_vec().unwrap(), &expect, 1e-4);

    let x = randn(&[4, 32, 16, 16], DType::F32, 16);
    let (y, ..) = x.group_norm(8, None, None, 1e-5).unwrap();
    let expect = normalize_rows(&x.to_f64_vec().unwrap(), 4 * 256, 1e-5, None, |_, _| 0);
    close(&y.to_f64_vec().unwrap(), &expect, 1e-4);
}

#[test]
fn f32_statistics_survive_a_large_offset() {
    // A large mean against a small spread: a one-pass E[x²] − E[x]² in f32, or a mean rounded to
    // f32, would lose most digits here.
    let v: Vec<f32> = (0..1000)
        .map(|i| 10_000.0 + (i % 10) as f32 * 0.01)
        .collect();
    let x = Tensor::from_vec(v, &[1, 1000]).unwrap();
    let (y, ..) = x.layer_norm(1, None, None, 0.0).unwrap();
    let expect = normalize_rows(&x.to_f64_vec().unwrap(), 1000, 0.0, None, |_, j| j);
    close(&y.to_f64_vec().unwrap(), &expect, 1e-3);
}

fn err_text<T: std::fmt::Debug>(r: tensor::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_arguments_are_errors_naming_the_op_and_shapes() {
    let x = randn(&[2, 6, 4], DType::F32, 17);
    let e = err_text(x.softmax(3));
    assert!(e.contains("softmax") && e.contains("[2, 6, 4]"), "{e}");
    let e = err_text(x.log_softmax(5));
    assert!(e.contains("log_softmax"), "{e}");
    let e = err_text(x.group_norm(4, None, None, 1e-5));
    assert!(
        e.contains("group_norm") && e.contains("4 groups") && e.contains("6 channels"),
        "{e}"
    );
    let e = err_text(x.group_norm(0, None, None, 1e-5));
    assert!(e.contains("group_norm"), "{e}");
    let w = randn(&[4], DType::F32, 18);
    let e = err_text(x.group_norm(2, Some(&w), None, 1e-5));
    assert!(
        e.contains("weight") && e.contains("[4]") && e.contains("[6]"),
        "{e}"
    );
    let e = err_text(x.layer_norm(1, None, Some(&randn(&[6], DType::F32, 19)), 1e-5));
    assert!(
        e.contains("layer_norm") && e.contains("bias") && e.contains("[4]"),
        "{e}"
    );
    for k in [0, 4] {
        let e = err_text(x.layer_norm(k, None, None, 1e-5));
        assert!(e.contains("layer_norm") && e.contains("[2, 6, 4]"), "{e}");
    }
    let e = err_text(randn(&[5], DType::F32, 20).group_norm(1, None, None, 1e-5));
    assert!(e.contains("[N, C, *spatial]"), "{e}");
    // A weight of another dtype, and an integer input.
    let e = err_text(x.layer_norm(1, Some(&randn(&[4], DType::F64, 21)), None, 1e-5));
    assert!(e.contains("layer_norm") && e.contains("f64"), "{e}");
    let ints = Tensor::from_vec(vec![1i64, 2, 3], &[1, 3]).unwrap();
    let e = err_text(ints.softmax(1));
    assert!(e.contains("softmax") && e.contains("i64"), "{e}");
    // Backward kernels check the gradient's shape and the statistics' size.
    let (y, mean, rstd) = x.layer_norm(1, None, None, 1e-5).unwrap();
    let e = err_text(y.softmax_backward(&randn(&[2, 6], DType::F32, 22), 1));
    assert!(e.contains("softmax_backward"), "{e}");
    let e = err_text(x.layer_norm_backward(&y, &mean, &rstd, None, 2));
    assert!(
        e.contains("layer_norm_backward") && e.contains("rstd"),
        "{e}"
    );
}
