//! Transfer methods as data for one trainer (see `../shared/DESIGN.md`, "Transfer methods").
//!
//! A run's transfer is two independent choices, so that any method combines with any set of
//! trained parameters:
//! - [`Method`]: the objective: which data [`Stream`]s a step draws (each with its share of the
//!   batch, timestep sampler, labels and loss weight), and its extra loss [`Term`]s against a
//!   frozen copy of the starting model, and what it adds to the model. Today `standard` (the
//!   model's own loss, optionally with a consistency term), `diff-tuning` (a target and a
//!   knowledge-bank stream) and `deme` (one timestep range, a consistency term, channel-wise
//!   projections; [`merge`] combines the runs of all ranges) and `anl` (modules that read an
//!   image encoder's embedding, over a frozen U-Net); the papers' other methods join them as
//!   variants with their options;
//! - [`Trainable`]: which parameters train (`full`, `lora`, `bitfit`, `difffit`, `none`) and what that
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

pub mod bank;
pub mod forgetting;
pub mod merge;
mod streams;
mod trainable;

use models::ParamStore;
use serde::{Deserialize, Serialize};
use tensor::{Error, Result};

use crate::run::Network;

pub use streams::{Stream, StreamData};
pub use trainable::{Trainable, TrainableReport};

/// The training objective of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Method {
    /// DiT's own objective: timesteps uniform over the process, the per-sample diffusion loss
    /// (MSE on the noise, plus the variational bound when the model learns sigma) averaged over
    /// the batch, labels dropped to the null class at the model's `class_dropout_prob`.
    Standard {
        /// The weight of a consistency loss against the frozen starting model (`init`): the
        /// mean squared distance of the two predictions on the same input (DeMe's, which keeps
        /// the model near where it started); 0, the default, for none.
        #[serde(default, skip_serializing_if = "is_zero")]
        consistency: f64,
    },
    /// Diff-Tuning ("Diffusion Tuning: Transferring Diffusion Models via Chain of Forgetting",
    /// arXiv 2406.00773), its sampled form as in the official code: each step takes
    /// `floor(batch_size * bank_share)` images of a knowledge `bank` (with the null label,
    /// timesteps drawn with p(t) ∝ (T - t)^tau_retention: retention near the data) and the rest
    /// from the target data (p(t) ∝ (t + 1)^tau: adaptation far from it); the loss is
    /// `mean(target) + lambda * mean(bank)`. The `weighted` form (see [`DiffTuningForm`]) draws
    /// both streams' timesteps uniformly and weights their losses instead.
    DiffTuning {
        /// The knowledge bank: a data source (`fashion-mnist`, an image folder, ...): images
        /// sampled from the pretrained model, or real source images.
        bank: String,
        /// The bank's share `r` of each batch.
        #[serde(default = "DiffTuning::share")]
        bank_share: f64,
        /// The weight `lambda` of the retention loss.
        #[serde(default = "DiffTuning::lambda")]
        lambda: f64,
        /// The exponent of the adaptation sampler.
        #[serde(default = "DiffTuning::tau")]
        tau: f64,
        /// The exponent of the retention sampler (`tau` when absent; the sampled form only).
        #[serde(default)]
        tau_retention: Option<f64>,
        /// How the chain of forgetting enters the loss: `sampled` (the default) or `weighted`.
        #[serde(default, skip_serializing_if = "DiffTuningForm::is_sampled")]
        form: DiffTuningForm,
    },
    /// DeMe ("Decouple-Then-Merge", CVPR 2025): fine-tunes the starting model on one of
    /// `ranges` equal timestep ranges of [0, T) (range 0 nearest the data, see [`deme_range`]),
    /// with probability `full_prob` per batch on all of [0, T) instead (antithetic pairs, see
    /// [`crate::diffusion::TimestepSampler::Range`]), a consistency loss against the frozen starting model, and
    /// channel-wise projections that train with the model. `difftune merge` combines the runs of
    /// all ranges.
    Deme {
        /// N, the number of ranges.
        ranges: usize,
        /// The range this run trains on, 0 to N - 1.
        range: usize,
        /// The probability p of a batch from all of [0, T): 0.3 as in the official church
        /// script (the code's default is 0.5).
        #[serde(default = "Deme::full_prob")]
        full_prob: f64,
        /// The consistency loss's weight (0 for none).
        #[serde(default = "Deme::consistency")]
        consistency: f64,
        /// Whether to add channel-wise projections (identity at first).
        #[serde(default = "Deme::projection")]
        projection: bool,
    },
    /// ANL transfer ("Transferring Pretrained Diffusion Probabilistic Models", OpenReview
    /// 8u9eXwu5GAb): Attention-NonLinear modules after every residual block of the U-Net (see
    /// [`models::anl`]) read the `encoder`'s embedding of an image: in training the image being
    /// denoised, at sampling a target image of the asked class (masked sampling hides a
    /// fraction of its tokens). Only the modules train: use it with `trainable.kind` `none`.
    /// The frozen U-Net runs on its null class (its class table knows the source's classes,
    /// not the target's): the condition image carries the semantics, and classifier-free
    /// guidance has nothing to act on.
    Anl {
        /// The frozen image encoder (a file of `difftune encoder train`); absent: the paper's
        /// unconditional variant, whose modules attend over the feature map itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoder: Option<String>,
        /// What of the encoder's output the modules read: its token `sequence` or its `pooled`
        /// embedding (one token).
        #[serde(default, skip_serializing_if = "AnlTokens::is_sequence")]
        tokens: AnlTokens,
        /// Attention heads; they divide every level's channels.
        #[serde(default = "Anl::heads")]
        heads: usize,
        /// The MLP's hidden width in multiples of the block's channels.
        #[serde(default = "Anl::mlp_ratio")]
        mlp_ratio: usize,
        /// Whether the non-linear mapping follows the attention (`false`: the ablation).
        #[serde(default = "Anl::nonlinear")]
        nonlinear: bool,
    },
}

