//! [`Network`]: the denoiser a run trains, a DiT or a U-Net (diffusers' `UNet2DModel`), behind
//! one interface for the trainer, the samplers, the transfer methods and export.

use std::path::Path;

use autograd::{no_grad, Var};
use models::anl::{Anl, AnlOptions, Condition};
use models::dit::{drop_labels, Control, Dit};
use models::encoder::ImageEncoder;
use models::unet::{UNet2DConfig, UNet2DModel};
use models::ParamStore;
use tensor::{Error, Generator, Result, Tensor};

use super::config::{ModelConfig, UnetSettings};
use super::RunConfig;
use crate::methods::{AnlTokens, Method};

/// A run's denoiser: `x_t`, timesteps and labels in, the prediction out.
// One per run: the variants' sizes (a few hundred bytes of module tables) do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Network {
    /// DiT (Peebles and Xie), class-conditional.
    Dit(Dit),
    /// diffusers' `UNet2DModel`, class-conditional (a class table added to the time embedding)
    /// or unconditional.
    Unet(Unet),
}

/// What a network reads besides `x_t`, the timesteps and the labels.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// An ANL model's condition (see [`Network::condition`]).
    pub condition: Option<&'a Condition>,
    /// A DiT's control metadata (see [`Network::drop_control`]); `None`: the null control.
    pub control: Option<&'a Control>,
}

/// A U-Net with what the run adds around it: label dropout and the image shape.
pub struct Unet {
    /// The network, under diffusers' parameter names.
    pub model: UNet2DModel,
    classes: usize,
    class_dropout_prob: f64,
    conditional: bool,
    image_shape: [usize; 3],
    /// ANL: the frozen encoder whose embedding of an image the modules read.
    encoder: Option<Encoder>,
}

/// A frozen image encoder and what of its output ANL modules read.
struct Encoder {
    model: ImageEncoder,
    params: ParamStore,
    tokens: AnlTokens,
}

impl Network {
    /// Adds the network of `config` for images `[C, H, W]` of `classes` classes to `ps`, freshly
    /// initialised.
    pub fn new(
        ps: &mut ParamStore,
        config: &RunConfig,
        image_shape: [usize; 3],
        classes: usize,
    ) -> Result<Network> {
        let [c, h, w] = image_shape;
        if h != w {
            return Err(Error::msg(format!(
                "images are {h}x{w}; the {} needs square images",
                config.model.kind()
            )));
        }
        match &config.model {
            ModelConfig::Dit(_) => Ok(Network::Dit(Dit::new(
                ps,
                config.dit_config(c, h, classes)?,
            )?)),
            ModelConfig::Unet(u) => {
                let mut model = UNet2DModel::new(ps, &unet_config(u, image_shape, classes)?)?;
                let encoder = anl_setup(&mut model, &config.method, image_shape, ps)?;
                Ok(Network::Unet(Unet {
                    model,
                    classes,
                    class_dropout_prob: u.class_dropout_prob,
                    conditional: u.conditional,
                    image_shape,
                    encoder,
                }))
            }
        }
    }

    /// The ANL modules of the network, if its method adds them.
    pub fn anl(&self) -> Option<&Anl> {
        match self {
            Network::Unet(u) => u.model.anl(),
            Network::Dit(_) => None,
        }
    }

    /// Whether the network reads a condition image (an ANL model with an encoder).
    pub fn needs_condition(&self) -> bool {
        matches!(
            self,
            Network::Unet(Unet {
                encoder: Some(_),
                ..
            })
        )
    }

    /// The condition of `images` `[N, C, H, W]` (in [-1, 1]) for an ANL model with an encoder:
    /// their embedding under no_grad, a fraction `mask` of its tokens hidden at random (drawn
    /// from `gen`); `None` for a network that reads none.
    pub fn condition(
        &self,
        images: &Tensor,
        mask: f64,
        gen: &mut Generator,
    ) -> Result<Option<Condition>> {
        let Network::Unet(Unet {
            encoder: Some(e), ..
        }) = self
        else {
            return Ok(None);
        };
        let x = Var::constant(images.to_device(e.params.device())?);
        let tokens = no_grad(|| match e.tokens {
            AnlTokens::Sequence => e.model.tokens(&e.params, &x),
            AnlTokens::Pooled => {
                let pooled = e.model.pooled(&e.params, &x)?;
                let &[n, p] = pooled.shape() else {
                    return Err(Error::msg(
                        "ANL: the encoder's pooled embedding is not [N, P]",
                    ));
                };
                pooled.reshape(&[n, 1, p])
            }
        })?;
        Condition::masked(Var::constant(tokens.value().clone()), mask, gen).map(Some)
    }

