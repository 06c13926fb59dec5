//! The optimizer side of training, over a [`ParamStore`](models::ParamStore) and its trainable
//! flags: frozen parameters get no optimizer state, no update and no EMA copy.
//!
//! - [`AdamW`]: Adam with decoupled weight decay (PyTorch's formula), state saved and resumed
//!   bit for bit.
//! - [`Ema`]: an exponential moving average of the trainable parameters, with optional warmup.
//! - [`LrSchedule`]: linear warmup, then constant or cosine to a floor, as a pure function of
//!   the step.
//! - [`clip_grad_norm`]: global L2 gradient-norm clipping over the trainable parameters.
//!
//! One step of a training loop:
//!
//! ```
//! use models::ParamStore;
//! use tensor::{DType, Device, Tensor};
//! use train::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema, LrSchedule};
//!
//! let mut store = ParamStore::new(DType::F32, Device::Cpu, 0);
//! store.normal("w", &[4], 1.0).unwrap();
//! let mut opt = AdamW::new(AdamWConfig::default());
//! let mut ema = Ema::new(&store, 0.9999);
//! let schedule = LrSchedule::constant(1e-4, 100);
//! for _ in 0..3 {
//!     let loss = store.var("w").unwrap().square().unwrap().sum_all().unwrap();
//!     let mut grads = loss.backward().unwrap();
//!     let _norm = clip_grad_norm(&store, &mut grads, 1.0).unwrap();
//!     opt.config.lr = schedule.lr_at(opt.steps());
//!     opt.step(&mut store, &grads).unwrap();
//!     ema.update(&store).unwrap();
//! }
//! assert_eq!(opt.steps(), 3);
//! ```

mod adamw;
mod clip;
mod ema;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamGroup};
pub use clip::{clip_grad_norm, grad_norm};
pub use ema::{Ema, EmaWarmup};
pub use schedule::{Decay, LrSchedule};

use std::collections::HashMap;
use std::path::Path;

use tensor::Error;

/// The trainable parameter names of a store, sorted.
fn trainable_names(store: &models::ParamStore) -> Vec<String> {
    store
        .iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(name, _)| name.to_string())
        .collect()
}

/// A format error about the file at `path`.
fn format_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The metadata entry `key` of a state file, parsed.
fn metadata_value<T: std::str::FromStr>(
    path: &Path,
    metadata: &HashMap<String, String>,
    key: &str,
) -> tensor::Result<T> {
    let raw = metadata
        .get(key)
        .ok_or_else(|| format_error(path, format!("metadata `{key}` is missing")))?;
    raw.parse()
        .map_err(|_| format_error(path, format!("metadata `{key}` = `{raw}` does not parse")))
}