/// What of an image encoder's output ANL modules read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnlTokens {
    /// The token sequence `[S, E]`.
    #[default]
    Sequence,
    /// The pooled embedding, as one token.
    Pooled,
}

impl AnlTokens {
    fn is_sequence(&self) -> bool {
        *self == AnlTokens::Sequence
    }
}

/// Our defaults for [`Method::Anl`] (the paper gives none).
struct Anl;

impl Anl {
    fn heads() -> usize {
        4
    }
    fn mlp_ratio() -> usize {
        4
    }
    fn nonlinear() -> bool {
        true
    }
}

/// The official code's defaults for [`Method::Deme`].
struct Deme;

impl Deme {
    fn full_prob() -> f64 {
        0.3
    }
    fn consistency() -> f64 {
        1.0
    }
    fn projection() -> bool {
        true
    }
}

/// The steps `lo..hi` of range `range` of `ranges` equal ranges of `steps` timesteps (equal up
/// to one step where `ranges` does not divide `steps`).
pub fn deme_range(ranges: usize, range: usize, steps: usize) -> (usize, usize) {
    (range * steps / ranges, (range + 1) * steps / ranges)
}

/// The two forms of Diff-Tuning's objective.
///
/// With T steps and psi(t) = ((t + 1) / (T + 1))^tau in (0, 1):
/// - `sampled` (the official code's): target timesteps drawn with p(t) ∝ (t + 1)^tau, bank
///   timesteps with p(t) ∝ (T - t)^tau_retention, each stream's losses averaged;
/// - `weighted` (the paper's equation): both streams' timesteps uniform, each target loss
///   weighted by psi(t) / c and each bank loss by (1 - psi(t)) / c, c the mean of psi over t (so
///   the target's weights average 1).
///
/// In expectation the target terms are equal for every tau (psi is the sampled density up to
/// c). The bank terms are equal only at tau = 1, where 1 - psi(t) ∝ T - t and the bank's weights
/// average 1 too; elsewhere each form normalises its own distribution and the two differ in shape
/// and in the bank's total weight (at tau = 0 the weighted form has no retention at all, the
/// sampled form a uniform one). The weighted form's variance is higher: every step spends its
/// images on all timesteps, some with little weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffTuningForm {
    /// Timesteps drawn from each stream's own distribution; losses averaged.
    #[default]
    Sampled,
    /// Timesteps uniform; losses weighted by psi(t) on the target, 1 - psi(t) on the bank.
    Weighted,
}

impl DiffTuningForm {
    fn is_sampled(&self) -> bool {
        *self == DiffTuningForm::Sampled
    }
}

/// The official code's defaults for [`Method::DiffTuning`].
struct DiffTuning;

impl DiffTuning {
    fn share() -> f64 {
        0.2
    }
    fn lambda() -> f64 {
        0.1
    }
    fn tau() -> f64 {
        1.0
    }
}

impl Default for Method {
    fn default() -> Self {
        Method::Standard { consistency: 0.0 }
    }
}

