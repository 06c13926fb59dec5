//! diffusers' building blocks, shared by [`UNet2DModel`](crate::unet::UNet2DModel) and
//! [`AutoencoderKL`](crate::vae::AutoencoderKL), with parameters under diffusers' state-dict names:
//! [`ResnetBlock2D`], [`Downsample2D`], [`Upsample2D`], [`Attention`], and the composite
//! [`DownBlock`], [`UpBlock`] and [`MidBlock2D`] (`UNetMidBlock2D`).
//!
//! Forward passes are diffusers' eval mode (dropout is the identity). Each residual block and
//! each attention can run under gradient checkpointing ([`BlockCtx::checkpoint`]), and the ANL
//! transfer method's modules ([`crate::anl`]) follow the residual blocks where a model has them.

use autograd::{checkpoint, Var};
use tensor::{Conv2dParams, Error, Result};

use crate::anl::{Anl, Condition};
use crate::config::bad_value;
use crate::nn::{self, Conv2d, GroupNorm, Linear};
use crate::params::{join, ParamStore};

/// The nonlinearity of the residual blocks (diffusers' `act_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
    /// `gelu` (exact).
    Gelu,
}

impl Activation {
    /// Parses diffusers' `act_fn` names; `model` and `key` name the config entry in the error.
    pub fn parse(model: &str, key: &str, name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            _ => Err(bad_value(
                model,
                key,
                format!("{name:?}"),
                "one of silu, swish, relu, gelu",
            )),
        }
    }

    /// The activation of `x`.
    pub fn apply(self, x: &Var) -> Result<Var> {
        match self {
            Activation::Silu => x.silu(),
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
        }
    }
}

/// How a residual block injects the time embedding (diffusers' `resnet_time_scale_shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeShift {
    /// `"default"`: `h = conv1(..) + proj(temb)`.
    Default,
    /// `"scale_shift"`: `proj(temb)` gives `[scale, shift]`, applied after `norm2` as
    /// `h · (1 + scale) + shift`.
    ScaleShift,
}

impl TimeShift {
    /// Parses `resnet_time_scale_shift`.
    pub fn parse(model: &str, key: &str, name: &str) -> Result<Self> {
        match name {
            "default" => Ok(TimeShift::Default),
            "scale_shift" => Ok(TimeShift::ScaleShift),
            _ => Err(bad_value(
                model,
                key,
                format!("{name:?}"),
                "\"default\" or \"scale_shift\"",
            )),
        }
    }
}

/// The settings every residual block of a model shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResnetOpts {
    /// Width of the time embedding; `None` (the VAE) means no `time_emb_proj`.
    pub temb_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Nonlinearity.
    pub act: Activation,
    /// How the time embedding enters.
    pub time_shift: TimeShift,
    /// The output is `(shortcut + h) / output_scale_factor`.
    pub output_scale_factor: f64,
    /// Dropout probability (the forward pass is eval mode, so it is not applied).
    pub dropout: f64,
}

/// What the blocks of one forward pass share.
#[derive(Clone, Copy)]
pub struct BlockCtx<'a> {
    /// The parameters.
    pub ps: &'a ParamStore,
    /// The time embedding `[N, temb_channels]`, if the model has one.
    pub temb: Option<&'a Var>,
    /// Whether each residual block and attention runs under gradient checkpointing.
    pub checkpoint: bool,
    /// ANL modules after the residual blocks, and the condition they read (see [`crate::anl`]).
    pub anl: Option<(&'a Anl, Option<&'a Condition>)>,
}

impl BlockCtx<'_> {
    /// A residual block, checkpointed if asked, then its ANL module if it has one (outside the
    /// checkpoint: the module's own activations are kept).
    pub fn resnet(&self, block: &ResnetBlock2D, x: &Var) -> Result<Var> {
        let b = block.clone();
        let mut inputs = vec![x];
        inputs.extend(self.temb);
        let h = run_block(
            self.ps,
            &block.prefix,
            self.checkpoint,
            &inputs,
            move |ps, xs| b.forward(ps, &xs[0], xs.get(1)),
        )?;
        match self.anl {
            Some((anl, condition)) => anl.apply(self.ps, &block.prefix, h, condition),
            None => Ok(h),
        }
    }

    /// An attention block, checkpointed if asked.
    pub fn attention(&self, block: &Attention, x: &Var) -> Result<Var> {
        let b = block.clone();
        run_block(
            self.ps,
            &block.prefix,
            self.checkpoint,
            &[x],
            move |ps, xs| b.forward(ps, &xs[0]),
        )
    }
}

