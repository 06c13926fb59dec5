//! ANL transfer ("Transferring Pretrained Diffusion Probabilistic Models", OpenReview
//! 8u9eXwu5GAb): Attention-NonLinear modules after the residual blocks of a frozen U-Net inject a
//! semantic embedding of an image; only they train.
//!
//! The paper is terse and has no public code; the module is our reading of it, one per residual
//! block `<block>` (e.g. `down_blocks.0.resnets.0`), under `anl.<block>.*`:
//!
//! ```text
//! h [N, C, H, W] -> tokens [N, HW, C] -> norm (layer norm over C)
//!   -> attn: multi-head cross-attention, queries the feature tokens, keys and values the
//!            condition tokens [N, S, E] (self-attention over the normed tokens for the
//!            unconditional variant)
//!   -> mlp:  fc1 (C -> ratio C), GELU, fc2 (-> C)        (the non-linear mapping; optional)
//!   -> proj_out (C -> C, zero at first) -> h + it
//! ```
//!
//! `proj_out` starts at zero, so a model with fresh modules computes exactly the pretrained
//! function. Masked sampling ([`Condition::masked`]) hides a fraction of the condition tokens
//! from every attention: with fewer tokens the samples depend less on the condition image.

use autograd::Var;
use tensor::{Error, Generator, Result, Tensor};

use crate::nn::{Attention, LayerNorm, Linear};
use crate::params::{join, ParamStore};

/// The shape of the ANL modules of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct AnlOptions {
    /// The width E of the condition tokens; `None`: the unconditional variant, whose attention
    /// is self-attention over the feature map (no external condition).
    pub context_dim: Option<usize>,
    /// Attention heads; they divide the channels of every block.
    pub heads: usize,
    /// The MLP's hidden width, in multiples of the block's channels.
    pub mlp_ratio: usize,
    /// Whether the non-linear mapping (the MLP) follows the attention; `false` is the paper's
    /// ablation, attention only.
    pub nonlinear: bool,
}

/// A residual block an ANL module follows: its state-dict prefix and output channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnlPoint {
    /// The block's prefix, e.g. `mid_block.resnets.1`.
    pub block: String,
    /// Its output channels C.
    pub channels: usize,
}

/// The prefix of the ANL module after `block`: `anl.<block>`.
pub fn module_prefix(block: &str) -> String {
    join("anl", block)
}

/// The condition of one forward pass: the condition tokens `[N, S, E]` and which of them the
/// attention may see.
#[derive(Clone, Debug)]
pub struct Condition {
    tokens: Var,
    visible: Visible,
}

#[derive(Clone, Debug)]
enum Visible {
    All,
    /// `[N, 1, 1, S]`, 1 where the token may be attended to.
    Some(Tensor),
    /// Every token masked: the attention contributes nothing.
    None,
}

impl Condition {
    /// All of `tokens` `[N, S, E]` visible.
    pub fn new(tokens: Var) -> Result<Condition> {
        if tokens.shape().len() != 3 || tokens.shape()[1] == 0 {
            return Err(Error::shape(
                "ANL condition",
                format!("expected tokens [N, S >= 1, E], got {:?}", tokens.shape()),
            ));
        }
        Ok(Condition {
            tokens,
            visible: Visible::All,
        })
    }

    /// Masked sampling: of each image's S tokens, `round(m S)` drawn at random from `gen` are
    /// hidden from the attention (`m` in [0, 1]; at `m = 1` the attention adds nothing).
    pub fn masked(tokens: Var, m: f64, gen: &mut Generator) -> Result<Condition> {
        check_mask(m, "mask")?;
        let mut c = Condition::new(tokens)?;
        let (n, s) = (c.tokens.shape()[0], c.tokens.shape()[1]);
        let hidden = (m * s as f64).round() as usize;
        c.visible = match hidden {
            0 => Visible::All,
            h if h == s => Visible::None,
            _ => {
                let mut keep = Vec::with_capacity(n * s);
                for _ in 0..n {
                    let mut row = vec![1u8; s];
                    let order = rand::seq::index::sample(gen.rng(), s, hidden);
                    order.iter().for_each(|i| row[i] = 0);
                    keep.extend(row);
                }
                Visible::Some(
                    Tensor::from_vec(keep, &[n, 1, 1, s])?.to_device(c.tokens.value().device())?,
                )
            }
        };
        Ok(c)
    }

