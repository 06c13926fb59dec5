//! The embedding layers: patches, timesteps, labels and the fixed position table.

use autograd::Var;
use tensor::{DType, Error, Generator, Result, Tensor};

use super::{DitConfig, FREQUENCY_EMBEDDING_SIZE};
use crate::nn::{sinusoidal_embedding_f32, Embedding, Linear};
use crate::params::{join, ParamStore};

/// A Linear with the reference's `_basic_init`: xavier-uniform weight, zero bias.
pub(super) fn xavier_linear(
    ps: &mut ParamStore,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
) -> Result<Linear> {
    ps.uniform(
        &join(prefix, "weight"),
        &[out_dim, in_dim],
        xavier_bound(in_dim, out_dim),
    )?;
    ps.constant(&join(prefix, "bias"), &[out_dim], 0.0)?;
    Ok(Linear::existing(prefix, true))
}

/// A Linear whose weight and bias start at zero (adaLN-Zero, the output layer).
pub(super) fn zero_linear(
    ps: &mut ParamStore,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
) -> Result<Linear> {
    ps.constant(&join(prefix, "weight"), &[out_dim, in_dim], 0.0)?;
    ps.constant(&join(prefix, "bias"), &[out_dim], 0.0)?;
    Ok(Linear::existing(prefix, true))
}

/// The bound of `nn.init.xavier_uniform_`: √(6 / (fan_in + fan_out)).
pub(super) fn xavier_bound(fan_in: usize, fan_out: usize) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}

/// timm's `PatchEmbed`: a `p × p` convolution with stride `p`, then flattened to tokens. A stride-p
/// convolution is exactly patchify (a reshape and a permute) followed by a matmul with the weight
/// viewed as `[D, C·p·p]`, which is how it is computed here.
pub(super) struct PatchEmbed {
    weight: String,
    bias: String,
    patch: usize,
}

impl PatchEmbed {
    pub(super) fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let (d, c, p) = (cfg.hidden_size, cfg.in_channels, cfg.patch_size);
        // xavier_uniform_ on the [D, C·p·p] view of the weight.
        ps.uniform(
            "x_embedder.proj.weight",
            &[d, c, p, p],
            xavier_bound(c * p * p, d),
        )?;
        ps.constant("x_embedder.proj.bias", &[d], 0.0)?;
        Ok(PatchEmbed {
            weight: "x_embedder.proj.weight".into(),
            bias: "x_embedder.proj.bias".into(),
            patch: p,
        })
    }

    /// `[N, C, H, W]` -> `[N, T, D]`, tokens in row-major patch order.
    pub(super) fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p] -> [N, T, C·p·p]
        let patches = x
            .reshape(&[n, c, gh, p, gw, p])?
            .permute(&[0, 2, 4, 1, 3, 5])?
            .reshape(&[n, gh * gw, c * p * p])?;
        let weight = ps.weight(&self.weight)?;
        let d = weight.shape()[0];
        let weight = weight.reshape(&[d, c * p * p])?;
        patches
            .matmul(&weight.transpose(0, 1)?)?
            .add(&ps.weight(&self.bias)?)
    }
}

/// `TimestepEmbedder`: sinusoidal features of t (cos half first) through Linear, SiLU, Linear.
pub(super) struct TimestepEmbedder {
    fc1: Linear,
    fc2: Linear,
}

impl TimestepEmbedder {
    pub(super) fn new(ps: &mut ParamStore, hidden: usize) -> Result<Self> {
        let (f, d) = (FREQUENCY_EMBEDDING_SIZE, hidden);
        ps.normal("t_embedder.mlp.0.weight", &[d, f], 0.02)?;
        ps.constant("t_embedder.mlp.0.bias", &[d], 0.0)?;
        ps.normal("t_embedder.mlp.2.weight", &[d, d], 0.02)?;
        ps.constant("t_embedder.mlp.2.bias", &[d], 0.0)?;
        Ok(TimestepEmbedder {
            fc1: Linear::existing("t_embedder.mlp.0", true),
            fc2: Linear::existing("t_embedder.mlp.2", true),
        })
    }

    /// `[N]` (any numeric dtype) -> `[N, D]`.
    pub(super) fn forward(&self, ps: &ParamStore, t: &Tensor) -> Result<Var> {
        let freq = timestep_embedding_f32(t, FREQUENCY_EMBEDDING_SIZE, 10000.0)?
            .to_device(ps.device())?
            .to_dtype(ps.compute_dtype())?;
        let h = self.fc1.forward(ps, &Var::constant(freq))?.silu()?;
        self.fc2.forward(ps, &h)
    }
}

/// The reference's `TimestepEmbedder.timestep_embedding(t, dim, max_period)` in its float32
/// arithmetic whatever the model's dtype (`t.float() * freqs`, then `[cos, sin]`): the diffusers
/// embedding with `flip_sin_to_cos` and no shift, rounded as PyTorch rounds. At t ≈ 1000 one ulp of
/// a frequency moves the argument by ~6e-5, so the rounding is part of the reference's function.
pub fn timestep_embedding_f32(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    sinusoidal_embedding_f32(t, dim, true, 0.0, max_period, DType::F32)
}

