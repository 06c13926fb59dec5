//! The transformer blocks (adaLN-Zero) and the final layer.

use autograd::{checkpoint, Var};
use tensor::Result;

use super::embed::{xavier_linear, zero_linear};
use super::{Conditioning, DitConfig, DIFFFIT_SCALE, LN_EPS};
use crate::nn::{Linear, LinearVars};
use crate::params::{join, ParamStore};

/// `modulate(x, shift, scale) = x · (1 + scale) + shift`, with `shift` and `scale` `[N, D]`
/// broadcast over the tokens of `x` `[N, T, D]`.
pub(super) fn modulate(x: &Var, shift: &Var, scale: &Var) -> Result<Var> {
    x.mul(&scale.unsqueeze(1)?.add_scalar(1.0)?)?
        .add(&shift.unsqueeze(1)?)
}

/// A LayerNorm without affine parameters over the last dim.
pub(super) fn layer_norm(x: &Var) -> Result<Var> {
    x.layer_norm(1, None, None, LN_EPS)
}

/// `DiTBlock`: attention and MLP, each behind a LayerNorm modulated by `c` and gated
/// (adaLN-Zero):
///
/// ```text
/// shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c).chunk(6)
/// x = x + gate_msa · attn(modulate(norm1(x), shift_msa, scale_msa))
/// x = x + gate_mlp · mlp(modulate(norm2(x), shift_mlp, scale_mlp))
/// ```
///
/// In the cross-attention mode a layer reading the class tokens sits between the two:
/// `x = x + cross_attn(norm(x), tokens)` (queries from the image tokens, keys and values from the
/// class tokens, the output projection zero at first, as PixArt-α's).
pub(super) struct DitBlock {
    qkv: Linear,
    proj: Linear,
    cross: Option<CrossAttention>,
    fc1: Linear,
    fc2: Linear,
    pub(super) ada: Linear,
    /// `<prefix>.difffit_scale`: read when the store has it (see [`Dit::difffit_scales`](super::Dit::difffit_scales)).
    pub(super) scale: String,
    num_heads: usize,
}

/// A block's parameters as Vars, and its forward over them.
#[derive(Clone)]
pub(super) struct BlockVars {
    qkv: LinearVars,
    proj: LinearVars,
    cross: Option<CrossVars>,
    fc1: LinearVars,
    fc2: LinearVars,
    ada: LinearVars,
    /// DiffFit's learned scale `[1]` of both residual branches, when the store has one.
    scale: Option<Var>,
    num_heads: usize,
}

impl DitBlock {
    pub(super) fn new(ps: &mut ParamStore, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let (d, m) = (cfg.hidden_size, cfg.mlp_hidden());
        let p = |name: &str| join(prefix, name);
        Ok(DitBlock {
            qkv: xavier_linear(ps, &p("attn.qkv"), d, 3 * d)?,
            proj: xavier_linear(ps, &p("attn.proj"), d, d)?,
            cross: (cfg.conditioning == Conditioning::CrossAttention)
                .then(|| CrossAttention::new(ps, &p("cross_attn"), d))
                .transpose()?,
            fc1: xavier_linear(ps, &p("mlp.fc1"), d, m)?,
            fc2: xavier_linear(ps, &p("mlp.fc2"), m, d)?,
            ada: zero_linear(ps, &p("adaLN_modulation.1"), d, 6 * d)?,
            scale: p(DIFFFIT_SCALE),
            num_heads: cfg.num_heads,
        })
    }

    fn vars(&self, ps: &ParamStore) -> Result<BlockVars> {
        Ok(BlockVars {
            qkv: self.qkv.vars(ps)?,
            proj: self.proj.vars(ps)?,
            cross: self.cross.as_ref().map(|c| c.vars(ps)).transpose()?,
            fc1: self.fc1.vars(ps)?,
            fc2: self.fc2.vars(ps)?,
            ada: self.ada.vars(ps)?,
            scale: ps
                .contains(&self.scale)
                .then(|| ps.weight(&self.scale))
                .transpose()?,
            num_heads: self.num_heads,
        })
    }

    /// x `[N, T, D]`, c `[N, D]`, the class tokens `[N, L, D]` of the cross-attention mode ->
    /// `[N, T, D]`; with `checkpointing`, the block's activations are recomputed in backward
    /// instead of kept.
    pub(super) fn forward(
        &self,
        ps: &ParamStore,
        x: &Var,
        c: &Var,
        tokens: Option<&Var>,
        checkpointing: bool,
    ) -> Result<Var> {
        let vars = self.vars(ps)?;
        if !checkpointing {
            return vars.forward(x, c, tokens);
        }
        let cross = vars.cross.iter().flat_map(|c| [&c.q, &c.kv, &c.proj]);
        let params: Vec<&Var> = [&vars.qkv, &vars.proj, &vars.fc1, &vars.fc2, &vars.ada]
            .into_iter()
            .chain(cross)
            .flat_map(|l| l.params())
            .chain(&vars.scale)
            .collect();
        let inputs: Vec<&Var> = [x, c].into_iter().chain(tokens).collect();
        let inner = vars.clone();
        checkpoint(&inputs, &params, move |v| {
            inner.forward(&v[0], &v[1], v.get(2))
        })
    }
}

