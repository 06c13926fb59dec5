//! Launch wrapper for `cu/matmul.cu`: batched GEMM over strided (transposed, broadcast, offset)
//! operands, f32 / f64 / bf16 / f16 with f32 (f64) accumulation.

use cudarc::driver::LaunchConfig;

use crate::launch::launch;
use crate::{CUdeviceptr, Dims, Elem, Gpu, Result};

/// Rows and columns of C one thread block computes (`GEMM_BM`, `GEMM_BN` in the kernel).
const TILE: usize = 64;
/// Threads per block (`GEMM_THREADS`).
const THREADS: u32 = 256;
/// The most blocks along grid y and z; the kernel loops over tiles and batches beyond them.
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
    elem.float_only("gemm")?;
    if s.m == 0 || s.n == 0 || s.batches == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig {
        grid_dim: (
            s.n.div_ceil(TILE).min(i32::MAX as usize) as u32,
            s.m.div_ceil(TILE).min(MAX_GRID_YZ) as u32,
            s.batches.min(MAX_GRID_YZ) as u32,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (m, n, k, batches, red) = (
        s.m as i64,
        s.n as i64,
        s.k as i64,
        s.batches as i64,
        s.red as i64,
    );
    let acc = accumulate as i32;
    launch!(gpu, "matmul", format!("gemm_{}", elem.suffix()), cfg;
        m, n, k, batches, red,
        a.batch, a.rs, a.cs, a.red, a.ptr,
        b.batch, b.rs, b.cs, b.red, b.ptr,
        c.batch, c.rs, c.cs, acc, c.ptr)
}
