//! [`DitConfig`]: the reference constructor's arguments, and what this project adds to them.

use std::fmt;

use tensor::{Error, Result};

use super::FREQUENCY_EMBEDDING_SIZE;
use crate::config::JsonConfig;

/// The arguments of the reference `DiT.__init__`, and the conditioning this project adds to
/// them (all off by default, so a reference config is the reference model).
///
/// Named configurations come from [`DitConfig::named`]; custom sizes are a struct update of one of
/// them (`DitConfig { input_size: 64, ..DitConfig::named("DiT-B/4")? }`) or a JSON object parsed
/// by [`DitConfig::from_json`]. [`Dit::new`](super::Dit::new) validates the result.
#[derive(Clone, Debug, PartialEq)]
pub struct DitConfig {
    /// Height and width of the (square) input, in pixels or latent cells.
    pub input_size: usize,
    /// Side of a square patch; each patch becomes one token.
    pub patch_size: usize,
    /// Channels of the input.
    pub in_channels: usize,
    /// Token width D.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block; must divide `hidden_size`.
    pub num_heads: usize,
    /// Hidden width of the MLP as a multiple of `hidden_size` (truncated, as `int(D * ratio)`).
    pub mlp_ratio: f64,
    /// Probability that a training label is replaced by the null class; when positive, the label
    /// table has a row for the null class (`num_classes`).
    pub class_dropout_prob: f64,
    /// Number of classes (labels `0..num_classes`).
    pub num_classes: usize,
    /// Whether the model also predicts the variance (output channels `2 · in_channels`).
    pub learn_sigma: bool,
    /// How the class reaches the blocks: the reference's adaLN sum, or class tokens behind
    /// attention (see [`Conditioning`]).
    pub conditioning: Conditioning,
    /// Tokens per class in the attention modes (each a row part of `y_embedder.token_table`).
    pub class_tokens: usize,
    /// Kinds of control metadata (0: none), e.g. the crop scale, offsets and flip the loader
    /// applied: each value is embedded (see [`super::control`]) and added to the adaLN vector.
    pub control_dim: usize,
    /// The shape α of each control kind's schedule γ(t) in the attention modes: one value for
    /// every kind, or one per kind (see [`super::control::gamma`]).
    pub control_alpha: Vec<f64>,
    /// T of the schedule γ(t): the diffusion's steps (timesteps are `0..T`).
    pub num_timesteps: usize,
    /// The position grid's scale: patch (i, j) is embedded at (i · s, j · s). 1 is the
    /// reference; `N_old / N_new` interpolates the grid of a model trained on `N_old` patches
    /// per side over `N_new` (resolution transfer) instead of extrapolating it.
    pub position_scale: f64,
}

/// How a DiT is conditioned on its class (arXiv 2411.03177 compares them). The timestep, and
/// control metadata where the model has it, always enter through adaLN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conditioning {
    /// The reference: the class embedding summed into the adaLN vector with the timestep (and
    /// the control embedding, unscheduled).
    #[default]
    AdaLn,
    /// `class_tokens` tokens per class, read by a cross-attention layer after each block's
    /// self-attention (`blocks.{i}.cross_attn.*`); the control embedding is scaled by γ(t).
    CrossAttention,
    /// The class tokens concatenated with the image tokens, through every block's
    /// self-attention and MLP (the blocks' own weights: DiT's in-context conditioning, the
    /// shared-weight form of MMDiT's joint attention), dropped before the final layer; the
    /// control embedding is scaled by γ(t).
    JointAttention,
}

impl Conditioning {
    /// The names of the modes, as configs spell them.
    pub const NAMES: [&'static str; 3] = ["adaln", "cross_attention", "joint_attention"];

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Conditioning::AdaLn => "adaln",
            Conditioning::CrossAttention => "cross_attention",
            Conditioning::JointAttention => "joint_attention",
        }
    }

    /// The mode named `name`; an unknown name is an error naming `key` and the modes.
    pub fn parse(name: &str, key: &str) -> Result<Conditioning> {
        match name {
            "adaln" => Ok(Conditioning::AdaLn),
            "cross_attention" => Ok(Conditioning::CrossAttention),
            "joint_attention" => Ok(Conditioning::JointAttention),
            other => Err(Error::msg(format!(
                "`{key}`: unknown conditioning mode `{other}`; expected {}",
                Conditioning::NAMES.join(", ")
            ))),
        }
    }

    /// Whether the class is read by attention (as tokens) rather than summed into adaLN.
    pub fn uses_tokens(self) -> bool {
        self != Conditioning::AdaLn
    }
}

impl Default for DitConfig {
    /// The reference's default arguments (DiT-XL/2 on 32×32×4 latents, 1000 classes).
    fn default() -> Self {
        DitConfig {
            input_size: 32,
            patch_size: 2,
            in_channels: 4,
            hidden_size: 1152,
            depth: 28,
            num_heads: 16,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 1000,
            learn_sigma: true,
            conditioning: Conditioning::AdaLn,
            class_tokens: 4,
            control_dim: 0,
            control_alpha: vec![1.0],
            num_timesteps: 1000,
            position_scale: 1.0,
        }
    }
}

