//! Parameter-efficient fine-tuning: LoRA on Linear and Conv2d weights, BitFit and DiffFit.
//!
//! LoRA is a property of the [`ParamStore`]: [`add_lora`] gives every matching weight `W` two small
//! trainable factors, `A` (`[r, in]`, or a conv of `r` output channels) and `B` (`[out, r]`, zero at
//! first, so training starts at the pretrained model), and freezes `W`. [`Linear`](crate::nn::Linear)
//! and [`Conv2d`](crate::nn::Conv2d) then compute `W x + (α / r) B A x` with no change to the models.
//! [`merge_lora`] folds `(α / r) B A` into `W` for inference; [`unmerge_lora`] takes it out again.

use autograd::Var;
use tensor::{Conv2dParams, Error, Result, Tensor};

use crate::params::{matches, ParamStore};

/// The LoRA factors of one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    /// Name of `A`: `<weight>.lora_A`.
    pub a: String,
    /// Name of `B`: `<weight>.lora_B`.
    pub b: String,
    /// α / r.
    pub scale: f64,
    /// Whether `(α / r) B A` is currently folded into the weight.
    pub merged: bool,
}

/// Adds LoRA of `rank` and `alpha` to every 2-D (Linear) or 4-D (Conv2d) weight whose name
/// matches `pattern` (e.g. `blocks.*.attn.*.weight`), freezes those weights, and returns how many
/// got an adapter. `A` is drawn from U(±1/√in), `B` is zero.
pub fn add_lora(ps: &mut ParamStore, pattern: &str, rank: usize, alpha: f64) -> Result<usize> {
    if rank == 0 {
        return Err(Error::msg("add_lora: rank must be at least 1"));
    }
    let targets: Vec<(String, Vec<usize>)> = ps
        .iter()
        .filter(|(name, v)| {
            matches(pattern, name) && name.ends_with("weight") && matches!(v.shape().len(), 2 | 4)
        })
        .filter(|(name, _)| ps.lora(name).is_none())
        .map(|(name, v)| (name.to_string(), v.shape().to_vec()))
        .collect();
    for (name, shape) in &targets {
        // Linear [out, in]: A [r, in], B [out, r]. Conv [out, in/g, kh, kw]: A [r, in/g, kh, kw], B [out, r, 1, 1].
        let fan_in: usize = shape[1..].iter().product();
        let mut a_shape = shape.clone();
        a_shape[0] = rank;
        let b_shape: Vec<usize> = if shape.len() == 2 {
            vec![shape[0], rank]
        } else {
            vec![shape[0], rank, 1, 1]
        };
        let (a, b) = (format!("{name}.lora_A"), format!("{name}.lora_B"));
        ps.uniform(&a, &a_shape, 1.0 / (fan_in as f64).sqrt())?;
        ps.constant(&b, &b_shape, 0.0)?;
        ps.set_trainable(name, false);
        ps.set_lora(
            name,
            Lora {
                a,
                b,
                scale: alpha / rank as f64,
                merged: false,
            },
        );
    }
    Ok(targets.len())
}

/// The weight update `(α / r) B A`, shaped as the weight.
fn delta(ps: &ParamStore, weight: &str, lora: &Lora) -> Result<Tensor> {
    let (a, b) = (ps.tensor(&lora.a)?, ps.tensor(&lora.b)?);
    let shape = ps.tensor(weight)?.shape().to_vec();
    let a2 = a.reshape(&[a.shape()[0], a.elem_count() / a.shape()[0]])?;
    let b2 = b.reshape(&[b.shape()[0], b.shape()[1]])?;
    b2.matmul(&a2)?.mul_scalar(lora.scale)?.reshape(&shape)
}

/// Folds every adapter into its weight (inference then costs nothing extra).
pub fn merge_lora(ps: &mut ParamStore) -> Result<()> {
    fold(ps, true)
}

/// Takes every merged adapter out of its weight again.
pub fn unmerge_lora(ps: &mut ParamStore) -> Result<()> {
    fold(ps, false)
}

fn fold(ps: &mut ParamStore, merge: bool) -> Result<()> {
    let adapters: Vec<(String, Lora)> = ps
        .loras()
        .filter(|(_, l)| l.merged != merge)
        .map(|(n, l)| (n.to_string(), l.clone()))
        .collect();
    for (weight, mut lora) in adapters {
        let d = delta(ps, &weight, &lora)?;
        let w = ps.tensor(&weight)?;
        ps.set(&weight, if merge { w.add(&d)? } else { w.sub(&d)? })?;
        lora.merged = merge;
        ps.set_lora(&weight, lora);
    }
    Ok(())
}

/// The Vars of an active (unmerged) LoRA adapter.
#[derive(Clone, Debug)]
pub struct LoraVars {
    /// `A`.
    pub a: Var,
    /// `B`.
    pub b: Var,
    /// α / r.
    pub scale: f64,
}

/// The adapter Vars of the weight `weight`, or `None` when it has no active adapter.
pub(crate) fn lora_vars(ps: &ParamStore, weight: &str) -> Result<Option<LoraVars>> {
    let Some(lora) = ps.lora(weight).filter(|l| !l.merged) else {
        return Ok(None);
    };
    Ok(Some(LoraVars {
        a: ps.weight(&lora.a)?,
        b: ps.weight(&lora.b)?,
        scale: lora.scale,
    }))
}

