//! Transfer methods as data for one trainer (see `../shared/DESIGN.md`, "Transfer methods").
//!
//! A run's transfer is two independent choices, so that any method combines with any set of
//! trained parameters:
//! - [`Method`]: the objective (today `standard`: DiT's own training loss, uniform timesteps, one
//!   data source; the papers' methods join it as variants with their options);
//! - [`Trainable`]: which parameters train (`full`, `lora`, `bitfit`, `difffit`) and what that
//!   adds to the model.
//!
//! In a config both are objects tagged by name; an option of another variant, or an unknown one,
//! is refused naming the key:
//!
//! ```
//! use train::run::RunConfig;
//! let c = RunConfig::from_json_str(
//!     r#"{ "method": { "name": "standard" },
//!          "trainable": { "kind": "lora", "rank": 8, "alpha": 8 } }"#,
//! ).unwrap();
//! assert_eq!(c.trainable.name(), "lora");
//! for bad in [
//!     r#"{ "trainable": { "kind": "bitfit", "rank": 8 } }"#,
//!     r#"{ "trainable": { "kind": "lora", "rank": 8, "tau": 1 } }"#,
//!     r#"{ "method": { "name": "standard", "rank": 8 } }"#,
//! ] {
//!     let err = RunConfig::from_json_str(bad).unwrap_err().to_string();
//!     assert!(err.contains("unknown field"), "{err}");
//! }
//! ```

mod trainable;

use serde::{Deserialize, Serialize};

pub use trainable::{Trainable, TrainableReport};

/// The training objective of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Method {
    /// DiT's own objective: timesteps uniform over the process, the per-sample diffusion loss
    /// (MSE on the noise, plus the variational bound when the model learns sigma) averaged over
    /// the batch, labels dropped to the null class at the model's `class_dropout_prob`.
    Standard {},
}

impl Default for Method {
    fn default() -> Self {
        Method::Standard {}
    }
}

impl Method {
    /// The method's name, as the config spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Standard {} => "standard",
        }
    }

    /// Every method's name.
    pub const NAMES: [&'static str; 1] = ["standard"];

    /// The method of `name` with its default options.
    pub fn from_name(name: &str) -> tensor::Result<Method> {
        serde_json::from_value(serde_json::json!({ "name": name })).map_err(|_| {
            tensor::Error::msg(format!(
                "unknown method `{name}`; the methods are: {}",
                Method::NAMES.join(", ")
            ))
        })
    }
}
