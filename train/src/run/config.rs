//! [`RunConfig`]: everything a training run needs, read from a JSON file with defaults for what
//! it leaves out, and overridden by command-line flags. Saved with every checkpoint, so a
//! checkpoint says how it was made and `--resume` continues the same run.

use std::path::{Path, PathBuf};

use models::dit::{Conditioning, DitConfig};
use serde::{Deserialize, Serialize};
use tensor::{limits, DType, Device, Error, Result};

use crate::data::CONTROL_KINDS;
use crate::diffusion::{BetaSchedule, DiffusionConfig, MeanType, Respacing, VarType};
use crate::methods::{Method, Trainable};
use crate::optim::ParamGroup;

/// A training run: data, model, diffusion, optimisation, outputs.
///
/// ```
/// use train::run::RunConfig;
/// let c = RunConfig::from_json_str(r#"{ "data": "animal-mnist", "steps": 10 }"#).unwrap();
/// assert_eq!((c.data.as_str(), c.steps, c.batch_size), ("animal-mnist", 10, 64));
/// assert!(RunConfig::from_json_str(r#"{ "stepz": 10 }"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `fashion-mnist` (its training images), `fashion-mnist-test`, `animal-mnist`, or a folder
    /// of class sub-folders of images.
    pub data: String,
    /// Image side the data is read at: a folder's images are resized and cropped to it, and
    /// the named sets (Fashion- and Animal-MNIST, 28 pixels) are resized to it (antialiased)
    /// when it differs from their 28, e.g. 16 trains on downsampled Fashion-MNIST.
    pub image_size: usize,
    /// `gray` or `rgb`: the channels of a folder data set.
    pub color: String,
    /// The network, an object tagged by `kind`: `dit` (the default when `kind` is absent) or
    /// `unet`; input size, channels and classes come from the data.
    pub model: ModelConfig,
    /// The diffusion process.
    pub diffusion: DiffusionSettings,
    /// The training objective, an object tagged by `name` with the method's options (see
    /// [`crate::methods`]): `{"name": "standard"}`.
    pub method: Method,
    /// Which parameters train, an object tagged by `kind`: `{"kind": "full"}`, `lora` (with
    /// `rank`, `alpha`, `targets`), `bitfit` or `difffit`.
    pub trainable: Trainable,
    /// A checkpoint (a run's `checkpoint` folder or a `model.safetensors`) to start from.
    pub init: Option<PathBuf>,
    /// Optimisation steps of the whole run.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW's learning rate after warmup.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// `constant` or `cosine` (down to `min_lr` at the last step).
    pub lr_decay: String,
    /// The floor of the cosine decay.
    pub min_lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Parameters with their own learning rate (a scale of the schedule's) and weight decay:
    /// `[{"params": "blocks.*.difffit_scale", "lr_scale": 10, "weight_decay": 0}]`; a parameter
    /// takes the first group that matches it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub param_groups: Vec<ParamGroup>,
    /// Gradient-norm clipping (0 for none).
    pub grad_clip: f64,
    /// Decay of the exponential moving average of the weights.
    pub ema_decay: f64,
    /// Random horizontal flips of the training images.
    pub hflip: bool,
    /// Random resized crops of the training images: the smallest side of a crop as a fraction
    /// of the image's, in (0, 1]; 1 (the default) crops nothing. Each image's crop and flip are
    /// recorded as its control vector (see [`crate::data::CONTROL_KINDS`]).
    pub crop_scale: f64,
    /// Zero pixels added on every side of the training images (2 turns 28x28 into 32x32): the
    /// model is built for, samples and is exported at the padded size.
    pub pad: usize,
    /// Steps between checkpoints (and at the end).
    pub checkpoint_every: u64,
    /// Steps (each in 1..=steps) at which the moving-average weights are also written as an
    /// exported model, `snapshots/step-NNNNNNNN.safetensors` in the run folder (the format of
    /// `difftune export`), e.g. to evaluate a run against its training steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<u64>,
    /// Steps between sample grids (0: only at the end).
    pub sample_every: u64,
    /// Steps between metric lines.
    pub log_every: u64,
    /// How grids are sampled.
    pub sample: SampleSettings,
    /// Seed of everything random.
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Compute precision: `f32`, or `bf16`/`f16` (CUDA only) with f32 master weights, optimizer
    /// state and loss, and f32 accumulation inside the kernels.
    pub precision: String,
    /// The run folder: checkpoint, metrics, grids, loss curve.
    pub out: PathBuf,
}

