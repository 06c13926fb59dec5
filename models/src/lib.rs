//! # models
//!
//! Neural-network blocks ([`nn`]) and the diffusion models built from them, with parameters in a
//! [`ParamStore`] under the reference checkpoint names, so that real checkpoints load unchanged.

pub mod dit;
pub mod nn;
pub mod params;
pub mod parity;
pub mod peft;

pub use params::{LoadReport, ParamStore};
