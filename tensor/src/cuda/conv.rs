//! CUDA paths of the conv2d ops of `ops/conv.rs`, as im2col + batched GEMM:
//!
//! - forward: `out[b, g] = W_g · col[b, g]` for every image b and group g in one GEMM launch
//!   (the weight broadcast over images through a 0 batch stride); the bias is copied into the
//!   output first and the GEMM adds onto it;
//! - input gradient: `col[b, g] = W_gᵀ · dy[b, g]`, then col2im gathers each input pixel's taps;
//! - weight gradient: `dW_g = Σ_b dy[b, g] · col[b, g]ᵀ`, the sum over images folded into the
//!   GEMM's reduction; when that leaves too few blocks to fill the GPU, the images are split
//!   into runs with one partial dW each, added up after.
//!
//! The column matrix `[images, Cin·kh·kw, Ho·Wo]` is built for a chunk of images at a time so
//! that the scratch stays bounded; a 1x1, stride-1, unpadded convolution reads the image itself.

use kernels::conv::{col2im, im2col, sum_parts, ConvShape};
use kernels::matmul::{gemm, GemmShape, MatOperand};
use kernels::{elementwise, CUdeviceptr, Dims, View};

use super::matmul::batch_dims;
use super::{check_float, elem, kernel_error};
use crate::ops::conv::Geometry;
use crate::{Result, Tensor};

/// Column-matrix elements per chunk of images (128 MiB of f32); tiny in unit tests, so that
/// they run the multi-chunk path.
const COL_BUDGET: usize = if cfg!(test) { 1 << 10 } else { 1 << 25 };
/// Thread blocks the weight-gradient GEMM aims for (a few per SM): below it, images are split
/// into runs that each write a partial dW. Small in unit tests, so that they run uneven splits.
const TARGET_BLOCKS: usize = if cfg!(test) { 3 } else { 256 };
/// The GEMM's output tile (rows and columns), to count its blocks.
const GEMM_TILE: usize = 64;

/// What only the CUDA path asks of a convolution's checked sizes.
impl Geometry {
    fn groups(&self) -> usize {
        self.p.groups
    }

    /// Rows of one image's column matrix, all groups: Cin · kh · kw.
    fn ck(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Images per chunk: all of them when pointwise, else as many as the column budget allows.
    fn chunk(&self) -> usize {
        let n = self.n.max(1);
        if self.pointwise() {
            n
        } else {
            (COL_BUDGET / (self.ck() * self.l()).max(1)).clamp(1, n)
        }
    }

    /// (first image, image count) of each chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let c = self.chunk();
        (0..self.n)
            .step_by(c)
            .map(move |n0| (n0, c.min(self.n - n0)))
    }

    /// The kernels' description of `images` images.
    fn shape(&self, images: usize) -> ConvShape {
        let i = |v: usize| v as i64;
        let p = &self.p;
        ConvShape {
            images: i(images),
            cin: i(self.cin),
            h: i(self.h),
            w: i(self.w),
            kh: i(self.kh),
            kw: i(self.kw),
            ho: i(self.ho),
            wo: i(self.wo),
            sh: i(p.stride.0),
            sw: i(p.stride.1),
            ph: i(p.padding.0),
            pw: i(p.padding.1),
            dh: i(p.dilation.0),
            dw: i(p.dilation.1),
        }
    }

    /// The column-matrix scratch for one chunk (none when pointwise).
    fn scratch(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if self.pointwise() {
            return Ok(None);
        }
        x.cuda_output(&[self.chunk(), self.ck(), self.l()], x.dtype())
            .map(Some)
    }

    /// The column matrix of images `n0..n0 + nb` of the contiguous `x`, as (buffer address,
    /// element offset of image n0): `x` itself when pointwise, else `col` filled by im2col.
    fn device_columns(
        &self,
        x: &Tensor,
        col: Option<&Tensor>,
        n0: usize,
        nb: usize,
        op: &'static str,
    ) -> Result<(CUdeviceptr, usize)> {
        let image_start = x.layout().offset() + n0 * self.image_len();
        match col {
            None => Ok((x.cuda_ptr(), image_start)),
            Some(col) => {
                im2col(
                    x.gpu(),
                    elem(x.dtype()),
                    self.shape(nb),
                    x.cuda_ptr(),
                    image_start,
                    col.cuda_ptr(),
                )
                .map_err(kernel_error(op, x.device()))?;
                Ok((col.cuda_ptr(), 0))
            }
        }
    }
}