    /// The prediction for `x_t` `[N, C, H, W]` at timesteps `t` `[N]` with labels `y` `[N]`
    /// (the null class among them where the model has one; ignored by an unconditional U-Net).
    pub fn forward(&self, ps: &ParamStore, x_t: &Var, t: &Tensor, y: &Tensor) -> Result<Var> {
        self.forward_with(ps, x_t, t, y, &Inputs::default())
    }

    /// [`Network::forward`] with what some networks read besides the labels (see [`Inputs`]).
    /// An ANL model's U-Net runs on its null class whatever `y` asks: its frozen class table
    /// knows the source's classes. A DiT with control metadata given none runs on the null
    /// control.
    pub fn forward_with(
        &self,
        ps: &ParamStore,
        x_t: &Var,
        t: &Tensor,
        y: &Tensor,
        inputs: &Inputs,
    ) -> Result<Var> {
        let condition = inputs.condition;
        match self {
            Network::Dit(dit) => dit.forward_with(ps, x_t, t, y, inputs.control),
            Network::Unet(u) if !u.conditional => u.model.forward_with(ps, x_t, t, None, condition),
            Network::Unet(u) if u.model.anl().is_some() => {
                let null = match self.null_class() {
                    Some(null) => null as i64,
                    None => {
                        return Err(Error::msg(
                            "anl over a class-conditional U-Net needs its null class (a model \
                             trained with label dropout): the frozen U-Net runs unconditionally",
                        ))
                    }
                };
                let n = y.elem_count();
                let y = Tensor::from_vec(vec![null; n], &[n])?;
                u.model.forward_with(ps, x_t, t, Some(&y), condition)
            }
            Network::Unet(u) => {
                let rows = u.classes + usize::from(u.class_dropout_prob > 0.0);
                let labels = y.to_vec::<i64>()?;
                if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= rows) {
                    return Err(Error::msg(format!(
                        "U-Net forward: label {bad} is out of range; labels are 0..{}{}",
                        u.classes,
                        if rows > u.classes {
                            " and the null class"
                        } else {
                            ""
                        }
                    )));
                }
                u.model.forward_with(ps, x_t, t, Some(y), condition)
            }
        }
    }

    /// Kinds of control metadata the network reads (0: none).
    pub fn control_dim(&self) -> usize {
        match self {
            Network::Dit(dit) => dit.config().control_dim,
            Network::Unet(_) => 0,
        }
    }

    /// Training's control dropout: the control metadata `values` `[N, K]` of a batch, each
    /// image's dropped with the model's `control_dropout_prob` (drawn from `gen`, nothing drawn
    /// for a network without control); `None` for a network that reads none.
    pub fn drop_control(
        &self,
        values: &Tensor,
        dropout_prob: f64,
        gen: &mut Generator,
    ) -> Result<Option<Control>> {
        if self.control_dim() == 0 {
            return Ok(None);
        }
        let n = values.shape().first().copied().unwrap_or(0);
        let u = Tensor::rand(&[n], 0.0, 1.0, tensor::DType::F64, tensor::Device::Cpu, gen)?;
        let keep = u
            .to_vec::<f64>()?
            .into_iter()
            .map(|u| u >= dropout_prob)
            .collect();
        Control::new(values.clone(), keep).map(Some)
    }

    /// Training's label dropout: each label replaced by the null class with the model's
    /// `class_dropout_prob`, drawn from `gen` as DiT's `token_drop` draws it (nothing is drawn
    /// for a model without dropout).
    pub fn drop_labels(&self, y: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        match self.null_class() {
            Some(null) => {
                let p = match self {
                    Network::Dit(dit) => dit.config().class_dropout_prob,
                    Network::Unet(u) => u.class_dropout_prob,
                };
                drop_labels(y, p, null, gen)
            }
            None => Ok(y.clone()),
        }
    }

    /// `[C, H, W]` of the images.
    pub fn image_shape(&self) -> [usize; 3] {
        match self {
            Network::Dit(dit) => {
                let c = dit.config();
                [c.in_channels, c.input_size, c.input_size]
            }
            Network::Unet(u) => u.image_shape,
        }
    }

    /// The classes of the labels.
    pub fn classes(&self) -> usize {
        match self {
            Network::Dit(dit) => dit.config().num_classes,
            Network::Unet(u) => u.classes,
        }
    }

    /// Whether the samples depend on the label (for an ANL model: through a condition image of
    /// the label's class).
    pub fn conditional(&self) -> bool {
        match self {
            Network::Dit(_) => true,
            Network::Unet(u) if u.model.anl().is_some() => u.encoder.is_some(),
            Network::Unet(u) => u.conditional,
        }
    }

    /// The label of "no class" (classifier-free guidance, a knowledge bank), where the model's
    /// class table has that row: it is trained only where labels are dropped.
    pub fn null_class(&self) -> Option<usize> {
        let (conditional, dropout) = match self {
            Network::Dit(dit) => (true, dit.config().class_dropout_prob),
            Network::Unet(u) => (u.conditional, u.class_dropout_prob),
        };
        (conditional && dropout > 0.0).then_some(self.classes())
    }

    /// The name of the class table (a row per class, then the null class's row where the model
    /// has one); `None` for an unconditional model.
    pub fn label_table(&self) -> Option<String> {
        match self {
            Network::Dit(dit) => Some(dit.label_table()),
            Network::Unet(u) => u.conditional.then(|| "class_embedding.weight".into()),
        }
    }

    /// The tensors of a pretrained checkpoint the network has no use for (see
    /// [`Dit::unused_parameters`]).
    pub fn unused_parameters(&self) -> Vec<String> {
        match self {
            Network::Dit(dit) => dit.unused_parameters(),
            Network::Unet(_) => Vec::new(),
        }
    }

    /// The parameters of `ps` a pretrained checkpoint may lack (they keep their
    /// initialisation): what a DiT's conditioning mode and control metadata add to the reference
    /// model (see [`Dit::new_parameters`]).
    pub fn new_parameters(&self, ps: &ParamStore) -> Vec<String> {
        match self {
            Network::Dit(dit) => dit.new_parameters(ps.names()),
            Network::Unet(_) => Vec::new(),
        }
    }

    /// What the model is, in a line: kind, shape and size.
    pub fn describe(&self, ps: &ParamStore) -> String {
        match self {
            Network::Dit(dit) => {
                let c = dit.config();
                let control = match c.control_dim {
                    0 => String::new(),
                    k => format!(", {k} kinds of control metadata"),
                };
                let positions = match c.position_scale {
                    1.0 => String::new(),
                    s => format!(", positions scaled by {s}"),
                };
                format!(
                    "DiT: patch {}, hidden {}, depth {}, heads {}, class by {}{control}\
                     {positions}, {} parameters",
                    c.patch_size,
                    c.hidden_size,
                    c.depth,
                    c.num_heads,
                    c.conditioning.name(),
                    ps.param_count()
                )
            }
            Network::Unet(u) => {
                let c = u.model.config();
                let conditioning = match (u.model.anl(), &u.encoder) {
                    (Some(_), Some(e)) => format!(
                        "ANL modules over the null class, reading a {} encoder's {}",
                        e.model.config().kind.name(),
                        match e.tokens {
                            AnlTokens::Sequence => "tokens",
                            AnlTokens::Pooled => "pooled embedding",
                        }
                    ),
                    (Some(_), None) => "unconditional ANL modules (self-attention)".into(),
                    (None, _) if u.conditional => "class-conditional".into(),
                    (None, _) => "unconditional".into(),
                };
                format!(
                    "U-Net: channels {:?}, {} blocks per level, {conditioning}, {} parameters",
                    c.block_out_channels,
                    c.layers_per_block,
                    ps.param_count()
                )
            }
        }
    }

    /// The names of DiffFit's per-block scales (an error for a model without them).
    pub fn difffit_scales(&self) -> Result<Vec<String>> {
        match self {
            Network::Dit(dit) => Ok(dit.difffit_scales()),
            Network::Unet(_) => Err(Error::msg(
                "config `trainable`: difffit scales DiT's blocks; the U-Net has no such scales \
                 (use full, lora or bitfit)",
            )),
        }
    }

    /// Folds DiffFit's scales into the weights they scale (nothing to do without them).
    pub fn fold_difffit(&self, ps: &mut ParamStore) -> Result<()> {
        match self {
            Network::Dit(dit) => dit.fold_difffit(ps),
            Network::Unet(_) => Ok(()),
        }
    }

    /// Where DeMe's channel-wise projections go (see [`models::projection`]).
    pub fn projections(&self) -> Vec<models::projection::ProjectionPoint> {
        match self {
            Network::Dit(dit) => dit.projections(),
            Network::Unet(u) => u.model.projections(),
        }
    }

    /// The weights LoRA adapts when the config names none: the attention and MLP Linear
    /// weights of DiT's blocks; the U-Net's attention projections.
    pub fn lora_targets(&self) -> Vec<String> {
        let patterns: &[&str] = match self {
            Network::Dit(_) => &["blocks.*.attn.*.weight", "blocks.*.mlp.*.weight"],
            Network::Unet(_) => &["*attentions.*.to_*.weight"],
        };
        patterns.iter().map(|p| p.to_string()).collect()
    }
}

