//! diffusers' `AutoencoderKL`, built from its JSON config with diffusers' state-dict names.
//!
//! ```text
//! encode: encoder.conv_in -> encoder.down_blocks.{i} -> encoder.mid_block -> conv_norm_out
//!         -> silu -> conv_out (2·latent) -> quant_conv -> (mean, logvar clamped to [-30, 20])
//! decode: post_quant_conv -> decoder.conv_in -> decoder.mid_block -> decoder.up_blocks.{i}
//!         -> conv_norm_out -> silu -> conv_out
//! ```

use autograd::Var;
use tensor::{Conv2dParams, Result};

use crate::blocks::{
    Activation, AttnOpts, BlockCtx, DownBlock, MidBlock2D, ResnetOpts, TimeShift, UpBlock,
    UpChannels,
};
use crate::config::{bad_value, check_levels, check_sizes, JsonConfig};
use crate::nn::{Conv2d, GroupNorm};
use crate::params::{join, ParamStore};

const MODEL: &str = "AutoencoderKL";

const KNOWN_KEYS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

/// The GroupNorm epsilon diffusers' VAE uses everywhere.
const EPS: f64 = 1e-6;

/// The configuration of an [`AutoencoderKL`], as diffusers writes it in `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D`, one per level.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D`, one per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per encoder level (decoder levels have one more).
    pub layers_per_block: usize,
    /// Nonlinearity of the residual blocks.
    pub act_fn: String,
    /// Latent channels.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Image size (height, width), informational.
    pub sample_size: Option<(usize, usize)>,
    /// Latents are multiplied by this before diffusion (and divided after).
    pub scaling_factor: f64,
    /// Latents are shifted by this before scaling, where set (SD3, Flux).
    pub shift_factor: Option<f64>,
    /// Whether diffusers runs this VAE in float32 under half precision.
    pub force_upcast: bool,
    /// Whether `quant_conv` exists.
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists.
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have attention.
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    /// Parses diffusers' JSON config; absent keys take diffusers' defaults.
    pub fn from_json(json: &str) -> Result<Self> {
        let c = JsonConfig::parse(MODEL, json, KNOWN_KEYS)?;
        let config = AutoencoderKLConfig {
            in_channels: c.usize("in_channels", 3)?,
            out_channels: c.usize("out_channels", 3)?,
            down_block_types: c.string_list("down_block_types", &["DownEncoderBlock2D"])?,
            up_block_types: c.string_list("up_block_types", &["UpDecoderBlock2D"])?,
            block_out_channels: c.usize_list("block_out_channels", &[64])?,
            layers_per_block: c.usize("layers_per_block", 1)?,
            act_fn: c.string("act_fn", "silu")?,
            latent_channels: c.usize("latent_channels", 4)?,
            norm_num_groups: c.usize("norm_num_groups", 32)?,
            sample_size: c.opt_size("sample_size")?,
            scaling_factor: c.f64("scaling_factor", 0.18215)?,
            shift_factor: c.opt_f64("shift_factor", None)?,
            force_upcast: c.bool("force_upcast", true)?,
            use_quant_conv: c.bool("use_quant_conv", true)?,
            use_post_quant_conv: c.bool("use_post_quant_conv", true)?,
            mid_block_add_attention: c.bool("mid_block_add_attention", true)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values this implementation supports and that the lists agree.
    pub fn validate(&self) -> Result<()> {
        check_levels(
            MODEL,
            &self.block_out_channels,
            &[
                ("down_block_types", &self.down_block_types[..]),
                ("up_block_types", &self.up_block_types[..]),
            ],
        )?;
        for (key, list, kind) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if let Some(bad) = list.iter().find(|k| *k != kind) {
                return Err(bad_value(MODEL, key, format!("{bad:?}"), kind));
            }
        }
        check_sizes(
            MODEL,
            &[
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels),
                ("latent_channels", self.latent_channels),
                ("layers_per_block", self.layers_per_block),
            ],
        )?;
        let g = self.norm_num_groups;
        if let Some(&ch) = self
            .block_out_channels
            .iter()
            .find(|&&c| g == 0 || c % g != 0)
        {
            return Err(bad_value(
                MODEL,
                "norm_num_groups",
                g,
                &format!("a divisor of every block_out_channels entry ({ch})"),
            ));
        }
        Activation::parse(MODEL, "act_fn", &self.act_fn)?;
        Ok(())
    }
}

fn conv(ps: &mut ParamStore, name: &str, cin: usize, cout: usize, k: usize) -> Result<Conv2d> {
    let p = Conv2dParams {
        padding: (k / 2, k / 2),
        ..Default::default()
    };
    Conv2d::new(ps, name, cin, cout, k, p, true)
}

/// `conv_norm_out -> silu -> conv_out`, the tail of the encoder and the decoder.
#[derive(Clone, Debug)]
struct OutHead {
    norm: GroupNorm,
    conv: Conv2d,
}

impl OutHead {
    fn new(
        ps: &mut ParamStore,
        prefix: &str,
        cin: usize,
        cout: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(OutHead {
            norm: GroupNorm::new(ps, &join(prefix, "conv_norm_out"), groups, cin, EPS)?,
            conv: conv(ps, &join(prefix, "conv_out"), cin, cout, 3)?,
        })
    }

    fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        self.conv.forward(ps, &self.norm.forward(ps, x)?.silu()?)
    }
}

/// diffusers' `AutoencoderKL` (eval mode). See the module docs for the layout.
pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    enc_conv_in: Conv2d,
    enc_down: Vec<DownBlock>,
    enc_mid: MidBlock2D,
    enc_out: OutHead,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: MidBlock2D,
    dec_up: Vec<UpBlock>,
    dec_out: OutHead,
    checkpointing: bool,
}

