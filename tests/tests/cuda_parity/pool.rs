//! Upsampling, average and max pooling, bilinear resizing (`tensor/src/ops/pool.rs`).

use tensor::{Result, Tensor};

use super::harness::{is_half, randn, Mode, Parity, F32, TRAIN};

/// A pooling window: kernel, stride, padding.
type Window = ((usize, usize), (usize, usize), (usize, usize));

const WINDOWS: &[Window] = &[
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (1, 1)),
    ((3, 2), (2, 1), (1, 0)),
    ((5, 5), (3, 3), (2, 2)),
    ((1, 1), (1, 1), (0, 0)),
    ((4, 3), (4, 3), (2, 1)),
];

#[test]
fn upsample_nearest_forward_and_backward() {
    let Some(mut p) = Parity::new("upsample_nearest_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (sh, sw) in [(2, 2), (3, 1), (1, 4), (1, 1)] {
            let inputs = [randn(&[2, 3, 7, 5], 1), randn(&[2, 3, 5 * sh, 7 * sw], 2)];
            let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                // The input is a transposed (H, W) view; the gradient one too.
                let up = x[0].transpose(2, 3)?.upsample_nearest2d(sh, sw)?;
                let g = x[1].transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
                Ok(vec![up, g.upsample_nearest2d_backward(sh, sw)?])
            };
            p.close(
                &format!("scale ({sh}, {sw}) of transposed [2, 3, 5, 7]"),
                dtype,
                &inputs,
                f,
            );
        }
        p.close(
            "large [4, 16, 32, 32] scale 2",
            dtype,
            &[randn(&[4, 16, 32, 32], 3), randn(&[4, 16, 64, 64], 4)],
            |x| {
                Ok(vec![
                    x[0].upsample_nearest2d(2, 2)?,
                    x[1].upsample_nearest2d_backward(2, 2)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn avg_pool_max_pool_forward_and_backward() {
    let Some(mut p) = Parity::new("avg_pool_max_pool_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(kernel, stride, padding)) in WINDOWS.iter().enumerate() {
            let seed = seed as u64;
            let name = format!("kernel {kernel:?} stride {stride:?} padding {padding:?}");
            // Input [2, 3, 13, 11] as a transposed view of [2, 3, 11, 13].
            let x0 = randn(&[2, 3, 11, 13], seed).transpose(2, 3).unwrap();
            let pooled = x0
                .avg_pool2d(kernel, stride, padding)
                .unwrap()
                .shape()
                .to_vec();
            let inputs = [randn(&[2, 3, 11, 13], seed), randn(&pooled, seed + 1)];
            p.close(&format!("avg_pool2d {name}"), dtype, &inputs, |x| {
                let v = x[0].transpose(2, 3)?;
                Ok(vec![
                    v.avg_pool2d(kernel, stride, padding)?,
                    x[1].avg_pool2d_backward(v.shape(), kernel, stride, padding)?,
                ])
            });
            let half_kernel = 2 * padding.0 <= kernel.0 && 2 * padding.1 <= kernel.1;
            if half_kernel {
                p.close(
                    &format!("avg_pool2d_exclude_pad {name}"),
                    dtype,
                    &inputs[..1],
                    |x| {
                        Ok(vec![x[0]
                            .transpose(2, 3)?
                            .avg_pool2d_exclude_pad(kernel, stride, padding)?])
                    },
                );
                // The largest of the same values: exact where the CPU computes in the dtype.
                let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                    Ok(vec![x[0]
                        .transpose(2, 3)?
                        .max_pool2d(kernel, stride, padding)?])
                };
                if is_half(dtype) {
                    p.close(&format!("max_pool2d {name}"), dtype, &inputs[..1], f);
                } else {
                    p.exact(&format!("max_pool2d {name}"), dtype, &inputs[..1], f);
                }
            }
        }
        p.close(
            "avg_pool2d backward of a strided gradient",
            dtype,
            &[randn(&[2, 3, 4, 5], 40)],
            |x| {
                Ok(vec![x[0].transpose(2, 3)?.avg_pool2d_backward(
                    &[2, 3, 10, 8],
                    (2, 2),
                    (2, 2),
                    (0, 0),
                )?])
            },
        );
        p.close(
            "large [4, 16, 64, 64] 2x2 pools",
            dtype,
            &[randn(&[4, 16, 64, 64], 41)],
            |x| {
                Ok(vec![
                    x[0].avg_pool2d((2, 2), (2, 2), (0, 0))?,
                    x[0].max_pool2d((3, 3), (2, 2), (1, 1))?,
                ])
            },
        );
    }
    // NaN wins a max-pool window, as on the CPU.
    p.on("max_pool2d propagates NaN", F32, Mode::Exact, |d| {
        let x =
            Tensor::from_vec(vec![1f32, f32::NAN, 3., 4., 5., 6.], &[1, 1, 2, 3])?.to_device(d)?;
        Ok(vec![x.max_pool2d((1, 2), (1, 1), (0, 0))?])
    });
    p.finish();
}

#[test]
fn resize_bilinear() {
    let Some(mut p) = Parity::new("resize_bilinear") else {
        return;
    };
    let sizes = [(11, 16), (3, 4), (5, 7), (10, 3), (1, 1), (299, 299)];
    for dtype in TRAIN {
        for (oh, ow) in sizes {
            p.close(
                &format!("transposed [2, 3, 5, 7] to ({oh}, {ow})"),
                dtype,
                &[randn(&[2, 3, 7, 5], 1)],
                |x| Ok(vec![x[0].transpose(2, 3)?.resize_bilinear2d(oh, ow)?]),
            );
        }
    }
    p.finish();
}