/// Runs `f(ps, inputs)`; with `checkpointed`, under [`autograd::checkpoint`] with every Var
/// stored under `prefix` (LoRA factors included) as its parameters, so that only the inputs and
/// the output are kept.
pub fn run_block(
    ps: &ParamStore,
    prefix: &str,
    checkpointed: bool,
    inputs: &[&Var],
    f: impl Fn(&ParamStore, &[Var]) -> Result<Var> + Send + 'static,
) -> Result<Var> {
    if !checkpointed {
        let owned: Vec<Var> = inputs.iter().map(|&v| v.clone()).collect();
        return f(ps, &owned);
    }
    let sub = ps.subset(prefix);
    let params: Vec<Var> = sub.iter().map(|(_, v)| v.clone()).collect();
    let param_refs: Vec<&Var> = params.iter().collect();
    checkpoint(inputs, &param_refs, move |xs| f(&sub, xs))
}

fn conv3x3(ps: &mut ParamStore, prefix: &str, cin: usize, cout: usize) -> Result<Conv2d> {
    let p = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    Conv2d::new(ps, prefix, cin, cout, 3, p, true)
}

/// diffusers' `ResnetBlock2D`: `norm1, act, conv1, (+ time_emb_proj(act(temb))), norm2, act,
/// dropout, conv2`, plus the input (through the 1×1 `conv_shortcut` when the channels change),
/// divided by `output_scale_factor`.
#[derive(Clone, Debug)]
pub struct ResnetBlock2D {
    prefix: String,
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    opts: ResnetOpts,
}

impl ResnetBlock2D {
    /// Adds the block's parameters under `prefix` with PyTorch's default init.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        opts: &ResnetOpts,
    ) -> Result<Self> {
        let p = |name| join(prefix, name);
        let proj_out = match opts.time_shift {
            TimeShift::Default => out_ch,
            TimeShift::ScaleShift => 2 * out_ch,
        };
        Ok(ResnetBlock2D {
            prefix: prefix.to_string(),
            norm1: GroupNorm::new(ps, &p("norm1"), opts.groups, in_ch, opts.eps)?,
            conv1: conv3x3(ps, &p("conv1"), in_ch, out_ch)?,
            time_emb_proj: opts
                .temb_channels
                .map(|t| Linear::new(ps, &p("time_emb_proj"), t, proj_out, true))
                .transpose()?,
            norm2: GroupNorm::new(ps, &p("norm2"), opts.groups, out_ch, opts.eps)?,
            conv2: conv3x3(ps, &p("conv2"), out_ch, out_ch)?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| {
                    Conv2d::new(
                        ps,
                        &p("conv_shortcut"),
                        in_ch,
                        out_ch,
                        1,
                        Conv2dParams::default(),
                        true,
                    )
                })
                .transpose()?,
            opts: *opts,
        })
    }

    /// The block's state-dict prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// x `[N, in, H, W]`, temb `[N, temb_channels]` (ignored without `time_emb_proj`) ->
    /// `[N, out, H, W]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var, temb: Option<&Var>) -> Result<Var> {
        let act = self.opts.act;
        let h = act.apply(&self.norm1.forward(ps, x)?)?;
        let mut h = self.conv1.forward(ps, &h)?;
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                let t = proj.forward(ps, &act.apply(t)?)?;
                let (n, c) = (t.shape()[0], t.shape()[1]);
                Some(t.reshape(&[n, c, 1, 1])?)
            }
            (Some(_), None) => {
                return Err(Error::msg(format!(
                    "{}: this residual block needs a time embedding",
                    self.prefix
                )))
            }
            (None, _) => None,
        };
        if let (TimeShift::Default, Some(t)) = (self.opts.time_shift, &temb) {
            h = h.add(t)?;
        }
        h = self.norm2.forward(ps, &h)?;
        if let (TimeShift::ScaleShift, Some(t)) = (self.opts.time_shift, &temb) {
            let parts = t.chunk(2, 1)?;
            h = h.mul(&parts[0].add_scalar(1.0)?)?.add(&parts[1])?;
        }
        let h = self.conv2.forward(ps, &act.apply(&h)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(ps, x)?,
            None => x.clone(),
        };
        let out = shortcut.add(&h)?;
        if self.opts.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out.mul_scalar(1.0 / self.opts.output_scale_factor)
        }
    }
}

