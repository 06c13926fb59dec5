//! DiT: the Diffusion Transformer of Peebles & Xie, "Scalable Diffusion Models with Transformers",
//! as facebookresearch/DiT `models.py` defines it, in one file like the reference.
//!
//! An image (or latent) `[N, C, H, W]` is cut into `p × p` patches, each embedded as a token
//! (`PatchEmbed`); fixed 2-D sin-cos position embeddings are added; the timestep
//! (`TimestepEmbedder`) and the class label (`LabelEmbedder`, with a null class for
//! classifier-free guidance) are summed into a conditioning vector `c`; `depth` transformer blocks
//! modulated by `c` through adaLN-Zero (`DiTBlock`) process the tokens; `FinalLayer` maps each
//! token back to a patch, and `unpatchify` reassembles the image: `[N, out_channels, H, W]`, with
//! `out_channels = 2C` (noise and variance) when `learn_sigma`.
//!
//! Parameter names are the reference state dict's, so a DiT checkpoint loads unchanged:
//!
//! ```text
//! x_embedder.proj.{weight [D, C, p, p], bias}     pos_embed [1, T, D] (fixed, not trainable)
//! t_embedder.mlp.{0,2}.{weight, bias}              y_embedder.embedding_table.weight
//! blocks.{i}.attn.{qkv,proj}.{weight, bias}        blocks.{i}.mlp.{fc1,fc2}.{weight, bias}
//! blocks.{i}.adaLN_modulation.1.{weight, bias}     final_layer.linear.{weight, bias}
//! final_layer.adaLN_modulation.1.{weight, bias}
//! ```
//!
//! (`norm1`, `norm2` and `final_layer.norm_final` are LayerNorms without affine parameters, so
//! they own no tensors.)
//!
//! ```
//! use models::dit::{Dit, DitConfig};
//! use models::ParamStore;
//! use autograd::Var;
//! use tensor::{DType, Device, Tensor};
//!
//! let cfg = DitConfig {
//!     input_size: 8,
//!     in_channels: 4,
//!     hidden_size: 32,
//!     depth: 1,
//!     num_heads: 2,
//!     num_classes: 10,
//!     ..DitConfig::named("DiT-S/2").unwrap()
//! };
//! let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
//! let model = Dit::new(&mut ps, cfg).unwrap();
//! let x = Var::constant(Tensor::zeros(&[2, 4, 8, 8], DType::F32, Device::Cpu).unwrap());
//! let t = Tensor::from_vec(vec![10i64, 500], &[2]).unwrap();
//! let y = Tensor::from_vec(vec![3i64, 10], &[2]).unwrap(); // 10 = the null class
//! let out = model.forward(&ps, &x, &t, &y, None).unwrap();
//! assert_eq!(out.shape(), &[2, 8, 8, 8]);
//! ```

use std::fmt;

use autograd::{checkpoint, Var};
use tensor::{DType, Error, Generator, Result, Tensor};

use crate::config::JsonConfig;
use crate::nn::{sinusoidal_embedding_f32, Embedding, Linear, LinearVars};
use crate::params::{join, ParamStore};
use crate::projection::{project, projection_name, ProjectionPoint};

/// Size of the sinusoidal timestep features fed to the timestep MLP (the reference's
/// `frequency_embedding_size`).
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

