//! diffusers' `UNet2DModel`, built from its JSON config with diffusers' state-dict names, so a
//! diffusers checkpoint loads unchanged.
//!
//! ```text
//! conv_in -> down_blocks.{i} (resnets, attentions, downsamplers) -> mid_block
//!         -> up_blocks.{i} (skip concat, resnets, attentions, upsamplers)
//!         -> conv_norm_out -> silu -> conv_out
//! time: sinusoidal(t) -> time_embedding.linear_1 -> silu -> linear_2 (+ class_embedding(y))
//! ```

use autograd::Var;
use tensor::{Error, Result, Tensor};

use crate::anl::{Anl, AnlOptions, AnlPoint, Condition};
use crate::blocks::{
    Activation, AttnOpts, BlockCtx, DownBlock, MidBlock2D, ResnetOpts, TimeShift, UpBlock,
    UpChannels,
};
use crate::config::{bad_value, check_levels, check_sizes, JsonConfig};
use crate::nn::{sinusoidal_embedding_f32, Conv2d, Embedding, GroupNorm, Linear};
use crate::params::ParamStore;
use crate::projection::{project, projection_name, ProjectionPoint};

const MODEL: &str = "UNet2DModel";

const KNOWN_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

/// The configuration of a [`UNet2DModel`], as diffusers writes it in `config.json`. Absent keys
/// take diffusers' defaults; values this implementation does not support are refused when
/// parsing, with the key and the value named.
#[derive(Clone, Debug, PartialEq)]
pub struct UNet2DConfig {
    /// Image size (height, width), informational.
    pub sample_size: Option<(usize, usize)>,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Whether the input is mapped `x -> 2x - 1` first.
    pub center_input_sample: bool,
    /// Width of the time embedding (default `4 · block_out_channels[0]`).
    pub time_embedding_dim: Option<usize>,
    /// `downscale_freq_shift` of the sinusoidal embedding.
    pub freq_shift: f64,
    /// Whether the sinusoidal embedding is `[cos, sin]`.
    pub flip_sin_to_cos: bool,
    /// `DownBlock2D` or `AttnDownBlock2D`, one per level.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2D`, or `None` for no mid block.
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `AttnUpBlock2D`, one per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per down level (up levels have one more).
    pub layers_per_block: usize,
    /// `output_scale_factor` of the mid block.
    pub mid_block_scale_factor: f64,
    /// Padding of the downsampling convs.
    pub downsample_padding: usize,
    /// Dropout of the residual blocks (not applied: forward is eval mode).
    pub dropout: f64,
    /// Nonlinearity of the residual blocks.
    pub act_fn: String,
    /// Channels per attention head (default: the block's channels, one head).
    pub attention_head_dim: Option<usize>,
    /// GroupNorm groups (default `min(block_out_channels[0] / 4, 32)`).
    pub norm_num_groups: Option<usize>,
    /// GroupNorm groups of the mid block's attention (default `norm_num_groups`).
    pub attn_norm_num_groups: Option<usize>,
    /// GroupNorm epsilon.
    pub norm_eps: f64,
    /// `default` or `scale_shift`.
    pub resnet_time_scale_shift: String,
    /// Whether the mid block has attention.
    pub add_attention: bool,
    /// `None` (a table of `num_class_embeds` when that is set), `timestep` or `identity`.
    pub class_embed_type: Option<String>,
    /// Number of classes of the class embedding table.
    pub num_class_embeds: Option<usize>,
}

