//! Image encoders for the ANL transfer method (METHODS.md §3): frozen networks whose token
//! sequence (or pooled embedding) conditions the diffusion model. Three architectures behind one
//! [`ImageEncoder`]:
//!
//! - [`EncoderKind::Clip`]: the CLIP vision tower under HuggingFace transformers' names
//!   ([`clip`]); tokens are `last_hidden_state` (before `post_layernorm`, as HuggingFace returns
//!   it), pooled is `image_embeds` (the projected, post-normed class token) when the tower has a
//!   `visual_projection`, else `pooler_output`.
//! - [`EncoderKind::Vit`]: a plain ViT with the same layers ([`vit`]); tokens are the final-normed
//!   tokens, pooled the normed class token.
//! - [`EncoderKind::Cnn`]: a small CNN ([`cnn`]); tokens are the last feature map's positions,
//!   pooled their mean.
//!
//! Images go in as difftune's data gives them, `[N, C, H, W]` in `[-1, 1]`, without further
//! normalisation (a real OpenAI CLIP checkpoint expects its own mean and standard deviation and
//! 224x224 RGB; normalise before calling). `vit` and `cnn` carry a linear classification head and
//! `clip` its temperature `logit_scale`, for training only: neither is part of tokens or pooled.
//!
//! A file written by [`ImageEncoder::save`] holds the [`EncoderConfig`] as JSON in its metadata
//! under [`CONFIG_KEY`]; [`ImageEncoder::load`] needs nothing but the path.

pub mod clip;
pub mod cnn;
mod transformer;
pub mod vit;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use autograd::Var;
use serde::{Deserialize, Serialize};
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Error, Result};

pub use clip::ClipConfig;
pub use cnn::CnnConfig;
pub use transformer::Activation;
pub use vit::VitConfig;

use crate::nn::Linear;
use crate::ParamStore;

/// The safetensors metadata key of the JSON [`EncoderConfig`].
pub const CONFIG_KEY: &str = "difftune.encoder";

/// The parameters of the supervised head of `vit` and `cnn`.
pub const HEAD: &str = "head";

/// Which architecture an encoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// The CLIP vision tower.
    Clip,
    /// A plain ViT.
    Vit,
    /// A small CNN.
    Cnn,
}

impl EncoderKind {
    /// Every kind.
    pub const ALL: [EncoderKind; 3] = [EncoderKind::Clip, EncoderKind::Vit, EncoderKind::Cnn];

    /// `clip`, `vit` or `cnn`.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderKind::Clip => "clip",
            EncoderKind::Vit => "vit",
            EncoderKind::Cnn => "cnn",
        }
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncoderKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        EncoderKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::msg(format!(
                    "unknown encoder kind `{s}`: expected clip, vit or cnn"
                ))
            })
    }
}

/// What an encoder is: its kind, the images it takes and the sizes of its kind (exactly the
/// section named by `kind` is present).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// The architecture.
    pub kind: EncoderKind,
    /// `[C, H, W]` of one input image.
    pub image: [usize; 3],
    /// Sizes of a `clip` encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipConfig>,
    /// Sizes of a `vit` encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vit: Option<VitConfig>,
    /// Sizes of a `cnn` encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnn: Option<CnnConfig>,
}

/// The config error for `key`: its value and what was expected.
fn bad(key: &str, value: impl fmt::Debug, expected: &str) -> Error {
    Error::msg(format!(
        "encoder config: `{key}` = {value:?}: expected {expected}"
    ))
}

/// Each `(key, value)` at least 1 and within the model-size limit.
fn positive(values: &[(&str, usize)]) -> Result<()> {
    crate::config::check_sizes("encoder", values)
}

impl EncoderConfig {
    /// A CLIP tower over `[num_channels, image_size, image_size]` images.
    pub fn clip(c: ClipConfig) -> Self {
        EncoderConfig {
            kind: EncoderKind::Clip,
            image: [c.num_channels, c.image_size, c.image_size],
            clip: Some(c),
            vit: None,
            cnn: None,
        }
    }

    /// A ViT over `image`.
    pub fn vit(image: [usize; 3], c: VitConfig) -> Self {
        EncoderConfig {
            kind: EncoderKind::Vit,
            image,
            clip: None,
            vit: Some(c),
            cnn: None,
        }
    }

