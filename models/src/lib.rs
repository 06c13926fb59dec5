//! # models
//!
//! Neural-network blocks ([`nn`], and diffusers' residual, attention and resampling [`blocks`]) and
//! the diffusion models built from them: [`dit::Dit`] (facebookresearch/DiT),
//! [`unet::UNet2DModel`] and [`vae::AutoencoderKL`] (diffusers); [`inception::InceptionV3`] is the
//! FID feature network of pytorch-fid. Parameters live in a
//! [`ParamStore`] under the reference checkpoint names, so real checkpoints load unchanged;
//! [`peft`] adds LoRA and BitFit, [`projection`] DeMe's channel-wise projections, [`anl`] the ANL transfer modules, [`parity`] checks a model against a reference fixture;
//! [`classifier::Classifier`] is the small CNN whose features the evaluation metrics use.

pub mod anl;
pub mod blocks;
pub mod classifier;
pub mod config;
pub mod dit;
pub mod encoder;
pub mod inception;
pub mod nn;
pub mod params;
pub mod parity;
pub mod peft;
pub mod projection;
pub mod unet;
pub mod vae;

pub use params::{LoadReport, ParamStore};
