//! What the CUDA parity tests of every op family share: the device (or a visible skip), random
//! inputs, and comparison against the CPU.

use crate::{DType, Device, Tensor};

/// `cuda:0`, or `None` (with a note) where this machine has no usable GPU.
pub(crate) fn cuda() -> Option<Device> {
    match super::gpu(0) {
        Ok(_) => Some(Device::Cuda(0)),
        Err(e) => {
            eprintln!("skipped, no GPU: {e}");
            None
        }
    }
}

pub(crate) fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::standard_normal(shape, seed).unwrap()
}

/// Asserts `|got - want| <= tol · (1 + |want|)` elementwise (and equal shapes).
pub(crate) fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

/// The tolerance for `dtype` (bf16/f16 compare with a CPU f32 product of the rounded inputs).
pub(crate) fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 1e-4,
        DType::F16 => 4e-3,
        _ => 3e-2,
    }
}

/// `f` on the CPU in f32/f64 (inputs rounded to `dtype` first) and on `dev` in `dtype`.
pub(crate) fn both(
    dev: Device,
    dtype: DType,
    inputs: &[&Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Tensor) {
    let cpu_type = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let rounded: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(dtype).unwrap()).collect();
    let on_cpu: Vec<Tensor> = rounded
        .iter()
        .map(|t| t.to_dtype(cpu_type).unwrap())
        .collect();
    let on_gpu: Vec<Tensor> = rounded.iter().map(|t| t.to_device(dev).unwrap()).collect();
    let got = f(&on_gpu);
    assert_eq!(got.device(), dev);
    assert_eq!(got.dtype(), dtype);
    (got.to_device(Device::Cpu).unwrap(), f(&on_cpu))
}