    /// The tokens `[N, S, E]`.
    pub fn tokens(&self) -> &Var {
        &self.tokens
    }
}

/// Checks a masking fraction `m`, naming `what` (a flag or key) when it is outside [0, 1].
pub fn check_mask(m: f64, what: &str) -> Result<()> {
    match (0.0..=1.0).contains(&m) {
        true => Ok(()),
        false => Err(Error::msg(format!(
            "{what}: the fraction of condition tokens masked must lie in [0, 1], got {m}"
        ))),
    }
}

/// The ANL modules of a model: their options and where they sit.
#[derive(Clone, Debug)]
pub struct Anl {
    options: AnlOptions,
    points: Vec<AnlPoint>,
}

impl Anl {
    /// Modules of `options` after each of `points`; the heads must divide every block's
    /// channels.
    pub fn new(options: AnlOptions, points: Vec<AnlPoint>) -> Result<Anl> {
        let bad = |key: &str, msg: String| Err(Error::msg(format!("ANL `{key}`: {msg}")));
        if let Some(p) = points
            .iter()
            .find(|p| options.heads == 0 || p.channels % options.heads != 0)
        {
            return bad(
                "heads",
                format!(
                    "{} heads do not divide the {} channels of `{}`",
                    options.heads, p.channels, p.block
                ),
            );
        }
        if options.mlp_ratio == 0 {
            return bad("mlp_ratio", "must be at least 1".into());
        }
        if options.context_dim == Some(0) {
            return bad("context_dim", "must be at least 1".into());
        }
        Ok(Anl { options, points })
    }

    /// The options.
    pub fn options(&self) -> &AnlOptions {
        &self.options
    }

    /// Adds every module's parameters the store lacks (trainable; `proj_out` zero) and returns
    /// their names.
    pub fn add_parameters(&self, ps: &mut ParamStore) -> Result<Vec<String>> {
        let before: Vec<String> = ps.names().map(str::to_string).collect();
        for point in &self.points {
            let prefix = module_prefix(&point.block);
            if ps.contains(&join(&prefix, "norm.weight")) {
                continue;
            }
            let p = |name| join(&prefix, name);
            let c = point.channels;
            LayerNorm::new(ps, &p("norm"), c, true, 1e-5)?;
            Attention::new(
                ps,
                &p("attn"),
                c,
                self.options.context_dim.unwrap_or(c),
                self.options.heads,
                false,
            )?;
            if self.options.nonlinear {
                let hidden = c.saturating_mul(self.options.mlp_ratio);
                Linear::new(ps, &p("mlp.fc1"), c, hidden, true)?;
                Linear::new(ps, &p("mlp.fc2"), hidden, c, true)?;
            }
            ps.constant(&p("proj_out.weight"), &[c, c], 0.0)?;
            ps.constant(&p("proj_out.bias"), &[c], 0.0)?;
        }
        let mut added: Vec<String> = ps
            .names()
            .filter(|n| !before.iter().any(|b| b == n))
            .map(str::to_string)
            .collect();
        added.sort();
        Ok(added)
    }

