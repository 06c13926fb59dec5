//! A plain ViT: the CLIP tower's embeddings (with a patch bias) and layers, no pre-layernorm,
//! exact GELU, and a final layer norm over all tokens.
//!
//! ```text
//! images -> embeddings.{patch_embedding.{weight,bias}, class_embedding, position_embedding.weight}
//!   -> encoder.layers.{i} (as CLIP's) -> layernorm       = tokens [N, 1 + patches, hidden]
//!   -> [:, 0]                                            = pooled [N, hidden]
//!   -> head (when num_classes > 0, for supervised training only)
//! ```

use autograd::Var;
use serde::{Deserialize, Serialize};
use tensor::Result;

use super::transformer::{Activation, EncoderStack, LayerSizes, PatchEmbeddings};
use crate::nn::LayerNorm;
use crate::ParamStore;

/// The sizes of a ViT (the image comes from [`EncoderConfig::image`](super::EncoderConfig)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Token width.
    pub hidden_size: usize,
    /// Hidden width of each layer's MLP.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    pub num_attention_heads: usize,
    /// Side of the square patches (dividing the image's height and width).
    pub patch_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Classes of the supervised head (`head.{weight, bias}`); 0: no head.
    #[serde(default)]
    pub num_classes: usize,
}

fn default_eps() -> f64 {
    1e-6
}

/// The built ViT (its head is the encoder's, see [`super::ImageEncoder`]).
#[derive(Clone, Debug)]
pub(crate) struct Vit {
    embeddings: PatchEmbeddings,
    encoder: EncoderStack,
    layernorm: LayerNorm,
}

impl Vit {
    /// Adds the parameters of a validated config for `[C, H, W]` images.
    pub fn new(ps: &mut ParamStore, c: &VitConfig, image: [usize; 3]) -> Result<Self> {
        let sizes = LayerSizes {
            dim: c.hidden_size,
            mlp: c.intermediate_size,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            act: Activation::Gelu,
        };
        Ok(Vit {
            embeddings: PatchEmbeddings::new(
                ps,
                "embeddings",
                image,
                c.patch_size,
                c.hidden_size,
                true,
            )?,
            encoder: EncoderStack::new(ps, "encoder", c.num_hidden_layers, sizes)?,
            layernorm: LayerNorm::new(ps, "layernorm", c.hidden_size, true, sizes.eps)?,
        })
    }

    /// Normed tokens `[N, S, hidden]` of images `[N, C, H, W]` (shape already checked).
    pub fn tokens(&self, ps: &ParamStore, images: &Var) -> Result<Var> {
        let h = self.embeddings.forward(ps, images)?;
        let h = self.encoder.forward(ps, &h)?;
        self.layernorm.forward(ps, &h)
    }

    /// The class token `[N, hidden]` of normed tokens `[N, S, hidden]`.
    pub fn pool(tokens: &Var) -> Result<Var> {
        let (n, dim) = (tokens.shape()[0], tokens.shape()[2]);
        tokens.narrow(1, 0, 1)?.reshape(&[n, dim])
    }
}
