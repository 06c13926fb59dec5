//! 2-D convolution as im2col + GEMM, with its two backward passes beside it: the input gradient
//! (GEMM then col2im) and the weight gradient (GEMM against the same column matrix).
//!
//! Per image and per group the convolution is one matrix product
//! `out_g [Cout/g × L] = W_g [Cout/g × K] · col_g [K × L]` with `K = Cin/g · kh · kw` and
//! `L = Ho · Wo`, computed a tile of output rows at a time so that the column matrix stays in
//! cache between im2col and the GEMM. Batches are split across threads (each task with its own
//! column buffer, GEMM single-threaded inside); a batch too small to fill the threads runs image
//! by image with the GEMM itself multi-threaded. A 1x1, stride-1, unpadded convolution uses the
//! image as its column matrix and skips im2col entirely.

use std::ops::Range;

use rayon::prelude::*;

use super::matmul::{gemm_strided, MatView};
use crate::cpu::{contiguous_slice, float_op, float_op2};
use crate::cuda::conv as cuda;
use crate::{ensure_shape, Element, Float, Result, Tensor};

/// Hyper-parameters of [`Tensor::conv2d`], as in PyTorch's `F.conv2d`; each pair is (H, W).
///
/// ```
/// use tensor::Conv2dParams;
/// let p = Conv2dParams { stride: (2, 2), padding: (1, 1), ..Default::default() };
/// assert_eq!((p.dilation, p.groups), ((1, 1), 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows.
    pub stride: (usize, usize),
    /// Zeros added on both sides of the input.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels are split into this many independent parts.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// The checked sizes of one convolution (the CUDA path reads them too).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) p: Conv2dParams,
}

/// Output length of a sliding window along one axis, or `None` when the window does not fit.
pub(crate) fn window_out_len(
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (len + 2 * padding)
        .checked_sub(span)
        .map(|room| room / stride + 1)
}

/// The outputs `o` in `lo..hi` (clamped to `0..out_len`) whose input `o * stride + offset` falls
/// inside `0..in_len`: the taps that do not land in the padding.
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    let s = stride as isize;
    // o * s + offset >= 0  <=>  o >= ceil(-offset / s)
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    // o * s + offset < in_len  <=>  o < ceil((in_len - offset) / s)
    let room = in_len as isize - offset;
    let hi = if room <= 0 { 0 } else { (room + s - 1) / s };
    let hi = (hi as usize).min(out_len);
    ((lo as usize).min(hi), hi)
}

impl Geometry {
    fn new(input: &[usize], weight: &[usize], p: &Conv2dParams) -> Result<Geometry> {
        ensure_shape!(
            input.len() == 4 && weight.len() == 4,
            "conv2d",
            "input {input:?} and weight {weight:?}: expected input [N, Cin, H, W] and weight [Cout, Cin/groups, kh, kw]"
        );
        let (n, cin, h, w) = (input[0], input[1], input[2], input[3]);
        let (cout, cin_g, kh, kw) = (weight[0], weight[1], weight[2], weight[3]);
        let g = p.groups;
        ensure_shape!(
            g > 0 && cin % g == 0 && cout % g == 0,
            "conv2d",
            "input {input:?} and weight {weight:?}: {cin} input and {cout} output channels are not both divisible by groups = {g}"
        );
        ensure_shape!(
            cin_g * g == cin,
            "conv2d",
            "input {input:?} and weight {weight:?}: input has {cin} channels, weight expects {cin_g} x groups {g} = {}",
            cin_g * g
        );
        ensure_shape!(
            p.stride.0 > 0 && p.stride.1 > 0 && p.dilation.0 > 0 && p.dilation.1 > 0,
            "conv2d",
            "input {input:?} and weight {weight:?}: stride {:?} and dilation {:?} must be positive",
            p.stride,
            p.dilation
        );
        ensure_shape!(
            kh > 0 && kw > 0,
            "conv2d",
            "weight {weight:?}: empty kernel"
        );
        let out = |len, k, axis: usize| {
            let pick = |pair: (usize, usize)| if axis == 0 { pair.0 } else { pair.1 };
            window_out_len(len, k, pick(p.stride), pick(p.padding), pick(p.dilation))
        };
        let (Some(ho), Some(wo)) = (out(h, kh, 0), out(w, kw, 1)) else {
            return Err(crate::Error::shape(
                "conv2d",
                format!(
                    "input {input:?} and weight {weight:?}: kernel {kh}x{kw} with dilation {:?} is larger than the padded input {}x{} (padding {:?})",
                    p.dilation,
                    h + 2 * p.padding.0,
                    w + 2 * p.padding.1,
                    p.padding
                ),
            ));
        };
        Ok(Geometry {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            ho,
            wo,
            p: *p,
        })
    }

