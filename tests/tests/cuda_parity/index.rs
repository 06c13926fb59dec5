//! cat, stack, pad, index_select / index_add, gather / scatter_add (`tensor/src/ops/index.rs`).

use tensor::Tensor;

use super::harness::{indices, randn, values, whole, Parity, ALL, I64, TRAIN, U8};

#[test]
fn cat_stack_pad_of_every_dtype() {
    let Some(mut p) = Parity::new("cat_stack_pad_of_every_dtype") else {
        return;
    };
    for dtype in ALL {
        let inputs = [
            values(&[3, 4, 5], dtype, 1),
            values(&[3, 2, 5], dtype, 2),
            values(&[5, 6, 3], dtype, 3),
            values(&[1, 1, 5], dtype, 4),
        ];
        p.exact(
            "cat dim 1 of [3, 4, 5], [3, 2, 5], a permuted [3, 6, 5] and a broadcast [3, 1, 5]",
            dtype,
            &inputs,
            |x| {
                let t = x[2].permute(&[2, 1, 0])?;
                let b = x[3].broadcast_as(&[3, 1, 5])?;
                Ok(vec![Tensor::cat(&[&x[0], &x[1], &t, &b], 1)?])
            },
        );
        p.exact("cat dims 0 and 2, narrowed pieces", dtype, &inputs, |x| {
            let a = x[0].narrow(1, 1, 2)?;
            Ok(vec![
                Tensor::cat(&[&a, &x[1], &a], 0)?,
                Tensor::cat(&[&a, &x[1].narrow(2, 1, 3)?], 2)?,
                Tensor::cat(&[&x[0]], 0)?,
            ])
        });
        p.exact(
            "stack dims 0, 1, 3 with a transposed piece",
            dtype,
            &inputs,
            |x| {
                let a = x[0].narrow(1, 0, 2)?;
                let b = x[2].permute(&[2, 1, 0])?.narrow(1, 0, 2)?;
                Ok(vec![
                    Tensor::stack(&[&a, &b], 0)?,
                    Tensor::stack(&[&a, &b, &a], 1)?,
                    Tensor::stack(&[&b, &a], 3)?,
                ])
            },
        );
        let fill = if dtype == U8 { 7.0 } else { -2.0 };
        p.exact(
            "pad H and W of a narrowed NCHW input; pad of the last dim; no padding",
            dtype,
            &[values(&[2, 3, 6, 9], dtype, 5)],
            |x| {
                let v = x[0].narrow(3, 2, 5)?;
                Ok(vec![
                    v.pad(&[(1, 2), (0, 3)], fill)?,
                    v.transpose(2, 3)?.pad(&[(4, 0)], fill)?,
                    v.pad(&[(0, 0), (0, 0)], fill)?,
                    v.pad(&[(1, 1), (1, 1), (1, 1), (1, 1)], fill)?,
                ])
            },
        );
        p.exact(
            "a large cat [300, 129] and [300, 70]",
            dtype,
            &[values(&[300, 129], dtype, 6), values(&[70, 300], dtype, 7)],
            |x| Ok(vec![Tensor::cat(&[&x[0], &x[1].transpose(0, 1)?], 1)?]),
        );
    }
    p.finish();
}

#[test]
fn index_select_and_index_add() {
    let Some(mut p) = Parity::new("index_select_and_index_add") else {
        return;
    };
    // index_select: an exact copy in every dtype, from contiguous and strided sources.
    for dtype in ALL {
        for dim in 0..3 {
            let size = [6, 7, 8][dim];
            let idx = indices(&[11], size, 10 + dim as u64);
            p.exact(
                &format!("index_select dim {dim}, 11 indices with repeats"),
                dtype,
                &[values(&[6, 7, 8], dtype, 1), idx.clone()],
                |x| Ok(vec![x[0].index_select(dim, &x[1])?]),
            );
            p.exact(
                &format!("index_select dim {dim} of a permuted source, strided index"),
                dtype,
                &[
                    values(&[8, 6, 7], dtype, 2),
                    indices(&[2, 11], size, 20 + dim as u64),
                ],
                |x| {
                    let src = x[0].permute(&[1, 2, 0])?;
                    let idx = x[1].narrow(0, 1, 1)?.squeeze(0)?;
                    Ok(vec![src.index_select(dim, &idx)?])
                },
            );
        }
        p.exact(
            "embedding lookup [1000, 64] by 300 ids",
            dtype,
            &[values(&[1000, 64], dtype, 3), indices(&[300], 1000, 4)],
            |x| Ok(vec![x[0].index_select(0, &x[1])?]),
        );
    }
    // index_add accumulates repeated indices: a sum, compared within tolerance.
    for dtype in TRAIN {
        for dim in 0..3 {
            let target = vec![6, 7, 8];
            let size = target[dim];
            let mut src_shape = target.clone();
            src_shape[dim] = 11;
            let idx = indices(&[11], size as i64, 30 + dim as u64);
            p.close(
                &format!("index_add dim {dim}, 11 slices into {size} with repeats"),
                dtype,
                &[randn(&src_shape, 5), idx],
                |x| Ok(vec![x[0].index_add(dim, &x[1], &target)?]),
            );
        }
        // Many repeats: an embedding gradient where a few ids take most of the rows.
        let ids = whole(&[500], 5, 6).to_dtype(I64).unwrap();
        p.close(
            "index_add of 500 rows into 5 (embedding backward)",
            dtype,
            &[randn(&[32, 500], 7), ids],
            |x| Ok(vec![x[0].transpose(0, 1)?.index_add(0, &x[1], &[5, 32])?]),
        );
    }
    p.finish();
}

#[test]
fn gather_and_scatter_add() {
    let Some(mut p) = Parity::new("gather_and_scatter_add") else {
        return;
    };
    for dtype in ALL {
        for dim in 0..3 {
            let shape = [5, 6, 7];
            // The index is smaller than the source in the other dims.
            let mut ishape = vec![4, 3, 5];
            ishape[dim] = 9;
            p.exact(
                &format!("gather dim {dim}, index {ishape:?}"),
                dtype,
                &[
                    values(&shape, dtype, 1),
                    indices(&ishape, shape[dim] as i64, 40 + dim as u64),
                ],
                |x| Ok(vec![x[0].gather(dim, &x[1])?]),
            );
        }
        p.exact(
            "gather of a transposed source",
            dtype,
            &[values(&[7, 5], dtype, 2), indices(&[5, 3], 7, 50)],
            |x| Ok(vec![x[0].transpose(0, 1)?.gather(1, &x[1])?]),
        );
    }
    for dtype in TRAIN {
        for dim in 0..3 {
            let shape = [5, 6, 7];
            let mut ishape = vec![4, 3, 5];
            ishape[dim] = 9;
            let target = shape.to_vec();
            p.close(
                &format!("scatter_add dim {dim}, index {ishape:?} with repeats"),
                dtype,
                &[
                    randn(&ishape, 3),
                    indices(&ishape, shape[dim] as i64, 60 + dim as u64),
                ],
                |x| Ok(vec![x[0].scatter_add(dim, &x[1], &target)?]),
            );
        }
        p.close(
            "scatter_add of a transposed source (cross-entropy backward)",
            dtype,
            &[randn(&[1, 64], 4), indices(&[64, 1], 10, 70)],
            |x| {
                Ok(vec![x[0].transpose(0, 1)?.scatter_add(
                    1,
                    &x[1],
                    &[64, 10],
                )?])
            },
        );
    }
    p.finish();
}