    /// A CNN over `image`.
    pub fn cnn(image: [usize; 3], c: CnnConfig) -> Self {
        EncoderConfig {
            kind: EncoderKind::Cnn,
            image,
            clip: None,
            vit: None,
            cnn: Some(c),
        }
    }

    /// The small default of `kind` for `image` (`classes` for the head of `vit` and `cnn`):
    /// the architectures of the trained encoders in data/encoders/. Patches are the largest of
    /// 7, 4, 2, 1 dividing both sides (7 on 28x28: 16 patches and a class token).
    pub fn small(kind: EncoderKind, image: [usize; 3], classes: usize) -> Self {
        let patch = [7, 4, 2, 1]
            .into_iter()
            .find(|p| image[1].is_multiple_of(*p) && image[2].is_multiple_of(*p))
            .unwrap_or(1);
        match kind {
            EncoderKind::Clip => EncoderConfig {
                image,
                ..EncoderConfig::clip(ClipConfig {
                    hidden_size: 64,
                    intermediate_size: 128,
                    num_hidden_layers: 3,
                    num_attention_heads: 4,
                    image_size: image[1],
                    patch_size: patch,
                    num_channels: image[0],
                    layer_norm_eps: 1e-5,
                    hidden_act: "quick_gelu".into(),
                    projection_dim: Some(64),
                })
            },
            EncoderKind::Vit => EncoderConfig::vit(
                image,
                VitConfig {
                    hidden_size: 64,
                    intermediate_size: 128,
                    num_hidden_layers: 3,
                    num_attention_heads: 4,
                    patch_size: patch,
                    layer_norm_eps: 1e-6,
                    num_classes: classes,
                },
            ),
            EncoderKind::Cnn => EncoderConfig::cnn(
                image,
                CnnConfig {
                    widths: vec![32, 64, 128],
                    groups: 8,
                    num_classes: classes,
                },
            ),
        }
    }

    /// Checks every size, naming the first bad key (`clip.patch_size`, `image`, ...).
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.image;
        if c == 0 || h == 0 || w == 0 {
            return Err(bad("image", self.image, "[C, H, W], each at least 1"));
        }
        positive(&[("image", c.max(h).max(w))])?;
        tensor::limits::IMAGE_PIXELS.check(
            tensor::limits::product(&[h, w]),
            format!("encoder config: image {:?}", self.image),
        )?;
        let sections = [
            (EncoderKind::Clip, self.clip.is_some()),
            (EncoderKind::Vit, self.vit.is_some()),
            (EncoderKind::Cnn, self.cnn.is_some()),
        ];
        for (kind, present) in sections {
            if present != (kind == self.kind) {
                let what = if present { "present" } else { "missing" };
                return Err(Error::msg(format!(
                    "encoder config: section `{kind}` is {what}, but `kind` is `{}` (exactly the \
                     section of the kind is expected)",
                    self.kind
                )));
            }
        }
        let transformer = |prefix: &str, dim: usize, mlp: usize, layers: usize, heads: usize| {
            let key = |k: &str| format!("{prefix}.{k}");
            positive(&[
                (&key("hidden_size"), dim),
                (&key("intermediate_size"), mlp),
                (&key("num_hidden_layers"), layers),
                (&key("num_attention_heads"), heads),
            ])?;
            if !dim.is_multiple_of(heads) {
                return Err(bad(
                    &key("num_attention_heads"),
                    heads,
                    &format!("a divisor of hidden_size {dim}"),
                ));
            }
            Ok(())
        };
        let eps = |key: &str, eps: f64| {
            if eps.is_finite() && eps > 0.0 {
                Ok(())
            } else {
                Err(bad(key, eps, "a positive number"))
            }
        };
        let patches = |key: &str, patch: usize| {
            positive(&[(key, patch)])?;
            if h.is_multiple_of(patch) && w.is_multiple_of(patch) {
                Ok(())
            } else {
                Err(bad(
                    key,
                    patch,
                    &format!("a divisor of the image's height {h} and width {w}"),
                ))
            }
        };
        match self.kind {
            EncoderKind::Clip => {
                let k = self.clip.as_ref().expect("checked above");
                transformer(
                    "clip",
                    k.hidden_size,
                    k.intermediate_size,
                    k.num_hidden_layers,
                    k.num_attention_heads,
                )?;
                let wanted = [k.num_channels, k.image_size, k.image_size];
                if self.image != wanted {
                    return Err(bad(
                        "image",
                        self.image,
                        &format!(
                            "[clip.num_channels, clip.image_size, clip.image_size] = {wanted:?}"
                        ),
                    ));
                }
                patches("clip.patch_size", k.patch_size)?;
                eps("clip.layer_norm_eps", k.layer_norm_eps)?;
                if Activation::parse(&k.hidden_act).is_none() {
                    return Err(bad("clip.hidden_act", &k.hidden_act, Activation::NAMES));
                }
                if let Some(p) = k.projection_dim {
                    positive(&[("clip.projection_dim", p)])?;
                }
            }
            EncoderKind::Vit => {
                let k = self.vit.as_ref().expect("checked above");
                transformer(
                    "vit",
                    k.hidden_size,
                    k.intermediate_size,
                    k.num_hidden_layers,
                    k.num_attention_heads,
                )?;
                patches("vit.patch_size", k.patch_size)?;
                eps("vit.layer_norm_eps", k.layer_norm_eps)?;
                classes("vit.num_classes", k.num_classes)?;
            }
            EncoderKind::Cnn => {
                let k = self.cnn.as_ref().expect("checked above");
                positive(&[("cnn.groups", k.groups)])?;
                if k.widths.is_empty() {
                    return Err(bad("cnn.widths", &k.widths, "at least one stage"));
                }
                for &width in &k.widths {
                    positive(&[("cnn.widths", width)])?;
                    if !width.is_multiple_of(k.groups) {
                        return Err(bad(
                            "cnn.widths",
                            &k.widths,
                            &format!("multiples of cnn.groups = {}", k.groups),
                        ));
                    }
                }
                classes("cnn.num_classes", k.num_classes)?;
            }
        }
        Ok(())
    }

    /// The config as JSON (the file metadata).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a config serialises")
    }

    /// Parses and validates [`EncoderConfig::to_json`]'s output; `source` names where it came
    /// from in errors.
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let config: EncoderConfig = serde_json::from_str(text)
            .map_err(|e| Error::msg(format!("{source}: encoder config: {e}")))?;
        config
            .validate()
            .map_err(|e| Error::msg(format!("{source}: {e}")))?;
        Ok(config)
    }

    /// Classes of the supervised head (0: none; always 0 for `clip`).
    pub fn num_classes(&self) -> usize {
        match (&self.vit, &self.cnn) {
            (Some(v), _) => v.num_classes,
            (_, Some(c)) => c.num_classes,
            _ => 0,
        }
    }
}

