//! Benchmarks of difftune's kernels: `benches/cpu_ops.rs` (criterion) and, beside it, the
//! PyTorch scripts that time the same ops for comparison (`torch_cpu.py`, `compare_cpu.sh`).
//!
//! The shapes live here so that the Rust bench and its documentation agree on them.

/// A convolution benchmarked: batch, channels in and out, square image side, square kernel side,
/// padding and stride.
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
    /// Step between windows.
    pub stride: usize,
}

impl ConvCase {
    /// Output side.
    pub fn out_hw(&self) -> usize {
        (self.hw + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Floating-point operations of the forward pass: 2 per multiply-add.
    pub fn flops(&self) -> u64 {
        let o = self.out_hw();
        2 * (self.n * self.cout * o * o * self.cin * self.k * self.k) as u64
    }

    /// A short name, e.g. `n8_64x64_32x32_k3` (`_s2` added for stride 2).
    pub fn name(&self) -> String {
        let stride = match self.stride {
            1 => String::new(),
            s => format!("_s{s}"),
        };
        format!(
            "n{}_{}x{}_{}x{}_k{}{stride}",
            self.n, self.cin, self.cout, self.hw, self.hw, self.k
        )
    }

    /// The case's [`tensor::Conv2dParams`].
    pub fn params(&self) -> tensor::Conv2dParams {
        tensor::Conv2dParams {
            stride: (self.stride, self.stride),
            padding: (self.pad, self.pad),
            ..Default::default()
        }
    }
}

/// The matrix sizes benchmarked (square m = n = k).
pub const MATMUL_SIZES: [usize; 2] = [256, 1024];

/// A 3x3 convolution with padding 1 (stride 1 or 2), or a 1x1 one without padding.
const fn conv(n: usize, cin: usize, cout: usize, hw: usize, k: usize, stride: usize) -> ConvCase {
    ConvCase {
        n,
        cin,
        cout,
        hw,
        k,
        pad: k / 2,
        stride,
    }
}

/// The convolutions of `compare_cpu.sh`: a U-Net block at 32x32 and a deeper one at 16x16.
pub const CONV_CASES: [ConvCase; 2] = [conv(8, 64, 64, 32, 3, 1), conv(8, 128, 128, 16, 3, 1)];

/// The distinct convolutions of one training step of the committed Fashion-MNIST U-Net
/// (`configs/pretrain-fashion-unet.json`: batch 64, channels 16/32/32 at 28, 14 and 7 pixels),
/// with how many times each runs per step.
pub const UNET_CONV_CASES: [(ConvCase, usize); 20] = [
    (conv(64, 1, 16, 28, 3, 1), 1),
    (conv(64, 16, 1, 28, 3, 1), 1),
    (conv(64, 16, 16, 28, 3, 1), 4),
    (conv(64, 16, 16, 28, 3, 2), 1),
    (conv(64, 16, 32, 14, 1, 1), 1),
    (conv(64, 16, 32, 14, 3, 1), 1),
    (conv(64, 32, 16, 28, 1, 1), 1),
    (conv(64, 32, 16, 28, 3, 1), 1),
    (conv(64, 32, 32, 7, 3, 1), 8),
    (conv(64, 32, 32, 14, 3, 1), 4),
    (conv(64, 32, 32, 14, 3, 2), 1),
    (conv(64, 32, 32, 28, 3, 1), 1),
    (conv(64, 48, 16, 28, 1, 1), 1),
    (conv(64, 48, 16, 28, 3, 1), 1),
    (conv(64, 48, 32, 14, 1, 1), 1),
    (conv(64, 48, 32, 14, 3, 1), 1),
    (conv(64, 64, 32, 7, 1, 1), 2),
    (conv(64, 64, 32, 7, 3, 1), 2),
    (conv(64, 64, 32, 14, 1, 1), 1),
    (conv(64, 64, 32, 14, 3, 1), 1),
];
