//! Launch wrappers for the GEMM kernels: batched GEMM over strided (transposed, broadcast, offset)
//! operands, f32 / f64 / bf16 / f16 with f32 (f64) accumulation, and a fused epilogue (bias,
//! GELU, accumulate).
//!
//! Two kernels serve [`gemm`]: `cu/gemm_tc.cu`, on tensor cores, for bf16 and f16 operands that
//! have a unit stride along one dim and 16-byte aligned rows along the other (see
//! [`tensor_core_layout`]) on sm_80 or newer; `cu/matmul.cu`, a SIMT kernel, for everything else.

use cudarc::driver::LaunchConfig;

use crate::launch::launch;
use crate::{CUdeviceptr, Dims, Elem, Gpu, Result};

/// Rows and columns of C one SIMT thread block computes (`GEMM_BM`, `GEMM_BN` in `matmul.cu`).
const TILE: usize = 64;
/// Threads per SIMT block (`GEMM_THREADS`).
const THREADS: u32 = 256;
/// Rows and columns of C one tensor-core block computes (`TC_BM`, `TC_BN` in `gemm_tc.cu`).
const TC_TILE: usize = 128;
/// Threads per tensor-core block (`TC_THREADS`).
const TC_THREADS: u32 = 256;
/// Elements the tensor-core kernel copies at a time (16 bytes of bf16 or f16): the unit its row
/// strides, batch offsets and reduction steps must be multiples of.
const TC_CHUNK: i64 = 8;
/// The most blocks along grid y and z; the kernels loop over tiles and batches beyond them.
const MAX_GRID_YZ: usize = 65_535;

/// One GEMM operand: a batch of strided matrices in one buffer.
#[derive(Clone, Copy, Debug)]
pub struct MatOperand {
    /// Address of the buffer's first element.
    pub ptr: CUdeviceptr,
    /// Where each matrix starts: the offset of batch element `z` is that of element `z`
    /// (row-major) of this view, whose shape is the batch shape and whose strides may be 0.
    pub batch: Dims,
    /// Distance between rows, in elements.
    pub rs: i64,
    /// Distance between columns, in elements.
    pub cs: i64,
    /// Distance between reduction steps (see [`GemmShape::red`]); ignored for C.
    pub red: i64,
}

/// The sizes of a batched GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Number of matrices in the batch.
    pub batches: usize,
    /// Reduction steps: `C[z] = Σ_{r < red} A[z]·B[z]`, each operand shifted by `r` times its
    /// `red` distance (1 for a plain GEMM; 0 sums nothing).
    pub red: usize,
}

/// What happens to each element `v` of the product on its way to C, in this order: `v + bias[j]`
/// (`j` its column), then GELU, then C is overwritten with it, or added to when `accumulate`.
/// The default stores the bare product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// The address of `n` contiguous elements of the GEMM's type, one per column of C, the same
    /// for every batch element.
    pub bias: Option<CUdeviceptr>,
    /// GELU with the tanh approximation (as `UnaryCode::GELU_TANH`), applied after the bias.
    pub gelu_tanh: bool,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
}

/// How the tensor-core kernel reads A and B: for each, whether its k index is the contiguous one
/// (a row-major A, a transposed B) or its m (n) index is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcLayout {
    /// A's column stride (along k) is 1; else its row stride is.
    pub a_k_contiguous: bool,
    /// B's row stride (along k) is 1; else its column stride is.
    pub b_k_contiguous: bool,
}

impl TcLayout {
    /// The kernel's name suffix: `n` for a row-major operand, `t` for a transposed one.
    fn suffix(self) -> &'static str {
        match (self.a_k_contiguous, self.b_k_contiguous) {
            (true, false) => "nn",
            (true, true) => "nt",
            (false, false) => "tn",
            (false, true) => "tt",
        }
    }
}

/// Whether the tensor-core kernel can run this GEMM on a GPU of `arch` (e.g. `sm_90a`), and how
/// it reads the operands; `None` sends it to the SIMT kernel. It needs bf16 or f16, sm_80 or
/// newer, and for A and B each: a unit stride along one dim and, along the other, a stride that
/// is a multiple of 8 elements (or a dim of length 1), batch offsets and the reduction distance
/// (when `red > 1`) multiples of 8 elements, and a 16-byte aligned buffer, since the kernel copies
/// 16-byte chunks of rows. C may have any strides.
pub fn tensor_core_layout(
    arch: &str,
    elem: Elem,
    s: &GemmShape,
    a: &MatOperand,
    b: &MatOperand,
) -> Option<TcLayout> {
    if !matches!(elem, Elem::BF16 | Elem::F16) || sm_version(arch)? < 80 {
        return None;
    }
    let aligned = |op: &MatOperand| {
        op.ptr.is_multiple_of(16)
            && op.batch.offsets_multiple_of(TC_CHUNK)
            && (s.red <= 1 || op.red % TC_CHUNK == 0)
    };
    if !aligned(a) || !aligned(b) {
        return None;
    }
    Some(TcLayout {
        a_k_contiguous: k_contiguous(s.m, a.rs, s.k, a.cs)?,
        b_k_contiguous: k_contiguous(s.n, b.cs, s.k, b.rs)?,
    })
}