/// The epsilon of every LayerNorm of the model.
const LN_EPS: f64 = 1e-6;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The arguments of the reference `DiT.__init__`.
///
/// Named configurations come from [`DitConfig::named`]; custom sizes are a struct update of one of
/// them (`DitConfig { input_size: 64, ..DitConfig::named("DiT-B/4")? }`) or a JSON object parsed
/// by [`DitConfig::from_json`]. [`Dit::new`] validates the result.
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
const FIELDS: [&str; 10] = [
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
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as the reference's JSON object.
    pub fn to_json(&self) -> String {
        serde_json::json!({
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
        })
        .to_string()
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
        let block = sum(&[
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
            mul(&[label_rows, d]),        // y_embedder
            mul(&[w(self.depth), block]), // blocks
            linear(d, mul(&[p, p, out])), // final_layer
            linear(d, 2 * d),
        ]);
        usize::try_from(total).unwrap_or(usize::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding layers
// ---------------------------------------------------------------------------------------------

/// A Linear with the reference's `_basic_init`: xavier-uniform weight, zero bias.
fn xavier_linear(
    ps: &mut ParamStore,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
) -> Result<Linear> {
    ps.uniform(
        &join(prefix, "weight"),
        &[out_dim, in_dim],
        xavier_bound(in_dim, out_dim),
    )?;
    ps.constant(&join(prefix, "bias"), &[out_dim], 0.0)?;
    Ok(Linear::existing(prefix, true))
}

/// A Linear whose weight and bias start at zero (adaLN-Zero, the output layer).
fn zero_linear(ps: &mut ParamStore, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    ps.constant(&join(prefix, "weight"), &[out_dim, in_dim], 0.0)?;
    ps.constant(&join(prefix, "bias"), &[out_dim], 0.0)?;
    Ok(Linear::existing(prefix, true))
}

/// The bound of `nn.init.xavier_uniform_`: √(6 / (fan_in + fan_out)).
fn xavier_bound(fan_in: usize, fan_out: usize) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}

/// timm's `PatchEmbed`: a `p × p` convolution with stride `p`, then flattened to tokens. A stride-p
/// convolution is exactly patchify (a reshape and a permute) followed by a matmul with the weight
/// viewed as `[D, C·p·p]`, which is how it is computed here.
struct PatchEmbed {
    weight: String,
    bias: String,
    patch: usize,
}

impl PatchEmbed {
    fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let (d, c, p) = (cfg.hidden_size, cfg.in_channels, cfg.patch_size);
        // xavier_uniform_ on the [D, C·p·p] view of the weight.
        ps.uniform(
            "x_embedder.proj.weight",
            &[d, c, p, p],
            xavier_bound(c * p * p, d),
        )?;
        ps.constant("x_embedder.proj.bias", &[d], 0.0)?;
        Ok(PatchEmbed {
            weight: "x_embedder.proj.weight".into(),
            bias: "x_embedder.proj.bias".into(),
            patch: p,
        })
    }

    /// `[N, C, H, W]` -> `[N, T, D]`, tokens in row-major patch order.
    fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p] -> [N, T, C·p·p]
        let patches = x
            .reshape(&[n, c, gh, p, gw, p])?
            .permute(&[0, 2, 4, 1, 3, 5])?
            .reshape(&[n, gh * gw, c * p * p])?;
        let weight = ps.weight(&self.weight)?;
        let d = weight.shape()[0];
        let weight = weight.reshape(&[d, c * p * p])?;
        patches
            .matmul(&weight.transpose(0, 1)?)?
            .add(&ps.weight(&self.bias)?)
    }
}

/// `TimestepEmbedder`: sinusoidal features of t (cos half first) through Linear, SiLU, Linear.
struct TimestepEmbedder {
    fc1: Linear,
    fc2: Linear,
}

impl TimestepEmbedder {
    fn new(ps: &mut ParamStore, hidden: usize) -> Result<Self> {
        let (f, d) = (FREQUENCY_EMBEDDING_SIZE, hidden);
        ps.normal("t_embedder.mlp.0.weight", &[d, f], 0.02)?;
        ps.constant("t_embedder.mlp.0.bias", &[d], 0.0)?;
        ps.normal("t_embedder.mlp.2.weight", &[d, d], 0.02)?;
        ps.constant("t_embedder.mlp.2.bias", &[d], 0.0)?;
        Ok(TimestepEmbedder {
            fc1: Linear::existing("t_embedder.mlp.0", true),
            fc2: Linear::existing("t_embedder.mlp.2", true),
        })
    }

    /// `[N]` (any numeric dtype) -> `[N, D]`.
    fn forward(&self, ps: &ParamStore, t: &Tensor) -> Result<Var> {
        let freq = timestep_embedding_f32(t, FREQUENCY_EMBEDDING_SIZE, 10000.0)?
            .to_device(ps.device())?
            .to_dtype(ps.compute_dtype())?;
        let h = self.fc1.forward(ps, &Var::constant(freq))?.silu()?;
        self.fc2.forward(ps, &h)
    }
}

/// The reference's `TimestepEmbedder.timestep_embedding(t, dim, max_period)` in its float32
/// arithmetic whatever the model's dtype (`t.float() * freqs`, then `[cos, sin]`): the diffusers
/// embedding with `flip_sin_to_cos` and no shift, rounded as PyTorch rounds. At t ≈ 1000 one ulp of
/// a frequency moves the argument by ~6e-5, so the rounding is part of the reference's function.
pub fn timestep_embedding_f32(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    sinusoidal_embedding_f32(t, dim, true, 0.0, max_period, DType::F32)
}

/// `LabelEmbedder`: a table of class embeddings, with label dropout to the null class
/// (`num_classes`) in training for classifier-free guidance.
struct LabelEmbedder {
    table: Embedding,
    num_classes: usize,
    rows: usize,
    dropout_prob: f64,
}

impl LabelEmbedder {
    fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let rows = cfg.label_rows();
        Ok(LabelEmbedder {
            table: Embedding::new(
                ps,
                "y_embedder.embedding_table",
                rows,
                cfg.hidden_size,
                0.02,
            )?,
            num_classes: cfg.num_classes,
            rows,
            dropout_prob: cfg.class_dropout_prob,
        })
    }

    /// `[N]` i64 -> `[N, D]`; labels are dropped only when training (a generator is given) and
    /// the dropout probability is positive.
    fn forward(&self, ps: &ParamStore, y: &Tensor, train: Option<&mut Generator>) -> Result<Var> {
        let labels = y.to_vec::<i64>()?;
        if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= self.rows) {
            let null = if self.rows > self.num_classes {
                format!(" or {} (the null class)", self.num_classes)
            } else {
                String::new()
            };
            return Err(Error::msg(format!(
                "DiT forward: label {bad} is out of range; labels are 0..{}{null}",
                self.num_classes
            )));
        }
        let y = match train {
            Some(gen) if self.dropout_prob > 0.0 => {
                drop_labels(y, self.dropout_prob, self.num_classes, gen)?
            }
            _ => y.clone(),
        };
        self.table.forward(ps, &y)
    }
}