/// diffusers' `Downsample2D`: a 3×3 `conv` of stride 2 (with `padding` 0, the input is first
/// padded by one zero row and column at the bottom and right, as the VAE does), or 2×2 average
/// pooling without a conv.
#[derive(Clone, Debug)]
pub struct Downsample2D {
    conv: Option<Conv2d>,
}

impl Downsample2D {
    /// With `use_conv`, adds `prefix.conv` (`channels -> out_ch`); else `out_ch` must equal
    /// `channels`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        channels: usize,
        out_ch: usize,
        use_conv: bool,
        padding: usize,
    ) -> Result<Self> {
        if !use_conv && channels != out_ch {
            return Err(Error::msg(format!(
                "{prefix}: average-pool downsampling keeps the channels ({channels} != {out_ch})"
            )));
        }
        let params = Conv2dParams {
            stride: (2, 2),
            padding: (padding, padding),
            ..Default::default()
        };
        let conv = use_conv
            .then(|| Conv2d::new(ps, &join(prefix, "conv"), channels, out_ch, 3, params, true))
            .transpose()?;
        Ok(Downsample2D { conv })
    }

    /// `[N, C, H, W]` -> `[N, out, H/2, W/2]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        match &self.conv {
            Some(conv) if conv.params.padding == (0, 0) => {
                conv.forward(ps, &x.pad(&[(0, 1), (0, 1)], 0.0)?)
            }
            Some(conv) => conv.forward(ps, x),
            None => x.avg_pool2d((2, 2), (2, 2), (0, 0)),
        }
    }
}

/// diffusers' `Upsample2D`: nearest-neighbour 2× then a 3×3 `conv`.
#[derive(Clone, Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Adds `prefix.conv` (`channels -> out_ch`).
    pub fn new(ps: &mut ParamStore, prefix: &str, channels: usize, out_ch: usize) -> Result<Self> {
        Ok(Upsample2D {
            conv: conv3x3(ps, &join(prefix, "conv"), channels, out_ch)?,
        })
    }

    /// `[N, C, H, W]` -> `[N, out, 2H, 2W]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        self.conv.forward(ps, &x.upsample_nearest2d(2, 2)?)
    }
}

/// diffusers' `Attention` as these models use it (the former `AttentionBlock`): optional
/// `group_norm`, `to_q`/`to_k`/`to_v` over the `H·W` positions, multi-head scaled dot-product
/// attention, `to_out.0`, plus the input, divided by `rescale_output_factor`.
#[derive(Clone, Debug)]
pub struct Attention {
    prefix: String,
    group_norm: Option<GroupNorm>,
    attn: nn::Attention,
    rescale_output_factor: f64,
}

impl Attention {
    /// Adds the block's parameters: `channels / head_dim` heads of `head_dim`; a `group_norm`
    /// of `groups` groups when given.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        channels: usize,
        head_dim: usize,
        groups: Option<usize>,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        if head_dim == 0 || !channels.is_multiple_of(head_dim) {
            return Err(Error::msg(format!(
                "{prefix}: attention_head_dim {head_dim} does not divide the {channels} channels"
            )));
        }
        let p = |name| join(prefix, name);
        Ok(Attention {
            prefix: prefix.to_string(),
            group_norm: groups
                .map(|g| GroupNorm::new(ps, &p("group_norm"), g, channels, eps))
                .transpose()?,
            attn: nn::Attention::new(ps, prefix, channels, channels, channels / head_dim, true)?,
            rescale_output_factor,
        })
    }

    /// The block's state-dict prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `[N, C, H, W]` -> `[N, C, H, W]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let &[n, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "Attention",
                format!(
                    "{}: expected [N, C, H, W], got {:?}",
                    self.prefix,
                    x.shape()
                ),
            ));
        };
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(ps, x)?,
            None => x.clone(),
        };
        let tokens = normed.reshape(&[n, c, h * w])?.transpose(1, 2)?;
        let o = self
            .attn
            .forward(ps, &tokens, None, None)?
            .transpose(1, 2)?
            .reshape(&[n, c, h, w])?;
        let out = o.add(x)?;
        if self.rescale_output_factor == 1.0 {
            Ok(out)
        } else {
            out.mul_scalar(1.0 / self.rescale_output_factor)
        }
    }
}