/// 0 (no head) or at least 2 classes.
fn classes(key: &str, n: usize) -> Result<()> {
    if n == 1 {
        return Err(bad(key, n, "0 (no head) or at least 2"));
    }
    positive(&[(key, n.max(1))])
}

/// The built architecture.
#[derive(Clone, Debug)]
enum Arch {
    Clip(clip::ClipVision),
    Vit(vit::Vit),
    Cnn(cnn::Cnn),
}

/// An image encoder: its config and its modules (parameters live in a [`ParamStore`]).
#[derive(Clone, Debug)]
pub struct ImageEncoder {
    config: EncoderConfig,
    arch: Arch,
    head: Option<Linear>,
}

impl ImageEncoder {
    /// Validates `config` and adds the encoder's parameters (and head or `logit_scale`) to `ps`.
    pub fn new(ps: &mut ParamStore, config: &EncoderConfig) -> Result<Self> {
        config.validate()?;
        let arch = match config.kind {
            EncoderKind::Clip => Arch::Clip(clip::ClipVision::new(
                ps,
                config.clip.as_ref().expect("validated"),
            )?),
            EncoderKind::Vit => Arch::Vit(vit::Vit::new(
                ps,
                config.vit.as_ref().expect("validated"),
                config.image,
            )?),
            EncoderKind::Cnn => Arch::Cnn(cnn::Cnn::new(
                ps,
                config.cnn.as_ref().expect("validated"),
                config.image[0],
            )?),
        };
        let mut encoder = ImageEncoder {
            config: config.clone(),
            arch,
            head: None,
        };
        let classes = config.num_classes();
        if classes > 0 {
            let pooled = encoder.pooled_dim();
            encoder.head = Some(Linear::new(ps, HEAD, pooled, classes, true)?);
        }
        Ok(encoder)
    }

