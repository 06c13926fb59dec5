//! Benchmarks of difftune's kernels: `benches/cpu_ops.rs` (criterion) and, beside it, the
//! PyTorch scripts that time the same ops for comparison (`torch_cpu.py`, `compare_cpu.sh`).
//!
//! The shapes live here so that the Rust bench and its documentation agree on them.

/// A convolution benchmarked: batch, channels in and out, square image side, square kernel side,
/// padding.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Image height and width.
    pub hw: usize,
    /// Kernel height and width.
    pub k: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl ConvCase {
    /// Output side (stride 1).
    pub fn out_hw(&self) -> usize {
        self.hw + 2 * self.pad - self.k + 1
    }

    /// Floating-point operations of the forward pass: 2 per multiply-add.
    pub fn flops(&self) -> u64 {
        let o = self.out_hw();
        2 * (self.n * self.cout * o * o * self.cin * self.k * self.k) as u64
    }

    /// A short name, e.g. `n8_64x64_32x32_k3`.
    pub fn name(&self) -> String {
        format!(
            "n{}_{}x{}_{}x{}_k{}",
            self.n, self.cin, self.cout, self.hw, self.hw, self.k
        )
    }
}

/// The matrix sizes benchmarked (square m = n = k).
pub const MATMUL_SIZES: [usize; 2] = [256, 1024];

/// The convolutions benchmarked: a U-Net block at 32x32 and a deeper one at 16x16.
pub const CONV_CASES: [ConvCase; 2] = [
    ConvCase {
        n: 8,
        cin: 64,
        cout: 64,
        hw: 32,
        k: 3,
        pad: 1,
    },
    ConvCase {
        n: 8,
        cin: 128,
        cout: 128,
        hw: 16,
        k: 3,
        pad: 1,
    },
];
