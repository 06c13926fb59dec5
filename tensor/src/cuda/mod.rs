//! The CUDA backend: tensors whose storage is a device buffer. Each file here holds the CUDA path
//! of one op family of `ops/` (the file of the same name there has the public methods, their
//! checks and the dispatch: every op checks [`Tensor::is_cuda`] and comes here). Attention has
//! no file yet: on CUDA it runs as a composite of tensor ops (`ops/attention.rs`). The kernels
//! themselves (CUDA C, NVRTC, launches) are the `kernels` crate's; this module turns tensors into
//! device addresses and [`Dims`]. It never reads `cpu/`, and `cpu/` never reads it.
//!
//! Outputs are fresh contiguous buffers; inputs are read through their views (strided,
//! broadcast, offset), so views cost no copy on the GPU either.

pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod pool;
pub(crate) mod reduce;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use kernels::{CUdeviceptr, DeviceBuffer, Dims, Elem, Gpu, View};

use crate::storage::{with_elements, Storage};
use crate::{CpuStorage, DType, Device, Element, Error, Layout, Result, Tensor};

/// A tensor's elements in device memory.
#[derive(Debug)]
pub struct CudaStorage {
    buf: DeviceBuffer,
    dtype: DType,
    len: usize,
}

impl CudaStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }
}

/// The kernels' name for a dtype.
pub(crate) fn elem(dtype: DType) -> Elem {
    match dtype {
        DType::F32 => Elem::F32,
        DType::F64 => Elem::F64,
        DType::BF16 => Elem::BF16,
        DType::F16 => Elem::F16,
        DType::U8 => Elem::U8,
        DType::I64 => Elem::I64,
    }
}

/// The device `cuda:ordinal`, opened on first use; an error naming the device where it cannot be.
pub(crate) fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    Gpu::get(ordinal).map_err(|e| Error::Device {
        op: "Device::cuda",
        device: Device::Cuda(ordinal),
        msg: e.to_string(),
    })
}

/// Maps a kernel failure to an error naming the tensor op.
pub(crate) fn kernel_error(op: &'static str, device: Device) -> impl Fn(kernels::Error) -> Error {
    move |e| Error::Device {
        op,
        device,
        msg: e.to_string(),
    }
}

/// A dtype error naming `op` unless `t` holds floats (what the arithmetic kernels compute in).
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::dtype(op, t.dtype(), "f32, f64, bf16 or f16"))
    }
}

/// The [`Dims`] of a layout (at most [`kernels::MAX_DIMS`] dims after merging).
pub(crate) fn dims(op: &'static str, layout: &Layout) -> Result<Dims> {
    Dims::new(layout.shape(), layout.strides(), layout.offset())
        .map_err(|e| Error::shape(op, e.to_string()))
}

impl Tensor {
    pub(crate) fn cuda_storage(&self) -> &CudaStorage {
        match self.storage() {
            Storage::Cuda(c) => c,
            Storage::Cpu(_) => panic!("internal error: a CUDA path was handed a CPU tensor"),
        }
    }

    /// The device of a CUDA tensor.
    pub(crate) fn gpu(&self) -> &Arc<Gpu> {
        self.cuda_storage().buf.gpu()
    }

    /// The tensor's view as a kernel input: its buffer's address and its layout as [`Dims`].
    pub(crate) fn cuda_view(&self, op: &'static str) -> Result<View> {
        Ok(View {
            ptr: self.cuda_storage().buf.ptr(),
            dims: dims(op, self.layout())?,
        })
    }

    /// The tensor's view broadcast to `shape`, as a kernel input.
    pub(crate) fn cuda_view_as(&self, op: &'static str, shape: &[usize]) -> Result<View> {
        self.broadcast_as(shape)?.cuda_view(op)
    }

    /// The address of the buffer's first element (for a fresh output, which is contiguous).
    pub(crate) fn cuda_ptr(&self) -> CUdeviceptr {
        self.cuda_storage().buf.ptr()
    }

    /// A contiguous tensor of `shape` on the CUDA `device`, its elements not yet written: the
    /// output of a kernel.
    pub(crate) fn cuda_uninit(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let Device::Cuda(ordinal) = device else {
            return Err(Error::msg("internal error: cuda_uninit on the cpu"));
        };
        let len: usize = shape.iter().product();
        let buf = gpu(ordinal)?
            .alloc(len * dtype.size_in_bytes())
            .map_err(kernel_error("alloc", device))?;
        Ok(Tensor::from_parts(
            Storage::new_cuda(CudaStorage { buf, dtype, len }),
            Layout::contiguous(shape),
            device,
        ))
    }

    /// A contiguous output like `self` (same shape unless given, dtype and device).
    pub(crate) fn cuda_output(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::cuda_uninit(shape, dtype, self.device())
    }

    /// Copies a CPU tensor to `cuda:ordinal`.
    pub(crate) fn upload(&self, ordinal: usize) -> Result<Tensor> {
        let device = Device::Cuda(ordinal);
        let host = self.contiguous()?;
        let data = host.cpu_storage();
        let range = host.layout().contiguous_range().expect("contiguous above");
        let buf = with_elements!(data, v => {
            let v = &v[range];
            // SAFETY: every element type is plain old data; the byte view covers exactly `v`.
            let bytes = unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            };
            gpu(ordinal)?.upload(bytes).map_err(kernel_error("to_device", device))?
        });
        Ok(Tensor::from_parts(
            Storage::new_cuda(CudaStorage {
                buf,
                dtype: self.dtype(),
                len: self.elem_count(),
            }),
            Layout::contiguous(self.shape()),
            device,
        ))
    }

    /// Copies a CUDA tensor to the host (waits for the device's queued work).
    pub(crate) fn download(&self) -> Result<Tensor> {
        let dense = self.contiguous()?;
        let n = dense.elem_count();
        let offset = dense.layout().offset();
        let buf = &dense.cuda_storage().buf;
        let err = kernel_error("to_device", self.device());
        fn fetch<T: Element>(
            buf: &DeviceBuffer,
            offset: usize,
            n: usize,
            err: impl Fn(kernels::Error) -> Error,
        ) -> Result<CpuStorage> {
            let mut host = vec![T::default(); offset + n];
            // SAFETY: plain old data; the byte view covers exactly `host`.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    host.as_mut_ptr() as *mut u8,
                    std::mem::size_of_val(&host[..]),
                )
            };
            buf.download_into(bytes).map_err(err)?;
            host.drain(..offset);
            Ok(T::into_storage(host))
        }
        let storage = match self.dtype() {
            DType::F32 => fetch::<f32>(buf, offset, n, err)?,
            DType::F64 => fetch::<f64>(buf, offset, n, err)?,
            DType::BF16 => fetch::<half::bf16>(buf, offset, n, err)?,
            DType::F16 => fetch::<half::f16>(buf, offset, n, err)?,
            DType::U8 => fetch::<u8>(buf, offset, n, err)?,
            DType::I64 => fetch::<i64>(buf, offset, n, err)?,
        };
        Tensor::from_storage(storage, self.shape())
    }
}
