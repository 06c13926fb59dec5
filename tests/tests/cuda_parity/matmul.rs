//! The batched matrix product (`tensor/src/ops/matmul.rs`).

use tensor::{Result, Tensor};

use super::harness::{randn, Parity, TRAIN};

/// Matmul cases: lhs and rhs base shapes, and the views multiplied. In bf16 and f16, the cases
/// whose rows are whole 16-byte chunks (named "tensor-core rows", and the attention-like heads)
/// run on the tensor-core kernel, the others on the SIMT kernel.
type Product = (
    &'static str,
    &'static [usize],
    &'static [usize],
    fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
);

const PRODUCTS: &[Product] = &[
    ("[1, 1] x [1, 1]", &[1, 1], &[1, 1], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[7, 13] x [13, 5]", &[7, 13], &[13, 5], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[67, 129] x [129, 33]", &[67, 129], &[129, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[130, 257] x [257, 65]", &[130, 257], &[257, 65], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[1, 300] x [300, 1] (dot)", &[1, 300], &[300, 1], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "batched [3, 17, 33] x [3, 33, 9]",
        &[3, 17, 33],
        &[3, 33, 9],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "batch broadcast [2, 1, 5, 7] x [3, 7, 4]",
        &[2, 1, 5, 7],
        &[3, 7, 4],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "rhs without batch [4, 9, 31] x [31, 6]",
        &[4, 9, 31],
        &[31, 6],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "transposed lhs [33, 17]^T x [33, 9]",
        &[33, 17],
        &[33, 9],
        |a, b| Ok((a.transpose(0, 1)?, b.clone())),
    ),
    (
        "transposed rhs [17, 33] x [9, 33]^T",
        &[17, 33],
        &[9, 33],
        |a, b| Ok((a.clone(), b.transpose(0, 1)?)),
    ),
    (
        "both transposed, batched [2, 33, 17]^T x [2, 9, 33]^T",
        &[2, 33, 17],
        &[2, 9, 33],
        |a, b| Ok((a.transpose(1, 2)?, b.transpose(1, 2)?)),
    ),
    (
        "narrowed (offsets) [20, 40][3..18, 1..36] x [50, 11][7..42]",
        &[20, 40],
        &[50, 11],
        |a, b| Ok((a.narrow(0, 3, 15)?.narrow(1, 1, 35)?, b.narrow(0, 7, 35)?)),
    ),
    (
        "stride-0 batch: [5, 8] broadcast to [3, 5, 8] x [3, 8, 6]",
        &[5, 8],
        &[3, 8, 6],
        |a, b| Ok((a.broadcast_as(&[3, 5, 8])?, b.clone())),
    ),
    (
        "attention-like heads [2, 3, 10, 8] x [2, 3, 10, 8]^T",
        &[2, 10, 3, 8],
        &[2, 10, 3, 8],
        |a, b| Ok((a.transpose(1, 2)?, b.transpose(1, 2)?.transpose(2, 3)?)),
    ),
    // Rows whose strides are whole 16-byte chunks: bf16 and f16 take the tensor-core kernel,
    // with m, n and k that are not multiples of its tiles (views of wider rows, so the strides
    // stay aligned while the sizes are odd).
    (
        "tensor-core rows, odd sizes [17, 72][.., ..65] x [65, 40][.., ..33]",
        &[17, 72],
        &[65, 40],
        |a, b| Ok((a.narrow(1, 0, 65)?, b.narrow(1, 0, 33)?)),
    ),
    (
        "tensor-core rows [130, 256][.., ..250] x [250, 72][.., ..67]",
        &[130, 256],
        &[250, 72],
        |a, b| Ok((a.narrow(1, 0, 250)?, b.narrow(1, 0, 67)?)),
    ),
    (
        "tensor-core rows, both transposed [250, 136][.., ..130]^T x [67, 256][.., ..250]^T",
        &[250, 136],
        &[67, 256],
        |a, b| {
            Ok((
                a.narrow(1, 0, 130)?.transpose(0, 1)?,
                b.narrow(1, 0, 250)?.transpose(0, 1)?,
            ))
        },
    ),
    (
        "tensor-core rows, batch of 3 [3, 17, 72][.., ..65] x [3, 65, 40][.., ..33]",
        &[3, 17, 72],
        &[3, 65, 40],
        |a, b| Ok((a.narrow(2, 0, 65)?, b.narrow(2, 0, 33)?)),
    ),
    (
        "tensor-core rows, offsets of whole chunks [20, 72][3..18, 8..65] x [60, 24][3..60]",
        &[20, 72],
        &[60, 24],
        |a, b| Ok((a.narrow(0, 3, 15)?.narrow(1, 8, 57)?, b.narrow(0, 3, 57)?)),
    ),
    (
        "tensor-core rows, several tiles and k-steps [300, 520] x [520, 264]",
        &[300, 520],
        &[520, 264],
        |a, b| Ok((a.clone(), b.clone())),
    ),
];

#[test]
fn matmul() {
    let Some(mut p) = Parity::new("matmul") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, sa, sb, pair)) in PRODUCTS.iter().enumerate() {
            let seed = seed as u64;
            p.close(name, dtype, &[randn(sa, seed), randn(sb, seed + 50)], |x| {
                let (a, b) = pair(&x[0], &x[1])?;
                Ok(vec![a.matmul(&b)?])
            });
        }
    }
    p.finish();
}