/// The LoRA term of a Conv2d: `A` convolves like the weight (to `r` channels), then `B` mixes
/// channels as a 1x1 conv; `None` when the weight has no active adapter.
pub(crate) fn conv_lora(
    ps: &ParamStore,
    weight: &str,
    x: &Var,
    p: &Conv2dParams,
) -> Result<Option<Var>> {
    let Some(lora) = lora_vars(ps, weight)? else {
        return Ok(None);
    };
    if p.groups != 1 {
        // (α / r) B A is a grouped weight then, but conv(conv(x, A), B) is not that conv.
        return Err(Error::msg(format!(
            "LoRA on `{weight}`: grouped convolutions (groups = {}) are not supported",
            p.groups
        )));
    }
    let h = x.conv2d(&lora.a, None, p)?;
    Ok(Some(
        h.conv2d(&lora.b, None, &Conv2dParams::default())?
            .mul_scalar(lora.scale)?,
    ))
}

/// BitFit: only biases train.
pub fn bitfit(ps: &mut ParamStore) -> usize {
    ps.set_trainable("*", false);
    ps.set_trainable("*bias", true)
}

/// The class-embedding tables DiffFit trains: DiT's and UNet2DModel's.
const CLASS_EMBEDDINGS: [&str; 2] = [
    "y_embedder.embedding_table.weight",
    "class_embedding.weight",
];

/// DiffFit (Xie et al., 2023): biases, norm weights, the class embedding and a learned scale per
/// block train; everything else is frozen. `scales` names the scales to add (a model lists
/// them, e.g. [`crate::dit::Dit::difffit_scales`]): each `[1]` and 1 at first, so training starts
/// at the pretrained model. Returns how many parameters train.
pub fn difffit(ps: &mut ParamStore, scales: &[String]) -> Result<usize> {
    for name in scales {
        if !ps.contains(name) {
            ps.constant(name, &[1], 1.0)?;
        }
    }
    let mut n = bitfit(ps);
    n += ps.set_trainable("*norm*.weight", true);
    for table in CLASS_EMBEDDINGS {
        n += ps.set_trainable(table, true);
    }
    for name in scales {
        n += ps.set_trainable(name, true);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use tensor::{DType, Device, Generator};

    fn setup() -> (ParamStore, Linear, Var) {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let lin = Linear::new(&mut ps, "proj", 6, 4, true).unwrap();
        let x = Var::constant(
            Tensor::randn(
                &[3, 6],
                0.0,
                1.0,
                DType::F64,
                Device::Cpu,
                &mut Generator::new(1),
            )
            .unwrap(),
        );
        (ps, lin, x)
    }

    #[test]
    fn lora_starts_at_the_base_model_trains_only_its_factors_and_merges_exactly() {
        let (mut ps, lin, x) = setup();
        let base = lin.forward(&ps, &x).unwrap().value().clone();
        let w0 = ps.tensor("proj.weight").unwrap();
        assert_eq!(add_lora(&mut ps, "proj.weight", 2, 4.0).unwrap(), 1);
        assert_eq!(
            lin.forward(&ps, &x)
                .unwrap()
                .value()
                .max_abs_diff(&base)
                .unwrap(),
            0.0
        );
        // Trainable: A (2x6) + B (4x2) + the bias (4); the weight is frozen.
        assert_eq!(ps.trainable_count(), 12 + 8 + 4);
        let grads = lin
            .forward(&ps, &x)
            .unwrap()
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&ps.var("proj.weight").unwrap()).is_none());
        assert!(grads.get(&ps.var("proj.weight.lora_B").unwrap()).is_some());
        // A non-zero B changes the output; merging gives the same output without the adapter path.
        let b = Tensor::randn(
            &[4, 2],
            0.0,
            1.0,
            DType::F64,
            Device::Cpu,
            &mut Generator::new(2),
        )
        .unwrap();
        ps.set("proj.weight.lora_B", b).unwrap();
        let adapted = lin.forward(&ps, &x).unwrap().value().clone();
        assert!(adapted.max_abs_diff(&base).unwrap() > 1e-3);
        merge_lora(&mut ps).unwrap();
        assert!(
            lin.forward(&ps, &x)
                .unwrap()
                .value()
                .max_abs_diff(&adapted)
                .unwrap()
                < 1e-12
        );
        unmerge_lora(&mut ps).unwrap();
        assert!(
            lin.forward(&ps, &x)
                .unwrap()
                .value()
                .max_abs_diff(&adapted)
                .unwrap()
                < 1e-12
        );
        assert!(ps.tensor("proj.weight").unwrap().max_abs_diff(&w0).unwrap() < 1e-12);
    }

    #[test]
    fn conv_lora_merges_exactly() {
        use crate::nn::Conv2d;
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let p = Conv2dParams {
            stride: (2, 1),
            padding: (1, 1),
            ..Default::default()
        };
        let conv = Conv2d::new(&mut ps, "conv", 3, 5, 3, p, true).unwrap();
        let x = Var::constant(
            Tensor::randn(
                &[2, 3, 6, 5],
                0.0,
                1.0,
                DType::F64,
                Device::Cpu,
                &mut Generator::new(1),
            )
            .unwrap(),
        );
        assert_eq!(add_lora(&mut ps, "conv.*", 2, 2.0).unwrap(), 1);
        let b = Tensor::randn(
            &[5, 2, 1, 1],
            0.0,
            1.0,
            DType::F64,
            Device::Cpu,
            &mut Generator::new(2),
        )
        .unwrap();
        ps.set("conv.weight.lora_B", b).unwrap();
        let adapted = conv.forward(&ps, &x).unwrap().value().clone();
        merge_lora(&mut ps).unwrap();
        assert!(
            conv.forward(&ps, &x)
                .unwrap()
                .value()
                .max_abs_diff(&adapted)
                .unwrap()
                < 1e-12
        );
    }

    #[test]
    fn bitfit_trains_biases_only() {
        let (mut ps, _, _) = setup();
        assert_eq!(bitfit(&mut ps), 1);
        assert_eq!(ps.trainable_count(), 4);
    }
}
