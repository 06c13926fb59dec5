//! # train
//!
//! What drives the models: optimizers, plots and files, and the end-to-end runs of the `difftune`
//! binary. Today it holds [`toy`], a complete 2-D diffusion model trained with difftune's own
//! autograd (the README's main job until the Fashion-MNIST training lands).

pub mod data;
pub mod diffusion;
pub mod encoders;
pub mod eval;
pub mod files;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod run;
pub mod study;
pub mod toy;
