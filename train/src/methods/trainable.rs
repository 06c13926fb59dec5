//! Which parameters train: the PEFT axis of a run, orthogonal to its [`super::Method`].

use models::peft::{add_lora, bitfit, difffit};
use models::ParamStore;
use serde::{Deserialize, Serialize};
use tensor::{Error, Result};

use crate::run::Network;

/// Which parameters of the model train, and what that adds to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Trainable {
    /// Every parameter (but DiT's fixed position table).
    Full {},
    /// LoRA factors on the weights matching `targets`, everything else frozen. `B` starts at
    /// zero, so training starts at the pretrained model; merged into the weights on export.
    Lora {
        /// Rank of the factors.
        #[serde(default = "default_rank")]
        rank: usize,
        /// Scale numerator: the update is `(alpha / rank) B A`.
        #[serde(default = "default_rank_f64")]
        alpha: f64,
        /// Weight-name patterns (`*` wildcards) that get factors; absent or empty: the model's
        /// own choice (DiT: its blocks' attention and MLP weights; U-Net: its attention
        /// projections).
        #[serde(default)]
        targets: Vec<String>,
    },
    /// BitFit: only biases train.
    Bitfit {},
    /// DiffFit: biases, norm weights, the class embedding and a learned scale per block
    /// (initialised to 1) train.
    Difffit {},
    /// Nothing of the model: only what the method adds trains (ANL's modules, DeMe's
    /// projections).
    None {},
}

impl Default for Trainable {
    fn default() -> Self {
        Trainable::Full {}
    }
}

fn default_rank() -> usize {
    4
}

fn default_rank_f64() -> f64 {
    4.0
}

/// What [`Trainable::apply`] did to a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainableReport {
    /// The parameters it added (LoRA factors, DiffFit scales): the only ones a pretrained
    /// checkpoint may lack.
    pub added: Vec<String>,
    /// Scalars that train.
    pub trainable: usize,
    /// Scalars in all.
    pub total: usize,
}

impl TrainableReport {
    /// The share of scalars that train, in [0, 1].
    pub fn share(&self) -> f64 {
        self.trainable as f64 / self.total.max(1) as f64
    }
}

impl std::fmt::Display for TrainableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} parameters train ({:.2}%)",
            self.trainable,
            self.total,
            100.0 * self.share()
        )
    }
}

impl Trainable {
    /// The kind's name, as the config spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Trainable::Full {} => "full",
            Trainable::Lora { .. } => "lora",
            Trainable::Bitfit {} => "bitfit",
            Trainable::Difffit {} => "difffit",
            Trainable::None {} => "none",
        }
    }

    /// Checks the options without a model.
    pub fn validate(&self) -> Result<()> {
        if let Trainable::Lora {
            rank,
            alpha,
            targets,
        } = self
        {
            let bad =
                |key: &str, msg: String| Error::msg(format!("config `trainable.{key}`: {msg}"));
            if *rank == 0 {
                return Err(bad("rank", "must be at least 1".into()));
            }
            if !(alpha.is_finite() && *alpha > 0.0) {
                return Err(bad("alpha", format!("must be positive, got {alpha}")));
            }
            if let Some(empty) = targets.iter().find(|t| t.trim().is_empty()) {
                return Err(bad("targets", format!("`{empty}` is not a weight pattern")));
            }
        }
        Ok(())
    }

    /// Adds what the kind needs to `network`'s parameters in `ps` and sets which train.
    pub fn apply(&self, network: &Network, ps: &mut ParamStore) -> Result<TrainableReport> {
        self.validate()?;
        let before: Vec<String> = ps.names().map(str::to_string).collect();
        match self {
            Trainable::Full {} => {}
            Trainable::Lora {
                rank,
                alpha,
                targets,
            } => {
                ps.set_trainable("*", false);
                let targets = match targets.is_empty() {
                    true => network.lora_targets(),
                    false => targets.clone(),
                };
                for pattern in &targets {
                    // A pattern that matches nothing is a typo, not a choice.
                    if add_lora(ps, pattern, *rank, *alpha)? == 0 {
                        return Err(Error::msg(format!(
                            "config `trainable.targets`: `{pattern}` matches no Linear or Conv2d \
                             weight of the model (DiT's are e.g. blocks.0.attn.qkv.weight, the \
                             U-Net's down_blocks.1.attentions.0.to_q.weight)"
                        )));
                    }
                }
            }
            Trainable::Bitfit {} => {
                bitfit(ps);
            }
            Trainable::Difffit {} => {
                difffit(ps, &network.difffit_scales()?)?;
            }
            Trainable::None {} => {
                ps.set_trainable("*", false);
            }
        }
        Ok(TrainableReport {
            added: ps
                .names()
                .filter(|n| before.binary_search_by(|b| b.as_str().cmp(n)).is_err())
                .map(str::to_string)
                .collect(),
            trainable: ps.trainable_count(),
            total: ps.param_count(),
        })
    }
}
