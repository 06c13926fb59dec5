//! The CLIP vision tower under the parameter names of HuggingFace transformers'
//! `CLIPVisionModelWithProjection` (and `CLIPVisionModel`, which lacks the projection), so a
//! converted checkpoint loads unchanged:
//!
//! ```text
//! images -> vision_model.embeddings (patch conv without bias, class token, positions)
//!   -> vision_model.pre_layrnorm -> vision_model.encoder.layers.{i}    = last_hidden_state
//!   -> [:, 0] -> vision_model.post_layernorm                            = pooler_output
//!   -> visual_projection (no bias, when projection_dim is set)         = image_embeds
//! ```
//!
//! Plus CLIP's learned temperature `logit_scale` (a scalar, ln(1/0.07) at init) for contrastive
//! training; a vision-only file without it keeps that initial value.

use autograd::Var;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tensor::{Error, Result};

use super::transformer::{Activation, EncoderStack, LayerSizes, PatchEmbeddings};
use crate::nn::{LayerNorm, Linear};
use crate::ParamStore;

/// The name of CLIP's learned temperature.
pub const LOGIT_SCALE: &str = "logit_scale";

/// CLIP's initial temperature, ln(1 / 0.07).
pub const LOGIT_SCALE_INIT: f64 = 2.659_260_036_932_778_4;

/// The sizes of a CLIP vision tower, by the keys of HuggingFace's `CLIPVisionConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// Token width.
    pub hidden_size: usize,
    /// Hidden width of each layer's MLP.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    pub num_attention_heads: usize,
    /// Side of the square input images.
    pub image_size: usize,
    /// Side of the square patches (dividing `image_size`).
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The MLP's non-linearity: quick_gelu, gelu, gelu_new or gelu_pytorch_tanh.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Width of `visual_projection` (`None`: no projection, as in `CLIPVisionModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_dim: Option<usize>,
}

impl ClipConfig {
    /// Reads HuggingFace's `config.json` of a `CLIPVisionModel(WithProjection)` (a
    /// `CLIPVisionConfig`) or of a whole `CLIPModel` (its `vision_config`, with the top level's
    /// `projection_dim`), with HuggingFace's defaults for absent keys; other keys are ignored.
    /// `projection`: whether the checkpoint has `visual_projection` (`CLIPVisionModel`'s has not).
    pub fn from_hf_json(text: &str, projection: bool) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::msg(format!("CLIP config: invalid JSON: {e}")))?;
        let vision = root.get("vision_config").unwrap_or(&root);
        if !vision.is_object() {
            return Err(Error::msg(format!(
                "CLIP config: expected a JSON object, found {vision}"
            )));
        }
        let size = |key: &str, default: usize| -> Result<usize> {
            match vision.get(key).or_else(|| root.get(key)) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| {
                    Error::msg(format!("CLIP config: `{key}` = {v}: expected an integer"))
                }),
            }
        };
        let eps = match vision.get("layer_norm_eps") {
            None => default_eps(),
            Some(v) => v.as_f64().ok_or_else(|| {
                Error::msg(format!(
                    "CLIP config: `layer_norm_eps` = {v}: expected a number"
                ))
            })?,
        };
        let act = match vision.get("hidden_act") {
            None => default_act(),
            Some(v) => v.as_str().map(str::to_string).ok_or_else(|| {
                Error::msg(format!(
                    "CLIP config: `hidden_act` = {v}: expected a string"
                ))
            })?,
        };
        Ok(ClipConfig {
            hidden_size: size("hidden_size", 768)?,
            intermediate_size: size("intermediate_size", 3072)?,
            num_hidden_layers: size("num_hidden_layers", 12)?,
            num_attention_heads: size("num_attention_heads", 12)?,
            image_size: size("image_size", 224)?,
            patch_size: size("patch_size", 32)?,
            num_channels: size("num_channels", 3)?,
            layer_norm_eps: eps,
            hidden_act: act,
            projection_dim: projection
                .then(|| size("projection_dim", 512))
                .transpose()?,
        })
    }
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "quick_gelu".into()
}

/// The three outputs HuggingFace's forward returns.
pub(crate) struct ClipOutputs {
    pub last_hidden_state: Var,
    pub pooler_output: Var,
    pub image_embeds: Option<Var>,
}

/// The built tower.
#[derive(Clone, Debug)]
pub(crate) struct ClipVision {
    embeddings: PatchEmbeddings,
    pre_layrnorm: LayerNorm,
    encoder: EncoderStack,
    post_layernorm: LayerNorm,
    visual_projection: Option<Linear>,
}

impl ClipVision {
    /// Adds the parameters of a validated config.
    pub fn new(ps: &mut ParamStore, c: &ClipConfig) -> Result<Self> {
        let dim = c.hidden_size;
        let image = [c.num_channels, c.image_size, c.image_size];
        let act = Activation::parse(&c.hidden_act).expect("validated");
        let sizes = LayerSizes {
            dim,
            mlp: c.intermediate_size,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            act,
        };
        let vm = "vision_model";
        let model = ClipVision {
            embeddings: PatchEmbeddings::new(
                ps,
                &format!("{vm}.embeddings"),
                image,
                c.patch_size,
                dim,
                false,
            )?,
            pre_layrnorm: LayerNorm::new(ps, &format!("{vm}.pre_layrnorm"), dim, true, sizes.eps)?,
            encoder: EncoderStack::new(ps, &format!("{vm}.encoder"), c.num_hidden_layers, sizes)?,
            post_layernorm: LayerNorm::new(
                ps,
                &format!("{vm}.post_layernorm"),
                dim,
                true,
                sizes.eps,
            )?,
            visual_projection: c
                .projection_dim
                .map(|p| Linear::new(ps, "visual_projection", dim, p, false))
                .transpose()?,
        };
        ps.constant(LOGIT_SCALE, &[], LOGIT_SCALE_INIT)?;
        Ok(model)
    }

    /// Every output of images `[N, C, H, W]` (shape already checked).
    pub fn forward(&self, ps: &ParamStore, images: &Var) -> Result<ClipOutputs> {
        let h = self.embeddings.forward(ps, images)?;
        let h = self.pre_layrnorm.forward(ps, &h)?;
        let last_hidden_state = self.encoder.forward(ps, &h)?;
        let (n, dim) = (h.shape()[0], h.shape()[2]);
        let class = last_hidden_state.narrow(1, 0, 1)?.reshape(&[n, dim])?;
        let pooler_output = self.post_layernorm.forward(ps, &class)?;
        let image_embeds = self
            .visual_projection
            .as_ref()
            .map(|p| p.forward(ps, &pooler_output))
            .transpose()?;
        Ok(ClipOutputs {
            last_hidden_state,
            pooler_output,
            image_embeds,
        })
    }
}