    /// Loads a file written by [`ImageEncoder::save`] (f32 on `device`); the config comes from
    /// its metadata. Errors name the file and what was wrong: not an encoder file, an unknown
    /// kind or bad config, a tensor missing or of the wrong shape.
    pub fn load(path: &Path, device: Device) -> Result<(ImageEncoder, ParamStore)> {
        let file = SafeTensorsFile::open(path)?;
        let meta = file.metadata();
        let Some(text) = meta.get(CONFIG_KEY) else {
            let hint = if meta.contains_key(crate::classifier::CONFIG_KEY) {
                " (it is a difftune classifier file)"
            } else {
                " (a checkpoint from elsewhere loads with ImageEncoder::load_with_config)"
            };
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!("no `{CONFIG_KEY}` metadata: not a difftune encoder file{hint}"),
            });
        };
        let config = EncoderConfig::from_json(text, &path.display().to_string())?;
        drop(file);
        Self::load_with_config(path, &config, device)
    }

    /// Loads the weights of `config`'s encoder from any safetensors file, e.g. a HuggingFace
    /// `CLIPVisionModel(WithProjection)` or full `CLIPModel` checkpoint: its
    /// `vision_model.embeddings.position_ids` buffer and the text tower (`text_model.*`,
    /// `text_projection.*`) are ignored, and a missing `logit_scale` keeps CLIP's initial value.
    /// Anything else missing, unexpected or mis-shaped is an error naming the file and tensor.
    pub fn load_with_config(
        path: &Path,
        config: &EncoderConfig,
        device: Device,
    ) -> Result<(ImageEncoder, ParamStore)> {
        let mut ps = ParamStore::new(DType::F32, device, 0);
        let encoder = ImageEncoder::new(&mut ps, config)?;
        let report = ps.load(path, "", false)?;
        let ignored = |name: &str| {
            name == "vision_model.embeddings.position_ids"
                || name.starts_with("text_model.")
                || name.starts_with("text_projection.")
        };
        let missing: Vec<&String> = report
            .missing
            .iter()
            .filter(|n| !(config.kind == EncoderKind::Clip && *n == clip::LOGIT_SCALE))
            .collect();
        let unexpected: Vec<&String> = report.unexpected.iter().filter(|n| !ignored(n)).collect();
        let mut problems = Vec::new();
        problems.extend(missing.iter().map(|n| format!("tensor `{n}` is missing")));
        problems.extend(
            unexpected
                .iter()
                .map(|n| format!("tensor `{n}` is not part of a {} encoder", config.kind)),
        );
        problems.extend(
            report
                .mismatched
                .iter()
                .map(|(n, want, found)| format!("tensor `{n}` is {found:?}, expected {want:?}")),
        );
        if !problems.is_empty() {
            let shown = problems.len().min(8);
            let more = problems.len() - shown;
            let tail = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!(
                    "does not fit the {} encoder of config {}: {}{tail}",
                    config.kind,
                    config.to_json(),
                    problems[..shown].join("; ")
                ),
            });
        }
        if let Some(name) = ps.first_non_finite()? {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!("tensor `{name}` holds NaN or infinite values"),
            });
        }
        Ok((encoder, ps))
    }

    /// Saves the parameters in `ps` (atomically) with the config in the metadata; refuses
    /// non-finite weights, naming the first.
    pub fn save(&self, ps: &ParamStore, path: &Path) -> Result<()> {
        if let Some(name) = ps.first_non_finite()? {
            return Err(Error::msg(format!(
                "{}: not saved: parameter `{name}` holds NaN or infinite values",
                path.display()
            )));
        }
        let meta = HashMap::from([(CONFIG_KEY.to_string(), self.config.to_json())]);
        ps.save(path, Some(&meta))
    }

    /// What it is.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Checks that `images` is `[N, C, H, W]` with the config's `[C, H, W]`.
    fn check(&self, images: &Var) -> Result<()> {
        let s = images.shape();
        if s.len() != 4 || s[1..] != self.config.image || s[0] == 0 {
            let [c, h, w] = self.config.image;
            return Err(Error::shape(
                "ImageEncoder",
                format!(
                    "images {s:?}: the {} encoder expects [N >= 1, {c}, {h}, {w}]",
                    self.config.kind
                ),
            ));
        }
        Ok(())
    }

    /// Tokens `[N, S, E]` and pooled embedding `[N, P]` of images `[N, C, H, W]` in `[-1, 1]`,
    /// from one forward pass.
    pub fn encode(&self, ps: &ParamStore, images: &Var) -> Result<(Var, Var)> {
        self.check(images)?;
        match &self.arch {
            Arch::Clip(m) => {
                let out = m.forward(ps, images)?;
                let pooled = out.image_embeds.unwrap_or(out.pooler_output);
                Ok((out.last_hidden_state, pooled))
            }
            Arch::Vit(m) => {
                let tokens = m.tokens(ps, images)?;
                let pooled = vit::Vit::pool(&tokens)?;
                Ok((tokens, pooled))
            }
            Arch::Cnn(m) => {
                let tokens = m.tokens(ps, images)?;
                let pooled = cnn::Cnn::pool(&tokens)?;
                Ok((tokens, pooled))
            }
        }
    }

    /// Tokens `[N, S, E]` of images `[N, C, H, W]` in `[-1, 1]`; the shape is checked against
    /// the config's image, the error naming the expected and the given shape.
    pub fn tokens(&self, ps: &ParamStore, images: &Var) -> Result<Var> {
        self.check(images)?;
        match &self.arch {
            Arch::Clip(m) => Ok(m.forward(ps, images)?.last_hidden_state),
            Arch::Vit(m) => m.tokens(ps, images),
            Arch::Cnn(m) => m.tokens(ps, images),
        }
    }

    /// The pooled embedding `[N, P]` of images `[N, C, H, W]` in `[-1, 1]`.
    pub fn pooled(&self, ps: &ParamStore, images: &Var) -> Result<Var> {
        Ok(self.encode(ps, images)?.1)
    }

    /// HuggingFace's three CLIP outputs (`last_hidden_state`, `pooler_output`, `image_embeds`
    /// when the tower has a projection), for parity checks; an error for other kinds.
    pub fn clip_outputs(&self, ps: &ParamStore, images: &Var) -> Result<Vec<(String, Var)>> {
        self.check(images)?;
        let Arch::Clip(m) = &self.arch else {
            return Err(Error::msg(format!(
                "clip_outputs: a {} encoder is not CLIP",
                self.config.kind
            )));
        };
        let out = m.forward(ps, images)?;
        let mut named = vec![
            ("last_hidden_state".to_string(), out.last_hidden_state),
            ("pooler_output".to_string(), out.pooler_output),
        ];
        named.extend(out.image_embeds.map(|e| ("image_embeds".to_string(), e)));
        Ok(named)
    }

    /// (S, E) of [`ImageEncoder::tokens`].
    pub fn token_shape(&self) -> (usize, usize) {
        let [_, h, w] = self.config.image;
        match (&self.config.clip, &self.config.vit, &self.config.cnn) {
            (Some(c), _, _) => (1 + (h / c.patch_size) * (w / c.patch_size), c.hidden_size),
            (_, Some(v), _) => (1 + (h / v.patch_size) * (w / v.patch_size), v.hidden_size),
            (_, _, Some(c)) => (
                cnn::Cnn::out_side(c, h) * cnn::Cnn::out_side(c, w),
                *c.widths.last().expect("validated"),
            ),
            _ => unreachable!("a validated config has its kind's section"),
        }
    }

    /// P of [`ImageEncoder::pooled`].
    pub fn pooled_dim(&self) -> usize {
        match &self.config.clip {
            Some(c) => c.projection_dim.unwrap_or(c.hidden_size),
            None => self.token_shape().1,
        }
    }

    /// Class logits `[N, K]` of the supervised head on the pooled embedding (`vit` and `cnn`
    /// with `num_classes` > 0); an error otherwise.
    pub fn logits(&self, ps: &ParamStore, pooled: &Var) -> Result<Var> {
        let head = self.head.as_ref().ok_or_else(|| {
            Error::msg(format!(
                "the {} encoder has no classification head (num_classes is 0 or it is clip)",
                self.config.kind
            ))
        })?;
        head.forward(ps, pooled)
    }

    /// CLIP's learned temperature (a scalar Var, the log of the logit scale); an error for
    /// other kinds.
    pub fn logit_scale(&self, ps: &ParamStore) -> Result<Var> {
        match self.config.kind {
            EncoderKind::Clip => ps.weight(clip::LOGIT_SCALE),
            kind => Err(Error::msg(format!(
                "a {kind} encoder has no logit_scale (only clip does)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