impl UNet2DConfig {
    /// Parses diffusers' JSON config.
    pub fn from_json(json: &str) -> Result<Self> {
        let c = JsonConfig::parse(MODEL, json, KNOWN_KEYS)?;
        let choice = |key: &str, default: &str, allowed: &[&str]| -> Result<String> {
            let v = c.string(key, default)?;
            if allowed.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(bad_value(
                    MODEL,
                    key,
                    format!("{v:?}"),
                    &allowed.join(" or "),
                ))
            }
        };
        choice("time_embedding_type", "positional", &["positional"])?;
        choice("downsample_type", "conv", &["conv"])?;
        choice("upsample_type", "conv", &["conv"])?;
        let config = UNet2DConfig {
            sample_size: c.opt_size("sample_size")?,
            in_channels: c.usize("in_channels", 3)?,
            out_channels: c.usize("out_channels", 3)?,
            center_input_sample: c.bool("center_input_sample", false)?,
            time_embedding_dim: c.opt_usize("time_embedding_dim", None)?,
            freq_shift: c.f64("freq_shift", 0.0)?,
            flip_sin_to_cos: c.bool("flip_sin_to_cos", true)?,
            down_block_types: c.string_list(
                "down_block_types",
                &[
                    "DownBlock2D",
                    "AttnDownBlock2D",
                    "AttnDownBlock2D",
                    "AttnDownBlock2D",
                ],
            )?,
            mid_block_type: c.opt_string("mid_block_type", Some("UNetMidBlock2D"))?,
            up_block_types: c.string_list(
                "up_block_types",
                &[
                    "AttnUpBlock2D",
                    "AttnUpBlock2D",
                    "AttnUpBlock2D",
                    "UpBlock2D",
                ],
            )?,
            block_out_channels: c.usize_list("block_out_channels", &[224, 448, 672, 896])?,
            layers_per_block: c.usize("layers_per_block", 2)?,
            mid_block_scale_factor: c.f64("mid_block_scale_factor", 1.0)?,
            downsample_padding: c.usize("downsample_padding", 1)?,
            dropout: c.f64("dropout", 0.0)?,
            act_fn: c.string("act_fn", "silu")?,
            attention_head_dim: c.opt_usize("attention_head_dim", Some(8))?,
            norm_num_groups: c.opt_usize("norm_num_groups", Some(32))?,
            attn_norm_num_groups: c.opt_usize("attn_norm_num_groups", None)?,
            norm_eps: c.f64("norm_eps", 1e-5)?,
            resnet_time_scale_shift: c.string("resnet_time_scale_shift", "default")?,
            add_attention: c.bool("add_attention", true)?,
            class_embed_type: c.opt_string("class_embed_type", None)?,
            num_class_embeds: c.opt_usize("num_class_embeds", None)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values this implementation supports and that the lists agree.
    pub fn validate(&self) -> Result<()> {
        let lists = [
            ("down_block_types", &self.down_block_types[..]),
            ("up_block_types", &self.up_block_types[..]),
        ];
        check_levels(MODEL, &self.block_out_channels, &lists)?;
        for (key, list) in lists {
            for kind in list {
                block_has_attention(key, kind)?;
            }
        }
        if let Some(kind) = &self.mid_block_type {
            if kind != "UNetMidBlock2D" {
                let expected = "\"UNetMidBlock2D\" or null";
                return Err(bad_value(
                    MODEL,
                    "mid_block_type",
                    format!("{kind:?}"),
                    expected,
                ));
            }
        }
        if let Some(kind) = &self.class_embed_type {
            if !matches!(kind.as_str(), "timestep" | "identity") {
                let expected = "null, \"timestep\" or \"identity\"";
                return Err(bad_value(
                    MODEL,
                    "class_embed_type",
                    format!("{kind:?}"),
                    expected,
                ));
            }
        }
        check_sizes(
            MODEL,
            &[
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels),
                ("layers_per_block", self.layers_per_block),
                ("time_embedding_dim", self.time_embed_dim()),
                ("attention_head_dim", self.attention_head_dim.unwrap_or(1)),
                ("num_class_embeds", self.num_class_embeds.unwrap_or(1)),
            ],
        )?;
        Activation::parse(MODEL, "act_fn", &self.act_fn)?;
        TimeShift::parse(
            MODEL,
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
        )?;
        let groups = self.groups();
        for &ch in &self.block_out_channels {
            if groups == 0 || ch % groups != 0 {
                return Err(bad_value(
                    MODEL,
                    "norm_num_groups",
                    groups,
                    &format!("a divisor of every block_out_channels entry ({ch})"),
                ));
            }
        }
        Ok(())
    }

    /// GroupNorm groups of the residual blocks.
    pub fn groups(&self) -> usize {
        self.norm_num_groups
            .unwrap_or_else(|| (self.block_out_channels[0] / 4).min(32))
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0].saturating_mul(4))
    }
}

/// Whether a down or up block type has attention; an error names unsupported types.
fn block_has_attention(key: &str, kind: &str) -> Result<bool> {
    match kind {
        "DownBlock2D" | "UpBlock2D" => Ok(false),
        "AttnDownBlock2D" | "AttnUpBlock2D" => Ok(true),
        _ => Err(bad_value(
            MODEL,
            key,
            format!("{kind:?}"),
            "DownBlock2D, AttnDownBlock2D, UpBlock2D or AttnUpBlock2D",
        )),
    }
}

