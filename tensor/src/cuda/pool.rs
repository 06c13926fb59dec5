//! CUDA kernels of the ops of `ops/pool.rs`: the NCHW resampling ops, one thread per output
//! element, backward passes included (each input element gathers from the windows that cover it,
//! so no atomics). `ops` checks shapes and sizes before dispatching here.

use kernels::pool::{self as k, Pool2d};

use super::{check_float, elem, kernel_error};
use crate::ops::pool::Pool;
use crate::{Error, Result, Tensor};

/// The pooling geometry as the kernels take it.
fn pool2d(p: &Pool) -> Pool2d {
    let i = |v: usize| v as i64;
    Pool2d {
        h: i(p.h),
        w: i(p.w),
        ho: i(p.ho),
        wo: i(p.wo),
        kh: i(p.kernel.0),
        kw: i(p.kernel.1),
        sh: i(p.stride.0),
        sw: i(p.stride.1),
        ph: i(p.padding.0),
        pw: i(p.padding.1),
    }
}

/// The four dims of an NCHW shape (checked by the caller; an error rather than a panic).
fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| {
        Error::shape(
            op,
            format!("expected an [N, C, H, W] tensor, got {shape:?}"),
        )
    })
}

/// [`Tensor::upsample_nearest2d`] of `x` (`[n, c, h, w]`).
pub(crate) fn upsample_nearest2d(x: &Tensor, sh: usize, sw: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d";
    check_float(OP, x)?;
    let [n, c, h, w] = nchw(OP, x.shape())?;
    let out = x.cuda_output(&[n, c, h * sh, w * sw], x.dtype())?;
    k::upsample_nearest2d(
        x.gpu(),
        elem(x.dtype()),
        n * c,
        (h, w),
        (sh, sw),
        x.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, x.device()))?;
    Ok(out)
}

/// [`Tensor::upsample_nearest2d_backward`] of the gradient `g` (`[n, c, h·sh, w·sw]`).
pub(crate) fn upsample_nearest2d_backward(g: &Tensor, sh: usize, sw: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d_backward";
    check_float(OP, g)?;
    let [n, c, ho, wo] = nchw(OP, g.shape())?;
    let (h, w) = (ho / sh, wo / sw);
    let out = g.cuda_output(&[n, c, h, w], g.dtype())?;
    k::upsample_nearest2d_backward(
        g.gpu(),
        elem(g.dtype()),
        n * c,
        (h, w),
        (sh, sw),
        g.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, g.device()))?;
    Ok(out)
}

/// Average pooling of `x` (`[n, c, h, w]`) over the windows of `pool`: the padding counted in
/// each average (`include_pad`) or left out.
pub(crate) fn avg_pool2d(
    x: &Tensor,
    op: &'static str,
    pool: &Pool,
    include_pad: bool,
) -> Result<Tensor> {
    let p = pool2d(pool);
    check_float(op, x)?;
    let [n, c, _, _] = nchw(op, x.shape())?;
    let out = x.cuda_output(&[n, c, p.ho as usize, p.wo as usize], x.dtype())?;
    k::avg_pool2d(
        x.gpu(),
        elem(x.dtype()),
        n * c,
        p,
        include_pad,
        x.cuda_view(op)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(op, x.device()))?;
    Ok(out)
}

/// [`Tensor::avg_pool2d_backward`] of the gradient `g` (`[n, c, ho, wo]`, checked) to the
/// input's shape `[n, c, h, w]`.
pub(crate) fn avg_pool2d_backward(g: &Tensor, pool: &Pool) -> Result<Tensor> {
    const OP: &str = "avg_pool2d_backward";
    let p = pool2d(pool);
    check_float(OP, g)?;
    let [n, c, _, _] = nchw(OP, g.shape())?;
    let out = g.cuda_output(&[n, c, p.h as usize, p.w as usize], g.dtype())?;
    k::avg_pool2d_backward(
        g.gpu(),
        elem(g.dtype()),
        n * c,
        p,
        g.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, g.device()))?;
    Ok(out)
}

/// [`Tensor::max_pool2d`] of `x` (`[n, c, h, w]`) over the windows of `pool`.
pub(crate) fn max_pool2d(x: &Tensor, pool: &Pool) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    let p = pool2d(pool);
    check_float(OP, x)?;
    let [n, c, _, _] = nchw(OP, x.shape())?;
    let out = x.cuda_output(&[n, c, p.ho as usize, p.wo as usize], x.dtype())?;
    k::max_pool2d(
        x.gpu(),
        elem(x.dtype()),
        n * c,
        p,
        x.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, x.device()))?;
    Ok(out)
}