/// A GEMM operand batched over `[outer, groups]` (row-major, batch index `o · groups + g`):
/// matrix (o, g) starts at `offset + o · strides[0] + g · strides[1]`.
fn operand(
    op: &'static str,
    ptr: CUdeviceptr,
    batch: [usize; 2],
    strides: [usize; 2],
    offset: usize,
    (rs, cs): (usize, usize),
    red: usize,
) -> Result<MatOperand> {
    Ok(MatOperand {
        ptr,
        batch: batch_dims(op, &batch, &strides, offset)?,
        rs: rs as i64,
        cs: cs as i64,
        red: red as i64,
    })
}

/// Forward convolution (with the optional per-channel bias); `out_hw` is (Ho, Wo).
pub(crate) fn conv2d(
    g: &Geometry,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    check_float(OP, x)?;
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    let out = x.cuda_output(&g.output_shape(), x.dtype())?;
    if out.elem_count() == 0 {
        return Ok(out);
    }
    let (gpu, e, err) = (x.gpu(), elem(x.dtype()), kernel_error(OP, x.device()));
    if let Some(b) = bias {
        // The GEMM adds the product onto the bias, broadcast over images and pixels here.
        let src = b
            .reshape(&[1, g.cout, 1, 1])?
            .cuda_view_as(OP, out.shape())?;
        let dst = View {
            ptr: out.cuda_ptr(),
            dims: Dims::contiguous(out.elem_count(), 0),
        };
        elementwise::copy(gpu, e, out.elem_count(), src, dst).map_err(&err)?;
    }
    let (grp, cout_g, k, l, ck) = (g.groups(), g.cout_g(), g.k(), g.l(), g.ck());
    let col = g.scratch(&x)?;
    for (n0, nb) in g.chunks() {
        let (src, src_off) = g.device_columns(&x, col.as_ref(), n0, nb, OP)?;
        let batch = [nb, grp];
        // W_g [Cout/g × K], the same for every image.
        let a = operand(
            OP,
            w.cuda_ptr(),
            batch,
            [0, cout_g * k],
            w.layout().offset(),
            (k, 1),
            0,
        )?;
        // col[b, g] [K × L].
        let b = operand(OP, src, batch, [ck * l, k * l], src_off, (l, 1), 0)?;
        // out[n0 + b, g·Cout/g..] [Cout/g × L].
        let c = operand(
            OP,
            out.cuda_ptr(),
            batch,
            [g.out_image_len(), cout_g * l],
            n0 * g.out_image_len(),
            (l, 1),
            0,
        )?;
        let shape = GemmShape {
            m: cout_g,
            n: l,
            k,
            batches: nb * grp,
            red: 1,
        };
        gemm(gpu, e, shape, a, b, c, bias.is_some()).map_err(&err)?;
    }
    Ok(out)
}