/// The network of a run: `{"kind": "dit", ...}` ([`DitSettings`]; `kind` may be left out) or
/// `{"kind": "unet", ...}` ([`UnetSettings`]). A key of the other kind is refused, naming it.
///
/// ```
/// use train::run::{ModelConfig, RunConfig};
/// let c = RunConfig::from_json_str(r#"{ "model": { "kind": "unet", "channels": [16, 32] } }"#);
/// assert!(matches!(c.unwrap().model, ModelConfig::Unet(u) if u.channels == [16, 32]));
/// let err = RunConfig::from_json_str(r#"{ "model": { "kind": "unet", "patch_size": 2 } }"#);
/// assert!(err.unwrap_err().to_string().contains("patch_size"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// A DiT.
    Dit(DitSettings),
    /// A U-Net.
    Unet(UnetSettings),
}

/// A U-Net (diffusers' `UNet2DModel`): levels of residual blocks, each halving the image but the
/// last, with self-attention where asked, a mid block with attention, and a class table added to
/// the time embedding of a conditional model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetSettings {
    /// Channels of each level (diffusers' `block_out_channels`).
    pub channels: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub layers_per_block: usize,
    /// Whether each level has self-attention.
    pub attention: Vec<bool>,
    /// Channels per attention head.
    pub head_dim: usize,
    /// Groups of every group norm.
    pub norm_groups: usize,
    /// Class-conditional (a class table) or unconditional.
    pub conditional: bool,
    /// Probability of dropping a label in training (for classifier-free guidance; a
    /// conditional model's table then has a null row).
    pub class_dropout_prob: f64,
    /// Whether the model also predicts the variance.
    pub learn_sigma: bool,
}

impl Default for UnetSettings {
    /// A small U-Net for 28x28 images: 28, 14 and 7 pixels wide levels of 32, 64 and 64
    /// channels, attention at the two coarser ones.
    fn default() -> Self {
        UnetSettings {
            channels: vec![32, 64, 64],
            layers_per_block: 1,
            attention: vec![false, true, true],
            head_dim: 32,
            norm_groups: 8,
            conditional: true,
            class_dropout_prob: 0.1,
            learn_sigma: false,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Dit(DitSettings::default())
    }
}

impl ModelConfig {
    /// `dit` or `unet`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Dit(_) => "dit",
            ModelConfig::Unet(_) => "unet",
        }
    }

    /// Whether the model also predicts the variance.
    pub fn learn_sigma(&self) -> bool {
        match self {
            ModelConfig::Dit(d) => d.learn_sigma,
            ModelConfig::Unet(u) => u.learn_sigma,
        }
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fields = match self {
            ModelConfig::Dit(d) => serde_json::to_value(d),
            ModelConfig::Unet(u) => serde_json::to_value(u),
        }
        .map_err(S::Error::custom)?;
        let mut map = serde_json::Map::new();
        map.insert("kind".into(), self.kind().into());
        if let serde_json::Value::Object(fields) = fields {
            map.extend(fields);
        }
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::deserialize(deserializer)?;
        let kind = match map.remove("kind") {
            None => "dit".to_string(),
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`kind` must be a string, got {other}"
                )))
            }
        };
        let fields = serde_json::Value::Object(map);
        match kind.as_str() {
            "dit" => serde_json::from_value(fields).map(ModelConfig::Dit),
            "unet" => serde_json::from_value(fields).map(ModelConfig::Unet),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown model kind `{other}`; expected dit or unet"
                )))
            }
        }
        .map_err(|e| D::Error::custom(format!("model ({kind}): {e}")))
    }
}

