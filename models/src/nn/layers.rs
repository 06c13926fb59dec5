//! Linear, GroupNorm and LayerNorm.

use autograd::Var;
use tensor::Result;

use crate::params::{join, ParamStore};
use crate::peft::{lora_vars, LoraVars};

/// y = x Wᵀ + b over the last dim; weight `[out, in]` as PyTorch stores it.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: String,
    bias: Option<String>,
}

impl Linear {
    /// Adds `prefix.weight` (and `prefix.bias`) with PyTorch's default init, U(±1/√in).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        ps.uniform(&join(prefix, "weight"), &[out_dim, in_dim], bound)?;
        if bias {
            ps.uniform(&join(prefix, "bias"), &[out_dim], bound)?;
        }
        Ok(Linear::existing(prefix, bias))
    }

    /// A Linear over parameters already in the store (added by the caller's own initialiser).
    pub fn existing(prefix: &str, bias: bool) -> Self {
        Linear {
            weight: join(prefix, "weight"),
            bias: bias.then(|| join(prefix, "bias")),
        }
    }

    /// The weight's parameter name.
    pub fn weight_name(&self) -> &str {
        &self.weight
    }

    /// The bias's parameter name, if any.
    pub fn bias_name(&self) -> Option<&str> {
        self.bias.as_deref()
    }

    /// x `[.., in]` -> `[.., out]`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        self.vars(ps)?.forward(x)
    }

    /// The current Vars of this Linear (with its active LoRA factors), read once from the store:
    /// a block can then run without the store, e.g. inside a gradient checkpoint.
    pub fn vars(&self, ps: &ParamStore) -> Result<LinearVars> {
        Ok(LinearVars {
            weight: ps.weight(&self.weight)?,
            bias: self.bias.as_deref().map(|b| ps.weight(b)).transpose()?,
            lora: lora_vars(ps, &self.weight)?,
        })
    }
}

/// A Linear's parameters as Vars: `y = x Wᵀ + (α / r) (x Aᵀ) Bᵀ + b`.
#[derive(Clone, Debug)]
pub struct LinearVars {
    weight: Var,
    bias: Option<Var>,
    lora: Option<LoraVars>,
}

impl LinearVars {
    /// x `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let mut y = x.matmul(&self.weight.transpose(0, 1)?)?;
        if let Some(l) = &self.lora {
            let low_rank = x
                .matmul(&l.a.transpose(0, 1)?)?
                .matmul(&l.b.transpose(0, 1)?)?;
            y = y.add(&low_rank.mul_scalar(l.scale)?)?;
        }
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// Every Var the forward reads (weight, bias, LoRA factors).
    pub fn params(&self) -> Vec<&Var> {
        let lora = self.lora.iter().flat_map(|l| [&l.a, &l.b]);
        std::iter::once(&self.weight)
            .chain(&self.bias)
            .chain(lora)
            .collect()
    }
}

/// Group normalisation over `[N, C, ..]` with per-channel affine parameters.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: String,
    bias: String,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Adds `prefix.weight` = 1 and `prefix.bias` = 0 of size `channels`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<Self> {
        ps.constant(&join(prefix, "weight"), &[channels], 1.0)?;
        ps.constant(&join(prefix, "bias"), &[channels], 0.0)?;
        Ok(GroupNorm {
            weight: join(prefix, "weight"),
            bias: join(prefix, "bias"),
            groups,
            eps,
        })
    }

    /// Normalised x, same shape.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        x.group_norm(
            self.groups,
            Some(&ps.weight(&self.weight)?),
            Some(&ps.weight(&self.bias)?),
            self.eps,
        )
    }
}

/// Layer normalisation over the last dim, with or without affine parameters.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    affine: Option<(String, String)>,
    eps: f64,
}

impl LayerNorm {
    /// With `affine`, adds `prefix.weight` = 1 and `prefix.bias` = 0 of size `dim`.
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        dim: usize,
        affine: bool,
        eps: f64,
    ) -> Result<Self> {
        if affine {
            ps.constant(&join(prefix, "weight"), &[dim], 1.0)?;
            ps.constant(&join(prefix, "bias"), &[dim], 0.0)?;
        }
        Ok(LayerNorm {
            affine: affine.then(|| (join(prefix, "weight"), join(prefix, "bias"))),
            eps,
        })
    }

    /// Normalised x, same shape.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        match &self.affine {
            Some((w, b)) => x.layer_norm(1, Some(&ps.weight(w)?), Some(&ps.weight(b)?), self.eps),
            None => x.layer_norm(1, None, None, self.eps),
        }
    }
}