/// The input gradient: `dy` is the output's gradient, `g` the convolution's checked sizes.
pub(crate) fn conv2d_backward_input(g: &Geometry, dy: &Tensor, weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_input";
    check_float(OP, dy)?;
    let (dy, w) = (dy.contiguous()?, weight.contiguous()?);
    let dx = dy.cuda_output(&g.input_shape(), dy.dtype())?;
    if dx.elem_count() == 0 {
        return Ok(dx);
    }
    let (gpu, e, err) = (dy.gpu(), elem(dy.dtype()), kernel_error(OP, dy.device()));
    let (grp, cout_g, k, l, ck) = (g.groups(), g.cout_g(), g.k(), g.l(), g.ck());
    let col = g.scratch(&dy)?;
    for (n0, nb) in g.chunks() {
        let batch = [nb, grp];
        // W_gᵀ [K × Cout/g]: the weight read column-major.
        let a = operand(
            OP,
            w.cuda_ptr(),
            batch,
            [0, cout_g * k],
            w.layout().offset(),
            (1, k),
            0,
        )?;
        // dy[n0 + b, g·Cout/g..] [Cout/g × L].
        let b = operand(
            OP,
            dy.cuda_ptr(),
            batch,
            [g.out_image_len(), cout_g * l],
            dy.layout().offset() + n0 * g.out_image_len(),
            (l, 1),
            0,
        )?;
        // The column matrix [K × L] per (image, group); when pointwise that is dx itself.
        let (dst, dst_off) = match &col {
            Some(col) => (col.cuda_ptr(), 0),
            None => (dx.cuda_ptr(), n0 * ck * l),
        };
        let c = operand(OP, dst, batch, [ck * l, k * l], dst_off, (l, 1), 0)?;
        let shape = GemmShape {
            m: k,
            n: l,
            k: cout_g,
            batches: nb * grp,
            red: 1,
        };
        gemm(gpu, e, shape, a, b, c, false).map_err(&err)?;
        if let Some(col) = &col {
            let dx_off = n0 * g.image_len();
            col2im(gpu, e, g.shape(nb), col.cuda_ptr(), dx.cuda_ptr(), dx_off).map_err(&err)?;
        }
    }
    Ok(dx)
}

/// The weight gradient: `dy` is the output's gradient, `g` the convolution's checked sizes.
pub(crate) fn conv2d_backward_weight(g: &Geometry, dy: &Tensor, input: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    check_float(OP, dy)?;
    let (dy, x) = (dy.contiguous()?, input.contiguous()?);
    let dw = dy.cuda_output(&g.weight_shape(), dy.dtype())?;
    let wlen = dw.elem_count();
    if wlen == 0 {
        return Ok(dw);
    }
    let (gpu, e, err) = (dy.gpu(), elem(dy.dtype()), kernel_error(OP, dy.device()));
    if g.n == 0 {
        elementwise::fill(gpu, e, wlen, 0.0, dw.cuda_ptr()).map_err(&err)?;
        return Ok(dw);
    }
    let (grp, cout_g, k, l, ck) = (g.groups(), g.cout_g(), g.k(), g.l(), g.ck());
    let tiles = grp * cout_g.div_ceil(GEMM_TILE) * k.div_ceil(GEMM_TILE);
    // Partial dWs wanted to fill the GPU; at most TARGET_BLOCKS · 64² elements in all.
    let want = TARGET_BLOCKS.div_ceil(tiles).max(1);
    let col = g.scratch(&x)?;
    let mut written = false;
    for (n0, nb) in g.chunks() {
        let (src, src_off) = g.device_columns(&x, col.as_ref(), n0, nb, OP)?;
        // Runs of `red` images, `splits` of them per launch: one launch for the whole chunk
        // except a shorter remainder run.
        let red_full = nb.div_ceil(want.min(nb));
        let mut done = 0;
        while done < nb {
            let red = red_full.min(nb - done);
            let splits = ((nb - done) / red).min(want);
            let batch = [splits, grp];
            let shape = GemmShape {
                m: cout_g,
                n: k,
                k: l,
                batches: splits * grp,
                red,
            };
            // dy[n0 + done + s·red + r, g·Cout/g..] [Cout/g × L].
            let a = operand(
                OP,
                dy.cuda_ptr(),
                batch,
                [red * g.out_image_len(), cout_g * l],
                dy.layout().offset() + (n0 + done) * g.out_image_len(),
                (l, 1),
                g.out_image_len(),
            )?;
            // col[done + s·red + r, g]ᵀ [L × K]: the column matrix read column-major.
            let b = operand(
                OP,
                src,
                batch,
                [red * ck * l, k * l],
                src_off + done * ck * l,
                (1, l),
                ck * l,
            )?;
            if splits == 1 {
                let c = operand(OP, dw.cuda_ptr(), batch, [0, cout_g * k], 0, (k, 1), 0)?;
                gemm(gpu, e, shape, a, b, c, written).map_err(&err)?;
            } else {
                let parts = dy.cuda_output(&[splits, wlen], dy.dtype())?;
                let c = operand(
                    OP,
                    parts.cuda_ptr(),
                    batch,
                    [wlen, cout_g * k],
                    0,
                    (k, 1),
                    0,
                )?;
                gemm(gpu, e, shape, a, b, c, false).map_err(&err)?;
                sum_parts(
                    gpu,
                    e,
                    wlen,
                    splits,
                    parts.cuda_ptr(),
                    written,
                    dw.cuda_ptr(),
                )
                .map_err(&err)?;
            }
            written = true;
            done += splits * red;
        }
    }
    Ok(dw)
}

