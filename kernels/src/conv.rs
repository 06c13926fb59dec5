//! Launch wrappers for `cu/conv.cu`: im2col, col2im and the sum of weight-gradient partials. The
//! products themselves are [`crate::matmul::gemm`] calls.

use cudarc::driver::DeviceRepr;

use crate::launch::launch;
use crate::{CUdeviceptr, Elem, Gpu, Result};

/// The geometry of a convolution over a run of `images`; mirrors `struct ConvShape` in
/// `cu/conv.cu` field by field. Images are `[images, cin, h, w]`, the column matrix
/// `[images, cin·kh·kw, ho·wo]`, both contiguous.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConvShape {
    pub images: i64,
    pub cin: i64,
    pub h: i64,
    pub w: i64,
    pub kh: i64,
    pub kw: i64,
    pub ho: i64,
    pub wo: i64,
    pub sh: i64,
    pub sw: i64,
    pub ph: i64,
    pub pw: i64,
    pub dh: i64,
    pub dw: i64,
}

// SAFETY: `ConvShape` is `repr(C)` plain data (i64 fields only) with the layout of the C struct.
unsafe impl DeviceRepr for ConvShape {}

impl ConvShape {
    /// Elements of the column matrix.
    pub fn col_len(&self) -> i64 {
        self.images * self.cin * self.kh * self.kw * self.ho * self.wo
    }

    /// Elements of the images.
    pub fn image_len(&self) -> i64 {
        self.images * self.cin * self.h * self.w
    }

    /// 1 when some count or extent needs 64-bit index arithmetic in the kernels, else 0. The
    /// bound is 2^30, not 2^31, so that an index plus the grid stride still fits an int.
    fn wide(&self) -> i32 {
        let extents = [
            self.col_len(),
            self.image_len(),
            self.h + self.ph,
            self.w + self.pw,
            self.kh * self.dh,
            self.kw * self.dw,
            self.ho * self.sh,
            self.wo * self.sw,
        ];
        extents.iter().any(|&v| v >= 1 << 30) as i32
    }
}

/// Unfolds the images `x` (contiguous from element `x_off`) into the contiguous column matrix
/// `col` of [`ConvShape::col_len`] elements, zeros where a tap falls in the padding.
pub fn im2col(
    gpu: &Gpu,
    elem: Elem,
    g: ConvShape,
    x: CUdeviceptr,
    x_off: usize,
    col: CUdeviceptr,
) -> Result<()> {
    elem.float_only("im2col")?;
    let n = g.col_len();
    if n <= 0 {
        return Ok(());
    }
    let (wide, x_off) = (g.wide(), x_off as i64);
    launch!(gpu, "conv", format!("im2col_{}", elem.suffix()), gpu.grid_for(n as usize);
        g, wide, x, x_off, col)
}

/// The adjoint of [`im2col`]: writes every element of the images `dx` (contiguous from element
/// `dx_off`) with the sum of the column entries im2col would have copied from it.
pub fn col2im(
    gpu: &Gpu,
    elem: Elem,
    g: ConvShape,
    col: CUdeviceptr,
    dx: CUdeviceptr,
    dx_off: usize,
) -> Result<()> {
    elem.float_only("col2im")?;
    let n = g.image_len();
    if n <= 0 {
        return Ok(());
    }
    let (wide, dx_off) = (g.wide(), dx_off as i64);
    launch!(gpu, "conv", format!("col2im_{}", elem.suffix()), gpu.grid_for(n as usize);
        g, wide, col, dx, dx_off)
}

/// `out[i] (+)= Σ_{p < parts} partials[p·len + i]` for `i < len` (overwrites `out` unless
/// `accumulate`).
pub fn sum_parts(
    gpu: &Gpu,
    elem: Elem,
    len: usize,
    parts: usize,
    partials: CUdeviceptr,
    accumulate: bool,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("sum_parts")?;
    if len == 0 {
        return Ok(());
    }
    let (len64, parts64, acc) = (len as i64, parts as i64, accumulate as i32);
    launch!(gpu, "conv", format!("sum_parts_{}", elem.suffix()), gpu.grid_for(len);
        len64, parts64, partials, acc, out)
}
