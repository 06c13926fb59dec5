//! 2-D convolution as im2col + GEMM (any float type, any geometry), with its two backward passes
//! beside it: the input gradient
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

use super::parallel_sum;
use crate::cpu::matmul::{gemm_strided, MatView};
use crate::ops::conv::Geometry;
use crate::Float;

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

/// What only the CPU path asks of a convolution's checked sizes.
impl Geometry {
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

pub(super) fn forward<T: Float>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut out = vec![T::ZERO; g.n * g.out_image_len()];
    let xl = g.image_len();
    per_image(g, &mut out, g.out_image_len(), |i, o, col, par| {
        forward_image(g, &x[i * xl..(i + 1) * xl], w, bias, o, col, par)
    });
    out
}

pub(super) fn backward_input<T: Float>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.n * g.image_len()];
    let yl = g.out_image_len();
    per_image(g, &mut dx, g.image_len(), |i, d, col, par| {
        backward_input_image(g, &dy[i * yl..(i + 1) * yl], w, d, col, par)
    });
    dx
}

pub(super) fn backward_weight<T: Float>(g: &Geometry, dy: &[T], x: &[T]) -> Vec<T> {
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
    parallel_sum(
        g.n,
        wlen,
        || vec![T::ZERO; g.col_len()],
        |i, dw, col| image(i, dw, col, false),
    )
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