/// Attention settings of a down, up or mid block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnOpts {
    /// Channels per head.
    pub head_dim: usize,
    /// GroupNorm groups of the attention (`None`: no `group_norm`).
    pub groups: Option<usize>,
}

/// A down block: `DownBlock2D` / `AttnDownBlock2D` (with a time embedding) or
/// `DownEncoderBlock2D` (without): `resnets.{j}` (each followed by `attentions.{j}` when it has
/// attention), then `downsamplers.0` unless it is the last level.
#[derive(Clone, Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// `layers` residual blocks `in_ch -> out_ch`, attention when `attn` is given, and a conv
    /// downsampler with `downsample` = `Some(padding)`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        (in_ch, out_ch): (usize, usize),
        layers: usize,
        opts: &ResnetOpts,
        attn: Option<AttnOpts>,
        downsample: Option<usize>,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let cin = if j == 0 { in_ch } else { out_ch };
            resnets.push(ResnetBlock2D::new(
                ps,
                &format!("{prefix}.resnets.{j}"),
                cin,
                out_ch,
                opts,
            )?);
            if let Some(a) = attn {
                attentions.push(Attention::new(
                    ps,
                    &format!("{prefix}.attentions.{j}"),
                    out_ch,
                    a.head_dim,
                    a.groups,
                    opts.eps,
                    opts.output_scale_factor,
                )?);
            }
        }
        let downsampler = downsample
            .map(|pad| {
                let p = format!("{prefix}.downsamplers.0");
                Downsample2D::new(ps, &p, out_ch, out_ch, true, pad)
            })
            .transpose()?;
        Ok(DownBlock {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// The number of skip features `forward` returns (one per layer, one more when it
    /// downsamples).
    pub fn num_outputs(&self) -> usize {
        self.resnets.len() + usize::from(self.downsampler.is_some())
    }

    /// The block's output and the features it leaves for the skip connections.
    pub fn forward(&self, ctx: &BlockCtx, x: &Var) -> Result<(Var, Vec<Var>)> {
        let mut h = x.clone();
        let mut states = Vec::with_capacity(self.num_outputs());
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = ctx.resnet(resnet, &h)?;
            if let Some(attn) = self.attentions.get(j) {
                h = ctx.attention(attn, &h)?;
            }
            states.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(ctx.ps, &h)?;
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// An up block: `UpBlock2D` / `AttnUpBlock2D` (which concatenate a skip feature before each
/// residual block) or `UpDecoderBlock2D` (no skips): `resnets.{j}` (each followed by
/// `attentions.{j}` when it has attention), then `upsamplers.0` unless it is the last level.
#[derive(Clone, Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    upsampler: Option<Upsample2D>,
    skips: bool,
}

/// Channel widths of an up block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpChannels {
    /// Channels coming from the previous (deeper) block.
    pub prev: usize,
    /// Output channels.
    pub out: usize,
    /// With skip connections: channels of the skip feature of the last layer (the down
    /// block's input width); the other layers' skips have `out` channels.
    pub skip_in: Option<usize>,
}

impl UpBlock {
    /// `layers` residual blocks, attention when `attn` is given, an upsampler with `upsample`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        ch: UpChannels,
        layers: usize,
        opts: &ResnetOpts,
        attn: Option<AttnOpts>,
        upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let cin = if j == 0 { ch.prev } else { ch.out };
            let skip = match ch.skip_in {
                Some(last) if j == layers - 1 => last,
                Some(_) => ch.out,
                None => 0,
            };
            resnets.push(ResnetBlock2D::new(
                ps,
                &format!("{prefix}.resnets.{j}"),
                cin + skip,
                ch.out,
                opts,
            )?);
            if let Some(a) = attn {
                attentions.push(Attention::new(
                    ps,
                    &format!("{prefix}.attentions.{j}"),
                    ch.out,
                    a.head_dim,
                    a.groups,
                    opts.eps,
                    opts.output_scale_factor,
                )?);
            }
        }
        let upsampler = upsample
            .then(|| Upsample2D::new(ps, &format!("{prefix}.upsamplers.0"), ch.out, ch.out))
            .transpose()?;
        Ok(UpBlock {
            resnets,
            attentions,
            upsampler,
            skips: ch.skip_in.is_some(),
        })
    }

    /// The number of skip features the block consumes.
    pub fn num_skips(&self) -> usize {
        if self.skips {
            self.resnets.len()
        } else {
            0
        }
    }

    /// The block's output; with skip connections, pops one feature of `skips` (the last
    /// first) before each residual block and concatenates it along the channels.
    pub fn forward(&self, ctx: &BlockCtx, x: &Var, skips: &mut Vec<Var>) -> Result<Var> {
        let mut h = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            if self.skips {
                let skip = skips.pop().ok_or_else(|| {
                    Error::msg(format!("{}: no skip feature left", resnet.prefix()))
                })?;
                h = Var::cat(&[&h, &skip], 1)?;
            }
            h = ctx.resnet(resnet, &h)?;
            if let Some(attn) = self.attentions.get(j) {
                h = ctx.attention(attn, &h)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(ctx.ps, &h),
            None => Ok(h),
        }
    }
}

