//! 2-D convolution and its two backward passes (`tensor/src/ops/conv.rs`).

use tensor::{Conv2dParams, Result, Tensor};

use super::harness::{randn, Parity, TRAIN};

fn conv(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// A convolution case: name, input and weight base shapes, params, bias, and whether the input
/// and weight are channels-last views (`[N, H, W, C]` and `[Cout, kh, kw, Cin/g]` permuted).
type ConvCase = (
    &'static str,
    Vec<usize>,
    Vec<usize>,
    Conv2dParams,
    bool,
    bool,
);

#[test]
fn conv2d_forward_and_backward() {
    let Some(mut p) = Parity::new("conv2d_forward_and_backward") else {
        return;
    };
    let cases: Vec<ConvCase> = vec![
        (
            "3x3 stride 1 padding 1, bias",
            vec![2, 3, 11, 13],
            vec![5, 3, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 1),
            true,
            false,
        ),
        (
            "3x3 stride 2 padding 1",
            vec![2, 4, 15, 9],
            vec![6, 4, 3, 3],
            conv((2, 2), (1, 1), (1, 1), 1),
            false,
            false,
        ),
        (
            "2x3 dilation 2 padding 2",
            vec![1, 2, 17, 14],
            vec![3, 2, 2, 3],
            conv((1, 1), (2, 2), (2, 2), 1),
            false,
            false,
        ),
        (
            "groups 2, bias",
            vec![2, 4, 9, 9],
            vec![6, 2, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 2),
            true,
            false,
        ),
        (
            "depthwise (groups = channels)",
            vec![2, 6, 10, 7],
            vec![6, 1, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 6),
            true,
            false,
        ),
        (
            "1x1, bias",
            vec![2, 5, 7, 9],
            vec![8, 5, 1, 1],
            conv((1, 1), (0, 0), (1, 1), 1),
            true,
            false,
        ),
        (
            "1x1 stride 2",
            vec![1, 3, 9, 11],
            vec![4, 3, 1, 1],
            conv((2, 2), (0, 0), (1, 1), 1),
            false,
            false,
        ),
        (
            "5x5 stride (2, 1) padding (2, 1)",
            vec![2, 3, 19, 23],
            vec![4, 3, 5, 5],
            conv((2, 1), (2, 1), (1, 1), 1),
            true,
            false,
        ),
        (
            "channels-last input and weight views, stride (1, 2)",
            vec![2, 9, 10, 3],
            vec![4, 3, 3, 3],
            conv((1, 2), (1, 0), (1, 1), 1),
            true,
            true,
        ),
        (
            "32 to 48 channels, 3x3 padding 1",
            vec![2, 32, 16, 16],
            vec![48, 32, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 1),
            true,
            false,
        ),
    ];
    for dtype in TRAIN {
        for (seed, (name, xs, ws, params, bias, channels_last)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let (params, bias, channels_last) = (*params, *bias, *channels_last);
            let view = move |x: &Tensor, w: &Tensor| -> Result<(Tensor, Tensor)> {
                if channels_last {
                    Ok((x.permute(&[0, 3, 1, 2])?, w.permute(&[0, 3, 1, 2])?))
                } else {
                    Ok((x.clone(), w.clone()))
                }
            };
            let (x0, w0) = view(&randn(xs, seed), &randn(ws, seed + 1)).unwrap();
            let out_shape = x0.conv2d(&w0, &params).unwrap().shape().to_vec();
            let cout = w0.shape()[0];
            // The output gradient as a transposed (H, W) view of its own base.
            let mut gs = out_shape.clone();
            gs.swap(2, 3);
            let inputs = [
                randn(xs, seed),
                randn(ws, seed + 1),
                randn(&[cout], seed + 2),
                randn(&gs, seed + 3),
            ];
            p.close(name, dtype, &inputs, |t| {
                let (x, w) = view(&t[0], &t[1])?;
                let b = bias.then_some(&t[2]);
                let g = t[3].transpose(2, 3)?;
                Ok(vec![
                    x.conv2d_bias(&w, b, &params)?,
                    g.conv2d_backward_input(&w, x.shape(), &params)?,
                    g.conv2d_backward_weight(&x, w.shape(), &params)?,
                ])
            });
        }
        p.close(
            "conv2d without bias",
            dtype,
            &[randn(&[1, 2, 6, 5], 90), randn(&[3, 2, 3, 2], 91)],
            |t| Ok(vec![t[0].conv2d(&t[1], &conv((1, 1), (0, 1), (1, 1), 1))?]),
        );
    }
    p.finish();
}