/// How class labels enter the time embedding.
#[derive(Clone, Debug)]
enum ClassEmbedding {
    /// `class_embedding.weight`, a table of `num_class_embeds` rows.
    Table(Embedding),
    /// The labels go through the sinusoidal projection and `class_embedding.linear_1/2`.
    Timestep(Linear, Linear),
    /// Class "labels" are already embeddings `[N, time_embed_dim]`.
    Identity,
}

/// diffusers' `UNet2DModel` (eval mode). See the module docs for the layout.
pub struct UNet2DModel {
    config: UNet2DConfig,
    conv_in: Conv2d,
    time_linear_1: Linear,
    time_linear_2: Linear,
    class_embedding: Option<ClassEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock2D>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    checkpointing: bool,
    anl: Option<Anl>,
}

impl UNet2DModel {
    /// Adds every parameter of the model described by `config` to `ps` (PyTorch's default
    /// init; load a checkpoint over it with [`ParamStore::load`]).
    pub fn new(ps: &mut ParamStore, config: &UNet2DConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let levels = ch.len();
        let temb = config.time_embed_dim();
        let conv3 = tensor::Conv2dParams {
            padding: (1, 1),
            ..Default::default()
        };
        let conv_in = Conv2d::new(ps, "conv_in", config.in_channels, ch[0], 3, conv3, true)?;
        let time_linear_1 = Linear::new(ps, "time_embedding.linear_1", ch[0], temb, true)?;
        let time_linear_2 = Linear::new(ps, "time_embedding.linear_2", temb, temb, true)?;
        let class_embedding = match (config.class_embed_type.as_deref(), config.num_class_embeds) {
            (None, None) => None,
            (None, Some(n)) => Some(ClassEmbedding::Table(Embedding::new(
                ps,
                "class_embedding",
                n,
                temb,
                1.0,
            )?)),
            (Some("timestep"), _) => Some(ClassEmbedding::Timestep(
                Linear::new(ps, "class_embedding.linear_1", ch[0], temb, true)?,
                Linear::new(ps, "class_embedding.linear_2", temb, temb, true)?,
            )),
            (Some(_), _) => Some(ClassEmbedding::Identity),
        };
        let opts = ResnetOpts {
            temb_channels: Some(temb),
            groups: config.groups(),
            eps: config.norm_eps,
            act: Activation::parse(MODEL, "act_fn", &config.act_fn)?,
            time_shift: TimeShift::parse(
                MODEL,
                "resnet_time_scale_shift",
                &config.resnet_time_scale_shift,
            )?,
            output_scale_factor: 1.0,
            dropout: config.dropout,
        };
        let attn_for = |kind_key: &str, kind: &str, out: usize| -> Result<Option<AttnOpts>> {
            Ok(block_has_attention(kind_key, kind)?.then(|| AttnOpts {
                head_dim: config.attention_head_dim.unwrap_or(out),
                groups: Some(opts.groups),
            }))
        };

        let mut down_blocks = Vec::with_capacity(levels);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let last = i + 1 == levels;
            down_blocks.push(DownBlock::new(
                ps,
                &format!("down_blocks.{i}"),
                (cin, ch[i]),
                config.layers_per_block,
                &opts,
                attn_for("down_block_types", kind, ch[i])?,
                (!last).then_some(config.downsample_padding),
            )?);
        }

        let mid_block = match config.mid_block_type {
            None => None,
            Some(_) => {
                let mid_opts = ResnetOpts {
                    output_scale_factor: config.mid_block_scale_factor,
                    ..opts
                };
                // diffusers: the mid attention's groups default to the resnets' under the
                // "default" time shift, and to no group norm otherwise.
                let attn_groups = config
                    .attn_norm_num_groups
                    .or((opts.time_shift == TimeShift::Default).then_some(opts.groups));
                let attn = config.add_attention.then(|| AttnOpts {
                    head_dim: config.attention_head_dim.unwrap_or(ch[levels - 1]),
                    groups: attn_groups,
                });
                Some(MidBlock2D::new(
                    ps,
                    "mid_block",
                    ch[levels - 1],
                    &mid_opts,
                    attn,
                )?)
            }
        };

