//! What the `clip` and `vit` encoders share: the patch embedding with a class token and learned
//! positions (HuggingFace's `CLIPVisionEmbeddings`), and the pre-norm transformer layer under the
//! parameter names of HuggingFace's `CLIPEncoderLayer` (`self_attn.{q,k,v,out}_proj`, `layer_norm1`,
//! `mlp.fc1`, `mlp.fc2`, `layer_norm2`):
//!
//! ```text
//! x = x + out_proj(attention(layer_norm1(x)))
//! x = x + fc2(act(fc1(layer_norm2(x))))
//! ```

use autograd::Var;
use tensor::{Conv2dParams, Error, Result};

use crate::nn::{Conv2d, LayerNorm, Linear};
use crate::params::{join, ParamStore};

/// The MLP's non-linearity, by the names of HuggingFace's `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `quick_gelu`: x · sigmoid(1.702 x), OpenAI CLIP's approximation.
    QuickGelu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: GELU's tanh approximation.
    GeluTanh,
}

impl Activation {
    /// The names accepted by [`Activation::parse`].
    pub const NAMES: &'static str = "quick_gelu, gelu, gelu_new or gelu_pytorch_tanh";

    /// Parses HuggingFace's `hidden_act` name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    /// f(x), elementwise.
    pub fn apply(self, x: &Var) -> Result<Var> {
        match self {
            Activation::QuickGelu => x.mul(&x.mul_scalar(1.702)?.sigmoid()?),
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
        }
    }
}

/// The sizes of one layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerSizes {
    /// Token width.
    pub dim: usize,
    /// Hidden width of the MLP.
    pub mlp: usize,
    /// Attention heads (dividing `dim`).
    pub heads: usize,
    /// Layer-norm epsilon.
    pub eps: f64,
    /// MLP non-linearity.
    pub act: Activation,
}

/// One pre-norm transformer layer.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm1: LayerNorm,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    sizes: LayerSizes,
}

impl EncoderLayer {
    /// Adds the layer's parameters under `prefix` (e.g. `vision_model.encoder.layers.0`).
    pub fn new(ps: &mut ParamStore, prefix: &str, sizes: LayerSizes) -> Result<Self> {
        let LayerSizes {
            dim,
            mlp,
            heads,
            eps,
            ..
        } = sizes;
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::msg(format!(
                "{prefix}: {heads} heads do not divide the width {dim}"
            )));
        }
        let p = |name: &str| join(prefix, name);
        Ok(EncoderLayer {
            q_proj: Linear::new(ps, &p("self_attn.q_proj"), dim, dim, true)?,
            k_proj: Linear::new(ps, &p("self_attn.k_proj"), dim, dim, true)?,
            v_proj: Linear::new(ps, &p("self_attn.v_proj"), dim, dim, true)?,
            out_proj: Linear::new(ps, &p("self_attn.out_proj"), dim, dim, true)?,
            layer_norm1: LayerNorm::new(ps, &p("layer_norm1"), dim, true, eps)?,
            fc1: Linear::new(ps, &p("mlp.fc1"), dim, mlp, true)?,
            fc2: Linear::new(ps, &p("mlp.fc2"), mlp, dim, true)?,
            layer_norm2: LayerNorm::new(ps, &p("layer_norm2"), dim, true, eps)?,
            sizes,
        })
    }

    /// x `[N, S, dim]` -> `[N, S, dim]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let &[n, s, dim] = x.shape() else {
            return Err(Error::shape(
                "EncoderLayer",
                format!(
                    "expected tokens [N, S, {}], got {:?}",
                    self.sizes.dim,
                    x.shape()
                ),
            ));
        };
        let (heads, d) = (self.sizes.heads, dim / self.sizes.heads);
        let h = self.layer_norm1.forward(ps, x)?;
        let split = |lin: &Linear| -> Result<Var> {
            lin.forward(ps, &h)?
                .reshape(&[n, s, heads, d])?
                .permute(&[0, 2, 1, 3])
        };
        // Softmax(q kᵀ / √d) v, the scale HuggingFace's CLIPAttention uses.
        let attn = split(&self.q_proj)?
            .scaled_dot_product_attention(&split(&self.k_proj)?, &split(&self.v_proj)?, None, None)?
            .permute(&[0, 2, 1, 3])?
            .reshape(&[n, s, dim])?;
        let x = x.add(&self.out_proj.forward(ps, &attn)?)?;
        let h = self.layer_norm2.forward(ps, &x)?;
        let h = self.sizes.act.apply(&self.fc1.forward(ps, &h)?)?;
        x.add(&self.fc2.forward(ps, &h)?)
    }
}

/// `layers` layers under `prefix.layers.{i}`, applied in order.
#[derive(Clone, Debug)]
pub struct EncoderStack {
    layers: Vec<EncoderLayer>,
}

impl EncoderStack {
    /// Adds `layers` layers of `sizes` under `prefix.layers.{i}`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        layers: usize,
        sizes: LayerSizes,
    ) -> Result<Self> {
        let layers = (0..layers)
            .map(|i| EncoderLayer::new(ps, &join(prefix, &format!("layers.{i}")), sizes))
            .collect::<Result<_>>()?;
        Ok(EncoderStack { layers })
    }

    /// x `[N, S, dim]` through every layer.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(ps, &h)?;
        }
        Ok(h)
    }
}

/// Patches of `patch x patch` pixels projected to `dim` by a strided convolution, a learned class
/// token in front, learned positions added: `prefix.patch_embedding.{weight, bias}`,
/// `prefix.class_embedding` `[dim]`, `prefix.position_embedding.weight` `[1 + patches, dim]`.
#[derive(Clone, Debug)]
pub struct PatchEmbeddings {
    patch_embedding: Conv2d,
    class_embedding: String,
    position_embedding: String,
    tokens: usize,
    dim: usize,
}

impl PatchEmbeddings {
    /// Adds the parameters for `[channels, h, w]` images (`h` and `w` multiples of `patch`).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        image: [usize; 3],
        patch: usize,
        dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let [c, h, w] = image;
        let p = |name: &str| join(prefix, name);
        let strided = Conv2dParams {
            stride: (patch, patch),
            ..Default::default()
        };
        let patch_embedding = Conv2d::new(ps, &p("patch_embedding"), c, dim, patch, strided, bias)?;
        let tokens = 1 + (h / patch) * (w / patch);
        let std = 1.0 / (dim as f64).sqrt();
        ps.normal(&p("class_embedding"), &[dim], std)?;
        ps.normal(&p("position_embedding.weight"), &[tokens, dim], 0.02)?;
        Ok(PatchEmbeddings {
            patch_embedding,
            class_embedding: p("class_embedding"),
            position_embedding: p("position_embedding.weight"),
            tokens,
            dim,
        })
    }

    /// Images `[N, C, H, W]` -> tokens `[N, 1 + patches, dim]`, the class token first.
    pub fn forward(&self, ps: &ParamStore, images: &Var) -> Result<Var> {
        let n = images.shape()[0];
        let patches = self.patch_embedding.forward(ps, images)?;
        let patches = patches
            .reshape(&[n, self.dim, self.tokens - 1])?
            .transpose(1, 2)?;
        let class = ps
            .weight(&self.class_embedding)?
            .reshape(&[1, 1, self.dim])?
            .broadcast_as(&[n, 1, self.dim])?;
        let x = Var::cat(&[&class, &patches], 1)?;
        x.add(&ps.weight(&self.position_embedding)?)
    }
}