/// For an operand with `len` rows or columns (m or n) `stride` apart and `k` columns or rows
/// `k_stride` apart: `Some(true)` when k is the contiguous dim, `Some(false)` when the other one
/// is, `None` when neither can be copied in 16-byte chunks.
fn k_contiguous(len: usize, stride: i64, k: usize, k_stride: i64) -> Option<bool> {
    let chunked = |n: usize, s: i64| n <= 1 || s % TC_CHUNK == 0;
    if k_stride == 1 && chunked(len, stride) {
        Some(true)
    } else if stride == 1 && chunked(k, k_stride) {
        Some(false)
    } else {
        None
    }
}

/// The number of an arch name: 90 for `sm_90a`, 80 for `sm_80`.
fn sm_version(arch: &str) -> Option<u32> {
    arch.strip_prefix("sm_")?
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .ok()
}

/// The grid of `tile`×`tile` blocks of C over every batch element.
fn grid(s: &GemmShape, tile: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            s.n.div_ceil(tile).min(i32::MAX as usize) as u32,
            s.m.div_ceil(tile).min(MAX_GRID_YZ) as u32,
            s.batches.min(MAX_GRID_YZ) as u32,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `C[z] (+)= Σ_r A[z, r] · B[z, r]` for every batch index `z`: C is overwritten, or added to
/// when `accumulate`. Every element of every C matrix is written, also when `k` or `red` is 0.
pub fn gemm(
    gpu: &Gpu,
    elem: Elem,
    s: GemmShape,
    a: MatOperand,
    b: MatOperand,
    c: MatOperand,
    accumulate: bool,
) -> Result<()> {
    let epilogue = Epilogue {
        accumulate,
        ..Epilogue::default()
    };
    gemm_fused(gpu, elem, s, a, b, c, epilogue)
}

/// [`gemm`] with a fused [`Epilogue`]: `C[z] (+)= act(Σ_r A[z, r] · B[z, r] + bias)`. Runs on
/// tensor cores where [`tensor_core_layout`] allows, else on the SIMT kernel; both apply the
/// epilogue in f32 (f64 for f64) before rounding once to the element type.
pub fn gemm_fused(
    gpu: &Gpu,
    elem: Elem,
    s: GemmShape,
    a: MatOperand,
    b: MatOperand,
    c: MatOperand,
    epilogue: Epilogue,
) -> Result<()> {
    elem.float_only("gemm")?;
    if s.m == 0 || s.n == 0 || s.batches == 0 {
        return Ok(());
    }
    let (m, n, k, batches, red) = (
        s.m as i64,
        s.n as i64,
        s.k as i64,
        s.batches as i64,
        s.red as i64,
    );
    let acc = epilogue.accumulate as i32;
    let gelu = epilogue.gelu_tanh as i32;
    // A null pointer tells the kernels there is no bias.
    let bias: CUdeviceptr = epilogue.bias.unwrap_or(0);
    if let Some(layout) = tensor_core_layout(gpu.arch(), elem, &s, &a, &b) {
        let name = format!("gemm_tc_{}_{}", elem.suffix(), layout.suffix());
        return launch!(gpu, "gemm_tc", name, grid(&s, TC_TILE, TC_THREADS);
            m, n, k, batches, red,
            a.batch, a.rs, a.cs, a.red, a.ptr,
            b.batch, b.rs, b.cs, b.red, b.ptr,
            c.batch, c.rs, c.cs, acc, bias, gelu, c.ptr);
    }
    launch!(gpu, "matmul", format!("gemm_{}", elem.suffix()), grid(&s, TILE, THREADS);
        m, n, k, batches, red,
        a.batch, a.rs, a.cs, a.red, a.ptr,
        b.batch, b.rs, b.cs, b.red, b.ptr,
        c.batch, c.rs, c.cs, acc, bias, gelu, c.ptr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operand at `ptr` with row and column strides, `batches` matrices `batch_stride` apart.
    fn op(ptr: CUdeviceptr, rs: i64, cs: i64, batches: usize, batch_stride: usize) -> MatOperand {
        MatOperand {
            ptr,
            batch: Dims::new(&[batches], &[batch_stride], 0).unwrap(),
            rs,
            cs,
            red: 0,
        }
    }

    fn shape(m: usize, n: usize, k: usize) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            batches: 1,
            red: 1,
        }
    }

    fn layout(a: bool, b: bool) -> Option<TcLayout> {
        Some(TcLayout {
            a_k_contiguous: a,
            b_k_contiguous: b,
        })
    }

    #[test]
    fn tensor_cores_take_the_four_layouts_of_aligned_halves() {
        let s = shape(130, 67, 250);
        // Row-major A [130 × 250] in rows of 256; row-major B [250 × 67] in rows of 72.
        let (a, b) = (op(256, 256, 1, 1, 0), op(512, 72, 1, 1, 0));
        // Transposed: A stored [250 × 136], B stored [67 × 256].
        let (at, bt) = (op(256, 1, 136, 1, 0), op(512, 1, 256, 1, 0));
        for elem in [Elem::BF16, Elem::F16] {
            for arch in ["sm_80", "sm_86", "sm_90a", "sm_120"] {
                let tc = |a: &MatOperand, b: &MatOperand| tensor_core_layout(arch, elem, &s, a, b);
                assert_eq!(tc(&a, &b), layout(true, false));
                assert_eq!(tc(&a, &bt), layout(true, true));
                assert_eq!(tc(&at, &b), layout(false, false));
                assert_eq!(tc(&at, &bt), layout(false, true));
            }
        }
        assert_eq!(layout(false, true).unwrap().suffix(), "tt");
        assert_eq!(layout(true, false).unwrap().suffix(), "nn");
    }

    #[test]
    fn the_simt_kernel_takes_the_rest() {
        let s = shape(17, 33, 65);
        let (a, b) = (op(0, 72, 1, 1, 0), op(0, 40, 1, 1, 0));
        let tc = |arch, elem, a: &MatOperand, b: &MatOperand| {
            tensor_core_layout(arch, elem, &s, a, b).is_some()
        };
        assert!(tc("sm_80", Elem::BF16, &a, &b));
        // Other types, older GPUs.
        assert!(!tc("sm_80", Elem::F32, &a, &b));
        assert!(!tc("sm_75", Elem::F16, &a, &b));
        assert!(!tc("gfx90a", Elem::F16, &a, &b));
        // Rows of 65 (not whole 16-byte chunks), a strided k, a misaligned buffer or batch.
        assert!(!tc("sm_90a", Elem::BF16, &op(0, 65, 1, 1, 0), &b));
        assert!(!tc("sm_90a", Elem::BF16, &op(0, 144, 2, 1, 0), &b));
        assert!(!tc("sm_90a", Elem::BF16, &a, &op(8, 40, 1, 1, 0)));
        assert!(!tc("sm_90a", Elem::BF16, &a, &op(0, 40, 1, 3, 1324)));
        assert!(tc("sm_90a", Elem::BF16, &a, &op(0, 40, 1, 3, 2640)));
        // A reduction distance that is not whole chunks, only when there are several steps.
        let mut a_red = a;
        a_red.red = 17 * 72 + 4;
        assert!(tc("sm_90a", Elem::BF16, &a_red, &b));
        let s2 = GemmShape { red: 2, ..s };
        assert!(tensor_core_layout("sm_90a", Elem::BF16, &s2, &a_red, &b).is_none());
    }

    #[test]
    fn a_length_one_dim_needs_no_aligned_stride() {
        // [1 × 1] · [1 × 1] as the tensor side passes it: both strides 1, so either way round.
        let one = op(0, 1, 1, 1, 0);
        let tc = tensor_core_layout("sm_90a", Elem::F16, &shape(1, 1, 1), &one, &one);
        assert_eq!(tc, layout(true, true));
        // A dot product [1 × 300] · [300 × 1].
        let (a, b) = (op(0, 300, 1, 1, 0), op(0, 1, 1, 1, 0));
        let tc = tensor_core_layout("sm_90a", Elem::F16, &shape(1, 1, 300), &a, &b);
        assert_eq!(tc, layout(true, true));
    }

    #[test]
    fn arch_numbers() {
        assert_eq!(sm_version("sm_90a"), Some(90));
        assert_eq!(sm_version("sm_80"), Some(80));
        assert_eq!(sm_version("sm_100f"), Some(100));
        assert_eq!(sm_version("compute_90"), None);
    }
}