impl Method {
    /// The method's name, as the config spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Standard { .. } => "standard",
            Method::DiffTuning { .. } => "diff-tuning",
            Method::Deme { .. } => "deme",
            Method::Anl { .. } => "anl",
        }
    }

    /// Every method's name.
    pub const NAMES: [&'static str; 4] = ["standard", "diff-tuning", "deme", "anl"];

    /// The method of `name` with its default options (an error for a method with a required
    /// option, naming it).
    pub fn from_name(name: &str) -> Result<Method> {
        serde_json::from_value(serde_json::json!({ "name": name })).map_err(|e| {
            if Method::NAMES.contains(&name) {
                Error::msg(format!(
                    "method `{name}` needs options in the config's `method` object: {e}"
                ))
            } else {
                Error::msg(format!(
                    "unknown method `{name}`; the methods are: {}",
                    Method::NAMES.join(", ")
                ))
            }
        })
    }

    /// Checks the options, naming the offending key as `method.<key>`.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::msg(format!("config `method.{key}`: {msg}")));
        let weight = |consistency: f64| match consistency >= 0.0 && consistency.is_finite() {
            true => Ok(()),
            false => bad(
                "consistency",
                format!("must be finite and >= 0, got {consistency}"),
            ),
        };
        match self {
            Method::Standard { consistency } => weight(*consistency),
            Method::Deme {
                ranges,
                range,
                full_prob,
                consistency,
                projection: _,
            } => {
                if *ranges == 0 {
                    return bad("ranges", "must be at least 1".into());
                }
                if range >= ranges {
                    return bad(
                        "range",
                        format!(
                            "is {range}, but the {ranges} ranges are numbered 0 to {}",
                            ranges - 1
                        ),
                    );
                }
                if !(0.0..=1.0).contains(full_prob) {
                    return bad(
                        "full_prob",
                        format!("must be a probability in [0, 1], got {full_prob}"),
                    );
                }
                weight(*consistency)
            }
            Method::Anl {
                encoder,
                heads,
                mlp_ratio,
                ..
            } => {
                if encoder.as_deref().is_some_and(|e| e.trim().is_empty()) {
                    return bad(
                        "encoder",
                        "is empty; name an encoder file, or leave the key out for the \
                         unconditional variant"
                            .into(),
                    );
                }
                for (key, v) in [("heads", heads), ("mlp_ratio", mlp_ratio)] {
                    if *v == 0 {
                        return bad(key, "must be at least 1".into());
                    }
                }
                Ok(())
            }
            Method::DiffTuning {
                bank,
                bank_share,
                lambda,
                tau,
                tau_retention,
                form,
            } => {
                if *form == DiffTuningForm::Weighted && tau_retention.is_some() {
                    return bad(
                        "tau_retention",
                        "applies to the sampled form only; the weighted form weights the bank \
                         by 1 - psi(t)"
                            .into(),
                    );
                }
                if bank.is_empty() {
                    return bad(
                        "bank",
                        "is empty; name a data source or image folder".into(),
                    );
                }
                // Below 1, floor(B r) < B: at least one target image per step.
                if !(0.0..1.0).contains(bank_share) {
                    return bad(
                        "bank_share",
                        format!("must lie in [0, 1) to leave target images, got {bank_share}"),
                    );
                }
                if !(*lambda >= 0.0 && lambda.is_finite()) {
                    return bad("lambda", format!("must be finite and >= 0, got {lambda}"));
                }
                for (key, v) in [("tau", Some(*tau)), ("tau_retention", *tau_retention)] {
                    match v {
                        Some(v) if v.is_nan() || v.abs() > 10.0 => {
                            return bad(key, format!("must lie in [-10, 10], got {v}"))
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A loss term beside the streams' diffusion losses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Term {
    /// `weight` × the mean squared distance between the model's prediction and that of a
    /// frozen copy of the model the run started from (`init`), on the same noisy images,
    /// timesteps and (dropped) labels.
    Consistency {
        /// The term's weight.
        weight: f64,
    },
}

impl Method {
    /// The extra loss terms of the method.
    pub fn terms(&self) -> Vec<Term> {
        match self {
            Method::Standard { consistency } | Method::Deme { consistency, .. }
                if *consistency > 0.0 =>
            {
                vec![Term::Consistency {
                    weight: *consistency,
                }]
            }
            _ => vec![],
        }
    }
}

impl Method {
    /// Adds what the method adds to the model (DeMe's projections), trainable; returns their
    /// names.
    pub fn add_parameters(&self, network: &Network, ps: &mut ParamStore) -> Result<Vec<String>> {
        match self {
            Method::Deme {
                projection: true, ..
            } => models::projection::add_projections(ps, &network.projections()),
            Method::Anl { .. } => match network.anl() {
                Some(anl) => anl.add_parameters(ps),
                None => Err(Error::msg(
                    "config `method`: anl needs a U-Net (`model.kind` unet)",
                )),
            },
            _ => Ok(Vec::new()),
        }
    }

    /// Adds what this method and the `trainable` kind add to `network`'s parameters in `ps`
    /// and sets which train: the kind first, then the method's additions, which always train.
    pub fn prepare(
        &self,
        trainable: &Trainable,
        network: &Network,
        ps: &mut ParamStore,
    ) -> Result<TrainableReport> {
        match (self, trainable) {
            (Method::Anl { .. }, Trainable::Full {}) => {
                return Err(Error::msg(
                    "config `trainable`: anl trains its modules over a frozen U-Net; set \
                     `trainable.kind` to `none` (the paper's), or lora/bitfit to tune the base too",
                ))
            }
            (Method::Standard { .. } | Method::DiffTuning { .. }, Trainable::None {}) => {
                return Err(Error::msg(format!(
                    "config `trainable.kind`: `none` trains only what the method adds, and \
                     method `{}` adds nothing",
                    self.name()
                )))
            }
            _ => {}
        }
        let mut report = trainable.apply(network, ps)?;
        let added = self.add_parameters(network, ps)?;
        if !added.is_empty() {
            report.added.extend(added);
            report.added.sort();
            report.trainable = ps.trainable_count();
            report.total = ps.param_count();
        }
        Ok(report)
    }
}

/// Bank images in a batch of `batch_size` at share `r`: `floor(batch_size * r)`.
fn bank_images(batch_size: usize, r: f64) -> usize {
    (batch_size as f64 * r).floor() as usize
}