/// Gives `model` the ANL modules of `method` (nothing for another method) and loads their
/// encoder onto `ps`'s device.
fn anl_setup(
    model: &mut UNet2DModel,
    method: &Method,
    image_shape: [usize; 3],
    ps: &ParamStore,
) -> Result<Option<Encoder>> {
    let Method::Anl {
        encoder,
        tokens,
        heads,
        mlp_ratio,
        nonlinear,
    } = method
    else {
        return Ok(None);
    };
    let encoder = encoder
        .as_ref()
        .map(|path| -> Result<Encoder> {
            let bad = |msg: String| Error::msg(format!("config `method.encoder` {path}: {msg}"));
            let (model, params) =
                ImageEncoder::load(Path::new(path), ps.device()).map_err(|e| bad(e.to_string()))?;
            if model.config().image != image_shape {
                return Err(bad(format!(
                    "the encoder takes images {:?} ([C, H, W]); the run's are {image_shape:?}",
                    model.config().image
                )));
            }
            Ok(Encoder {
                model,
                params,
                tokens: *tokens,
            })
        })
        .transpose()?;
    let context_dim = encoder.as_ref().map(|e| match e.tokens {
        AnlTokens::Sequence => e.model.token_shape().1,
        AnlTokens::Pooled => e.model.pooled_dim(),
    });
    model
        .set_anl(Some(AnlOptions {
            context_dim,
            heads: *heads,
            mlp_ratio: *mlp_ratio,
            nonlinear: *nonlinear,
        }))
        .map_err(|e| Error::msg(format!("config `method`: {e}")))?;
    Ok(encoder)
}