    /// `h` `[N, C, H, W]`, the output of `block`, with its module's contribution added; `h`
    /// unchanged where no module follows `block`. A module conditioned on an encoder needs a
    /// `condition` of its width.
    pub fn apply(
        &self,
        ps: &ParamStore,
        block: &str,
        h: Var,
        condition: Option<&Condition>,
    ) -> Result<Var> {
        if !self.points.iter().any(|p| p.block == block) {
            return Ok(h);
        }
        let &[n, c, height, width] = h.shape() else {
            return Err(Error::shape(
                "ANL",
                format!("`{block}`: expected [N, C, H, W], got {:?}", h.shape()),
            ));
        };
        let prefix = module_prefix(block);
        let p = |name| join(&prefix, name);
        let x = h
            .reshape(&[n, c, height * width])?
            .permute(&[0, 2, 1])?
            .layer_norm(
                1,
                Some(&ps.weight(&p("norm.weight"))?),
                Some(&ps.weight(&p("norm.bias"))?),
                1e-5,
            )?;
        let attn = Attention::existing(&p("attn"), self.options.heads, false);
        let a = match (self.options.context_dim, condition) {
            (None, _) => attn.forward(ps, &x, None, None)?,
            (Some(e), None) => {
                return Err(Error::msg(format!(
                    "ANL `{prefix}`: the module reads condition tokens of width {e}; give a \
                     condition image"
                )))
            }
            (Some(e), Some(cond)) => {
                let shape = cond.tokens.shape();
                if shape[0] != n || shape[2] != e {
                    return Err(Error::shape(
                        "ANL",
                        format!(
                            "`{prefix}`: condition tokens {shape:?} for a batch of {n}; \
                             expected [{n}, S, {e}]"
                        ),
                    ));
                }
                let tokens = cond.tokens.to_dtype(x.value().dtype())?;
                match &cond.visible {
                    Visible::All => attn.forward(ps, &x, Some(&tokens), None)?,
                    Visible::Some(mask) => attn.forward(ps, &x, Some(&tokens), Some(mask))?,
                    Visible::None => Var::constant(x.value().zeros_like()?),
                }
            }
        };
        let a = match self.options.nonlinear {
            true => Linear::existing(&p("mlp.fc2"), true).forward(
                ps,
                &Linear::existing(&p("mlp.fc1"), true)
                    .forward(ps, &a)?
                    .gelu()?,
            )?,
            false => a,
        };
        let out = Linear::existing(&p("proj_out"), true)
            .forward(ps, &a)?
            .permute(&[0, 2, 1])?
            .reshape(&[n, c, height, width])?;
        h.add(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::UNet2DModel;
    use tensor::{DType, Device};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        Tensor::standard_normal(shape, seed).unwrap()
    }

    fn unet(ps: &mut ParamStore) -> UNet2DModel {
        UNet2DModel::from_json(
            ps,
            r#"{"sample_size": 8, "in_channels": 1, "out_channels": 1,
                "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8}"#,
        )
        .unwrap()
    }

    fn options(context_dim: Option<usize>, nonlinear: bool) -> AnlOptions {
        AnlOptions {
            context_dim,
            heads: 2,
            mlp_ratio: 2,
            nonlinear,
        }
    }

    /// Fresh modules leave the U-Net's output bit-identical; once `proj_out` moves, the output
    /// follows the condition, and masking every token removes the attention's part.
    #[test]
    fn fresh_modules_are_the_pretrained_model_and_then_follow_the_condition() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let mut model = unet(&mut ps);
        let x = Var::constant(randn(&[2, 1, 8, 8], 1));
        let t = Tensor::from_vec(vec![10i64, 700], &[2]).unwrap();
        let plain = model.forward(&ps, &x, &t, None).unwrap().value().clone();

        model.set_anl(Some(options(Some(6), true))).unwrap();
        let points = model.anl_points();
        let blocks: Vec<&str> = points.iter().map(|p| p.block.as_str()).collect();
        assert_eq!(
            blocks,
            [
                "down_blocks.0.resnets.0",
                "down_blocks.1.resnets.0",
                "mid_block.resnets.0",
                "mid_block.resnets.1",
                "up_blocks.0.resnets.0",
                "up_blocks.0.resnets.1",
                "up_blocks.1.resnets.0",
                "up_blocks.1.resnets.1"
            ]
        );
        let added = model.anl().unwrap().add_parameters(&mut ps).unwrap();
        assert!(added.iter().all(|n| n.starts_with("anl.")), "{added:?}");
        assert_eq!(
            added.len(),
            8 * 13,
            "norm 2, attn 5 (q, k, v; out with bias), mlp 4, proj_out 2 per module"
        );
        assert!(model
            .anl()
            .unwrap()
            .add_parameters(&mut ps)
            .unwrap()
            .is_empty());

        let cond = |seed| Condition::new(Var::constant(randn(&[2, 3, 6], seed))).unwrap();
        let out = |ps: &ParamStore, c: &Condition| {
            model
                .forward_with(ps, &x, &t, None, Some(c))
                .unwrap()
                .value()
                .clone()
        };
        assert_eq!(
            out(&ps, &cond(2)).to_vec::<f32>().unwrap(),
            plain.to_vec::<f32>().unwrap(),
            "zero proj_out: the pretrained function"
        );
        let err = model.forward(&ps, &x, &t, None).unwrap_err().to_string();
        assert!(err.contains("condition"), "{err}");
        let wrong = Condition::new(Var::constant(randn(&[2, 3, 5], 2))).unwrap();
        let err = model
            .forward_with(&ps, &x, &t, None, Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, S, 6]"), "{err}");

        for p in &points {
            let name = join(&module_prefix(&p.block), "proj_out.weight");
            ps.set(&name, randn(&[p.channels, p.channels], 3)).unwrap();
        }
        let (a, b) = (out(&ps, &cond(2)), out(&ps, &cond(4)));
        assert!(a.max_abs_diff(&plain).unwrap() > 1e-4);
        assert!(a.max_abs_diff(&b).unwrap() > 1e-4, "another condition");

        // Masking none is the full condition; masking all makes the condition irrelevant.
        let tokens = cond(2).tokens().clone();
        let mut gen = Generator::new(0);
        let none = Condition::masked(tokens.clone(), 0.0, &mut gen).unwrap();
        assert_eq!(out(&ps, &none).max_abs_diff(&a).unwrap(), 0.0);
        let all = |c: Condition| Condition::masked(c.tokens().clone(), 1.0, &mut Generator::new(0));
        let (all_a, all_b) = (
            out(&ps, &all(cond(2)).unwrap()),
            out(&ps, &all(cond(4)).unwrap()),
        );
        assert_eq!(all_a.max_abs_diff(&all_b).unwrap(), 0.0);
        assert!(all_a.max_abs_diff(&a).unwrap() > 1e-4);
        assert!(Condition::masked(tokens, 1.5, &mut gen).is_err());
    }

