//! # kernels
//!
//! CUDA C kernels compiled at run time by NVRTC, with typed launch wrappers over raw device
//! buffers. The crate knows nothing of tensors: the `tensor` crate turns its views into [`Dims`]
//! and device addresses and calls the wrappers here.
//!
//! - `cu/*.cu`: one file per kernel family, each instantiated for the element types it serves;
//!   `cu/common.cuh` (strided indexing, conversions, block reductions) is prepended to each.
//! - [`nvrtc`]: CUDA C to CUBIN for one architecture; [`Gpu`] compiles a family on first use,
//!   once per process and architecture (cached by source hash), and loads the CUBIN.
//! - One Rust file per family with its launch wrappers.
//!
//! Nothing here needs a GPU to build: cudarc loads the driver and NVRTC dynamically, and
//! [`Gpu::get`] returns an error where either is missing.

pub mod conv;
mod dims;
pub mod elementwise;
mod error;
mod gpu;
pub mod index;
mod launch;
pub mod matmul;
pub mod norm;
pub mod nvrtc;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod source;

pub use cudarc::driver::sys::CUdeviceptr;
pub use dims::{Dims, Elem, MAX_DIMS};
pub use error::{Error, Result};
pub use gpu::{driver_available, DeviceBuffer, Gpu};
pub use launch::View;