impl BlockVars {
    fn forward(&self, x: &Var, c: &Var, tokens: Option<&Var>) -> Result<Var> {
        let m = self.ada.forward(&c.silu()?)?.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = self.attn(&modulate(&layer_norm(x)?, shift_msa, scale_msa)?)?;
        let mut x = x.add(&self.scaled(gate_msa.unsqueeze(1)?.mul(&h)?)?)?;
        if let (Some(cross), Some(tokens)) = (&self.cross, tokens) {
            x = x.add(&cross.forward(&layer_norm(&x)?, tokens, self.num_heads)?)?;
        }
        let h = self.mlp(&modulate(&layer_norm(&x)?, shift_mlp, scale_mlp)?)?;
        x.add(&self.scaled(gate_mlp.unsqueeze(1)?.mul(&h)?)?)
    }

    /// A residual branch times the block's DiffFit scale, if it has one.
    fn scaled(&self, branch: Var) -> Result<Var> {
        match &self.scale {
            Some(g) => branch.mul(g),
            None => Ok(branch),
        }
    }

    /// timm's `Attention` (qkv with bias, no q/k norm): `[N, T, D]` -> `[N, T, D]`.
    fn attn(&self, x: &Var) -> Result<Var> {
        let [q, k, v] =
            <[Var; 3]>::try_from(split_heads(&self.qkv.forward(x)?, 3, self.num_heads)?)
                .expect("three parts");
        self.proj.forward(&merge_heads(
            &q.scaled_dot_product_attention(&k, &v, None, None)?,
        )?)
    }

    /// timm's `Mlp` with tanh-GELU: fc1, GELU, fc2.
    fn mlp(&self, x: &Var) -> Result<Var> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_tanh()?)
    }
}

/// `[N, T, parts · D]` -> `parts` tensors `[N, H, T, D/H]` (the layout of timm's qkv).
fn split_heads(x: &Var, parts: usize, heads: usize) -> Result<Vec<Var>> {
    let (n, t, width) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let d = width / parts;
    // [N, T, parts, H, D/H] -> [parts, N, H, T, D/H]
    x.reshape(&[n, t, parts, heads, d / heads])?
        .permute(&[2, 0, 3, 1, 4])?
        .chunk(parts, 0)?
        .iter()
        .map(|p| p.squeeze(0))
        .collect()
}

/// `[N, H, T, D/H]` -> `[N, T, D]`.
fn merge_heads(o: &Var) -> Result<Var> {
    let (n, h, t, dh) = (o.shape()[0], o.shape()[1], o.shape()[2], o.shape()[3]);
    o.transpose(1, 2)?.reshape(&[n, t, h * dh])
}

/// A block's cross-attention to the class tokens: queries from the (normalised) image tokens,
/// keys and values from the class tokens.
struct CrossAttention {
    q: Linear,
    kv: Linear,
    proj: Linear,
}

/// [`CrossAttention`]'s parameters as Vars.
#[derive(Clone)]
struct CrossVars {
    q: LinearVars,
    kv: LinearVars,
    proj: LinearVars,
}

impl CrossAttention {
    fn new(ps: &mut ParamStore, prefix: &str, d: usize) -> Result<Self> {
        Ok(CrossAttention {
            q: xavier_linear(ps, &join(prefix, "q"), d, d)?,
            kv: xavier_linear(ps, &join(prefix, "kv"), d, 2 * d)?,
            // Zero: a model given cross-attention starts as it was without it.
            proj: zero_linear(ps, &join(prefix, "proj"), d, d)?,
        })
    }

    fn vars(&self, ps: &ParamStore) -> Result<CrossVars> {
        Ok(CrossVars {
            q: self.q.vars(ps)?,
            kv: self.kv.vars(ps)?,
            proj: self.proj.vars(ps)?,
        })
    }
}

impl CrossVars {
    /// x `[N, T, D]`, tokens `[N, L, D]` -> `[N, T, D]`.
    fn forward(&self, x: &Var, tokens: &Var, heads: usize) -> Result<Var> {
        let q = split_heads(&self.q.forward(x)?, 1, heads)?.remove(0);
        let [k, v] = <[Var; 2]>::try_from(split_heads(&self.kv.forward(tokens)?, 2, heads)?)
            .expect("two parts");
        self.proj.forward(&merge_heads(
            &q.scaled_dot_product_attention(&k, &v, None, None)?,
        )?)
    }
}

/// `FinalLayer`: a modulated LayerNorm, then a Linear to one patch per token,
/// `[N, T, D]` -> `[N, T, p·p·out_channels]`.
pub(super) struct FinalLayer {
    linear: Linear,
    ada: Linear,
}

impl FinalLayer {
    pub(super) fn new(ps: &mut ParamStore, cfg: &DitConfig) -> Result<Self> {
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        Ok(FinalLayer {
            linear: zero_linear(ps, "final_layer.linear", d, p * p * cfg.out_channels())?,
            ada: zero_linear(ps, "final_layer.adaLN_modulation.1", d, 2 * d)?,
        })
    }

    pub(super) fn forward(&self, ps: &ParamStore, x: &Var, c: &Var) -> Result<Var> {
        let m = self.ada.forward(ps, &c.silu()?)?.chunk(2, 1)?;
        let (shift, scale) = (&m[0], &m[1]);
        self.linear
            .forward(ps, &modulate(&layer_norm(x)?, shift, scale)?)
    }
}
