//! Owned element buffers, and the live/peak byte counters that memory tests and benchmarks read.

use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};

use crate::cuda::CudaStorage;
use crate::DType;

/// A typed buffer in host memory.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f16 elements.
    F16(Vec<f16>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i64 elements.
    I64(Vec<i64>),
}

/// Runs `$body` once per element type, with `$v` bound to the elements.
macro_rules! with_elements {
    ($storage:expr, $v:ident => $body:expr) => {
        match $storage {
            CpuStorage::F32($v) => $body,
            CpuStorage::F64($v) => $body,
            CpuStorage::BF16($v) => $body,
            CpuStorage::F16($v) => $body,
            CpuStorage::U8($v) => $body,
            CpuStorage::I64($v) => $body,
        }
    };
}
pub(crate) use with_elements;

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_elements!(self, v => v.len())
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }
}

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static CUDA_LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The buffer behind one or more tensors, in host or device memory; its bytes are counted while
/// it lives.
#[derive(Debug)]
pub(crate) enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl Storage {
    pub(crate) fn new(cpu: CpuStorage) -> Self {
        let bytes = cpu.size_in_bytes();
        let live = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        Storage::Cpu(cpu)
    }

    pub(crate) fn new_cuda(cuda: CudaStorage) -> Self {
        CUDA_LIVE_BYTES.fetch_add(cuda.size_in_bytes(), Ordering::Relaxed);
        Storage::Cuda(cuda)
    }

    /// The host elements. Every op dispatches CUDA tensors to `cuda/` before its CPU kernel
    /// asks for these, so reaching the panic is a missing dispatch, never bad input.
    pub(crate) fn cpu(&self) -> &CpuStorage {
        match self {
            Storage::Cpu(c) => c,
            Storage::Cuda(_) => panic!("internal error: a CPU kernel was handed a CUDA tensor"),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(c) => LIVE_BYTES.fetch_sub(c.size_in_bytes(), Ordering::Relaxed),
            Storage::Cuda(c) => CUDA_LIVE_BYTES.fetch_sub(c.size_in_bytes(), Ordering::Relaxed),
        };
    }
}

/// Process-wide counters of tensor memory: host storage, and device storage apart.
///
/// ```
/// use tensor::{memory, DType, Device, Tensor};
/// let before = memory::live_bytes();
/// let t = Tensor::zeros(&[256], DType::F32, Device::Cpu).unwrap();
/// assert!(memory::live_bytes() >= before + 1024); // other threads may allocate too
/// drop(t);
/// ```
pub mod memory {
    use super::*;

    /// Bytes held by all live tensor storages now.
    pub fn live_bytes() -> usize {
        LIVE_BYTES.load(Ordering::Relaxed)
    }

    /// The high-water mark of [`live_bytes`] since the start or the last [`reset_peak`].
    pub fn peak_bytes() -> usize {
        PEAK_BYTES.load(Ordering::Relaxed)
    }

    /// Bytes held by all live tensor storages on CUDA devices now.
    pub fn cuda_live_bytes() -> usize {
        CUDA_LIVE_BYTES.load(Ordering::Relaxed)
    }

    /// Restarts the high-water mark from the current live bytes.
    pub fn reset_peak() {
        PEAK_BYTES.store(live_bytes(), Ordering::Relaxed);
    }
}