impl AutoencoderKL {
    /// Adds every parameter of the model described by `config` to `ps` (PyTorch's default
    /// init; load a checkpoint over it with [`ParamStore::load`]).
    pub fn new(ps: &mut ParamStore, config: &AutoencoderKLConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let (levels, top, latent) = (ch.len(), ch[ch.len() - 1], config.latent_channels);
        let opts = ResnetOpts {
            temb_channels: None,
            groups: config.norm_num_groups,
            eps: EPS,
            act: Activation::parse(MODEL, "act_fn", &config.act_fn)?,
            time_shift: TimeShift::Default,
            output_scale_factor: 1.0,
            dropout: 0.0,
        };
        let mid_attn = config.mid_block_add_attention.then_some(AttnOpts {
            head_dim: top,
            groups: Some(config.norm_num_groups),
        });

        let enc_conv_in = conv(ps, "encoder.conv_in", config.in_channels, ch[0], 3)?;
        let mut enc_down = Vec::with_capacity(levels);
        for i in 0..levels {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            enc_down.push(DownBlock::new(
                ps,
                &format!("encoder.down_blocks.{i}"),
                (cin, ch[i]),
                config.layers_per_block,
                &opts,
                None,
                (i + 1 != levels).then_some(0),
            )?);
        }
        let enc_mid = MidBlock2D::new(ps, "encoder.mid_block", top, &opts, mid_attn)?;
        let enc_out = OutHead::new(ps, "encoder", top, 2 * latent, opts.groups)?;
        let quant_conv = config
            .use_quant_conv
            .then(|| conv(ps, "quant_conv", 2 * latent, 2 * latent, 1))
            .transpose()?;
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| conv(ps, "post_quant_conv", latent, latent, 1))
            .transpose()?;

        let dec_conv_in = conv(ps, "decoder.conv_in", latent, top, 3)?;
        let dec_mid = MidBlock2D::new(ps, "decoder.mid_block", top, &opts, mid_attn)?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_up = Vec::with_capacity(levels);
        for i in 0..levels {
            let channels = UpChannels {
                prev: rev[i.saturating_sub(1)],
                out: rev[i],
                skip_in: None,
            };
            dec_up.push(UpBlock::new(
                ps,
                &format!("decoder.up_blocks.{i}"),
                channels,
                config.layers_per_block + 1,
                &opts,
                None,
                i + 1 != levels,
            )?);
        }
        let dec_out = OutHead::new(ps, "decoder", ch[0], config.out_channels, opts.groups)?;
        Ok(AutoencoderKL {
            config: config.clone(),
            enc_conv_in,
            enc_down,
            enc_mid,
            enc_out,
            quant_conv,
            post_quant_conv,
            dec_conv_in,
            dec_mid,
            dec_up,
            dec_out,
            checkpointing: false,
        })
    }

    /// [`AutoencoderKL::new`] from diffusers' JSON config.
    pub fn from_json(ps: &mut ParamStore, json: &str) -> Result<Self> {
        Self::new(ps, &AutoencoderKLConfig::from_json(json)?)
    }

    /// The configuration.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// The factor latents are multiplied by before diffusion (`scaling_factor`).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Turns gradient checkpointing of every residual block and attention on or off.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    fn ctx<'a>(&self, ps: &'a ParamStore) -> BlockCtx<'a> {
        BlockCtx {
            ps,
            temb: None,
            checkpoint: self.checkpointing,
            anl: None,
        }
    }

    /// The posterior of `x` `[N, in_channels, H, W]`: `(mean, logvar)`, each
    /// `[N, latent_channels, H / 2^(levels−1), W / 2^(levels−1)]`, logvar clamped to [-30, 20]
    /// as diffusers' `DiagonalGaussianDistribution`.
    pub fn encode(&self, ps: &ParamStore, x: &Var) -> Result<(Var, Var)> {
        let ctx = self.ctx(ps);
        let mut h = self.enc_conv_in.forward(ps, x)?;
        for block in &self.enc_down {
            h = block.forward(&ctx, &h)?.0;
        }
        h = self.enc_mid.forward(&ctx, &h)?;
        let mut moments = self.enc_out.forward(ps, &h)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(ps, &moments)?;
        }
        let parts = moments.chunk(2, 1)?;
        Ok((parts[0].clone(), parts[1].clamp(-30.0, 20.0)?))
    }

    /// The image of latents `z` `[N, latent_channels, h, w]` (unscaled: divide diffusion
    /// latents by [`scaling_factor`](Self::scaling_factor) first).
    pub fn decode(&self, ps: &ParamStore, z: &Var) -> Result<Var> {
        let ctx = self.ctx(ps);
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(ps, z)?,
            None => z.clone(),
        };
        let mut h = self.dec_conv_in.forward(ps, &z)?;
        h = self.dec_mid.forward(&ctx, &h)?;
        for block in &self.dec_up {
            h = block.forward(&ctx, &h, &mut Vec::new())?;
        }
        self.dec_out.forward(ps, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_key() {
        for (json, key) in [
            (
                r#"{"down_block_types": ["DownBlock2D"]}"#,
                "down_block_types",
            ),
            (r#"{"act_fn": "tanh"}"#, "act_fn"),
            (r#"{"block_out_channels": [64, 128]}"#, "down_block_types"),
            (r#"{"latent_channel": 4}"#, "latent_channel"),
        ] {
            let err = AutoencoderKLConfig::from_json(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{json}: {err}");
        }
    }
}
