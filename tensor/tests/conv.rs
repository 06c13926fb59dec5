//! conv2d (forward and both backward passes), avg_pool2d and upsample_nearest2d against naive
//! direct loops, on odd sizes and every parameter combination; and the errors for bad shapes.

use tensor::{Conv2dParams, DType, Device, Generator, Tensor};

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

fn dims4(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().unwrap()
}

fn flat(shape: [usize; 4], i: [usize; 4]) -> usize {
    ((i[0] * shape[1] + i[1]) * shape[2] + i[2]) * shape[3] + i[3]
}

/// Calls `f(x index, w index, y index)` for every product `x · w` that contributes to an output
/// of the direct convolution: the seven loops over (n, co, oy, ox, ci, ky, kx).
fn for_each_tap(
    xs: [usize; 4],
    ws: [usize; 4],
    p: &Conv2dParams,
    mut f: impl FnMut(usize, usize, usize),
) -> [usize; 4] {
    let [n, _, h, w] = xs;
    let [cout, cin_g, kh, kw] = ws;
    let (s, pad, d) = (p.stride, p.padding, p.dilation);
    let ho = (h + 2 * pad.0 - d.0 * (kh - 1) - 1) / s.0 + 1;
    let wo = (w + 2 * pad.1 - d.1 * (kw - 1) - 1) / s.1 + 1;
    let ys = [n, cout, ho, wo];
    let cout_g = cout / p.groups;
    for b in 0..n {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s.0 + ky * d.0) as isize - pad.0 as isize;
                                let ix = (ox * s.1 + kx * d.1) as isize - pad.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let c = co / cout_g * cin_g + ci;
                                f(
                                    flat(xs, [b, c, iy as usize, ix as usize]),
                                    flat(ws, [co, ci, ky, kx]),
                                    flat(ys, [b, co, oy, ox]),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    ys
}

/// The direct convolution and its two gradients for the output cotangent `g`, in f64.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

fn reference(x: &Tensor, w: &Tensor, g: &Tensor, p: &Conv2dParams) -> Reference {
    let (xv, wv, gv) = (
        x.to_f64_vec().unwrap(),
        w.to_f64_vec().unwrap(),
        g.to_f64_vec().unwrap(),
    );
    let mut r = Reference {
        y: vec![0.0; gv.len()],
        dx: vec![0.0; xv.len()],
        dw: vec![0.0; wv.len()],
    };
    for_each_tap(dims4(x), dims4(w), p, |i, j, o| {
        r.y[o] += xv[i] * wv[j];
        r.dx[i] += gv[o] * wv[j];
        r.dw[j] += gv[o] * xv[i];
    });
    r
}

fn out_shape(xs: [usize; 4], ws: [usize; 4], p: &Conv2dParams) -> [usize; 4] {
    for_each_tap([0, xs[1], xs[2], xs[3]], ws, p, |_, _, _| {})
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 0 { xs[0] } else { d })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64) {
    let got = got.to_f64_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

/// Checks forward, input gradient and weight gradient of one convolution against the reference.
fn check_conv(x: &Tensor, w: &Tensor, p: &Conv2dParams, tol: f64, what: &str) {
    let ys = out_shape(dims4(x), dims4(w), p);
    let g = randn(&ys, x.dtype(), 99);
    let r = reference(x, w, &g, p);
    let y = x.conv2d(w, p).unwrap();
    assert_eq!(y.shape(), &ys, "{what}: output shape");
    assert_close(&format!("{what}: forward"), &y, &r.y, tol);
    let dx = g.conv2d_backward_input(w, x.shape(), p).unwrap();
    assert_close(&format!("{what}: input grad"), &dx, &r.dx, tol);
    let dw = g.conv2d_backward_weight(x, w.shape(), p).unwrap();
    assert_close(&format!("{what}: weight grad"), &dw, &r.dw, tol);
}

#[test]
fn conv2d_matches_direct_loops_for_every_parameter_combination() {
    let mut seed = 0;
    let mut checked = 0;
    for &(kh, kw) in &[(1, 1), (3, 3), (2, 3)] {
        for &stride in &[(1, 1), (2, 2), (1, 3)] {
            for &padding in &[(0, 0), (1, 1), (2, 0)] {
                for &dilation in &[(1, 1), (2, 2), (1, 2)] {
                    for &groups in &[1, 2, 3] {
                        for &n in &[1, 3] {
                            let p = Conv2dParams {
                                stride,
                                padding,
                                dilation,
                                groups,
                            };
                            let (h, w) = (7, 9);
                            let span = (dilation.0 * (kh - 1) + 1, dilation.1 * (kw - 1) + 1);
                            if h + 2 * padding.0 < span.0 || w + 2 * padding.1 < span.1 {
                                continue;
                            }
                            seed += 2;
                            let x = randn(&[n, 2 * groups, h, w], DType::F64, seed);
                            let wt = randn(&[groups * 2, 2, kh, kw], DType::F64, seed + 1);
                            check_conv(&x, &wt, &p, 1e-12, &format!("f64 {p:?} k {kh}x{kw} n {n}"));
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 400, "only {checked} combinations ran");
}

#[test]
fn conv2d_f32_large_enough_for_the_parallel_paths() {
    let p = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    for n in [1, 4] {
        let x = randn(&[n, 16, 13, 11], DType::F32, 1);
        let w = randn(&[24, 16, 3, 3], DType::F32, 2);
        check_conv(&x, &w, &p, 1e-4, &format!("f32 3x3 n {n}"));
        let w1 = randn(&[24, 16, 1, 1], DType::F32, 3);
        check_conv(
            &x,
            &w1,
            &Conv2dParams::default(),
            1e-4,
            &format!("f32 1x1 n {n}"),
        );
    }
}

#[test]
fn conv2d_large_images_are_computed_in_several_tiles_of_rows() {
    // 64 channels x 3x3 x 40 columns: a column tile holds only a few output rows.
    let x = randn(&[2, 64, 41, 40], DType::F64, 11);
    let w = randn(&[8, 64, 3, 3], DType::F64, 12);
    let same = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    check_conv(&x, &w, &same, 1e-11, "tiled 3x3 padding 1");
    let w = randn(&[6, 32, 3, 3], DType::F64, 13);
    let odd = Conv2dParams {
        stride: (2, 1),
        padding: (2, 1),
        dilation: (2, 1),
        groups: 2,
    };
    check_conv(
        &x.narrow(0, 0, 1).unwrap(),
        &w,
        &odd,
        1e-11,
        "tiled strided dilated grouped",
    );
}

#[test]
fn conv2d_pointwise_fast_path_with_groups_and_strided_1x1() {
    let x = randn(&[3, 4, 5, 7], DType::F64, 5);
    let w = randn(&[6, 2, 1, 1], DType::F64, 6);
    let grouped = Conv2dParams {
        groups: 2,
        ..Default::default()
    };
    check_conv(&x, &w, &grouped, 1e-12, "1x1 groups 2");
    let strided = Conv2dParams {
        stride: (2, 2),
        groups: 2,
        ..Default::default()
    };
    check_conv(&x, &w, &strided, 1e-12, "1x1 stride 2");
}

#[test]
fn conv2d_reads_non_contiguous_inputs_and_weights() {
    let p = Conv2dParams {
        stride: (2, 1),
        padding: (1, 2),
        ..Default::default()
    };
    // NHWC storage viewed as NCHW, and a weight stored [kh, kw, Cin, Cout].
    let x = randn(&[2, 5, 6, 3], DType::F64, 7)
        .permute(&[0, 3, 1, 2])
        .unwrap();
    let w = randn(&[3, 2, 3, 4], DType::F64, 8)
        .permute(&[3, 2, 0, 1])
        .unwrap();
    assert!(!x.is_contiguous() && !w.is_contiguous());
    check_conv(&x, &w, &p, 1e-12, "permuted");
    let want = x
        .contiguous()
        .unwrap()
        .conv2d(&w.contiguous().unwrap(), &p)
        .unwrap();
    let got = x.conv2d(&w, &p).unwrap();
    assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0);
}

#[test]
fn conv2d_bias_adds_per_channel() {
    let x = randn(&[2, 3, 5, 4], DType::F32, 9);
    let w = randn(&[4, 3, 3, 3], DType::F32, 10);
    let b = Tensor::from_vec(vec![1f32, -2., 0.5, 3.], &[4]).unwrap();
    let p = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let with = x.conv2d_bias(&w, Some(&b), &p).unwrap();
    let want = x
        .conv2d(&w, &p)
        .unwrap()
        .add(&b.reshape(&[1, 4, 1, 1]).unwrap())
        .unwrap();
    assert!(with.max_abs_diff(&want).unwrap() < 1e-5);
}

fn conv_err(xs: &[usize], ws: &[usize], p: &Conv2dParams) -> String {
    let x = Tensor::zeros(xs, DType::F32, Device::Cpu).unwrap();
    let w = Tensor::zeros(ws, DType::F32, Device::Cpu).unwrap();
    match x.conv2d(&w, p) {
        Ok(y) => panic!(
            "conv2d {xs:?} {ws:?} {p:?} should fail, gave {:?}",
            y.shape()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conv2d_errors_name_the_op_and_shapes() {
    let d = Conv2dParams::default();
    let cases: Vec<(Vec<usize>, Vec<usize>, Conv2dParams, &str)> = vec![
        (vec![3, 8, 8], vec![4, 3, 3, 3], d, "[3, 8, 8]"),
        (vec![1, 3, 8, 8], vec![4, 3, 3], d, "[4, 3, 3]"),
        (vec![1, 3, 8, 8], vec![4, 2, 3, 3], d, "[1, 3, 8, 8]"),
        (
            vec![1, 3, 8, 8],
            vec![4, 1, 3, 3],
            Conv2dParams { groups: 2, ..d },
            "divisible by groups",
        ),
        (
            vec![1, 4, 8, 8],
            vec![3, 2, 3, 3],
            Conv2dParams { groups: 2, ..d },
            "divisible by groups",
        ),
        (
            vec![1, 3, 8, 8],
            vec![4, 3, 3, 3],
            Conv2dParams {
                stride: (0, 1),
                ..d
            },
            "stride",
        ),
        (
            vec![1, 3, 2, 8],
            vec![4, 3, 3, 3],
            d,
            "larger than the padded input",
        ),
        (
            vec![1, 3, 4, 8],
            vec![4, 3, 3, 3],
            Conv2dParams {
                dilation: (3, 1),
                padding: (1, 1),
                ..d
            },
            "larger than the padded input",
        ),
    ];
    for (xs, ws, p, needle) in cases {
        let msg = conv_err(&xs, &ws, &p);
        assert!(msg.starts_with("conv2d"), "{msg}");
        assert!(msg.contains(needle), "{msg} lacks {needle:?}");
        assert!(
            msg.contains(&format!("{ws:?}")) || msg.contains(&format!("{xs:?}")),
            "{msg}"
        );
    }
}

#[test]
fn conv2d_errors_for_bad_bias_dtype_and_grad_shape() {
    let x = Tensor::zeros(&[1, 3, 5, 5], DType::F32, Device::Cpu).unwrap();
    let w = Tensor::zeros(&[4, 3, 3, 3], DType::F32, Device::Cpu).unwrap();
    let p = Conv2dParams::default();
    let b = Tensor::zeros(&[3], DType::F32, Device::Cpu).unwrap();
    let e = x.conv2d_bias(&w, Some(&b), &p).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("bias [3]"), "{e}");
    let w64 = w.to_dtype(DType::F64).unwrap();
    assert!(x
        .conv2d(&w64, &p)
        .unwrap_err()
        .to_string()
        .contains("conv2d"));
    let g = Tensor::zeros(&[1, 4, 2, 3], DType::F32, Device::Cpu).unwrap();
    let e = g
        .conv2d_backward_input(&w, x.shape(), &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv2d_backward_input") && e.contains("[1, 4, 3, 3]"),
        "{e}"
    );
    let e = g
        .conv2d_backward_weight(&x, w.shape(), &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d_backward_weight"), "{e}");
}

/// Naive average pooling (padding counted in the divisor) and its adjoint for cotangent `g`.
fn pool_reference(
    x: &Tensor,
    g: &Tensor,
    k: (usize, usize),
    s: (usize, usize),
    pad: (usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = dims4(x);
    let [_, _, ho, wo] = dims4(g);
    let (xv, gv) = (x.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
    let (mut y, mut dx) = (vec![0.0; gv.len()], vec![0.0; xv.len()]);
    let area = (k.0 * k.1) as f64;
    for b in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let o = (b * ho + oy) * wo + ox;
                for ky in 0..k.0 {
                    for kx in 0..k.1 {
                        let iy = (oy * s.0 + ky) as isize - pad.0 as isize;
                        let ix = (ox * s.1 + kx) as isize - pad.1 as isize;
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            let i = (b * h + iy as usize) * w + ix as usize;
                            y[o] += xv[i] / area;
                            dx[i] += gv[o] / area;
                        }
                    }
                }
            }
        }
    }
    (y, dx)
}

#[test]
fn avg_pool2d_matches_direct_loops() {
    let mut seed = 100;
    for &k in &[(2, 2), (3, 3), (3, 2), (1, 1)] {
        for &s in &[(1, 1), (2, 2), (3, 1)] {
            for &pad in &[(0, 0), (1, 1), (1, 0)] {
                if pad.0 > k.0 / 2 || pad.1 > k.1 / 2 {
                    continue;
                }
                for dtype in [DType::F64, DType::F32] {
                    seed += 1;
                    let x = randn(&[2, 3, 7, 9], dtype, seed)
                        .permute(&[0, 1, 3, 2])
                        .unwrap();
                    let y = x.avg_pool2d(k, s, pad).unwrap();
                    let g = randn(y.shape(), dtype, seed + 1000);
                    let (want_y, want_dx) = pool_reference(&x, &g, k, s, pad);
                    let what = format!("avg_pool2d {k:?} {s:?} {pad:?} {dtype}");
                    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                    assert_close(&what, &y, &want_y, tol);
                    let dx = g.avg_pool2d_backward(x.shape(), k, s, pad).unwrap();
                    assert_close(&format!("{what} backward"), &dx, &want_dx, tol);
                }
            }
        }
    }
}

#[test]
fn avg_pool2d_padding_counts_in_the_average() {
    // PyTorch: F.avg_pool2d(ones(1,1,2,2), 2, 1, 1) == [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]].
    let x = Tensor::ones(&[1, 1, 2, 2], DType::F32, Device::Cpu).unwrap();
    let y = x.avg_pool2d((2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]
    );
}

#[test]
fn upsample_nearest2d_and_backward_match_direct_loops() {
    for &(sh, sw) in &[(2, 2), (1, 3), (3, 2)] {
        let x = randn(&[2, 3, 5, 4], DType::F64, 7)
            .permute(&[0, 1, 3, 2])
            .unwrap();
        let [n, c, h, w] = dims4(&x);
        let y = x.upsample_nearest2d(sh, sw).unwrap();
        assert_eq!(y.shape(), &[n, c, h * sh, w * sw]);
        let xv = x.to_f64_vec().unwrap();
        let g = randn(y.shape(), DType::F64, 8);
        let gv = g.to_f64_vec().unwrap();
        let (mut want, mut want_dx) = (vec![0.0; n * c * h * sh * w * sw], vec![0.0; xv.len()]);
        for b in 0..n * c {
            for oy in 0..h * sh {
                for ox in 0..w * sw {
                    let o = (b * h * sh + oy) * w * sw + ox;
                    let i = (b * h + oy / sh) * w + ox / sw;
                    want[o] = xv[i];
                    want_dx[i] += gv[o];
                }
            }
        }
        assert_close("upsample", &y, &want, 0.0);
        let dx = g.upsample_nearest2d_backward(sh, sw).unwrap();
        assert_close("upsample backward", &dx, &want_dx, 1e-12);
    }
}

#[test]
fn pool_and_upsample_errors_name_the_op() {
    let x = Tensor::zeros(&[1, 2, 3, 3], DType::F32, Device::Cpu).unwrap();
    let e = x
        .avg_pool2d((4, 4), (1, 1), (0, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("avg_pool2d") && e.contains("[1, 2, 3, 3]"),
        "{e}"
    );
    let e = x
        .avg_pool2d((2, 2), (0, 1), (0, 0))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("avg_pool2d") && e.contains("stride"), "{e}");
    let flat = Tensor::zeros(&[2, 3, 3], DType::F32, Device::Cpu).unwrap();
    let e = flat.upsample_nearest2d(2, 2).unwrap_err().to_string();
    assert!(
        e.starts_with("upsample_nearest2d") && e.contains("[2, 3, 3]"),
        "{e}"
    );
    let e = x.upsample_nearest2d(0, 2).unwrap_err().to_string();
    assert!(e.starts_with("upsample_nearest2d"), "{e}");
    let e = x.upsample_nearest2d_backward(2, 2).unwrap_err().to_string();
    assert!(e.starts_with("upsample_nearest2d_backward"), "{e}");
}