/// A DiT's shape (the rest is set by the data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DitSettings {
    /// Side of a patch.
    pub patch_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP width over hidden width.
    pub mlp_ratio: f64,
    /// Probability of dropping a label in training (for classifier-free guidance).
    pub class_dropout_prob: f64,
    /// Whether the model also predicts the variance (DiT's hybrid loss).
    pub learn_sigma: bool,
    /// How the class reaches the blocks: `adaln` (the reference's sum), `cross_attention` or
    /// `joint_attention` (class tokens behind attention; see [`models::dit::Conditioning`]).
    #[serde(skip_serializing_if = "DitSettings::is_adaln")]
    pub conditioning: String,
    /// Tokens per class in the attention modes.
    #[serde(skip_serializing_if = "DitSettings::is_default_tokens")]
    pub class_tokens: usize,
    /// Whether the model is told the loader's augmentation of each image (control metadata:
    /// crop scale and offsets, flip; see [`crate::data::CONTROL_KINDS`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
    /// The shape α of the control schedule γ(t) in the attention modes: one value, or one per
    /// control kind (see [`models::dit::control::gamma`]).
    #[serde(skip_serializing_if = "DitSettings::is_default_alpha")]
    pub control_alpha: Vec<f64>,
    /// Probability of dropping an image's control metadata in training (the null control of
    /// the control guidance scale), independently of its label.
    #[serde(skip_serializing_if = "DitSettings::is_default_control_dropout")]
    pub control_dropout_prob: f64,
    /// Resolution transfer: the image side the position grid was made for; positions are
    /// interpolated (scaled by `positions_from / side`) instead of extended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positions_from: Option<usize>,
}

impl DitSettings {
    fn is_adaln(v: &str) -> bool {
        v == "adaln"
    }
    fn is_default_tokens(v: &usize) -> bool {
        *v == DitSettings::default().class_tokens
    }
    fn is_default_alpha(v: &[f64]) -> bool {
        v == DitSettings::default().control_alpha
    }
    fn is_default_control_dropout(v: &f64) -> bool {
        *v == DitSettings::default().control_dropout_prob
    }
}

/// The diffusion process of training and sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffusionSettings {
    /// `linear` (DiT's) or `cosine`.
    pub schedule: String,
    /// Steps of the process.
    pub steps: usize,
    /// `epsilon`, `velocity` or `x0`.
    pub prediction: String,
    /// Resolution transfer: the image side the schedule was made for; every step's logSNR is
    /// shifted by `2 ln(shift_from / side)` (more noise at a larger side; see
    /// [`BetaSchedule::ResolutionShifted`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_from: Option<usize>,
}

/// How sample grids are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleSettings {
    /// A respacing: `ddim50` samples with DDIM in 50 steps, `250` with ancestral DDPM in 250
    /// (exact text, see [`Respacing`]).
    pub sampler: String,
    /// DDIM's eta in [0, 1] (0: deterministic).
    pub eta: f64,
    /// Classifier-free guidance scale (1: none), at most [`SampleSettings::MAX_CFG_SCALE`] in size.
    pub cfg_scale: f64,
    /// Images per class in a grid.
    pub per_class: usize,
    /// The control guidance scale s_m of a model with control metadata (see
    /// [`crate::diffusion::classifier_free_guidance`]; 1: none).
    #[serde(skip_serializing_if = "SampleSettings::is_one")]
    pub control_scale: f64,
    /// The control metadata samples are drawn with, one value per kind of
    /// [`crate::data::CONTROL_KINDS`]; empty (the default): the identity augmentation (scale 1,
    /// no offset, no flip).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<f64>,
}