/// Parity with the CPU; each test passes without running anything where no GPU is present.
#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_close, both, cuda, randn, tol};
    use crate::{Conv2dParams, DType};

    fn params(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dParams {
        Conv2dParams {
            stride: (stride, 1),
            padding: (padding, padding / 2),
            dilation: (dilation, 1),
            groups,
        }
    }

    #[test]
    fn conv2d_and_its_gradients_match_the_cpu() {
        // (input, weight, params): odd sizes, groups, strides, padding, dilation, pointwise,
        // depthwise, and batches big enough to run in several chunks under the test budget.
        let cases: Vec<([usize; 4], [usize; 4], Conv2dParams)> = vec![
            ([2, 3, 7, 6], [4, 3, 3, 3], params(1, 1, 1, 1)),
            ([5, 4, 9, 7], [6, 2, 3, 2], params(2, 2, 2, 2)),
            ([3, 6, 5, 4], [4, 3, 1, 1], params(1, 0, 1, 2)),
            ([4, 4, 6, 6], [4, 1, 3, 3], params(1, 1, 1, 4)),
            ([1, 2, 3, 3], [70, 2, 3, 3], params(3, 2, 1, 1)),
            ([9, 3, 8, 8], [5, 3, 2, 3], params(2, 0, 1, 1)),
            ([2, 1, 1, 1], [1, 1, 1, 1], params(1, 0, 1, 1)),
            ([7, 1, 3, 3], [2, 1, 2, 2], params(1, 0, 1, 1)),
        ];
        let Some(dev) = cuda() else { return };
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            for (i, (xs, ws, p)) in cases.iter().enumerate() {
                let seed = 10 * i as u64;
                let (x, w) = (randn(xs, seed), randn(ws, seed + 1));
                let b = randn(&[ws[0]], seed + 2);
                let what = format!("{dtype} case {i}");
                let (got, want) = both(dev, dtype, &[&x, &w], |t| t[0].conv2d(&t[1], p).unwrap());
                assert_close(&format!("{what} forward"), &got, &want, tol(dtype));
                let (got, want) = both(dev, dtype, &[&x, &w, &b], |t| {
                    t[0].conv2d_bias(&t[1], Some(&t[2]), p).unwrap()
                });
                assert_close(&format!("{what} bias"), &got, &want, tol(dtype));
                let dy = randn(want.shape(), seed + 3);
                let (got, want) = both(dev, dtype, &[&dy, &w], |t| {
                    t[0].conv2d_backward_input(&t[1], xs, p).unwrap()
                });
                assert_close(&format!("{what} input grad"), &got, &want, tol(dtype));
                let (got, want) = both(dev, dtype, &[&dy, &x], |t| {
                    t[0].conv2d_backward_weight(&t[1], ws, p).unwrap()
                });
                assert_close(&format!("{what} weight grad"), &got, &want, tol(dtype));
            }
        }
    }

    #[test]
    fn conv2d_reads_strided_inputs() {
        let Some(dev) = cuda() else { return };
        // The input as a permuted view, the weight as an offset view.
        let x = randn(&[2, 5, 3, 6], 1);
        let w = randn(&[2, 4, 3, 2, 2], 2);
        let p = params(1, 1, 1, 1);
        let (got, want) = both(dev, DType::F32, &[&x, &w], |t| {
            let x = t[0].permute(&[0, 2, 1, 3]).unwrap();
            let w = t[1].narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
            x.conv2d(&w, &p).unwrap()
        });
        assert_close("strided", &got, &want, tol(DType::F32));
    }
}
