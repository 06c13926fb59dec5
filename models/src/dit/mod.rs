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
//! Beyond the reference (arXiv 2411.03177, see [`Conditioning`] and [`control`]), all off by
//! default: the class may reach the blocks as tokens through attention instead of the adaLN sum
//! (`y_embedder.token_table.weight`, `blocks.{i}.cross_attn.{q,kv,proj}.*`), control metadata
//! (how a training image was cropped and flipped) may join the adaLN vector
//! (`control_embedder.{k}.mlp.{0,2}.*`, scheduled over t in the attention modes), and the
//! position grid may be interpolated for another resolution (`position_scale`).
//!
//! The files: `config` (the arguments), `embed` (patches, timesteps, labels, positions),
//! `control` (control metadata), `block` (the transformer blocks and the final layer), and this
//! one (the model).
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

mod block;
mod config;
pub mod control;
mod embed;
#[cfg(test)]
mod tests;

use autograd::Var;
use tensor::{DType, Error, Generator, Result, Tensor};

use crate::params::ParamStore;
use crate::projection::{project, projection_name, ProjectionPoint};
use block::{DitBlock, FinalLayer};
use control::ControlEmbedder;
use embed::{LabelEmbedder, PatchEmbed, TimestepEmbedder};

pub use config::{Conditioning, DitConfig};
pub use control::Control;
pub use embed::{drop_labels, force_drop_labels, sincos_pos_embed_2d, timestep_embedding_f32};

/// Size of the sinusoidal timestep features fed to the timestep MLP (the reference's
/// `frequency_embedding_size`).
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

/// The epsilon of every LayerNorm of the model.
const LN_EPS: f64 = 1e-6;

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
    control_embedder: Option<ControlEmbedder>,
    blocks: Vec<DitBlock>,
    final_layer: FinalLayer,
    checkpointing: bool,
    guidance: GuidanceChannels,
}