impl Default for RunConfig {
    /// A small DiT on Fashion-MNIST that trains on two CPU cores in minutes.
    fn default() -> Self {
        RunConfig {
            data: "fashion-mnist".into(),
            image_size: 28,
            color: "rgb".into(),
            model: ModelConfig::default(),
            diffusion: DiffusionSettings::default(),
            method: Method::default(),
            trainable: Trainable::Full {},
            init: None,
            steps: 2000,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 100,
            lr_decay: "cosine".into(),
            min_lr: 1e-5,
            weight_decay: 0.0,
            param_groups: Vec::new(),
            grad_clip: 1.0,
            ema_decay: 0.999,
            hflip: false,
            crop_scale: 1.0,
            pad: 0,
            checkpoint_every: 500,
            snapshots: Vec::new(),
            sample_every: 0,
            log_every: 10,
            sample: SampleSettings::default(),
            seed: 0,
            device: "cpu".into(),
            precision: "f32".into(),
            out: "runs/pretrain".into(),
        }
    }
}

impl Default for DitSettings {
    fn default() -> Self {
        DitSettings {
            patch_size: 4,
            hidden_size: 96,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            learn_sigma: false,
            conditioning: "adaln".into(),
            class_tokens: 4,
            control: false,
            control_alpha: vec![1.0],
            control_dropout_prob: 0.1,
            positions_from: None,
        }
    }
}

impl Default for DiffusionSettings {
    fn default() -> Self {
        DiffusionSettings {
            schedule: "linear".into(),
            steps: 1000,
            prediction: "epsilon".into(),
            shift_from: None,
        }
    }
}

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings {
            sampler: "ddim50".into(),
            eta: 0.0,
            cfg_scale: 2.0,
            per_class: 8,
            control_scale: 1.0,
            control: Vec::new(),
        }
    }
}

fn invalid(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::msg(format!("config `{what}`: {msg}"))
}

/// Checks a square image side against [`limits::IMAGE_PIXELS`].
fn check_image_size(what: &str, size: usize) -> Result<()> {
    limits::IMAGE_PIXELS.check(
        limits::product(&[size, size]),
        format!("config: {what} {size}x{size}"),
    )
}

impl SampleSettings {
    fn is_one(v: &f64) -> bool {
        *v == 1.0
    }

    /// The largest guidance scale accepted, in size. Scales in use are 1 to about 10 (DiT: 1.5
    /// and 4; Imagen's highest, with dynamic thresholding, 30); far beyond, the guided output
    /// `uncond + s · (cond − uncond)` is the scaled difference alone, every predicted x̂₀ is
    /// clipped to ±1 and the grid is blank, and near 1e38 the f32 outputs overflow. 100 leaves
    /// room for experiments (negative scales too).
    pub const MAX_CFG_SCALE: f64 = 100.0;

    /// The sampler text parsed; an error names `sample.sampler`.
    pub fn respacing(&self) -> Result<Respacing> {
        self.sampler
            .parse()
            .map_err(|e| invalid("sample.sampler", e))
    }

    /// `scale` if it is a finite guidance scale within ±[`Self::MAX_CFG_SCALE`]. The error says the
    /// accepted range (without the key or flag's name).
    pub fn check_cfg_scale(scale: f64) -> std::result::Result<f64, String> {
        let max = Self::MAX_CFG_SCALE;
        if (-max..=max).contains(&scale) {
            Ok(scale)
        } else {
            Err(format!("expected a number in [-{max}, {max}], got {scale}"))
        }
    }