/// The `UNet2DModel` of `u` for images `[C, H, W]` of `classes` classes: a level per entry of
/// `channels`, attention where `attention` says, the mid block with attention, a class table
/// (with a null row when labels drop) for a conditional model.
fn unet_config(u: &UnetSettings, image_shape: [usize; 3], classes: usize) -> Result<UNet2DConfig> {
    let bad = |key: &str, msg: String| Error::msg(format!("config `model.{key}`: {msg}"));
    let levels = u.channels.len();
    if levels == 0 || u.attention.len() != levels {
        return Err(bad(
            "attention",
            format!(
                "needs one flag per level of `channels` ({levels}), got {}",
                u.attention.len()
            ),
        ));
    }
    let [c, h, _] = image_shape;
    let shrink = 1usize << (levels - 1).min(usize::BITS as usize - 1);
    if h % shrink != 0 {
        return Err(bad(
            "channels",
            format!(
                "{levels} levels halve the image {} times, but {h} is not divisible by {shrink}",
                levels - 1
            ),
        ));
    }
    if let Some(&odd) = u
        .channels
        .iter()
        .find(|&&ch| ch == 0 || ch % u.norm_groups.max(1) != 0)
    {
        return Err(bad(
            "norm_groups",
            format!(
                "{} does not divide the {odd} channels of a level",
                u.norm_groups
            ),
        ));
    }
    if !(0.0..1.0).contains(&u.class_dropout_prob) {
        return Err(bad(
            "class_dropout_prob",
            format!("must lie in [0, 1), got {}", u.class_dropout_prob),
        ));
    }
    let kind = |attn: bool, with: &str, without: &str| match attn {
        true => with.to_string(),
        false => without.to_string(),
    };
    let rows = classes + usize::from(u.class_dropout_prob > 0.0);
    let config = UNet2DConfig::from_json(
        &serde_json::json!({
            "sample_size": h,
            "in_channels": c,
            "out_channels": if u.learn_sigma { 2 * c } else { c },
            "down_block_types": u.attention.iter()
                .map(|&a| kind(a, "AttnDownBlock2D", "DownBlock2D")).collect::<Vec<_>>(),
            "up_block_types": u.attention.iter().rev()
                .map(|&a| kind(a, "AttnUpBlock2D", "UpBlock2D")).collect::<Vec<_>>(),
            "block_out_channels": u.channels,
            "layers_per_block": u.layers_per_block,
            "attention_head_dim": u.head_dim,
            "norm_num_groups": u.norm_groups,
            "num_class_embeds": u.conditional.then_some(rows),
        })
        .to_string(),
    )
    .map_err(|e| Error::msg(format!("config `model`: {e}")))?;
    Ok(config)
}
