//! Shared pieces of the gradient-check cases.
//!
//! The cases are built and checked on one thread, on the device [`on_device`] names for it (the
//! CPU unless told): every tensor the helpers here make goes there, inputs and the constants the
//! case functions make alike, so the same cases serve the CPU and the CUDA run.

use std::cell::Cell;

use autograd::check::CheckOptions;
use autograd::Var;
use tensor::{DType, Device, Generator, Result, Tensor};

thread_local! {
    static DEVICE: Cell<Device> = const { Cell::new(Device::Cpu) };
}

/// The device this thread's cases are made on.
pub fn device() -> Device {
    DEVICE.with(Cell::get)
}

/// Runs `f` with this thread's cases made on `device`, then goes back to the previous one.
pub fn on_device<R>(device: Device, f: impl FnOnce() -> R) -> R {
    let previous = DEVICE.with(|d| d.replace(device));
    struct Restore(Device);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEVICE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// `t` on this thread's case device.
pub fn here(t: Tensor) -> Tensor {
    t.to_device(device()).unwrap()
}

/// The function under check.
pub type CheckFn = Box<dyn Fn(&[Var]) -> Result<Var>>;

/// One gradient check: a function of some inputs.
pub struct Case {
    /// What the case exercises.
    pub name: String,
    /// The inputs (float ones are differentiated).
    pub inputs: Vec<Tensor>,
    /// The function.
    pub f: CheckFn,
    /// Options other than the defaults, where the op needs them.
    pub opts: Option<CheckOptions>,
}

/// A case with default options.
pub fn case(name: &str, inputs: Vec<Tensor>, f: impl Fn(&[Var]) -> Result<Var> + 'static) -> Case {
    Case {
        name: name.into(),
        inputs,
        f: Box::new(f),
        opts: None,
    }
}

/// Standard normal f64 values.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(
        shape,
        0.0,
        1.0,
        DType::F64,
        device(),
        &mut Generator::new(seed),
    )
    .unwrap()
}

/// Uniform f64 values in [lo, hi).
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    Tensor::rand(
        shape,
        lo,
        hi,
        DType::F64,
        device(),
        &mut Generator::new(seed),
    )
    .unwrap()
}

/// An i64 tensor.
pub fn ids(values: &[i64], shape: &[usize]) -> Tensor {
    here(Tensor::from_slice(values, shape).unwrap())
}
