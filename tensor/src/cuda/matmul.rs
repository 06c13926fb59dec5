//! CUDA kernel of `Tensor::matmul` (`ops/matmul.rs`): one batched GEMM launch that reads both
//! operands through their views, so transposes and broadcast batch dims cost no copy. bf16 and
//! f16 products whose rows are whole 16-byte chunks run on tensor cores (`kernels::matmul` picks
//! the kernel).

use kernels::matmul::{gemm, GemmShape, MatOperand};
use kernels::Dims;

use super::{check_float, elem, kernel_error};
use crate::{Error, Layout, Result, Tensor};

/// [`Dims`] for a GEMM operand's batch offsets (shape, strides, offset in elements).
pub(crate) fn batch_dims(
    op: &'static str,
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Result<Dims> {
    Dims::new(shape, strides, offset).map_err(|e| Error::shape(op, e.to_string()))
}

/// `a · b` with `la`, `lb` their layouts already broadcast to `[batch.., m, k]` and
/// `[batch.., k, n]`; a fresh contiguous `[batch.., m, n]` output.
pub(crate) fn matmul(
    a: &Tensor,
    la: &Layout,
    b: &Tensor,
    lb: &Layout,
    (m, n, k): (usize, usize, usize),
    batch: &[usize],
) -> Result<Tensor> {
    check_float("matmul", a)?;
    let out_shape = [batch, &[m, n]].concat();
    let out = a.cuda_output(&out_shape, a.dtype())?;
    let r = batch.len();
    let operand = |t: &Tensor, l: &Layout| -> Result<MatOperand> {
        let s = l.strides();
        Ok(MatOperand {
            ptr: t.cuda_ptr(),
            batch: batch_dims("matmul", batch, &s[..r], l.offset())?,
            rs: s[r] as i64,
            cs: s[r + 1] as i64,
            red: 0,
        })
    };
    let batches: usize = batch.iter().product();
    let c = MatOperand {
        ptr: out.cuda_ptr(),
        batch: batch_dims("matmul", &[batches], &[m * n], 0)?,
        rs: n as i64,
        cs: 1,
        red: 0,
    };
    let shape = GemmShape {
        m,
        n,
        k,
        batches,
        red: 1,
    };
    gemm(
        a.gpu(),
        elem(a.dtype()),
        shape,
        operand(a, la)?,
        operand(b, lb)?,
        c,
        false,
    )
    .map_err(kernel_error("matmul", a.device()))?;
    Ok(out)
}

/// Parity with the CPU; each test passes without running anything where no GPU is present.
#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_close, both, cuda, randn, tol};
    use crate::{DType, Tensor};

    #[test]
    fn matmul_matches_the_cpu() {
        let Some(dev) = cuda() else { return };
        let cases: &[(&[usize], &[usize])] = &[
            (&[3, 5], &[5, 4]),
            (&[1, 1], &[1, 1]),
            (&[65, 17], &[17, 130]),
            (&[129, 64], &[64, 63]),
            (&[2, 1, 3, 70, 33], &[4, 1, 33, 9]),
            (&[5, 7, 16], &[16, 3]),
            (&[0, 3], &[3, 4]),
            (&[3, 0], &[0, 4]),
        ];
        for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
            for (i, (sa, sb)) in cases.iter().enumerate() {
                let (a, b) = (randn(sa, 2 * i as u64), randn(sb, 2 * i as u64 + 1));
                let (got, want) = both(dev, dtype, &[&a, &b], |t| t[0].matmul(&t[1]).unwrap());
                assert_close(&format!("{dtype} {sa:?}x{sb:?}"), &got, &want, tol(dtype));
            }
        }
    }

    #[test]
    fn matmul_reads_transposed_broadcast_and_offset_views() {
        let Some(dev) = cuda() else { return };
        let a = randn(&[7, 66], 10);
        let b = randn(&[3, 2, 9, 7], 11);
        let c = randn(&[5, 40], 12);
        for dtype in [DType::F32, DType::F64] {
            // [66, 7] (transposed) x [2, 7, 9] (batch-transposed): both read in place.
            let (got, want) = both(dev, dtype, &[&a, &b], |t| {
                let lhs = t[0].transpose(0, 1).unwrap();
                let rhs = t[1].narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
                lhs.matmul(&rhs.transpose(1, 2).unwrap()).unwrap()
            });
            assert_close(&format!("{dtype} transposed"), &got, &want, tol(dtype));
            // Offset, column-strided lhs and a broadcast rhs.
            let (got, want) = both(dev, dtype, &[&c, &a], |t| {
                let lhs = t[0].narrow(1, 3, 7).unwrap().unsqueeze(0).unwrap();
                let rhs = t[1].broadcast_as(&[4, 7, 66]).unwrap();
                lhs.matmul(&rhs).unwrap()
            });
            assert_close(&format!("{dtype} offset"), &got, &want, tol(dtype));
        }
    }

    #[test]
    fn matmul_refuses_integer_dtypes() {
        let Some(dev) = cuda() else { return };
        let a = Tensor::ones(&[2, 2], DType::I64, dev).unwrap();
        assert!(a.matmul(&a).is_err());
    }
}