impl Dit {
    /// Validates `cfg` and adds the parameters with the reference initialisation: xavier-uniform
    /// Linear weights and zero biases, the patch embedding xavier-uniform on its `[D, C·p·p]`
    /// view, the label table and timestep-MLP weights N(0, 0.02²), the adaLN modulations and the
    /// final Linear zero, and `pos_embed` the fixed 2-D sin-cos table (at `position_scale`),
    /// not trainable. What this project adds starts so that a reference model's weights compute
    /// the reference function: the control embedders' and cross-attention's output layers are
    /// zero (see [`control`] and [`Conditioning`]).
    pub fn new(ps: &mut ParamStore, cfg: DitConfig) -> Result<Dit> {
        cfg.validate()?;
        let x_embedder = PatchEmbed::new(ps, &cfg)?;
        let pos = sincos_pos_embed_2d(cfg.hidden_size, cfg.grid_size(), cfg.position_scale);
        ps.insert(
            "pos_embed",
            Tensor::from_vec(pos, &[1, cfg.num_patches(), cfg.hidden_size])?,
        )?;
        ps.set_trainable("pos_embed", false);
        let t_embedder = TimestepEmbedder::new(ps, cfg.hidden_size)?;
        let y_embedder = LabelEmbedder::new(ps, &cfg)?;
        let control_embedder = ControlEmbedder::new(ps, &cfg)?;
        let blocks = (0..cfg.depth)
            .map(|i| DitBlock::new(ps, &format!("blocks.{i}"), &cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_layer = FinalLayer::new(ps, &cfg)?;
        Ok(Dit {
            cfg,
            x_embedder,
            t_embedder,
            y_embedder,
            control_embedder,
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
    /// `class_dropout_prob` (the reference's training mode); `None` is evaluation. A model with
    /// control metadata runs on the null control (see [`Dit::forward_with`]).
    pub fn forward(
        &self,
        ps: &ParamStore,
        x: &Var,
        t: &Tensor,
        y: &Tensor,
        train: Option<&mut Generator>,
    ) -> Result<Var> {
        let y = match train {
            Some(gen) => self.y_embedder.drop(y, gen)?,
            None => y.clone(),
        };
        self.forward_with(ps, x, t, &y, None)
    }

    /// [`Dit::forward`] in evaluation, with the `control` metadata `[N, control_dim]` of a model
    /// that has it (`None`: the null control, as if every sample's were dropped).
    pub fn forward_with(
        &self,
        ps: &ParamStore,
        x: &Var,
        t: &Tensor,
        y: &Tensor,
        control: Option<&Control>,
    ) -> Result<Var> {
        self.check_inputs(x, t, y, control)?;
        // Mixed precision: compute in the store's compute dtype, answer in the master dtype.
        let x = x.to_dtype(ps.compute_dtype())?;
        let mut x = self
            .x_embedder
            .forward(ps, &x)?
            .add(&ps.weight("pos_embed")?)?;
        let mut c = self.t_embedder.forward(ps, t)?;
        let class = self.y_embedder.forward(ps, y)?;
        let n = class.shape()[0];
        let (d, l) = (self.cfg.hidden_size, self.cfg.class_tokens);
        let tokens = match self.cfg.conditioning {
            Conditioning::AdaLn => {
                c = c.add(&class)?;
                None
            }
            _ => Some(class.reshape(&[n, l, d])?),
        };
        // No control given is the null control: no control embedding, as for a dropped one.
        if let (Some(embedder), Some(control)) = (&self.control_embedder, control) {
            c = c.add(&embedder.forward(ps, control, t)?)?;
        }
        let joint = self.cfg.conditioning == Conditioning::JointAttention;
        if let (true, Some(tokens)) = (joint, &tokens) {
            x = Var::cat(&[tokens, &x], 1)?;
        }
        let cross = tokens.as_ref().filter(|_| !joint);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(ps, &x, &c, cross, self.checkpointing)?;
            x = project(ps, &format!("blocks.{i}"), &x)?;
        }
        if joint {
            x = x.narrow(1, l, self.cfg.num_patches())?;
        }
        let x = self.final_layer.forward(ps, &x, &c)?;
        self.unpatchify(&x)?.to_dtype(ps.dtype())
    }

    /// The name of the class table: `y_embedder.embedding_table.weight` (the reference's), or
    /// `y_embedder.token_table.weight` in the attention modes.
    pub fn label_table(&self) -> String {
        format!("{}.weight", embed::label_table(&self.cfg))
    }

    /// The tensors of a reference (adaLN) checkpoint this model has no use for: its class table,
    /// in the attention modes, which read class tokens instead.
    pub fn unused_parameters(&self) -> Vec<String> {
        match self.cfg.conditioning.uses_tokens() {
            true => vec![format!("{}.weight", embed::ADALN_TABLE)],
            false => Vec::new(),
        }
    }

    /// The parameters a checkpoint of the reference's DiT, or of this one without its control
    /// embedders, lacks: the control embedders and (attention modes) the cross-attention layers
    /// and class-token table. Loaded from such a checkpoint they keep their initialisation; the
    /// control embedders and cross-attention start at zero output, so the model computes the
    /// checkpoint's function, but the class-token table does not: a model moved from adaLN to
    /// attention no longer sums the checkpoint's class embedding into adaLN and must learn its
    /// class tokens.
    pub fn new_parameters<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<String> {
        let table = self.label_table();
        names
            .filter(|n| {
                n.starts_with("control_embedder.")
                    || n.contains(".cross_attn.")
                    || (self.cfg.conditioning.uses_tokens() && *n == table)
            })
            .map(str::to_string)
            .collect()
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

    fn check_inputs(
        &self,
        x: &Var,
        t: &Tensor,
        y: &Tensor,
        control: Option<&Control>,
    ) -> Result<()> {
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
        if let Some(control) = control {
            let k = self.cfg.control_dim;
            let shape = control.values().shape();
            if k == 0 {
                return Err(Error::msg(
                    "Dit::forward: this model takes no control metadata (`control_dim` 0)",
                ));
            }
            if shape != [n, k] {
                return Err(Error::shape(
                    "Dit::forward",
                    format!(
                        "control is {shape:?}, expected [{n}, {k}] (one value per control kind \
                         for each image of x {xs:?})"
                    ),
                ));
            }
        }
        Ok(())
    }
}
