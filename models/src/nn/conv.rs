//! 2-D convolution.

use autograd::Var;
use tensor::{Conv2dParams, Result};

use crate::params::{join, ParamStore};
use crate::peft::conv_lora;

/// 2-D convolution with optional bias; weight `[out, in / groups, kh, kw]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: String,
    bias: Option<String>,
    /// Stride, padding, dilation and groups.
    pub params: Conv2dParams,
}

impl Conv2d {
    /// Adds `prefix.weight` (and `prefix.bias`) with PyTorch's default init, U(±1/√fan_in).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        params: Conv2dParams,
        bias: bool,
    ) -> Result<Self> {
        let fan_in = in_ch / params.groups.max(1) * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        ps.uniform(
            &join(prefix, "weight"),
            &[out_ch, in_ch / params.groups.max(1), kernel, kernel],
            bound,
        )?;
        if bias {
            ps.uniform(&join(prefix, "bias"), &[out_ch], bound)?;
        }
        Ok(Conv2d {
            weight: join(prefix, "weight"),
            bias: bias.then(|| join(prefix, "bias")),
            params,
        })
    }

    /// x `[N, C, H, W]` -> `[N, out, H', W']`.
    pub fn forward(&self, ps: &ParamStore, x: &Var) -> Result<Var> {
        let bias = self.bias.as_deref().map(|b| ps.weight(b)).transpose()?;
        let y = x.conv2d(&ps.weight(&self.weight)?, bias.as_ref(), &self.params)?;
        match conv_lora(ps, &self.weight, x, &self.params)? {
            Some(lora) => y.add(&lora),
            None => Ok(y),
        }
    }
}
