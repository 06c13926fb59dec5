//! The [`Tensor`] type: creation, accessors, dtype casts and the free views.

use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::cpu::map1;
use crate::layout::checked_elem_count;
use crate::storage::{with_elements, Storage};
use crate::{ensure_shape, CpuStorage, DType, Device, Element, Error, Layout, Result};

/// An n-dimensional array: shared storage plus a [`Layout`]. Cloning and views are cheap (they
/// share the storage); ops return new tensors and never mutate their inputs.
///
/// ```
/// use tensor::Tensor;
/// let x = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
/// let t = x.transpose(0, 1).unwrap(); // a view: no copy
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
/// ```
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
    device: Device,
}

/// A seeded random generator: the same seed gives the same tensors.
pub struct Generator(rand::rngs::StdRng);

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Generator(rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// The underlying `rand` generator, for other random draws.
    pub fn rng(&mut self) -> &mut rand::rngs::StdRng {
        &mut self.0
    }
}

impl Tensor {
    /// A contiguous tensor over `storage` (on the CPU).
    pub fn from_storage(storage: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        let n = checked_elem_count("from_storage", shape)?;
        ensure_shape!(
            storage.len() == n,
            "from_storage",
            "{} elements do not fill shape {shape:?}",
            storage.len()
        );
        Ok(Tensor {
            storage: Arc::new(Storage::new(storage)),
            layout: Layout::contiguous(shape),
            device: Device::Cpu,
        })
    }