        let mut up_blocks = Vec::with_capacity(levels);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let channels = UpChannels {
                prev: rev[i.saturating_sub(1)],
                out: rev[i],
                skip_in: Some(rev[(i + 1).min(levels - 1)]),
            };
            up_blocks.push(UpBlock::new(
                ps,
                &format!("up_blocks.{i}"),
                channels,
                config.layers_per_block + 1,
                &opts,
                attn_for("up_block_types", kind, rev[i])?,
                i + 1 != levels,
            )?);
        }

        let conv_norm_out = GroupNorm::new(ps, "conv_norm_out", opts.groups, ch[0], opts.eps)?;
        let conv_out = Conv2d::new(ps, "conv_out", ch[0], config.out_channels, 3, conv3, true)?;
        Ok(UNet2DModel {
            config: config.clone(),
            conv_in,
            time_linear_1,
            time_linear_2,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            checkpointing: false,
            anl: None,
        })
    }

    /// [`UNet2DModel::new`] from diffusers' JSON config.
    pub fn from_json(ps: &mut ParamStore, json: &str) -> Result<Self> {
        Self::new(ps, &UNet2DConfig::from_json(json)?)
    }

    /// Where DeMe's channel-wise projections go (see [`crate::projection`]): a 1x1 convolution
    /// `[C, C, 1, 1]` after each down block's main output, after the mid block and after each
    /// up block, as in the paper.
    pub fn projections(&self) -> Vec<ProjectionPoint> {
        let ch = &self.config.block_out_channels;
        let point = |prefix: String, c: usize| ProjectionPoint {
            name: projection_name(&prefix),
            shape: vec![c, c, 1, 1],
        };
        let down = ch.iter().enumerate();
        let up = ch.iter().rev().enumerate();
        down.map(|(i, &c)| point(format!("down_blocks.{i}"), c))
            .chain(
                self.mid_block
                    .as_ref()
                    .map(|_| point("mid_block".into(), ch[ch.len() - 1])),
            )
            .chain(up.map(|(i, &c)| point(format!("up_blocks.{i}"), c)))
            .collect()
    }

    /// The configuration.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// Turns gradient checkpointing of every residual block and attention on or off.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// The residual blocks, in the order a forward pass runs them, with their output channels:
    /// where ANL modules go.
    pub fn anl_points(&self) -> Vec<AnlPoint> {
        let ch = &self.config.block_out_channels;
        let levels = ch.len();
        let point = |block: String, channels: usize| AnlPoint { block, channels };
        let mut points = Vec::new();
        for (i, &c) in ch.iter().enumerate() {
            for j in 0..self.config.layers_per_block {
                points.push(point(format!("down_blocks.{i}.resnets.{j}"), c));
            }
        }
        if self.mid_block.is_some() {
            for j in 0..2 {
                points.push(point(format!("mid_block.resnets.{j}"), ch[levels - 1]));
            }
        }
        for (i, &c) in ch.iter().rev().enumerate() {
            for j in 0..=self.config.layers_per_block {
                points.push(point(format!("up_blocks.{i}.resnets.{j}"), c));
            }
        }
        points
    }

    /// Gives the model ANL modules of `options` after every residual block (their parameters
    /// are added by [`Anl::add_parameters`] or read from a checkpoint), or with `None` none.
    pub fn set_anl(&mut self, options: Option<AnlOptions>) -> Result<()> {
        self.anl = options
            .map(|o| Anl::new(o, self.anl_points()))
            .transpose()?;
        Ok(())
    }

    /// The model's ANL modules, if it has them.
    pub fn anl(&self) -> Option<&Anl> {
        self.anl.as_ref()
    }

    /// The time (and class) embedding `[N, time_embed_dim]`.
    fn embedding(
        &self,
        ps: &ParamStore,
        timestep: &Tensor,
        class_labels: Option<&Tensor>,
        n: usize,
    ) -> Result<Var> {
        let dtype = ps.compute_dtype();
        let cfg = &self.config;
        let dim = cfg.block_out_channels[0];
        let project = |t: &Tensor| -> Result<Var> {
            let t = match t.elem_count() {
                1 => Tensor::from_vec(vec![t.to_f64_vec()?[0]; n], &[n])?,
                k if k == n => t.reshape(&[n])?,
                k => {
                    return Err(Error::shape(
                        "UNet2DModel",
                        format!("{k} timesteps or labels for a batch of {n}"),
                    ))
                }
            };
            let e =
                sinusoidal_embedding_f32(&t, dim, cfg.flip_sin_to_cos, cfg.freq_shift, 1e4, dtype)?;
            Ok(Var::constant(e.to_device(ps.device())?))
        };
        // diffusers' TimestepEmbedding: silu for the time, `act_fn` for a "timestep" class
        // embedding.
        let mlp = |l1: &Linear, l2: &Linear, x: &Var, act: Activation| -> Result<Var> {
            l2.forward(ps, &act.apply(&l1.forward(ps, x)?)?)
        };
        let emb = mlp(
            &self.time_linear_1,
            &self.time_linear_2,
            &project(timestep)?,
            Activation::Silu,
        )?;
        let Some(class) = &self.class_embedding else {
            return match class_labels {
                None => Ok(emb),
                Some(_) => Err(Error::msg(
                    "UNet2DModel: class labels given to a model without a class embedding",
                )),
            };
        };
        let labels = class_labels.ok_or_else(|| {
            Error::msg("UNet2DModel: this model is class-conditional; class labels are required")
        })?;
        let class_emb = match class {
            ClassEmbedding::Table(table) => table.forward(ps, labels)?,
            ClassEmbedding::Timestep(l1, l2) => {
                let act = Activation::parse(MODEL, "act_fn", &cfg.act_fn)?;
                mlp(l1, l2, &project(labels)?, act)?
            }
            ClassEmbedding::Identity => Var::constant(labels.to_dtype(dtype)?),
        };
        emb.add(&class_emb)
    }

    /// The model's output for `sample` `[N, in_channels, H, W]` (H and W divisible by
    /// 2^(levels − 1)), `timestep` (one value or `[N]`, any numeric dtype) and, for a
    /// class-conditional model, `class_labels` (`[N]` i64 ids; `[N, time_embed_dim]` for the
    /// `identity` class embedding).
    pub fn forward(
        &self,
        ps: &ParamStore,
        sample: &Var,
        timestep: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Var> {
        self.forward_with(ps, sample, timestep, class_labels, None)
    }

    /// [`UNet2DModel::forward`] with the `condition` the model's ANL modules read (see
    /// [`UNet2DModel::set_anl`]); `None` for a model without them or with unconditional ones.
    pub fn forward_with(
        &self,
        ps: &ParamStore,
        sample: &Var,
        timestep: &Tensor,
        class_labels: Option<&Tensor>,
        condition: Option<&Condition>,
    ) -> Result<Var> {
        let n = sample.shape().first().copied().unwrap_or(0);
        let temb = self.embedding(ps, timestep, class_labels, n)?;
        let ctx = BlockCtx {
            ps,
            temb: Some(&temb),
            checkpoint: self.checkpointing,
            anl: self.anl.as_ref().map(|anl| (anl, condition)),
        };
        // Mixed precision: compute in the store's compute dtype, answer in the master dtype.
        let sample = sample.to_dtype(ps.compute_dtype())?;
        let x = if self.config.center_input_sample {
            sample.mul_scalar(2.0)?.add_scalar(-1.0)?
        } else {
            sample
        };
        let mut h = self.conv_in.forward(ps, &x)?;
        let mut skips = vec![h.clone()];
        // DeMe's projections (where the store has them) act on each block's main output, not on
        // the skip tensors a down block sends to the decoder.
        for (i, block) in self.down_blocks.iter().enumerate() {
            let (out, states) = block.forward(&ctx, &h)?;
            h = project(ps, &format!("down_blocks.{i}"), &out)?;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = project(ps, "mid_block", &mid.forward(&ctx, &h)?)?;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            h = project(
                ps,
                &format!("up_blocks.{i}"),
                &block.forward(&ctx, &h, &mut skips)?,
            )?;
        }
        let h = self.conv_norm_out.forward(ps, &h)?.silu()?;
        self.conv_out.forward(ps, &h)?.to_dtype(ps.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_key() {
        for (json, key) in [
            (r#"{"act_fn": "mish"}"#, "act_fn"),
            (
                r#"{"down_block_types": ["SkipDownBlock2D"], "up_block_types": ["UpBlock2D"], "block_out_channels": [32]}"#,
                "down_block_types",
            ),
            (
                r#"{"time_embedding_type": "fourier"}"#,
                "time_embedding_type",
            ),
            (r#"{"block_out_channels": [32, 64]}"#, "down_block_types"),
            (r#"{"norm_num_groups": 5}"#, "norm_num_groups"),
            (r#"{"layers_per_blok": 2}"#, "layers_per_blok"),
        ] {
            let err = UNet2DConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{json}: {err}");
        }
    }
}
