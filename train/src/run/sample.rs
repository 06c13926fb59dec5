//! Drawing images from a trained DiT: ancestral DDPM or DDIM over a respaced process, with
//! classifier-free guidance.

use autograd::{no_grad, Var};
use models::dit::Dit;
use models::ParamStore;
use tensor::{DType, Error, Generator, Result, Tensor};

use super::config::SampleSettings;
use crate::diffusion::{classifier_free_guidance, create_diffusion, DiffusionConfig};

/// Images per model call: bounds the memory of a large request.
const CHUNK: usize = 128;

/// Samples one image per label (i64 class indices) with the `settings`' sampler and guidance,
/// from noise seeded by `seed`: `f32 [N, C, H, W]`, clipped to `[-1, 1]`.
pub fn generate(
    dit: &Dit,
    ps: &ParamStore,
    process: &DiffusionConfig,
    settings: &SampleSettings,
    labels: &[i64],
    seed: u64,
) -> Result<Tensor> {
    let cfg = dit.config();
    if let Some(&bad) = labels
        .iter()
        .find(|&&l| l < 0 || l as usize >= cfg.num_classes)
    {
        return Err(Error::msg(format!(
            "sample: class {bad} is not one of the model's {} classes",
            cfg.num_classes
        )));
    }
    let diffusion = create_diffusion(&settings.sampler, process)?;
    let mut gen = Generator::new(seed);
    let mut chunks = Vec::new();
    for chunk in labels.chunks(CHUNK) {
        let n = chunk.len();
        let shape = [n, cfg.in_channels, cfg.input_size, cfg.input_size];
        let noise = Tensor::randn(&shape, 0.0, 1.0, DType::F32, ps.device(), &mut gen)?;
        let guided = settings.cfg_scale != 1.0;
        let mut y = chunk.to_vec();
        if guided {
            y.extend(std::iter::repeat_n(cfg.num_classes as i64, n));
        }
        let len = y.len();
        let y = Tensor::from_vec(y, &[len])?;
        let net = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
            no_grad(|| dit.forward(ps, &Var::constant(x.clone()), t, &y, None))
                .map(|v| v.value().clone())
        };
        let x = if guided {
            let model = classifier_free_guidance(net, settings.cfg_scale, Some(cfg.in_channels));
            run_chain(&diffusion, &model, noise, settings, &mut gen)?
        } else {
            run_chain(&diffusion, &net, noise, settings, &mut gen)?
        };
        chunks.push(x.clamp(-1.0, 1.0)?);
    }
    let refs: Vec<&Tensor> = chunks.iter().collect();
    Tensor::cat(&refs, 0)
}

fn run_chain<M>(
    diffusion: &crate::diffusion::Diffusion,
    model: &M,
    noise: Tensor,
    settings: &SampleSettings,
    gen: &mut Generator,
) -> Result<Tensor>
where
    M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
{
    if settings.uses_ddim() {
        diffusion.ddim_sample_loop(model, noise, true, settings.eta, gen)
    } else {
        diffusion.p_sample_loop(model, noise, true, gen)
    }
}

/// `per_class` labels of each of `classes` classes, class by class: the rows of a grid. More
/// than [`tensor::limits::SAMPLES`] labels in all is an error.
pub fn grid_labels(classes: usize, per_class: usize) -> Result<Vec<i64>> {
    let all: Vec<i64> = (0..classes as i64).collect();
    repeat_labels(&all, per_class)
}

/// Each of `classes` repeated `per_class` times, in order; more than
/// [`tensor::limits::SAMPLES`] labels in all is an error.
pub fn repeat_labels(classes: &[i64], per_class: usize) -> Result<Vec<i64>> {
    tensor::limits::SAMPLES.check(
        tensor::limits::product(&[classes.len(), per_class]),
        format!("{} classes x {per_class} per class", classes.len()),
    )?;
    Ok(classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, per_class))
        .collect())
}