/// `LabelEmbedder`: a table of class embeddings, with label dropout to the null class
/// (`num_classes`) in training for classifier-free guidance. In the attention modes a row holds
/// the class's `class_tokens` tokens side by side, under another name (`y_embedder.token_table`),
/// so an adaLN checkpoint's table is never read as tokens.
pub(super) struct LabelEmbedder {
    table: Embedding,
    num_classes: usize,
    rows: usize,
    dropout_prob: f64,
}

impl LabelEmbedder {
    pub(super) fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let rows = cfg.label_rows();
        Ok(LabelEmbedder {
            table: Embedding::new(ps, label_table(cfg), rows, cfg.label_width(), 0.02)?,
            num_classes: cfg.num_classes,
            rows,
            dropout_prob: cfg.class_dropout_prob,
        })
    }

    /// `[N]` i64 -> `[N, D]` (`[N, class_tokens · D]` in the attention modes).
    pub(super) fn forward(&self, ps: &ParamStore, y: &Tensor) -> Result<Var> {
        self.check(y)?;
        self.table.forward(ps, y)
    }

    /// An error naming the first label of `y` outside the table.
    fn check(&self, y: &Tensor) -> Result<()> {
        let labels = y.to_vec::<i64>()?;
        if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= self.rows) {
            let null = if self.rows > self.num_classes {
                format!(" or {} (the null class)", self.num_classes)
            } else {
                String::new()
            };
            return Err(Error::msg(format!(
                "DiT forward: label {bad} is out of range; labels are 0..{}{null}",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// Training's label dropout: `y` with each label dropped to the null class with the
    /// dropout probability, drawn from `gen` (unchanged when the probability is 0).
    pub(super) fn drop(&self, y: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        self.check(y)?;
        if self.dropout_prob > 0.0 {
            drop_labels(y, self.dropout_prob, self.num_classes, gen)
        } else {
            Ok(y.clone())
        }
    }
}

/// The reference's class table, summed into adaLN (without `.weight`).
pub(super) const ADALN_TABLE: &str = "y_embedder.embedding_table";

/// The name of `cfg`'s class table (without `.weight`).
pub(super) fn label_table(cfg: &DitConfig) -> &'static str {
    if cfg.conditioning.uses_tokens() {
        "y_embedder.token_table"
    } else {
        ADALN_TABLE
    }
}

/// The reference's `token_drop`: each label is replaced by `null_class` with probability `p`
/// (`torch.rand(N) < p`), drawn from `gen`. `labels`: `[N]` i64.
pub fn drop_labels(
    labels: &Tensor,
    p: f64,
    null_class: usize,
    gen: &mut Generator,
) -> Result<Tensor> {
    let u = Tensor::rand(labels.shape(), 0.0, 1.0, DType::F64, labels.device(), gen)?;
    let drop: Vec<bool> = u.to_vec::<f64>()?.into_iter().map(|u| u < p).collect();
    force_drop_labels(labels, &drop, null_class)
}

/// The reference's `token_drop` with `force_drop_ids`: label n is replaced by `null_class` where
/// `drop[n]`. A training step with a given dropout mask feeds these labels to
/// [`Dit::forward`](super::Dit::forward) without a generator. `labels`: `[N]` i64, `drop`: N flags.
pub fn force_drop_labels(labels: &Tensor, drop: &[bool], null_class: usize) -> Result<Tensor> {
    if labels.shape() != [drop.len()] {
        return Err(Error::shape(
            "force_drop_labels",
            format!(
                "labels {:?} and a mask of {} flags differ",
                labels.shape(),
                drop.len()
            ),
        ));
    }
    let dropped: Vec<i64> = labels
        .to_vec::<i64>()?
        .into_iter()
        .zip(drop)
        .map(|(l, &d)| if d { null_class as i64 } else { l })
        .collect();
    Tensor::from_vec(dropped, labels.shape())?.to_device(labels.device())
}

/// The fixed position embedding of the reference's `get_2d_sincos_pos_embed(embed_dim,
/// grid_size)`: `[grid_size², embed_dim]` row-major, token `i · grid_size + j` (row i, column j)
/// getting the 1-D embedding of its column j in the first half and of its row i in the second
/// (the reference's `np.meshgrid(grid_w, grid_h)` puts w first). Each 1-D embedding of width
/// `E = embed_dim / 2` is `[sin(pos · ω_k), cos(pos · ω_k)]` with `ω_k = 10000^(-k / (E/2))`,
/// where `pos` is the row or column index times `scale` (1 in the reference; below 1 it
/// interpolates a coarser grid's positions). `embed_dim` must be divisible by 4.
pub fn sincos_pos_embed_2d(embed_dim: usize, grid_size: usize, scale: f64) -> Vec<f64> {
    let axis = embed_dim / 2;
    let quarter = axis / 2;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let one_d = |pos: f64, out: &mut Vec<f64>| {
        out.extend(omega.iter().map(|w| (pos * w).sin()));
        out.extend(omega.iter().map(|w| (pos * w).cos()));
    };
    let mut out = Vec::with_capacity(grid_size * grid_size * embed_dim);
    for i in 0..grid_size {
        for j in 0..grid_size {
            one_d(j as f64 * scale, &mut out);
            one_d(i as f64 * scale, &mut out);
        }
    }
    out
}