/// diffusers' `UNetMidBlock2D`: `resnets.0`, `attentions.0` (optional), `resnets.1`.
#[derive(Clone, Debug)]
pub struct MidBlock2D {
    resnets: [ResnetBlock2D; 2],
    attention: Option<Attention>,
}

impl MidBlock2D {
    /// Two residual blocks of `channels` with attention between them when `attn` is given.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        channels: usize,
        opts: &ResnetOpts,
        attn: Option<AttnOpts>,
    ) -> Result<Self> {
        let r0 = ResnetBlock2D::new(ps, &format!("{prefix}.resnets.0"), channels, channels, opts)?;
        let attention = attn
            .map(|a| {
                Attention::new(
                    ps,
                    &format!("{prefix}.attentions.0"),
                    channels,
                    a.head_dim,
                    a.groups,
                    opts.eps,
                    opts.output_scale_factor,
                )
            })
            .transpose()?;
        let r1 = ResnetBlock2D::new(ps, &format!("{prefix}.resnets.1"), channels, channels, opts)?;
        Ok(MidBlock2D {
            resnets: [r0, r1],
            attention,
        })
    }

    /// `[N, C, H, W]` -> `[N, C, H, W]`.
    pub fn forward(&self, ctx: &BlockCtx, x: &Var) -> Result<Var> {
        let mut h = ctx.resnet(&self.resnets[0], x)?;
        if let Some(attn) = &self.attention {
            h = ctx.attention(attn, &h)?;
        }
        ctx.resnet(&self.resnets[1], &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device, Generator, Tensor};

    #[test]
    fn downsample_shapes_and_average_pool() {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let conv = Downsample2D::new(&mut ps, "a", 2, 3, true, 0).unwrap();
        let pool = Downsample2D::new(&mut ps, "b", 2, 2, false, 0).unwrap();
        let x = Tensor::from_vec((0..32).map(f64::from).collect(), &[1, 2, 4, 4]).unwrap();
        let x = Var::constant(x);
        assert_eq!(conv.forward(&ps, &x).unwrap().shape(), &[1, 3, 2, 2]);
        let y = pool
            .forward(&ps, &x)
            .unwrap()
            .value()
            .to_vec::<f64>()
            .unwrap();
        // The top-left window of channel 0 holds 0, 1, 4, 5.
        assert_eq!(y[0], 2.5);
        assert!(Downsample2D::new(&mut ps, "c", 2, 3, false, 0).is_err());
    }

    #[test]
    fn attention_with_zero_output_projection_is_the_identity() {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let attn = Attention::new(&mut ps, "attn", 8, 4, Some(2), 1e-5, 1.0).unwrap();
        for name in ["attn.to_out.0.weight", "attn.to_out.0.bias"] {
            let shape = ps.tensor(name).unwrap().shape().to_vec();
            ps.set(
                name,
                Tensor::zeros(&shape, DType::F64, Device::Cpu).unwrap(),
            )
            .unwrap();
        }
        let mut gen = Generator::new(1);
        let x = Tensor::randn(&[2, 8, 3, 3], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
        let y = attn.forward(&ps, &Var::constant(x.clone())).unwrap();
        assert_eq!(
            y.value().to_vec::<f64>().unwrap(),
            x.to_vec::<f64>().unwrap()
        );
        assert!(Attention::new(&mut ps, "bad", 8, 3, None, 1e-5, 1.0).is_err());
    }
}