    pub(crate) fn input_shape(&self) -> [usize; 4] {
        [self.n, self.cin, self.h, self.w]
    }

    pub(crate) fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.p.groups, self.kh, self.kw]
    }

    pub(crate) fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.ho, self.wo]
    }

    pub(crate) fn cout_g(&self) -> usize {
        self.cout / self.p.groups
    }

    /// Rows of one group's column matrix: Cin/g · kh · kw.
    pub(crate) fn k(&self) -> usize {
        self.cin / self.p.groups * self.kh * self.kw
    }

    /// Columns of the column matrix: Ho · Wo.
    pub(crate) fn l(&self) -> usize {
        self.ho * self.wo
    }

    pub(crate) fn image_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    pub(crate) fn out_image_len(&self) -> usize {
        self.cout * self.l()
    }

    /// Whether the image itself is the column matrix (1x1 kernel, stride 1, no padding).
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == (1, 1) && self.p.padding == (0, 0)
    }

    /// Split the batch across threads (else: one image at a time, GEMM multi-threaded).
    fn batch_parallel(&self) -> bool {
        self.n > 1 && self.n >= rayon::current_num_threads()
    }

    /// Output rows per tile: the column matrix is built a few output rows at a time, so that it
    /// is still in cache when the GEMM reads it. A pointwise convolution is one tile.
    fn tile_rows(&self) -> usize {
        /// Column-matrix elements per tile (512 KiB of f32, within a core's L2).
        const TILE_ELEMS: usize = 1 << 17;
        if self.pointwise() {
            return self.ho.max(1);
        }
        (TILE_ELEMS / (self.p.groups * self.k() * self.wo).max(1)).clamp(1, self.ho.max(1))
    }

    /// The output-row ranges of the tiles.
    fn tiles(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let t = self.tile_rows();
        (0..self.ho)
            .step_by(t)
            .map(move |r| r..(r + t).min(self.ho))
    }

    /// Length of one tile's column matrix, all groups (0 when pointwise needs none).
    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.p.groups * self.k() * self.tile_rows() * self.wo
        }
    }

    /// Checks that `grad_out` has this convolution's output shape.
    fn check_grad(&self, op: &'static str, grad_out: &[usize]) -> Result<()> {
        ensure_shape!(
            grad_out == self.output_shape(),
            op,
            "grad_out {grad_out:?} for input {:?} and weight {:?}: expected {:?}",
            self.input_shape(),
            self.weight_shape(),
            self.output_shape()
        );
        Ok(())
    }

    /// Calls `f(kernel row ky, kernel col kx, channel c, row index r)` for every row of the column
    /// matrix, with `r = (c · kh + ky) · kw + kx`.
    fn for_each_col_row(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for c in 0..self.cin {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    f(ky, kx, c, (c * self.kh + ky) * self.kw + kx);
                }
            }
        }
    }

    /// The input offsets of kernel tap (ky, kx): `iy = oy · sh + off_y`, `ix = ox · sw + off_x`.
    fn tap_offsets(&self, ky: usize, kx: usize) -> (isize, isize) {
        let (p, d) = (self.p.padding, self.p.dilation);
        (
            (ky * d.0) as isize - p.0 as isize,
            (kx * d.1) as isize - p.1 as isize,
        )
    }

    /// The part of `valid_range` for tap offset `off_y` inside the output rows `rows`.
    fn valid_rows(&self, off_y: isize, rows: &Range<usize>) -> (usize, usize) {
        let (lo, hi) = valid_range(self.ho, self.h, self.p.stride.0, off_y);
        let lo = lo.clamp(rows.start, rows.end);
        (lo, hi.clamp(lo, rows.end))
    }

    /// The output rows `rows` of one image `x [Cin, H, W]` unfolded into
    /// `col [Cin·kh·kw, rows·Wo]` (zeros for padding).
    fn im2col<T: Float>(&self, x: &[T], col: &mut [T], rows: &Range<usize>) {
        let (wo, sw) = (self.wo, self.p.stride.1);
        let lt = rows.len() * wo;
        self.for_each_col_row(|ky, kx, c, r| {
            let (off_y, off_x) = self.tap_offsets(ky, kx);
            let (ylo, yhi) = self.valid_rows(off_y, rows);
            let (xlo, xhi) = valid_range(wo, self.w, sw, off_x);
            let row = &mut col[r * lt..(r + 1) * lt];
            row[..(ylo - rows.start) * wo].fill(T::ZERO);
            row[(yhi - rows.start) * wo..].fill(T::ZERO);
            for oy in ylo..yhi {
                let iy = (oy * self.p.stride.0) as isize + off_y;
                let src = &x[(c * self.h + iy as usize) * self.w..][..self.w];
                let dst = &mut row[(oy - rows.start) * wo..][..wo];
                dst[..xlo].fill(T::ZERO);
                dst[xhi..].fill(T::ZERO);
                let x0 = ((xlo * sw) as isize + off_x) as usize;
                if sw == 1 {
                    dst[xlo..xhi].copy_from_slice(&src[x0..][..xhi - xlo]);
                } else {
                    for (i, d) in dst[xlo..xhi].iter_mut().enumerate() {
                        *d = src[x0 + i * sw];
                    }
                }
            }
        });
    }

    /// The adjoint of [`Geometry::im2col`]: adds each column entry of the output rows `rows`
    /// back onto its input pixel in `dx`.
    fn col2im<T: Float>(&self, col: &[T], dx: &mut [T], rows: &Range<usize>) {
        let (wo, sw) = (self.wo, self.p.stride.1);
        let lt = rows.len() * wo;
        self.for_each_col_row(|ky, kx, c, r| {
            let (off_y, off_x) = self.tap_offsets(ky, kx);
            let (ylo, yhi) = self.valid_rows(off_y, rows);
            let (xlo, xhi) = valid_range(wo, self.w, sw, off_x);
            for oy in ylo..yhi {
                let iy = (oy * self.p.stride.0) as isize + off_y;
                let dst = &mut dx[(c * self.h + iy as usize) * self.w..][..self.w];
                let src = &col[r * lt + (oy - rows.start) * wo..][xlo..xhi];
                let x0 = ((xlo * sw) as isize + off_x) as usize;
                for (i, &v) in src.iter().enumerate() {
                    dst[x0 + i * sw] += v;
                }
            }
        });
    }

    /// The column matrix of output rows `rows` and its row stride: the image itself when
    /// pointwise, else `col` filled by im2col.
    fn columns<'a, T: Float>(
        &self,
        x: &'a [T],
        col: &'a mut [T],
        rows: &Range<usize>,
    ) -> (&'a [T], usize) {
        if self.pointwise() {
            (x, self.l())
        } else {
            self.im2col(x, col, rows);
            (col, rows.len() * self.wo)
        }
    }
}

