//! A small convolutional encoder: stages of 3x3 convolution, GroupNorm and SiLU, the first at
//! stride 1 and the others at stride 2 (28 -> 28 -> 14 -> 7 for three stages).
//!
//! ```text
//! images -> stages.{i}.{conv, norm} -> silu ...  last map [N, C, h, w]
//!   tokens = its positions [N, h w, C]; pooled = their mean [N, C]
//!   -> head (when num_classes > 0, for supervised training only)
//! ```

use autograd::Var;
use serde::{Deserialize, Serialize};
use tensor::{Conv2dParams, Result};

use crate::nn::{Conv2d, GroupNorm};
use crate::ParamStore;

/// The sizes of the CNN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Channels of each stage (each a multiple of `groups`).
    pub widths: Vec<usize>,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub groups: usize,
    /// Classes of the supervised head (`head.{weight, bias}`); 0: no head.
    #[serde(default)]
    pub num_classes: usize,
}

fn default_groups() -> usize {
    8
}

/// The built CNN.
#[derive(Clone, Debug)]
pub(crate) struct Cnn {
    stages: Vec<(Conv2d, GroupNorm)>,
}

impl Cnn {
    /// Adds the parameters of a validated config for images of `channels` channels.
    pub fn new(ps: &mut ParamStore, c: &CnnConfig, channels: usize) -> Result<Self> {
        let mut stages = Vec::with_capacity(c.widths.len());
        let mut in_ch = channels;
        for (i, &width) in c.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let params = Conv2dParams {
                stride: (stride, stride),
                padding: (1, 1),
                ..Default::default()
            };
            let conv = Conv2d::new(
                ps,
                &format!("stages.{i}.conv"),
                in_ch,
                width,
                3,
                params,
                true,
            )?;
            let norm = GroupNorm::new(ps, &format!("stages.{i}.norm"), c.groups, width, 1e-5)?;
            stages.push((conv, norm));
            in_ch = width;
        }
        Ok(Cnn { stages })
    }

    /// The side of the last feature map for an input side `side`: each stride-2 stage halves it,
    /// rounding up (3x3 kernel, padding 1).
    pub fn out_side(c: &CnnConfig, side: usize) -> usize {
        (1..c.widths.len()).fold(side, |s, _| s.div_ceil(2))
    }

    /// Positions of the last feature map, `[N, h w, C]`, of images (shape already checked).
    pub fn tokens(&self, ps: &ParamStore, images: &Var) -> Result<Var> {
        let mut h = images.clone();
        for (conv, norm) in &self.stages {
            h = norm.forward(ps, &conv.forward(ps, &h)?)?.silu()?;
        }
        let (n, c) = (h.shape()[0], h.shape()[1]);
        let positions = h.shape()[2..].iter().product();
        h.reshape(&[n, c, positions])?.transpose(1, 2)
    }

    /// The mean over positions `[N, C]` of tokens `[N, S, C]`.
    pub fn pool(tokens: &Var) -> Result<Var> {
        tokens.mean(&[1], false)
    }
}