    /// Checks the sampler (for a process of `diffusion_steps` steps), eta and the guidance scale;
    /// errors name the key and the accepted values.
    pub fn validate(&self, diffusion_steps: usize) -> Result<()> {
        self.respacing()?
            .timesteps(diffusion_steps)
            .map_err(|e| invalid("sample.sampler", e))?;
        crate::diffusion::check_eta(self.eta).map_err(|e| invalid("sample.eta", e))?;
        Self::check_cfg_scale(self.cfg_scale).map_err(|e| invalid("sample.cfg_scale", e))?;
        Self::check_cfg_scale(self.control_scale)
            .map_err(|e| invalid("sample.control_scale", e))?;
        if let Some(bad) = self.control.iter().find(|v| !v.is_finite()) {
            return Err(invalid(
                "sample.control",
                format!("values must be finite, got {bad}"),
            ));
        }
        Ok(())
    }
}

impl RunConfig {
    /// A config from JSON text; absent keys keep their defaults, unknown or mistyped keys are
    /// errors. The values are checked by [`RunConfig::validate`] (after any overrides).
    pub fn from_json_str(json: &str) -> Result<RunConfig> {
        serde_json::from_str(json).map_err(|e| Error::msg(format!("config: {e}")))
    }

    /// A config from a JSON file (a regular file within [`tensor::limits::JSON_BYTES`]); errors
    /// name the file.
    pub fn from_file(path: &Path) -> Result<RunConfig> {
        let bytes = crate::files::read_user_file(path, &tensor::limits::JSON_BYTES)?;
        std::str::from_utf8(&bytes)
            .map_err(|e| Error::msg(format!("config: not UTF-8 text: {e}")))
            .and_then(RunConfig::from_json_str)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config is plain JSON")
    }