/// A strided read-only matrix for [`gemm`].
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A `rows × cols` matrix starting at `data[0]`, rows `rs` apart, columns adjacent.
    fn new(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn view(&self) -> MatView {
        MatView {
            rs: self.rs as isize,
            cs: self.cs as isize,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst [m × n, rows drs apart] (+)= a [m × k] · b [k × n]`: a bounds-checked call of the gemm
/// crate.
fn gemm<T: Float>(
    dst: &mut [T],
    drs: usize,
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    parallel: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        b.rows == k && (m - 1) * drs + n <= dst.len() && a.fits() && b.fits(),
        "conv2d: internal gemm shapes"
    );
    let dv = MatView {
        rs: drs as isize,
        cs: 1,
    };
    // SAFETY: the asserts above keep every addressed element inside its slice; `dst` is borrowed
    // mutably, so it does not overlap the inputs.
    unsafe {
        gemm_strided(
            (m, n, k),
            dst.as_mut_ptr(),
            dv,
            accumulate,
            a.data.as_ptr(),
            a.view(),
            b.data.as_ptr(),
            b.view(),
            parallel,
        )
    }
}

/// The forward pass of one image: `out [Cout, L]` from `x [Cin, H, W]`, using `col` as scratch.
fn forward_image<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    col: &mut [T],
    parallel: bool,
) {
    let (k, l, cout_g) = (g.k(), g.l(), g.cout_g());
    if let Some(b) = bias {
        for (row, &bv) in out.chunks_mut(l).zip(b) {
            row.fill(bv);
        }
    }
    for rows in g.tiles() {
        let lt = rows.len() * g.wo;
        let (cols, crs) = g.columns(x, col, &rows);
        for grp in 0..g.p.groups {
            gemm(
                &mut out[grp * cout_g * l + rows.start * g.wo..],
                l,
                bias.is_some(),
                Mat::new(&w[grp * cout_g * k..], cout_g, k, k),
                Mat::new(&cols[grp * k * crs..], k, lt, crs),
                parallel,
            );
        }
    }
}

/// The input gradient of one image: `dx [Cin, H, W]` (zero on entry) from `dy [Cout, L]`.
fn backward_input_image<T: Float>(
    g: &Geometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    col: &mut [T],
    parallel: bool,
) {
    let (k, l, cout_g) = (g.k(), g.l(), g.cout_g());
    // col_g = W_gᵀ · dy_g per tile, then col2im; a pointwise convolution's col is dx itself.
    let transposed_product = |dst: &mut [T], rows: &Range<usize>| {
        let lt = rows.len() * g.wo;
        for grp in 0..g.p.groups {
            gemm(
                &mut dst[grp * k * lt..],
                lt,
                false,
                Mat::new(&w[grp * cout_g * k..], cout_g, k, k).t(),
                Mat::new(&dy[grp * cout_g * l + rows.start * g.wo..], cout_g, lt, l),
                parallel,
            );
        }
    };
    for rows in g.tiles() {
        if g.pointwise() {
            transposed_product(dx, &rows);
        } else {
            transposed_product(col, &rows);
            g.col2im(col, dx, &rows);
        }
    }
}

/// Adds the weight gradient of one image, `dw [Cout, K] += dy · colᵀ`, to `dw`.
fn backward_weight_image<T: Float>(
    g: &Geometry,
    dy: &[T],
    x: &[T],
    dw: &mut [T],
    col: &mut [T],
    parallel: bool,
) {
    let (k, l, cout_g) = (g.k(), g.l(), g.cout_g());
    for rows in g.tiles() {
        let lt = rows.len() * g.wo;
        let (cols, crs) = g.columns(x, col, &rows);
        for grp in 0..g.p.groups {
            gemm(
                &mut dw[grp * cout_g * k..],
                k,
                true,
                Mat::new(&dy[grp * cout_g * l + rows.start * g.wo..], cout_g, lt, l),
                Mat::new(&cols[grp * k * crs..], k, lt, crs).t(),
                parallel,
            );
        }
    }
}

/// Fills one `out_len` chunk of `out` per image with `f(image, chunk, col, parallel)`: across
/// threads when the batch is large enough, else image by image with a multi-threaded GEMM.
fn per_image<T: Float>(
    g: &Geometry,
    out: &mut [T],
    out_len: usize,
    f: impl Fn(usize, &mut [T], &mut [T], bool) + Sync,
) {
    if out_len == 0 {
        return;
    }
    let scratch = || vec![T::ZERO; g.col_len()];
    if g.batch_parallel() {
        out.par_chunks_mut(out_len)
            .enumerate()
            .for_each_init(scratch, |col, (i, chunk)| f(i, chunk, col, false));
    } else {
        let mut col = scratch();
        for (i, chunk) in out.chunks_mut(out_len).enumerate() {
            f(i, chunk, &mut col, true);
        }
    }
}

fn conv_forward<T: Float>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut out = vec![T::ZERO; g.n * g.out_image_len()];
    let xl = g.image_len();
    per_image(g, &mut out, g.out_image_len(), |i, o, col, par| {
        forward_image(g, &x[i * xl..(i + 1) * xl], w, bias, o, col, par)
    });
    out
}

fn conv_backward_input<T: Float>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.n * g.image_len()];
    let yl = g.out_image_len();
    per_image(g, &mut dx, g.image_len(), |i, d, col, par| {
        backward_input_image(g, &dy[i * yl..(i + 1) * yl], w, d, col, par)
    });
    dx
}

fn conv_backward_weight<T: Float>(g: &Geometry, dy: &[T], x: &[T]) -> Vec<T> {
    let wlen = g.cout * g.k();
    let (xl, yl) = (g.image_len(), g.out_image_len());
    let image = |i: usize, dw: &mut [T], col: &mut [T], par: bool| {
        backward_weight_image(
            g,
            &dy[i * yl..(i + 1) * yl],
            &x[i * xl..(i + 1) * xl],
            dw,
            col,
            par,
        )
    };
    if !g.batch_parallel() {
        let (mut dw, mut col) = (vec![T::ZERO; wlen], vec![T::ZERO; g.col_len()]);
        (0..g.n).for_each(|i| image(i, &mut dw, &mut col, true));
        return dw;
    }
    // Each thread sums its images into its own buffer; the buffers are added at the end.
    (0..g.n)
        .into_par_iter()
        .fold(
            || (vec![T::ZERO; wlen], vec![T::ZERO; g.col_len()]),
            |(mut dw, mut col), i| {
                image(i, &mut dw, &mut col, false);
                (dw, col)
            },
        )
        .map(|(dw, _)| dw)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, &y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![T::ZERO; wlen])
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `F.conv2d` without bias): input
    /// `[N, Cin, H, W]`, weight `[Cout, Cin/groups, kh, kw]`, output `[N, Cout, Ho, Wo]` with
    /// `Ho = (H + 2·pad - dil·(kh-1) - 1) / stride + 1` (likewise Wo).
    ///
    /// ```
    /// use tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let w = Tensor::from_vec(vec![1f32; 4], &[1, 1, 2, 2]).unwrap();
    /// let p = Conv2dParams { stride: (2, 2), ..Default::default() };
    /// let y = x.conv2d(&w, &p).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![10., 18., 42., 50.]);
    /// ```
    pub fn conv2d(&self, weight: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
        self.conv2d_bias(weight, None, p)
    }

    /// [`Tensor::conv2d`] plus a per-channel `bias` of shape `[Cout]`, added inside the kernel.
    pub fn conv2d_bias(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.same_kind("conv2d", weight)?;
        let g = Geometry::new(self.shape(), weight.shape(), p)?;
        if let Some(b) = bias {
            self.same_kind("conv2d", b)?;
            ensure_shape!(
                b.shape() == [g.cout],
                "conv2d",
                "bias {:?} for weight {:?}: expected [{}]",
                b.shape(),
                weight.shape(),
                g.cout
            );
        }
        if self.is_cuda() {
            return cuda::conv2d(&g, self, weight, bias);
        }
        let out = float_op2!(
            "conv2d",
            self.cpu_storage(),
            weight.cpu_storage(),
            |x, w: T| {
                let x = contiguous_slice(x, self.layout());
                let w = contiguous_slice(w, weight.layout());
                let b = bias.map(|b| {
                    let data = T::slice(b.cpu_storage()).expect("dtype checked");
                    contiguous_slice(data, b.layout())
                });
                T::into_storage(conv_forward(&g, &x, &w, b.as_deref()))
            }
        );
        self.with_storage(out, &g.output_shape())
    }

    /// The gradient of [`Tensor::conv2d`] with respect to its input: `self` is the gradient of
    /// the output, `input_shape` the shape of the input.
    pub fn conv2d_backward_input(
        &self,
        weight: &Tensor,
        input_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_input";
        self.same_kind(OP, weight)?;
        let g = Geometry::new(input_shape, weight.shape(), p)?;
        g.check_grad(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::conv2d_backward_input(&g, self, weight);
        }
        let out = float_op2!(OP, self.cpu_storage(), weight.cpu_storage(), |dy, w: T| {
            let dy = contiguous_slice(dy, self.layout());
            let w = contiguous_slice(w, weight.layout());
            T::into_storage(conv_backward_input(&g, &dy, &w))
        });
        self.with_storage(out, &g.input_shape())
    }

    /// The gradient of [`Tensor::conv2d`] with respect to its weight: `self` is the gradient of
    /// the output, `weight_shape` the shape of the weight.
    pub fn conv2d_backward_weight(
        &self,
        input: &Tensor,
        weight_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_weight";
        self.same_kind(OP, input)?;
        let g = Geometry::new(input.shape(), weight_shape, p)?;
        g.check_grad(OP, self.shape())?;
        if self.is_cuda() {
            return cuda::conv2d_backward_weight(&g, self, input);
        }
        let out = float_op!(OP, self.cpu_storage(), |dy: T| {
            let x = T::slice(input.cpu_storage()).expect("dtype checked");
            let dy = contiguous_slice(dy, self.layout());
            let x = contiguous_slice(x, input.layout());
            T::into_storage(conv_backward_weight(&g, &dy, &x))
        });
        self.with_storage(out, &g.weight_shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for out_len in 0..6 {
            for in_len in 1..7 {
                for stride in 1..4 {
                    for offset in -5isize..5 {
                        let want: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = (o * stride) as isize + offset;
                                i >= 0 && i < in_len as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(out_len, in_len, stride, offset);
                        assert_eq!(
                            (lo..hi).collect::<Vec<_>>(),
                            want,
                            "{out_len} {in_len} {stride} {offset}"
                        );
                    }
                }
            }
        }
    }
}
