//! # models
//!
//! Neural-network blocks ([`nn`]) and the diffusion models built from them, with parameters in a
//! [`ParamStore`] under the reference checkpoint names, so that real checkpoints load unchanged.

pub mod blocks;
pub mod config;
pub mod nn;
pub mod params;
pub mod peft;
pub mod unet;
pub mod vae;

pub use params::{LoadReport, ParamStore};