    /// Checks every value that can be checked without the data.
    pub fn validate(&self) -> Result<()> {
        self.method.validate()?;
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size as u64),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
            ("sample.per_class", self.sample.per_class as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if let Some(bad) = self.snapshots.iter().find(|&&s| s == 0 || s > self.steps) {
            return Err(invalid(
                "snapshots",
                format!("step {bad} is outside 1..={} (`steps`)", self.steps),
            ));
        }
        for (name, v) in [
            ("batch_size", self.batch_size),
            ("sample.per_class", self.sample.per_class),
        ] {
            limits::SAMPLES.check(v as u128, format!("config `{name}`"))?;
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", format!("must be positive, got {}", self.lr)));
        }
        // The cosine decays from `lr` down to `min_lr`: a floor above the peak, or below zero
        // (an ascent), is a typo, not a schedule. (The constant schedule never reads it.)
        let floor_ok = self.min_lr >= 0.0 && (self.lr_decay != "cosine" || self.min_lr <= self.lr);
        if !floor_ok {
            return Err(invalid(
                "min_lr",
                format!("must lie in [0, lr = {}], got {}", self.lr, self.min_lr),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid(
                "weight_decay",
                format!("must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        for (i, group) in self.param_groups.iter().enumerate() {
            group.validate(&format!("param_groups[{i}]"))?;
        }
        if self.out.as_os_str().is_empty() {
            return Err(invalid(
                "out",
                "is empty; name a run folder (a run writes config.json, samples.png and more there)",
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(invalid(
                "ema_decay",
                format!("must be in [0, 1), got {}", self.ema_decay),
            ));
        }
        if self.grad_clip.is_nan() || self.grad_clip < 0.0 {
            return Err(invalid(
                "grad_clip",
                format!("must be >= 0, got {}", self.grad_clip),
            ));
        }
        if !matches!(self.color.as_str(), "gray" | "rgb") {
            return Err(invalid(
                "color",
                format!("unknown colour mode `{}`; expected gray or rgb", self.color),
            ));
        }
        if self.image_size == 0 {
            return Err(invalid("image_size", "must be at least 1"));
        }
        check_image_size("image_size", self.image_size)?;
        self.padded_size()?;
        if !(self.crop_scale > 0.0 && self.crop_scale <= 1.0) {
            return Err(invalid(
                "crop_scale",
                format!(
                    "must be a fraction in (0, 1] (1: no crops), got {}",
                    self.crop_scale
                ),
            ));
        }
        self.trainable.validate()?;
        self.lr_schedule()?;
        self.diffusion_config()?;
        self.sample.validate(self.diffusion.steps)?;
        let kinds = match &self.model {
            ModelConfig::Dit(d) if d.control => CONTROL_KINDS.len(),
            _ => 0,
        };
        if kinds == 0 && (!self.sample.control.is_empty() || self.sample.control_scale != 1.0) {
            return Err(invalid(
                "sample.control",
                "and `sample.control_scale` need a DiT with control metadata (`model.control`)",
            ));
        }
        if !self.sample.control.is_empty() && self.sample.control.len() != kinds {
            return Err(invalid(
                "sample.control",
                format!(
                    "has {} values; expected one per control kind ({})",
                    self.sample.control.len(),
                    CONTROL_KINDS.join(", ")
                ),
            ));
        }
        let device = self
            .device
            .parse::<Device>()
            .map_err(|e| invalid("device", e))?;
        if self.compute_dtype()?.is_some() && !device.is_cuda() {
            return Err(invalid(
                "precision",
                format!(
                    "{} computes on CUDA only; use f32 on the cpu",
                    self.precision
                ),
            ));
        }
        Ok(())
    }

    /// The side of the training images after padding: `image_size + 2 pad`, checked against
    /// [`limits::IMAGE_PIXELS`] (an error names `pad`).
    pub fn padded_size(&self) -> Result<usize> {
        let size = (self.pad.checked_mul(2))
            .and_then(|both| both.checked_add(self.image_size))
            .ok_or_else(|| invalid("pad", format!("{} overflows the image side", self.pad)))?;
        let what = format!(
            "`pad` {} around `image_size` {}: images",
            self.pad, self.image_size
        );
        check_image_size(&what, size)?;
        Ok(size)
    }

    /// The mixed-precision compute dtype, `None` for plain f32.
    pub fn compute_dtype(&self) -> Result<Option<DType>> {
        match self.precision.as_str() {
            "f32" => Ok(None),
            "bf16" => Ok(Some(DType::BF16)),
            "f16" => Ok(Some(DType::F16)),
            other => Err(invalid(
                "precision",
                format!("unknown precision `{other}`; expected f32, bf16 or f16"),
            )),
        }
    }

    /// The learning-rate schedule.
    pub fn lr_schedule(&self) -> Result<crate::optim::LrSchedule> {
        use crate::optim::LrSchedule;
        match self.lr_decay.as_str() {
            "constant" => Ok(LrSchedule::constant(self.lr, self.warmup_steps)),
            "cosine" => Ok(LrSchedule::cosine(
                self.lr,
                self.warmup_steps,
                self.steps,
                self.min_lr,
            )),
            other => Err(invalid(
                "lr_decay",
                format!("unknown decay `{other}`; expected constant or cosine"),
            )),
        }
    }

    /// The diffusion process of training.
    pub fn diffusion_config(&self) -> Result<DiffusionConfig> {
        let d = &self.diffusion;
        let schedule = match d.schedule.as_str() {
            "linear" => BetaSchedule::Linear,
            "cosine" => BetaSchedule::Cosine,
            other => {
                return Err(invalid(
                    "diffusion.schedule",
                    format!("unknown schedule `{other}`; expected linear or cosine"),
                ))
            }
        };
        let mean_type = match d.prediction.as_str() {
            "epsilon" => MeanType::Epsilon,
            "velocity" => MeanType::Velocity,
            "x0" => MeanType::StartX,
            other => {
                return Err(invalid(
                    "diffusion.prediction",
                    format!("unknown prediction `{other}`; expected epsilon, velocity or x0"),
                ))
            }
        };
        if d.steps < 2 {
            return Err(invalid("diffusion.steps", "must be at least 2"));
        }
        let schedule = match d.shift_from {
            None => schedule,
            Some(0) => return Err(invalid("diffusion.shift_from", "must be at least 1")),
            Some(n_old) => BetaSchedule::ResolutionShifted {
                base: Box::new(schedule),
                n_old,
                n_new: self.padded_size()?,
            },
        };
        limits::DIFFUSION_STEPS.check(d.steps as u128, "config `diffusion.steps`")?;
        Ok(DiffusionConfig {
            schedule,
            steps: d.steps,
            mean_type,
            var_type: if self.model.learn_sigma() {
                VarType::LearnedRange
            } else {
                VarType::FixedSmall
            },
        })
    }

    /// The DiT for images `[channels, size, size]` of `classes` classes (an error for another
    /// kind of model).
    pub fn dit_config(&self, channels: usize, size: usize, classes: usize) -> Result<DitConfig> {
        check_image_size("the image size", size)?;
        let ModelConfig::Dit(m) = &self.model else {
            return Err(invalid(
                "model",
                format!("is a {}, not a DiT", self.model.kind()),
            ));
        };
        let position_scale = match m.positions_from {
            None => 1.0,
            Some(0) => return Err(invalid("model.positions_from", "must be at least 1")),
            Some(from) => from as f64 / size as f64,
        };
        if !(0.0..1.0).contains(&m.control_dropout_prob) {
            return Err(invalid(
                "model.control_dropout_prob",
                format!("must lie in [0, 1), got {}", m.control_dropout_prob),
            ));
        }
        let cfg = DitConfig {
            input_size: size,
            patch_size: m.patch_size,
            in_channels: channels,
            hidden_size: m.hidden_size,
            depth: m.depth,
            num_heads: m.num_heads,
            mlp_ratio: m.mlp_ratio,
            class_dropout_prob: m.class_dropout_prob,
            num_classes: classes,
            learn_sigma: m.learn_sigma,
            conditioning: Conditioning::parse(&m.conditioning, "model.conditioning")
                .map_err(|e| Error::msg(format!("config {e}")))?,
            class_tokens: m.class_tokens,
            control_dim: if m.control { CONTROL_KINDS.len() } else { 0 },
            control_alpha: m.control_alpha.clone(),
            num_timesteps: self.diffusion.steps,
            position_scale,
        };
        cfg.validate().map_err(|e| invalid("model", e))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(json: &str) -> String {
        let config = RunConfig::from_json_str(json).unwrap();
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn crop_scale_and_pad_are_checked_and_named() {
        for bad in ["0", "-0.5", "1.5"] {
            let err = error_of(&format!(r#"{{ "crop_scale": {bad} }}"#));
            assert!(err.contains("`crop_scale`") && err.contains(bad), "{err}");
        }
        let err = error_of(r#"{ "pad": 100000 }"#);
        assert!(err.contains("`pad`") && err.contains("100000"), "{err}");
        let err = error_of(&format!(r#"{{ "pad": {} }}"#, usize::MAX));
        assert!(err.contains("`pad`"), "{err}");
        let ok = RunConfig::from_json_str(r#"{ "crop_scale": 0.5, "pad": 2 }"#).unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.padded_size().unwrap(), 32);
        let err = error_of(r#"{ "steps": 10, "snapshots": [5, 11] }"#);
        assert!(err.contains("`snapshots`") && err.contains("11"), "{err}");
        let err = error_of(r#"{ "steps": 10, "snapshots": [0] }"#);
        assert!(
            err.contains("`snapshots`") && err.contains("step 0"),
            "{err}"
        );
        let listed = RunConfig::from_json_str(r#"{ "steps": 10, "snapshots": [10, 3] }"#);
        listed.unwrap().validate().unwrap();
        // A config without snapshots saves no `snapshots` key (as before the key existed).
        assert!(!RunConfig::default().to_json().contains("snapshots"));
        // The defaults crop and pad nothing.
        let plain = RunConfig::default();
        assert_eq!((plain.crop_scale, plain.pad), (1.0, 0));
    }
}
