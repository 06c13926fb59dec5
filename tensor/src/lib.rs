//! # tensor
//!
//! N-dimensional arrays for difftune: a [`Tensor`] is shared storage plus a [`Layout`] (shape,
//! strides, offset), so reshape, permute, transpose, narrow, broadcast and (un)squeeze are free
//! views; `contiguous()` copies only when needed. Ops return `Result` with an [`Error`] that names
//! the op and the shapes or dtypes involved.
//!
//! The ops live in `ops/`, one file per family (elementwise, reduce, matmul, conv, norm, pool,
//! index, optim, attention): the public methods, their argument checks and shape arithmetic, and
//! the dispatch by device to one of two sibling backends, which hold kernels only and never
//! import each other: `cpu/` (the same file names), generic over f32 and f64, and `cuda/` (over
//! the `kernels` crate). bf16 and f16 are storage types on the CPU (cast them to compute); CUDA
//! computes in them, accumulating in f32. Every op takes tensors of one device and returns one
//! there; [`Tensor::to_device`] moves data between host and GPU.
//!
//! ```
//! use tensor::{DType, Device, Generator, Tensor};
//! let mut gen = Generator::new(0);
//! let x = Tensor::randn(&[2, 3], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
//! let w = Tensor::ones(&[3, 4], DType::F32, Device::Cpu).unwrap();
//! let y = x.matmul(&w).unwrap().relu().unwrap();
//! assert_eq!(y.shape(), &[2, 4]);
//! ```

pub mod atomic;
mod cpu;
mod cuda;
mod device;
mod dtype;
mod error;
mod layout;
pub mod limits;
mod ops;
pub mod safetensors;
mod storage;
mod tensor;

pub use cpu::{keep_freed_memory, on_cpu_workers};
pub use cuda::CudaStorage;
pub use device::Device;
pub use dtype::{DType, Element, Float};
pub use error::{Error, Result};
pub use half::{bf16, f16};
pub use layout::{broadcast_shapes, checked_elem_count, contiguous_strides, Layout};
pub use ops::{AdamWStep, BinaryOp, CmpOp, Conv2dParams, Saved, UnaryOp};
pub use storage::{memory, CpuStorage};
pub use tensor::{Generator, Tensor};
