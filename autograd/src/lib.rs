//! # autograd
//!
//! Reverse-mode automatic differentiation on top of [`tensor`]. A [`Var`] is a tensor plus its
//! place on the tape; every op on Vars records its gradient function beside its forward (see
//! `ops/`), [`Var::backward`] walks the tape in reverse and returns [`Grads`] keyed by Var, and
//! [`check::gradcheck`] compares any function's gradients with central finite differences.
//!
//! ```
//! use autograd::Var;
//! use tensor::Tensor;
//! let w = Var::param(Tensor::from_vec(vec![0.5f64, -1.0], &[2, 1]).unwrap());
//! let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
//! let loss = x.matmul(&w).unwrap().square().unwrap().mean_all().unwrap();
//! let grads = loss.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap().shape(), &[2, 1]);
//! ```

pub mod check;
mod checkpoint;
mod ops;
mod var;

pub use checkpoint::checkpoint;
pub use ops::Op;
pub use var::{is_grad_enabled, no_grad, BackwardFn, Grads, Var};