/// The model sizes of the paper's Table 1: (name, depth, hidden size, heads).
const SIZES: [(&str, usize, usize, usize); 4] = [
    ("S", 12, 384, 6),
    ("B", 12, 768, 12),
    ("L", 24, 1024, 16),
    ("XL", 28, 1152, 16),
];

/// The JSON fields of a config, in the reference's argument order.
const FIELDS: [&str; 16] = [
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
    "conditioning",
    "class_tokens",
    "control_dim",
    "control_alpha",
    "num_timesteps",
    "position_scale",
];

fn config_error(msg: impl fmt::Display) -> Error {
    Error::msg(format!("DiT config: {msg}"))
}

impl DitConfig {
    /// One of the reference's `DiT_models`: `DiT-{S,B,L,XL}/{2,4,8}`, with the reference's
    /// defaults for everything else (32×32 input, 4 channels, 1000 classes, label dropout 0.1,
    /// learned sigma).
    pub fn named(name: &str) -> Result<DitConfig> {
        let unknown = || {
            let names: Vec<String> = SIZES
                .iter()
                .flat_map(|(s, ..)| [2, 4, 8].map(|p| format!("DiT-{s}/{p}")))
                .collect();
            config_error(format!(
                "unknown model `{name}`; the named models are {}",
                names.join(", ")
            ))
        };
        let (size, patch) = name
            .strip_prefix("DiT-")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(unknown)?;
        let &(_, depth, hidden_size, num_heads) = SIZES
            .iter()
            .find(|(s, ..)| *s == size)
            .ok_or_else(unknown)?;
        let patch_size = match patch {
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => return Err(unknown()),
        };
        Ok(DitConfig {
            patch_size,
            hidden_size,
            depth,
            num_heads,
            ..DitConfig::default()
        })
    }