    #[test]
    fn masking_hides_round_m_s_tokens_of_each_image() {
        let tokens = Var::constant(randn(&[3, 8, 2], 0));
        let c = Condition::masked(tokens, 0.25, &mut Generator::new(1)).unwrap();
        let Visible::Some(mask) = &c.visible else {
            panic!("a partial mask")
        };
        assert_eq!(mask.shape(), &[3, 1, 1, 8]);
        let keep = mask.to_vec::<u8>().unwrap();
        for row in keep.chunks(8) {
            assert_eq!(row.iter().filter(|&&k| k == 0).count(), 2);
        }
        let rows: Vec<&[u8]> = keep.chunks(8).collect();
        assert!(
            rows.iter().any(|r| *r != rows[0]),
            "each image draws its own tokens"
        );
    }

    /// The ablation without the non-linear mapping has no MLP; the unconditional variant reads
    /// no condition; heads must divide every block's channels.
    #[test]
    fn variants_have_their_own_parameters_and_checks() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let mut model = unet(&mut ps);
        model.set_anl(Some(options(None, false))).unwrap();
        let added = model.anl().unwrap().add_parameters(&mut ps).unwrap();
        assert_eq!(added.len(), 8 * 9);
        assert!(!added.iter().any(|n| n.contains("mlp")));
        assert!(added.contains(&"anl.mid_block.resnets.0.attn.to_k.weight".to_string()));
        assert_eq!(
            ps.tensor("anl.mid_block.resnets.0.attn.to_k.weight")
                .unwrap()
                .shape(),
            &[16, 16],
            "self-attention: keys from the feature map"
        );
        let x = Var::constant(randn(&[1, 1, 8, 8], 1));
        let t = Tensor::from_vec(vec![5i64], &[1]).unwrap();
        model.forward(&ps, &x, &t, None).unwrap();

        let heads = AnlOptions {
            heads: 3,
            ..options(Some(4), true)
        };
        let err = model.set_anl(Some(heads)).unwrap_err().to_string();
        assert!(
            err.contains("`heads`") && err.contains("down_blocks.0.resnets.0"),
            "{err}"
        );
    }
}