/// The reference's `token_drop`: each label is replaced by `null_class` with probability `p`
/// (`torch.rand(N) < p`), drawn from `gen`. `labels`: `[N]` i64.
pub fn drop_labels(
    labels: &Tensor,
    p: f64,
    null_class: usize,
    gen: &mut Generator,
) -> Result<Tensor> {
    let u = Tensor::rand(labels.shape(), 0.0, 1.0, DType::F64, labels.device(), gen)?;
    let drop: Vec<bool> = u.to_vec::<f64>()?.into_iter().map(|u| u < p).collect();
    force_drop_labels(labels, &drop, null_class)
}

/// The reference's `token_drop` with `force_drop_ids`: label n is replaced by `null_class` where
/// `drop[n]`. A training step with a given dropout mask feeds these labels to
/// [`Dit::forward`] without a generator. `labels`: `[N]` i64, `drop`: N flags.
pub fn force_drop_labels(labels: &Tensor, drop: &[bool], null_class: usize) -> Result<Tensor> {
    if labels.shape() != [drop.len()] {
        return Err(Error::shape(
            "force_drop_labels",
            format!(
                "labels {:?} and a mask of {} flags differ",
                labels.shape(),
                drop.len()
            ),
        ));
    }
    let dropped: Vec<i64> = labels
        .to_vec::<i64>()?
        .into_iter()
        .zip(drop)
        .map(|(l, &d)| if d { null_class as i64 } else { l })
        .collect();
    Tensor::from_vec(dropped, labels.shape())?.to_device(labels.device())
}

