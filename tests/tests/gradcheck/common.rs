//! Shared pieces of the gradient-check cases.

use autograd::check::CheckOptions;
use autograd::Var;
use tensor::{DType, Device, Generator, Result, Tensor};

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
        Device::Cpu,
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
        Device::Cpu,
        &mut Generator::new(seed),
    )
    .unwrap()
}

/// An i64 tensor.
pub fn ids(values: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape).unwrap()
}