/// [`Tensor::resize_bilinear2d`] of `x` (`[n, c, h, w]`, all sizes positive) to `(oh, ow)`.
pub(crate) fn resize_bilinear2d(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    const OP: &str = "resize_bilinear2d";
    check_float(OP, x)?;
    let [n, c, h, w] = nchw(OP, x.shape())?;
    let out = x.cuda_output(&[n, c, oh, ow], x.dtype())?;
    k::resize_bilinear2d(
        x.gpu(),
        elem(x.dtype()),
        n * c,
        (h, w),
        (oh, ow),
        x.cuda_view(OP)?,
        out.cuda_ptr(),
    )
    .map_err(kernel_error(OP, x.device()))?;
    Ok(out)
}

/// CUDA against CPU; each test returns early (passing) on a machine without a GPU.
#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_close, cuda as gpu};
    use crate::{DType, Device, Generator, Tensor};

    /// Runs `op` on the transpose of the last two dims of `base` (a strided view) on the GPU in
    /// f64, f32 and bf16, comparing each with the CPU result in f64 from the same (rounded)
    /// values, at the dtype's tolerance.
    fn check(base: &Tensor, op: impl Fn(&Tensor) -> Tensor) {
        let Some(dev) = gpu() else { return };
        let view = |t: &Tensor| t.transpose(2, 3).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let x = base.to_dtype(dtype).unwrap();
            let want = op(&view(&x.to_dtype(DType::F64).unwrap()));
            let got = op(&view(&x.to_device(dev).unwrap()));
            assert_eq!(got.dtype(), dtype);
            assert_close("pool", &got, &want, tol);
        }
    }

    /// A [2, 3, 6, 7] f64 image batch (the ops see its [2, 3, 7, 6] transpose).
    fn images(gen: &mut Generator) -> Tensor {
        Tensor::randn(&[2, 3, 6, 7], 0.0, 1.0, DType::F64, Device::Cpu, gen).unwrap()
    }

    #[test]
    fn avg_and_max_pools_match_the_cpu() {
        let x = images(&mut Generator::new(4));
        for (k, s, p) in [
            ((3, 3), (2, 2), (1, 1)),
            ((2, 3), (1, 2), (0, 1)),
            ((1, 1), (1, 1), (0, 0)),
        ] {
            check(&x, |t| t.avg_pool2d(k, s, p).unwrap());
            check(&x, |t| t.avg_pool2d_exclude_pad(k, s, p).unwrap());
            check(&x, |t| t.max_pool2d(k, s, p).unwrap());
        }
        // Padding over half the kernel: windows in the padding only average to 0.
        check(&x, |t| t.avg_pool2d((2, 2), (2, 2), (2, 1)).unwrap());
    }

    #[test]
    fn avg_pool2d_backward_matches_the_cpu() {
        let mut gen = Generator::new(5);
        for (k, s, p) in [
            ((3, 3), (2, 2), (1, 1)),
            ((2, 3), (1, 2), (0, 1)),
            ((2, 2), (3, 3), (1, 0)),
        ] {
            let shape = [2, 3, 7, 6];
            let y = Tensor::zeros(&shape, DType::F64, Device::Cpu)
                .unwrap()
                .avg_pool2d(k, s, p)
                .unwrap();
            let mut gshape = y.shape().to_vec();
            gshape.swap(2, 3);
            let g = Tensor::randn(&gshape, 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
            check(&g, |t| t.avg_pool2d_backward(&shape, k, s, p).unwrap());
        }
    }

    #[test]
    fn upsampling_and_resizing_match_the_cpu() {
        let x = images(&mut Generator::new(6));
        check(&x, |t| t.upsample_nearest2d(2, 3).unwrap());
        check(&x, |t| t.upsample_nearest2d_backward(7, 3).unwrap());
        check(&x, |t| t.upsample_nearest2d_backward(1, 2).unwrap());
        for (oh, ow) in [(7, 6), (14, 9), (3, 4), (1, 1), (29, 2)] {
            check(&x, |t| t.resize_bilinear2d(oh, ow).unwrap());
        }
    }

    #[test]
    fn max_pool2d_propagates_nan_on_cuda() {
        let Some(dev) = gpu() else { return };
        let x = Tensor::from_vec(vec![1f32, f32::NAN, 3., 4.], &[1, 1, 2, 2]).unwrap();
        let y = x
            .to_device(dev)
            .unwrap()
            .max_pool2d((1, 2), (1, 1), (0, 0))
            .unwrap();
        let y = y.to_vec::<f32>().unwrap();
        assert!(y[0].is_nan() && y[1] == 4.0, "{y:?}");
    }
}
