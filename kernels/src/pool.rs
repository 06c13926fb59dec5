//! Launch wrappers for `cu/pool.cu`: average and max pooling, nearest-neighbour upsampling and
//! bilinear resizing of NCHW images, and the backward passes of average pooling and upsampling.
//! Inputs are strided views of `[N, C, H, W]` tensors; outputs are contiguous. Float element
//! types only.

use cudarc::driver::DeviceRepr;

use crate::launch::{launch, View};
use crate::{CUdeviceptr, Elem, Gpu, Result};

/// The geometry of one 2-D pooling, as `struct Pool2d` of `cu/pool.cu` (field by field): input
/// `h × w`, output `ho × wo`, and the kernel, stride and padding along y and x.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Input height.
    pub h: i64,
    /// Input width.
    pub w: i64,
    /// Output height.
    pub ho: i64,
    /// Output width.
    pub wo: i64,
    /// Kernel height.
    pub kh: i64,
    /// Kernel width.
    pub kw: i64,
    /// Stride along y.
    pub sh: i64,
    /// Stride along x.
    pub sw: i64,
    /// Padding along y (each side).
    pub ph: i64,
    /// Padding along x (each side).
    pub pw: i64,
}

// SAFETY: `Pool2d` is `repr(C)` plain data with the layout of the C struct the kernels declare.
unsafe impl DeviceRepr for Pool2d {}

/// Average pooling of `planes` (= N·C) images: each output is its window's sum divided by the
/// kernel area (`include_pad`, padding counted as zeros) or by the inputs the window covers.
pub fn avg_pool2d(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    p: Pool2d,
    include_pad: bool,
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("avg_pool2d")?;
    let n = planes * (p.ho * p.wo) as usize;
    if n == 0 {
        return Ok(());
    }
    let (n64, include_pad) = (n as i64, include_pad as i32);
    launch!(gpu, "pool", format!("avg_pool2d_{}", elem.suffix()), gpu.grid_for(n);
        n64, p, include_pad, x.dims, x.ptr, out)
}

/// The backward of [`avg_pool2d`] with the padding counted: `g` is the `[planes, ho, wo]` output
/// gradient, `out` receives the `[planes, h, w]` input gradient.
pub fn avg_pool2d_backward(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    p: Pool2d,
    g: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("avg_pool2d_backward")?;
    let n = planes * (p.h * p.w) as usize;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "pool", format!("avg_pool2d_backward_{}", elem.suffix()), gpu.grid_for(n);
        n64, p, g.dims, g.ptr, out)
}

/// Max pooling of `planes` images, the padding left out of each window (as if -∞); a NaN in a
/// window gives NaN.
pub fn max_pool2d(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    p: Pool2d,
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("max_pool2d")?;
    let n = planes * (p.ho * p.wo) as usize;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as i64;
    launch!(gpu, "pool", format!("max_pool2d_{}", elem.suffix()), gpu.grid_for(n);
        n64, p, x.dims, x.ptr, out)
}

/// Nearest-neighbour upsampling of `planes` images of `h × w` by `(sh, sw)`.
pub fn upsample_nearest2d(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    (h, w): (usize, usize),
    (sh, sw): (usize, usize),
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("upsample_nearest2d")?;
    let n = planes * h * sh * w * sw;
    if n == 0 {
        return Ok(());
    }
    let [n64, h, w, sh, sw] = [n, h, w, sh, sw].map(|v| v as i64);
    launch!(gpu, "pool", format!("upsample_nearest2d_{}", elem.suffix()), gpu.grid_for(n);
        n64, h, w, sh, sw, x.dims, x.ptr, out)
}

/// The backward of [`upsample_nearest2d`]: `out` (`[planes, h, w]`) receives the sums of the
/// `sh × sw` blocks of the gradient `g` (`[planes, h·sh, w·sw]`).
pub fn upsample_nearest2d_backward(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    (h, w): (usize, usize),
    (sh, sw): (usize, usize),
    g: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("upsample_nearest2d_backward")?;
    let n = planes * h * w;
    if n == 0 {
        return Ok(());
    }
    let [n64, h, w, sh, sw] = [n, h, w, sh, sw].map(|v| v as i64);
    launch!(gpu, "pool", format!("upsample_nearest2d_backward_{}", elem.suffix()), gpu.grid_for(n);
        n64, h, w, sh, sw, g.dims, g.ptr, out)
}

/// Bilinear resizing (`align_corners = false`, no antialiasing) of `planes` images from `h × w`
/// to `oh × ow` (all positive).
pub fn resize_bilinear2d(
    gpu: &Gpu,
    elem: Elem,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    x: View,
    out: CUdeviceptr,
) -> Result<()> {
    elem.float_only("resize_bilinear2d")?;
    let n = planes * oh * ow;
    if n == 0 {
        return Ok(());
    }
    let [n64, h, w, oh, ow] = [n, h, w, oh, ow].map(|v| v as i64);
    launch!(gpu, "pool", format!("resize_bilinear2d_{}", elem.suffix()), gpu.grid_for(n);
        n64, h, w, oh, ow, x.dims, x.ptr, out)
}