/// The fixed position embedding of the reference's `get_2d_sincos_pos_embed(embed_dim,
/// grid_size)`: `[grid_size², embed_dim]` row-major, token `i · grid_size + j` (row i, column j)
/// getting the 1-D embedding of its column j in the first half and of its row i in the second
/// (the reference's `np.meshgrid(grid_w, grid_h)` puts w first). Each 1-D embedding of width
/// `E = embed_dim / 2` is `[sin(pos · ω_k), cos(pos · ω_k)]` with `ω_k = 10000^(-k / (E/2))`.
/// `embed_dim` must be divisible by 4.
pub fn sincos_pos_embed_2d(embed_dim: usize, grid_size: usize) -> Vec<f64> {
    let axis = embed_dim / 2;
    let quarter = axis / 2;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let one_d = |pos: f64, out: &mut Vec<f64>| {
        out.extend(omega.iter().map(|w| (pos * w).sin()));
        out.extend(omega.iter().map(|w| (pos * w).cos()));
    };
    let mut out = Vec::with_capacity(grid_size * grid_size * embed_dim);
    for i in 0..grid_size {
        for j in 0..grid_size {
            one_d(j as f64, &mut out);
            one_d(i as f64, &mut out);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Transformer blocks
// ---------------------------------------------------------------------------------------------

/// `modulate(x, shift, scale) = x · (1 + scale) + shift`, with `shift` and `scale` `[N, D]`
/// broadcast over the tokens of `x` `[N, T, D]`.
fn modulate(x: &Var, shift: &Var, scale: &Var) -> Result<Var> {
    x.mul(&scale.unsqueeze(1)?.add_scalar(1.0)?)?
        .add(&shift.unsqueeze(1)?)
}

/// A LayerNorm without affine parameters over the last dim.
fn layer_norm(x: &Var) -> Result<Var> {
    x.layer_norm(1, None, None, LN_EPS)
}

/// `DiTBlock`: attention and MLP, each behind a LayerNorm modulated by `c` and gated
/// (adaLN-Zero):
///
/// ```text
/// shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c).chunk(6)
/// x = x + gate_msa · attn(modulate(norm1(x), shift_msa, scale_msa))
/// x = x + gate_mlp · mlp(modulate(norm2(x), shift_mlp, scale_mlp))
/// ```
struct DitBlock {
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    ada: Linear,
    /// `<prefix>.difffit_scale`: read when the store has it (see [`Dit::difffit_scales`]).
    scale: String,
    num_heads: usize,
}

/// A block's parameters as Vars, and its forward over them.
#[derive(Clone)]
struct BlockVars {
    qkv: LinearVars,
    proj: LinearVars,
    fc1: LinearVars,
    fc2: LinearVars,
    ada: LinearVars,
    /// DiffFit's learned scale `[1]` of both residual branches, when the store has one.
    scale: Option<Var>,
    num_heads: usize,
}

impl DitBlock {
    fn new(ps: &mut ParamStore, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let (d, m) = (cfg.hidden_size, cfg.mlp_hidden());
        let p = |name: &str| join(prefix, name);
        Ok(DitBlock {
            qkv: xavier_linear(ps, &p("attn.qkv"), d, 3 * d)?,
            proj: xavier_linear(ps, &p("attn.proj"), d, d)?,
            fc1: xavier_linear(ps, &p("mlp.fc1"), d, m)?,
            fc2: xavier_linear(ps, &p("mlp.fc2"), m, d)?,
            ada: zero_linear(ps, &p("adaLN_modulation.1"), d, 6 * d)?,
            scale: p(DIFFFIT_SCALE),
            num_heads: cfg.num_heads,
        })
    }

    fn vars(&self, ps: &ParamStore) -> Result<BlockVars> {
        Ok(BlockVars {
            qkv: self.qkv.vars(ps)?,
            proj: self.proj.vars(ps)?,
            fc1: self.fc1.vars(ps)?,
            fc2: self.fc2.vars(ps)?,
            ada: self.ada.vars(ps)?,
            scale: ps
                .contains(&self.scale)
                .then(|| ps.weight(&self.scale))
                .transpose()?,
            num_heads: self.num_heads,
        })
    }

    /// x `[N, T, D]`, c `[N, D]` -> `[N, T, D]`; with `checkpointing`, the block's activations
    /// are recomputed in backward instead of kept.
    fn forward(&self, ps: &ParamStore, x: &Var, c: &Var, checkpointing: bool) -> Result<Var> {
        let vars = self.vars(ps)?;
        if !checkpointing {
            return vars.forward(x, c);
        }
        let params: Vec<&Var> = [&vars.qkv, &vars.proj, &vars.fc1, &vars.fc2, &vars.ada]
            .into_iter()
            .flat_map(|l| l.params())
            .chain(&vars.scale)
            .collect();
        let inner = vars.clone();
        checkpoint(&[x, c], &params, move |v| inner.forward(&v[0], &v[1]))
    }
}

impl BlockVars {
    fn forward(&self, x: &Var, c: &Var) -> Result<Var> {
        let m = self.ada.forward(&c.silu()?)?.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = self.attn(&modulate(&layer_norm(x)?, shift_msa, scale_msa)?)?;
        let x = x.add(&self.scaled(gate_msa.unsqueeze(1)?.mul(&h)?)?)?;
        let h = self.mlp(&modulate(&layer_norm(&x)?, shift_mlp, scale_mlp)?)?;
        x.add(&self.scaled(gate_mlp.unsqueeze(1)?.mul(&h)?)?)
    }

    /// A residual branch times the block's DiffFit scale, if it has one.
    fn scaled(&self, branch: Var) -> Result<Var> {
        match &self.scale {
            Some(g) => branch.mul(g),
            None => Ok(branch),
        }
    }

    /// timm's `Attention` (qkv with bias, no q/k norm): `[N, T, D]` -> `[N, T, D]`.
    fn attn(&self, x: &Var) -> Result<Var> {
        let (n, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let heads = self.num_heads;
        // [N, T, 3D] -> [N, T, 3, H, D/H] -> [3, N, H, T, D/H]
        let qkv = self
            .qkv
            .forward(x)?
            .reshape(&[n, t, 3, heads, d / heads])?
            .permute(&[2, 0, 3, 1, 4])?
            .chunk(3, 0)?;
        let [q, k, v] = [&qkv[0], &qkv[1], &qkv[2]].map(|p| p.squeeze(0));
        let o = q?.scaled_dot_product_attention(&k?, &v?, None, None)?;
        // [N, H, T, D/H] -> [N, T, H, D/H] -> [N, T, D]
        let o = o.transpose(1, 2)?.reshape(&[n, t, d])?;
        self.proj.forward(&o)
    }

    /// timm's `Mlp` with tanh-GELU: fc1, GELU, fc2.
    fn mlp(&self, x: &Var) -> Result<Var> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_tanh()?)
    }
}

/// `FinalLayer`: a modulated LayerNorm, then a Linear to one patch per token,
/// `[N, T, D]` -> `[N, T, p·p·out_channels]`.
struct FinalLayer {
    linear: Linear,
    ada: Linear,
}

impl FinalLayer {
    fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        Ok(FinalLayer {
            linear: zero_linear(ps, "final_layer.linear", d, p * p * cfg.out_channels())?,
            ada: zero_linear(ps, "final_layer.adaLN_modulation.1", d, 2 * d)?,
        })
    }

    fn forward(&self, ps: &ParamStore, x: &Var, c: &Var) -> Result<Var> {
        let m = self.ada.forward(ps, &c.silu()?)?.chunk(2, 1)?;
        let (shift, scale) = (&m[0], &m[1]);
        self.linear
            .forward(ps, &modulate(&layer_norm(x)?, shift, scale)?)
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// Which output channels classifier-free guidance mixes in [`Dit::forward_with_cfg`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuidanceChannels {
    /// Every output channel (noise and, with `learn_sigma`, the variance channels): the default.
    #[default]
    All,
    /// Only the first `k` channels, the rest taken from each half's own prediction. The reference
    /// uses `First(3)` ("by default we only apply guidance to three channels", a leftover of its
    /// pixel-space experiments); choose it to reproduce the reference's samples exactly.
    First(usize),
}

/// The last name of a block's DiffFit scale.
const DIFFFIT_SCALE: &str = "difffit_scale";

/// The Diffusion Transformer. Parameters live in a [`ParamStore`]; see the module doc for names.
pub struct Dit {
    cfg: DitConfig,
    x_embedder: PatchEmbed,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    blocks: Vec<DitBlock>,
    final_layer: FinalLayer,
    checkpointing: bool,
    guidance: GuidanceChannels,
}

impl Dit {
    /// Validates `cfg` and adds the parameters with the reference initialisation: xavier-uniform
    /// Linear weights and zero biases, the patch embedding xavier-uniform on its `[D, C·p·p]`
    /// view, the label table and timestep-MLP weights N(0, 0.02²), the adaLN modulations and the
    /// final Linear zero, and `pos_embed` the fixed 2-D sin-cos table, not trainable.
    pub fn new(ps: &mut ParamStore, cfg: DitConfig) -> Result<Dit> {
        cfg.validate()?;
        let x_embedder = PatchEmbed::new(ps, &cfg)?;
        let pos = sincos_pos_embed_2d(cfg.hidden_size, cfg.grid_size());
        ps.insert(
            "pos_embed",
            Tensor::from_vec(pos, &[1, cfg.num_patches(), cfg.hidden_size])?,
        )?;
        ps.set_trainable("pos_embed", false);
        let t_embedder = TimestepEmbedder::new(ps, cfg.hidden_size)?;
        let y_embedder = LabelEmbedder::new(ps, &cfg)?;
        let blocks = (0..cfg.depth)
            .map(|i| DitBlock::new(ps, &format!("blocks.{i}"), &cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_layer = FinalLayer::new(ps, &cfg)?;
        Ok(Dit {
            cfg,
            x_embedder,
            t_embedder,
            y_embedder,
            blocks,
            final_layer,
            checkpointing: false,
            guidance: GuidanceChannels::All,
        })
    }

    /// The config.
    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// Folds each block's DiffFit scale into its adaLN gates (the rows of `gate_msa` and
    /// `gate_mlp` in `adaLN_modulation.1`'s weight and bias) and sets the scale to 1: the model
    /// computes the same function, and its reference-named weights alone now hold it.
    pub fn fold_difffit(&self, ps: &mut ParamStore) -> Result<()> {
        let d = self.cfg.hidden_size;
        for block in &self.blocks {
            if !ps.contains(&block.scale) {
                continue;
            }
            let gamma = ps.tensor(&block.scale)?.to_scalar()?;
            let ada = std::iter::once(block.ada.weight_name()).chain(block.ada.bias_name());
            for name in ada.map(str::to_string).collect::<Vec<_>>() {
                let w = ps.tensor(&name)?;
                // Chunks of `d` rows: shift, scale, gate of attention, then of the MLP.
                let rows: Vec<Tensor> = (0..6)
                    .map(|k| {
                        let chunk = w.narrow(0, k * d, d)?;
                        if k == 2 || k == 5 {
                            chunk.mul_scalar(gamma)
                        } else {
                            Ok(chunk)
                        }
                    })
                    .collect::<Result<_>>()?;
                let rows: Vec<&Tensor> = rows.iter().collect();
                ps.set(&name, Tensor::cat(&rows, 0)?)?;
            }
            ps.set(
                &block.scale,
                Tensor::full(&[1], 1.0, ps.dtype(), ps.device())?,
            )?;
        }
        Ok(())
    }

    /// The names of DiffFit's per-block scales, `blocks.{i}.difffit_scale`: each `[1]`,
    /// multiplying both residual branches of its block. A block uses its scale when the store
    /// holds one (see [`crate::peft::difffit`]); the reference model has none.
    pub fn difffit_scales(&self) -> Vec<String> {
        self.blocks.iter().map(|b| b.scale.clone()).collect()
    }

    /// Where DeMe's channel-wise projections go (see [`crate::projection`]): after each block,
    /// a `[D, D]` map of its tokens, `blocks.{i}.projection.weight` (our choice; the paper
    /// projects U-Net blocks only).
    pub fn projections(&self) -> Vec<ProjectionPoint> {
        let d = self.cfg.hidden_size;
        (0..self.blocks.len())
            .map(|i| ProjectionPoint {
                name: projection_name(&format!("blocks.{i}")),
                shape: vec![d, d],
            })
            .collect()
    }

    /// Turns gradient checkpointing of every block on or off: a checkpointed block keeps only its
    /// inputs for backward and recomputes its activations there. Results are unchanged.
    pub fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Whether blocks are checkpointed.
    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Chooses the channels [`Dit::forward_with_cfg`] guides ([`GuidanceChannels::All`] unless
    /// set).
    pub fn set_guidance_channels(&mut self, channels: GuidanceChannels) {
        self.guidance = channels;
    }

    /// The channels [`Dit::forward_with_cfg`] guides.
    pub fn guidance_channels(&self) -> GuidanceChannels {
        self.guidance
    }

    /// x `[N, C, H, W]` (the store's dtype), t `[N]` (integer or float timesteps), y `[N]` i64
    /// labels (`num_classes` is the null class when the table has it) -> `[N, out_channels, H, W]`.
    ///
    /// `train`: with a generator, labels are dropped to the null class with probability
    /// `class_dropout_prob` (the reference's training mode); `None` is evaluation.
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Var,
        t: &Tensor,
        y: &Tensor,
        train: Option<&mut Generator>,
    ) -> Result<Var> {
        self.check_inputs(x, t, y)?;
        // Mixed precision: compute in the store's compute dtype, answer in the master dtype.
        let x = x.to_dtype(ps.compute_dtype())?;
        let x = self
            .x_embedder
            .forward(ps, &x)?
            .add(&ps.weight("pos_embed")?)?;
        let t = self.t_embedder.forward(ps, t)?;
        let y = self.y_embedder.forward(ps, y, train)?;
        let c = t.add(&y)?;
        let mut x = x;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(ps, &x, &c, self.checkpointing)?;
            x = project(ps, &format!("blocks.{i}"), &x)?;
        }
        let x = self.final_layer.forward(ps, &x, &c)?;
        self.unpatchify(&x)?.to_dtype(ps.dtype())
    }

    /// The reference's `forward_with_cfg`: the first half of the batch is run twice, with the
    /// labels of both halves of `y` (conditional labels first, then the null class), and the
    /// guided prediction `uncond + cfg_scale · (cond − uncond)` replaces the
    /// [guided channels](GuidanceChannels) of both halves. `x`, `t`, `y` have an even batch N.
    pub fn forward_with_cfg(
        &self,
        ps: &ParamStore,
        x: &Var,
        t: &Tensor,
        y: &Tensor,
        cfg_scale: f64,
    ) -> Result<Var> {
        let n = x.shape().first().copied().unwrap_or(0);
        if !n.is_multiple_of(2) {
            return Err(Error::shape(
                "Dit::forward_with_cfg",
                format!(
                    "the batch must be even (conditional and unconditional halves), got x {:?}",
                    x.shape()
                ),
            ));
        }
        let half = x.narrow(0, 0, n / 2)?;
        let combined = Var::cat(&[&half, &half], 0)?;
        let out = self.forward(ps, &combined, t, y, None)?;
        let channels = out.shape()[1];
        let k = match self.guidance {
            GuidanceChannels::All => channels,
            GuidanceChannels::First(k) => k.min(channels),
        };
        let eps = out.narrow(1, 0, k)?;
        let cond = eps.narrow(0, 0, n / 2)?;
        let uncond = eps.narrow(0, n / 2, n / 2)?;
        let guided = uncond.add(&cond.sub(&uncond)?.mul_scalar(cfg_scale)?)?;
        let eps = Var::cat(&[&guided, &guided], 0)?;
        if k == channels {
            Ok(eps)
        } else {
            let rest = out.narrow(1, k, channels - k)?;
            Var::cat(&[&eps, &rest], 1)
        }
    }

    /// `[N, T, p·p·c]` -> `[N, c, H, W]`: token (h, w) holds its patch as `[p, p, c]`.
    fn unpatchify(&self, x: &Var) -> Result<Var> {
        let (c, p, g) = (
            self.cfg.out_channels(),
            self.cfg.patch_size,
            self.cfg.grid_size(),
        );
        let n = x.shape()[0];
        // nhwpqc -> nchpwq
        x.reshape(&[n, g, g, p, p, c])?
            .permute(&[0, 5, 1, 3, 2, 4])?
            .reshape(&[n, c, g * p, g * p])
    }

    fn check_inputs(&self, x: &Var, t: &Tensor, y: &Tensor) -> Result<()> {
        let (s, c) = (self.cfg.input_size, self.cfg.in_channels);
        let xs = x.shape();
        if xs.len() != 4 || xs[1] != c || xs[2] != s || xs[3] != s {
            return Err(Error::shape(
                "Dit::forward",
                format!("x is {xs:?}, expected [N, {c}, {s}, {s}]"),
            ));
        }
        let n = xs[0];
        if t.shape() != [n] {
            return Err(Error::shape(
                "Dit::forward",
                format!(
                    "t is {:?}, expected [{n}] (one timestep per image of x {xs:?})",
                    t.shape()
                ),
            ));
        }
        if y.shape() != [n] || y.dtype() != DType::I64 {
            return Err(Error::shape(
                "Dit::forward",
                format!(
                    "y is {:?} {}, expected [{n}] i64 (one label per image of x {xs:?})",
                    y.shape(),
                    y.dtype()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tensor::Device;

    use super::*;

    #[test]
    fn folding_difffit_scales_into_the_gates_keeps_the_function() {
        let cfg = DitConfig {
            input_size: 8,
            patch_size: 4,
            in_channels: 2,
            hidden_size: 16,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 2.0,
            class_dropout_prob: 0.1,
            num_classes: 3,
            learn_sigma: false,
        };
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let dit = Dit::new(&mut ps, cfg).unwrap();
        crate::peft::difffit(&mut ps, &dit.difffit_scales()).unwrap();
        let mut gen = Generator::new(3);
        // adaLN-Zero starts with closed gates, where a scale changes nothing: open them.
        let ada: Vec<String> = ps
            .names()
            .filter(|n| n.contains("adaLN"))
            .map(String::from)
            .collect();
        for name in ada {
            let shape = ps.tensor(&name).unwrap().shape().to_vec();
            let t = Tensor::randn(&shape, 0.0, 0.3, DType::F64, Device::Cpu, &mut gen).unwrap();
            ps.set(&name, t).unwrap();
        }
        for (i, name) in dit.difffit_scales().iter().enumerate() {
            ps.set(
                name,
                Tensor::full(&[1], 0.5 + i as f64, DType::F64, Device::Cpu).unwrap(),
            )
            .unwrap();
        }
        let x = Var::constant(
            Tensor::randn(&[2, 2, 8, 8], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap(),
        );
        let (t, y) = (
            Tensor::from_vec(vec![10i64, 900], &[2]).unwrap(),
            Tensor::from_vec(vec![0i64, 2], &[2]).unwrap(),
        );
        let before = dit.forward(&ps, &x, &t, &y, None).unwrap().value().clone();
        dit.fold_difffit(&mut ps).unwrap();
        let after = dit.forward(&ps, &x, &t, &y, None).unwrap().value().clone();
        let scale = before.max_abs_diff(&before.zeros_like().unwrap()).unwrap();
        let diff = after.max_abs_diff(&before).unwrap();
        assert!(diff <= 1e-12 * scale, "the function changed by {diff}");
        for name in dit.difffit_scales() {
            assert_eq!(ps.tensor(&name).unwrap().to_scalar().unwrap(), 1.0);
        }
    }

    /// Mixed precision's plumbing, checked on the CPU with f64 standing in for bf16: f32 master
    /// weights, compute in the other dtype, an f32 answer and f32 gradients equal to the plain
    /// f32 run's within f32 rounding.
    #[test]
    fn compute_dtype_casts_weights_and_returns_master_dtype_gradients() {
        let cfg = DitConfig {
            input_size: 8,
            in_channels: 2,
            hidden_size: 16,
            depth: 1,
            num_heads: 2,
            num_classes: 3,
            ..DitConfig::named("DiT-S/4").unwrap()
        };
        let mut ps = ParamStore::new(DType::F32, tensor::Device::Cpu, 0);
        let model = Dit::new(&mut ps, cfg).unwrap();
        // Reference init zeroes the adaLN and final layers; randomise so every weight matters.
        let mut gen = Generator::new(1);
        let names: Vec<String> = ps.names().map(String::from).collect();
        for name in &names {
            let shape = ps.tensor(name).unwrap().shape().to_vec();
            let t = Tensor::randn(&shape, 0.0, 0.2, DType::F32, tensor::Device::Cpu, &mut gen);
            ps.set(name, t.unwrap()).unwrap();
        }
        let x = Tensor::randn(
            &[2, 2, 8, 8],
            0.0,
            1.0,
            DType::F32,
            tensor::Device::Cpu,
            &mut gen,
        );
        let x = Var::constant(x.unwrap());
        let t = Tensor::from_vec(vec![3i64, 700], &[2]).unwrap();
        let y = Tensor::from_vec(vec![0i64, 2], &[2]).unwrap();
        let run = |ps: &ParamStore| {
            let out = model.forward(ps, &x, &t, &y, None).unwrap();
            let grads = out.square().unwrap().sum_all().unwrap().backward().unwrap();
            let w = ps.var("blocks.0.mlp.fc1.weight").unwrap();
            (out.value().clone(), grads.get(&w).unwrap().clone())
        };
        let (out32, grad32) = run(&ps);
        ps.set_compute_dtype(Some(DType::F64));
        assert_eq!(ps.compute_dtype(), DType::F64);
        assert_eq!(ps.weight("pos_embed").unwrap().value().dtype(), DType::F64);
        let (out_mixed, grad_mixed) = run(&ps);
        assert_eq!(
            (out_mixed.dtype(), grad_mixed.dtype()),
            (DType::F32, DType::F32)
        );
        let rel = |a: &Tensor, b: &Tensor| {
            let d = a
                .sub(b)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            let n = b.square().unwrap().sum_all().unwrap().to_scalar().unwrap();
            (d / n).sqrt()
        };
        assert!(
            rel(&out_mixed, &out32) < 1e-5,
            "{}",
            rel(&out_mixed, &out32)
        );
        assert!(
            rel(&grad_mixed, &grad32) < 1e-4,
            "{}",
            rel(&grad_mixed, &grad32)
        );
        assert!(
            rel(&out_mixed, &out32) > 0.0,
            "the compute dtype was not used"
        );
    }

    #[test]
    fn named_configs_follow_the_paper() {
        let xl = DitConfig::named("DiT-XL/2").unwrap();
        assert_eq!(xl, DitConfig::default());
        let b4 = DitConfig::named("DiT-B/4").unwrap();
        assert_eq!(
            (b4.depth, b4.hidden_size, b4.num_heads, b4.patch_size),
            (12, 768, 12, 4)
        );
        let err = DitConfig::named("DiT-M/2").unwrap_err().to_string();
        assert!(err.contains("DiT-M/2") && err.contains("DiT-S/8"), "{err}");
        assert!(DitConfig::named("DiT-S/3").is_err());
    }

    #[test]
    fn json_errors_name_the_field() {
        let good = DitConfig::named("DiT-S/2").unwrap();
        assert_eq!(DitConfig::from_json(&good.to_json()).unwrap(), good);
        let with = |field: &str, value: Value| {
            let mut v: Value = serde_json::from_str(&good.to_json()).unwrap();
            v[field] = value;
            DitConfig::from_json(&v.to_string())
                .unwrap_err()
                .to_string()
        };
        let e = with("hidden_size", Value::from("384"));
        assert!(e.contains("`hidden_size`") && e.contains("integer"), "{e}");
        let e = with("learn_sigma", Value::from(1));
        assert!(e.contains("`learn_sigma`"), "{e}");
        let e = with("num_heads", Value::from(5));
        assert!(
            e.contains("`hidden_size` 384") && e.contains("`num_heads` 5"),
            "{e}"
        );
        let e = with("patch_size", Value::from(3));
        assert!(
            e.contains("`input_size` 32") && e.contains("`patch_size` 3"),
            "{e}"
        );
        let e = with("class_dropout_prob", Value::from(1.5));
        assert!(e.contains("`class_dropout_prob`"), "{e}");
        let e = with("hidden_sise", Value::from(4));
        assert!(e.contains("unknown key `hidden_sise`"), "{e}");
        // Absent keys take the reference constructor's defaults.
        let mut v: Value = serde_json::from_str(&good.to_json()).unwrap();
        v.as_object_mut().unwrap().remove("depth");
        assert_eq!(DitConfig::from_json(&v.to_string()).unwrap().depth, 28);
        let e = DitConfig::from_json("[1]").unwrap_err().to_string();
        assert!(e.contains("JSON object"), "{e}");
    }

    #[test]
    fn timestep_features_are_the_float32_ones() {
        let t = Tensor::from_vec(vec![0i64, 500], &[2]).unwrap();
        let ours = timestep_embedding_f32(&t, 256, 10000.0).unwrap();
        assert_eq!(ours.dtype(), DType::F32);
        let ours = ours.to_f64_vec().unwrap();
        // t = 0: cos = 1 then sin = 0, exactly.
        assert!(ours[..128].iter().all(|&v| v == 1.0) && ours[128..256].iter().all(|&v| v == 0.0));
        // Within float32 argument rounding (500 · 2⁻²⁴ · 2) of the float64 features, not equal.
        let exact = crate::nn::sinusoidal_embedding(&t, 256, true, 0.0, 10000.0, DType::F64)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let worst = ours
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4 && worst > 1e-7, "{worst}");
    }

    #[test]
    fn pos_embed_matches_the_reference_layout() {
        // grid 2, dim 8: each axis has 4 dims = [sin(pos), sin(pos/100), cos(pos), cos(pos/100)].
        let e = sincos_pos_embed_2d(8, 2);
        let axis = |p: f64| [p.sin(), (p / 100.0).sin(), p.cos(), (p / 100.0).cos()];
        // token 1 is row 0, column 1: the column comes first.
        let expected: Vec<f64> = axis(1.0).into_iter().chain(axis(0.0)).collect();
        let got = &e[8..16];
        assert!(
            got.iter()
                .zip(&expected)
                .all(|(a, b)| (a - b).abs() < 1e-15),
            "{got:?}"
        );
    }

    #[test]
    fn forced_label_drop_follows_the_mask() {
        let labels = Tensor::from_vec(vec![0i64, 2, 1, 2], &[4]).unwrap();
        let out = force_drop_labels(&labels, &[false, true, true, false], 3).unwrap();
        assert_eq!(out.to_vec::<i64>().unwrap(), vec![0, 3, 3, 2]);
        let err = force_drop_labels(&labels, &[true], 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels [4] and a mask of 1 flags"), "{err}");
    }
}