    /// A config from a JSON object of the reference's constructor arguments (as the fixture
    /// metadata `config` holds them); absent keys take the reference's defaults. An unknown or
    /// mistyped key is an error naming it; the values are then [validated](DitConfig::validate).
    pub fn from_json(json: &str) -> Result<DitConfig> {
        let c = JsonConfig::parse("DiT", json, &FIELDS)?;
        let d = DitConfig::default();
        let cfg = DitConfig {
            input_size: c.usize("input_size", d.input_size)?,
            patch_size: c.usize("patch_size", d.patch_size)?,
            in_channels: c.usize("in_channels", d.in_channels)?,
            hidden_size: c.usize("hidden_size", d.hidden_size)?,
            depth: c.usize("depth", d.depth)?,
            num_heads: c.usize("num_heads", d.num_heads)?,
            mlp_ratio: c.f64("mlp_ratio", d.mlp_ratio)?,
            class_dropout_prob: c.f64("class_dropout_prob", d.class_dropout_prob)?,
            num_classes: c.usize("num_classes", d.num_classes)?,
            learn_sigma: c.bool("learn_sigma", d.learn_sigma)?,
            conditioning: Conditioning::parse(
                &c.string("conditioning", d.conditioning.name())?,
                "conditioning",
            )
            .map_err(config_error)?,
            class_tokens: c.usize("class_tokens", d.class_tokens)?,
            control_dim: c.usize("control_dim", d.control_dim)?,
            control_alpha: c.f64_list("control_alpha", &d.control_alpha)?,
            num_timesteps: c.usize("num_timesteps", d.num_timesteps)?,
            position_scale: c.f64("position_scale", d.position_scale)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as the reference's JSON object, with this project's keys where they differ
    /// from their defaults.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::json!({
            "input_size": self.input_size,
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "hidden_size": self.hidden_size,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "class_dropout_prob": self.class_dropout_prob,
            "num_classes": self.num_classes,
            "learn_sigma": self.learn_sigma,
        });
        let defaults = DitConfig::default().extensions();
        for ((key, value), (_, default)) in self.extensions().into_iter().zip(defaults) {
            if value != default {
                json[key] = value;
            }
        }
        json.to_string()
    }

    /// This project's keys with their values, in [`FIELDS`] order.
    fn extensions(&self) -> [(&'static str, serde_json::Value); 6] {
        [
            ("conditioning", self.conditioning.name().into()),
            ("class_tokens", self.class_tokens.into()),
            ("control_dim", self.control_dim.into()),
            ("control_alpha", self.control_alpha.clone().into()),
            ("num_timesteps", self.num_timesteps.into()),
            ("position_scale", self.position_scale.into()),
        ]
    }

    /// Checks that the sizes fit together; the error names the field and why.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("num_classes", self.num_classes),
            ("class_tokens", self.class_tokens),
            ("num_timesteps", self.num_timesteps),
        ] {
            if value == 0 {
                return Err(config_error(format!("`{field}` must be positive, got 0")));
            }
        }
        if !self.input_size.is_multiple_of(self.patch_size) {
            return Err(config_error(format!(
                "`input_size` {} is not divisible by `patch_size` {}",
                self.input_size, self.patch_size
            )));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(config_error(format!(
                "`hidden_size` {} is not divisible by `num_heads` {}",
                self.hidden_size, self.num_heads
            )));
        }
        if !self.hidden_size.is_multiple_of(4) {
            return Err(config_error(format!(
                "`hidden_size` {} must be divisible by 4 (the 2-D sin-cos position embedding \
                 gives each axis half the width, as sin and cos halves)",
                self.hidden_size
            )));
        }
        if !self.mlp_ratio.is_finite() || self.mlp_ratio <= 0.0 || self.mlp_hidden() == 0 {
            return Err(config_error(format!(
                "`mlp_ratio` must be positive and give an MLP at least 1 wide, got {}",
                self.mlp_ratio
            )));
        }
        if !(0.0..=1.0).contains(&self.class_dropout_prob) {
            return Err(config_error(format!(
                "`class_dropout_prob` must lie in [0, 1], got {}",
                self.class_dropout_prob
            )));
        }
        if self.control_alpha.len() != 1 && self.control_alpha.len() != self.control_dim {
            return Err(config_error(format!(
                "`control_alpha` has {} values; expected one, or one per control kind \
                 (`control_dim` {})",
                self.control_alpha.len(),
                self.control_dim
            )));
        }
        if let Some(bad) = self
            .control_alpha
            .iter()
            .find(|a| !(a.is_finite() && **a >= 0.0))
        {
            return Err(config_error(format!(
                "`control_alpha` values must be finite and >= 0, got {bad}"
            )));
        }
        if !(self.position_scale.is_finite() && self.position_scale > 0.0) {
            return Err(config_error(format!(
                "`position_scale` must be positive, got {}",
                self.position_scale
            )));
        }
        // Checked before any parameter is allocated: a config is user input.
        tensor::limits::MODEL_PARAMS.check(
            self.param_count() as u128,
            format!(
                "DiT config (hidden_size {}, depth {}, input_size {}, patch_size {})",
                self.hidden_size, self.depth, self.input_size, self.patch_size
            ),
        )
    }

    /// Output channels: `2 · in_channels` with `learn_sigma`, else `in_channels`.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Tokens per image T.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Hidden width of the MLP, `int(hidden_size * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Rows of the label table: one more than `num_classes` (the null class) when labels are
    /// dropped in training.
    pub fn label_rows(&self) -> usize {
        self.num_classes + usize::from(self.class_dropout_prob > 0.0)
    }

    /// Width of a class's row in the label table: `hidden_size`, or `class_tokens` tokens of it
    /// in the attention modes.
    pub fn label_width(&self) -> usize {
        match self.conditioning {
            Conditioning::AdaLn => self.hidden_size,
            _ => self.class_tokens.saturating_mul(self.hidden_size),
        }
    }

    /// Number of scalars in the model (`sum(p.numel() for p in model.parameters())` in the
    /// reference, which counts the fixed `pos_embed` too). Saturates at `usize::MAX` for sizes
    /// no machine could hold (a config is user input).
    pub fn param_count(&self) -> usize {
        // In u128 and saturating, so that no product of config sizes overflows.
        let w = |x: usize| x as u128;
        let mul = |xs: &[u128]| xs.iter().fold(1, |a: u128, &b| a.saturating_mul(b));
        let sum = |xs: &[u128]| xs.iter().fold(0, |a: u128, &b| a.saturating_add(b));
        let linear = |i: u128, o: u128| mul(&[i, o]).saturating_add(o);
        let (d, p, c) = (w(self.hidden_size), w(self.patch_size), w(self.in_channels));
        let (mlp, grid) = (w(self.mlp_hidden()), w(self.grid_size()));
        let out = c * (1 + u128::from(self.learn_sigma));
        let label_rows = w(self.num_classes) + u128::from(self.class_dropout_prob > 0.0);
        let cross = match self.conditioning {
            Conditioning::CrossAttention => sum(&[linear(d, d), linear(d, 2 * d), linear(d, d)]),
            _ => 0,
        };
        let control = mul(&[
            w(self.control_dim),
            sum(&[linear(w(super::control::FEATURES), d), linear(d, d)]),
        ]);
        let block = sum(&[
            cross,
            linear(d, 3 * d),
            linear(d, d),
            linear(d, mlp),
            linear(mlp, d),
            linear(d, 6 * d),
        ]);
        let total = sum(&[
            linear(mul(&[c, p, p]), d),             // x_embedder
            mul(&[grid, grid, d]),                  // pos_embed
            linear(w(FREQUENCY_EMBEDDING_SIZE), d), // t_embedder
            linear(d, d),
            mul(&[label_rows, w(self.label_width())]), // y_embedder
            control,                                   // control_embedder
            mul(&[w(self.depth), block]),              // blocks
            linear(d, mul(&[p, p, out])),              // final_layer
            linear(d, 2 * d),
        ]);
        usize::try_from(total).unwrap_or(usize::MAX)
    }
}