    /// A tensor of `shape` taking ownership of `data` (row-major).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(T::into_storage(data), shape)
    }

    /// A tensor of `shape` copied from `data` (row-major).
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional tensor holding `value`.
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Tensor::full(&[], value, dtype, Device::Cpu).expect("a scalar always fits")
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let n = checked_elem_count("full", shape)?;
        if let Device::Cuda(_) = device {
            return crate::cuda::elementwise::full(shape, value, dtype, device);
        }
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![f32::from_f64(value); n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f64(value); n]),
            DType::U8 => CpuStorage::U8(vec![u8::from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![i64::from_f64(value); n]),
        };
        Tensor::from_storage(storage, shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// Zeros of this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device)
    }

    /// Ones of this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device)
    }

    /// The 1-D tensor `start, start + step, ..` up to but excluding `end`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        ensure_shape!(
            step != 0.0 && (end - start) / step >= 0.0,
            "arange",
            "empty or infinite range {start}..{end} step {step}"
        );
        let n = ((end - start) / step).ceil() as usize;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_vec(values, &[n])?
            .to_device(device)?
            .to_dtype(dtype)
    }

    /// Uniform samples in `[lo, hi)`.
    pub fn rand(
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Tensor> {
        let n = checked_elem_count("rand", shape)?;
        // `random_range` panics on an empty or infinite range (e.g. the bound 1/√fan_in of a
        // layer with no inputs): an error names the bounds instead.
        ensure_shape!(
            (lo < hi && (hi - lo).is_finite()) || n == 0,
            "rand",
            "bounds [{lo}, {hi}) of shape {shape:?} are not a finite, non-empty range"
        );
        let values: Vec<f64> = (0..n).map(|_| gen.0.random_range(lo..hi)).collect();
        Tensor::from_vec(values, shape)?
            .to_device(device)?
            .to_dtype(dtype)
    }

    /// Normal samples with the given mean and standard deviation.
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Tensor> {
        let n = checked_elem_count("randn", shape)?;
        let values: Vec<f64> = (0..n)
            .map(|_| {
                mean + std
                    * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut gen.0)
            })
            .collect();
        Tensor::from_vec(values, shape)?
            .to_device(device)?
            .to_dtype(dtype)
    }

    /// `f32` samples of N(0, 1) on the CPU from a generator seeded by `seed`: the random inputs
    /// of examples and tests.
    ///
    /// ```
    /// let x = tensor::Tensor::standard_normal(&[2, 3], 7).unwrap();
    /// assert_eq!(x.shape(), &[2, 3]);
    /// assert_eq!(x.to_vec::<f32>().unwrap(), tensor::Tensor::standard_normal(&[2, 3], 7).unwrap().to_vec::<f32>().unwrap());
    /// ```
    pub fn standard_normal(shape: &[usize], seed: u64) -> Result<Tensor> {
        Tensor::randn(
            shape,
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut Generator::new(seed),
        )
    }

    /// A copy on `device` (the same tensor when it is already there). Copying to the host waits
    /// for the device's queued work.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        match (self.device, device) {
            (a, b) if a == b => Ok(self.clone()),
            (Device::Cpu, Device::Cuda(ordinal)) => self.upload(ordinal),
            (Device::Cuda(_), Device::Cpu) => self.download(),
            (Device::Cuda(_), Device::Cuda(ordinal)) => self.download()?.upload(ordinal),
            _ => unreachable!("equal devices handled above"),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Size of dimension `dim`, or a shape error naming `op`.
    pub fn dim(&self, op: &'static str, dim: usize) -> Result<usize> {
        self.shape().get(dim).copied().ok_or_else(|| {
            Error::shape(
                op,
                format!("dim {dim} out of range for shape {:?}", self.shape()),
            )
        })
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether the tensor lives on a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self.device(), Device::Cuda(_))
    }

    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// The backing host storage (for kernels; read it through [`Tensor::layout`]).
    pub fn cpu_storage(&self) -> &CpuStorage {
        self.storage.cpu()
    }

    /// Whether two tensors share one storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    pub(crate) fn from_parts(storage: Storage, layout: Layout, device: Device) -> Tensor {
        Tensor {
            storage: Arc::new(storage),
            layout,
            device,
        }
    }

    /// A tensor over new storage with the same device.
    pub(crate) fn with_storage(&self, storage: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(storage, shape)
    }

    pub(crate) fn view(&self, layout: Layout) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            layout,
            device: self.device,
        }
    }

    /// The elements in row-major order, as `T` (which must be the dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.is_cuda() {
            return self.to_device(Device::Cpu)?.to_vec();
        }
        let data = T::slice(self.storage.cpu())
            .ok_or_else(|| Error::dtype("to_vec", self.dtype(), T::DTYPE.as_str()))?;
        Ok(match self.layout.contiguous_range() {
            Some(r) => data[r].to_vec(),
            None => map1(data, &self.layout, |x| x),
        })
    }

    /// The elements in row-major order, converted to f64 whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.to_dtype(DType::F64)?.to_vec()
    }

    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        ensure_shape!(
            self.elem_count() == 1,
            "to_scalar",
            "expected one element, got shape {:?}",
            self.shape()
        );
        Ok(self.to_f64_vec()?[0])
    }

    /// Whether every element is finite (no NaN, no ±inf); integer tensors always are. One pass
    /// on the tensor's own device, no copy to the host: x · 0 is 0 for finite x and NaN for NaN
    /// or ±inf, and a sum that meets a NaN is NaN (a plain sum could overflow to inf instead).
    ///
    /// ```
    /// use tensor::Tensor;
    /// assert!(Tensor::from_vec(vec![1.0f32, -3e38], &[2]).unwrap().all_finite().unwrap());
    /// assert!(!Tensor::from_vec(vec![1.0f32, f32::NAN], &[2]).unwrap().all_finite().unwrap());
    /// assert!(!Tensor::from_vec(vec![f64::NEG_INFINITY], &[1]).unwrap().all_finite().unwrap());
    /// ```
    pub fn all_finite(&self) -> Result<bool> {
        if !self.dtype().is_float() {
            return Ok(true);
        }
        Ok(self.mul_scalar(0.0)?.sum_all()?.to_scalar()? == 0.0)
    }

    /// A copy converted to `dtype` (the same tensor when it already is).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if self.is_cuda() {
            return crate::cuda::elementwise::to_dtype(self, dtype);
        }
        let layout = &self.layout;
        let storage = with_elements!(self.storage.cpu(), v => match dtype {
            DType::F32 => CpuStorage::F32(map1(v, layout, |x| f32::from_f64(x.to_f64()))),
            DType::F64 => CpuStorage::F64(map1(v, layout, |x| x.to_f64())),
            DType::BF16 => CpuStorage::BF16(map1(v, layout, |x| half::bf16::from_f64(x.to_f64()))),
            DType::F16 => CpuStorage::F16(map1(v, layout, |x| half::f16::from_f64(x.to_f64()))),
            DType::U8 => CpuStorage::U8(map1(v, layout, |x| u8::from_f64(x.to_f64()))),
            DType::I64 => CpuStorage::I64(map1(v, layout, |x| i64::from_f64(x.to_f64()))),
        });
        self.with_storage(storage, self.shape())
    }

    /// A contiguous tensor with the same elements: `self` when already contiguous, else a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        if self.is_cuda() {
            return crate::cuda::elementwise::contiguous(self);
        }
        let layout = &self.layout;
        let storage =
            with_elements!(self.storage.cpu(), v => Element::into_storage(map1(v, layout, |x| x)));
        self.with_storage(storage, self.shape())
    }

    /// The same elements with `shape` (a view when the strides allow, else a copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        ensure_shape!(
            shape.iter().product::<usize>() == self.elem_count(),
            "reshape",
            "cannot reshape {:?} ({} elements) to {shape:?}",
            self.shape(),
            self.elem_count()
        );
        match self.layout.reshape(shape) {
            Some(layout) => Ok(self.view(layout)),
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Flattens dims `from..` into one.
    pub fn flatten_from(&self, from: usize) -> Result<Tensor> {
        ensure_shape!(
            from <= self.rank(),
            "flatten",
            "dim {from} out of range for shape {:?}",
            self.shape()
        );
        let mut shape = self.shape()[..from].to_vec();
        shape.push(self.shape()[from..].iter().product());
        self.reshape(&shape)
    }

    /// A view with dims reordered: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.permute(dims)?))
    }

    /// A view with dims `a` and `b` swapped.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        let n = self.rank();
        ensure_shape!(
            a < n && b < n,
            "transpose",
            "dims {a} and {b} out of range for shape {:?}",
            self.shape()
        );
        let mut dims: Vec<usize> = (0..n).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// A view of `len` elements from `start` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        Ok(self.view(self.layout.narrow(dim, start, len)?))
    }

    /// Splits `dim` into `n` views of equal size (the last may be smaller), as torch.chunk.
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        let size = self.dim("chunk", dim)?;
        ensure_shape!(n > 0, "chunk", "cannot split into 0 chunks");
        self.split(size.div_ceil(n).max(1), dim)
    }

    /// Splits `dim` into views of `size` elements (the last may be smaller), as torch.split.
    pub fn split(&self, size: usize, dim: usize) -> Result<Vec<Tensor>> {
        let total = self.dim("split", dim)?;
        ensure_shape!(size > 0, "split", "split size must be positive");
        (0..total)
            .step_by(size)
            .map(|start| self.narrow(dim, start, size.min(total - start)))
            .collect()
    }

    /// A view broadcast to `shape` (broadcast dims get stride 0).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.broadcast_as(shape)?))
    }

    /// A view with a size-1 dim inserted at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        Ok(self.view(self.layout.unsqueeze(dim)?))
    }

    /// A view with the size-1 dim `dim` removed.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        Ok(self.view(self.layout.squeeze(dim)?))
    }

    /// Checks that `other` has this tensor's dtype and device, for binary ops.
    pub(crate) fn same_kind(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DType {
                op,
                msg: format!(
                    "operands are {} and {}, expected the same dtype",
                    self.dtype(),
                    other.dtype()
                ),
            });
        }
        self.same_device(op, other)
    }

    /// Checks that `other` lives on this tensor's device.
    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device != other.device {
            return Err(Error::Device {
                op,
                device: other.device,
                msg: format!("expected {}, the device of the other operand", self.device),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {}, {}]",
            self.shape(),
            self.dtype(),
            self.device
        )?;
        if self.elem_count() <= 16 {
            if let Ok(v) = self.to_f64_vec() {
                write!(f, " {v:?}")?;
            }
        }
        Ok(())
    }
}
