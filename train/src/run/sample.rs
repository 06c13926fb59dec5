//! Drawing images from a trained network: ancestral DDPM or DDIM over a respaced process, with
//! classifier-free guidance.

use autograd::{no_grad, Var};
use models::ParamStore;
use tensor::{DType, Error, Generator, Result, Tensor};

use super::config::SampleSettings;
use super::Network;
use crate::diffusion::{classifier_free_guidance, Diffusion, DiffusionConfig, Respacing};

/// Images per model call: bounds the memory of a large request.
const CHUNK: usize = 128;

/// Samples one image per label (i64 class indices) with the `settings`' sampler and guidance,
/// from noise seeded by `seed`: `f32 [N, C, H, W]`, clipped to `[-1, 1]`. Settings out of range
/// (see [`SampleSettings::validate`]), weights that are not finite, and samples that turn
/// non-finite on the way are errors, never a blank grid.
pub fn generate(
    network: &Network,
    ps: &ParamStore,
    process: &DiffusionConfig,
    settings: &SampleSettings,
    labels: &[i64],
    seed: u64,
) -> Result<Tensor> {
    let classes = network.classes();
    if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(Error::msg(format!(
            "sample: class {bad} is not one of the model's {classes} classes"
        )));
    }
    settings.validate(process.steps)?;
    let guided = settings.cfg_scale != 1.0;
    let null_class = match (network.null_class(), guided) {
        (None, true) => {
            return Err(Error::msg(format!(
                "sample: guidance {} needs a model trained with label dropout (a null class); \
                 this one has none: sample with cfg_scale 1",
                settings.cfg_scale
            )))
        }
        (null, _) => null.unwrap_or(classes),
    };
    if let Some(name) = ps.first_non_finite()? {
        return Err(Error::msg(format!(
            "sample: the weights are not finite: parameter `{name}` holds NaN or infinite values"
        )));
    }
    let respacing = settings.respacing()?;
    let diffusion = Diffusion::respaced(&respacing, process)?;
    let mut gen = Generator::new(seed);
    let mut chunks = Vec::new();
    for chunk in labels.chunks(CHUNK) {
        let n = chunk.len();
        let [c, h, w] = network.image_shape();
        let noise = Tensor::randn(&[n, c, h, w], 0.0, 1.0, DType::F32, ps.device(), &mut gen)?;
        let mut y = chunk.to_vec();
        if guided {
            y.extend(std::iter::repeat_n(null_class as i64, n));
        }
        let len = y.len();
        let y = Tensor::from_vec(y, &[len])?;
        let net = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
            no_grad(|| network.forward(ps, &Var::constant(x.clone()), t, &y))
                .map(|v| v.value().clone())
        };
        let x = if guided {
            let model = classifier_free_guidance(net, settings.cfg_scale, Some(c));
            run_chain(
                &diffusion,
                &model,
                noise,
                &respacing,
                settings.eta,
                &mut gen,
            )?
        } else {
            run_chain(&diffusion, &net, noise, &respacing, settings.eta, &mut gen)?
        };
        chunks.push(x.clamp(-1.0, 1.0)?);
    }
    let refs: Vec<&Tensor> = chunks.iter().collect();
    Tensor::cat(&refs, 0)
}

fn run_chain<M>(
    diffusion: &Diffusion,
    model: &M,
    noise: Tensor,
    respacing: &Respacing,
    eta: f64,
    gen: &mut Generator,
) -> Result<Tensor>
where
    M: Fn(&Tensor, &Tensor) -> Result<Tensor>,
{
    if respacing.is_ddim() {
        diffusion.ddim_sample_loop(model, noise, true, eta, gen)
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

#[cfg(test)]
mod tests {
    use models::dit::{Dit, DitConfig};
    use tensor::Device;

    use super::*;
    use crate::run::RunConfig;

    #[test]
    fn sample_settings_out_of_range_are_errors_naming_key_and_range() {
        let validate = |sample: SampleSettings| {
            RunConfig {
                sample,
                ..RunConfig::default()
            }
            .validate()
        };
        let base = SampleSettings::default();
        let scale = |cfg_scale| SampleSettings {
            cfg_scale,
            ..base.clone()
        };
        let eta = |eta| SampleSettings {
            eta,
            ..base.clone()
        };
        let sampler = |sampler: &str| SampleSettings {
            sampler: sampler.into(),
            ..base.clone()
        };
        for (settings, needle) in [
            (
                scale(f64::NAN),
                "`sample.cfg_scale`: expected a number in [-100, 100], got NaN",
            ),
            (scale(f64::INFINITY), "`sample.cfg_scale`"),
            (scale(-1e3), "got -1000"),
            (
                eta(1.5),
                "`sample.eta`: expected a number in [0, 1], got 1.5",
            ),
            (eta(-0.1), "`sample.eta`"),
            (eta(f64::NAN), "`sample.eta`"),
            // Once DDPM to one check and DDIM to the other: now one parse refuses it.
            (sampler(" ddim5 "), "`sample.sampler`: sampler \" ddim5 \""),
            (sampler("ddim999"), "`sample.sampler`"),
        ] {
            let err = validate(settings).unwrap_err().to_string();
            assert!(err.contains(needle), "`{needle}` not in: {err}");
        }
        for (cfg_scale, eta) in [(100.0, 0.0), (-100.0, 1.0), (0.0, 0.5)] {
            validate(SampleSettings {
                cfg_scale,
                eta,
                ..base.clone()
            })
            .unwrap();
        }
    }

    #[test]
    fn generate_refuses_non_finite_weights_and_bad_settings() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let dit = Network::Dit(
            Dit::new(
                &mut ps,
                DitConfig {
                    input_size: 4,
                    patch_size: 2,
                    in_channels: 1,
                    hidden_size: 8,
                    depth: 1,
                    num_heads: 2,
                    num_classes: 2,
                    learn_sigma: false,
                    ..DitConfig::default()
                },
            )
            .unwrap(),
        );
        let process = DiffusionConfig {
            var_type: crate::diffusion::VarType::FixedSmall,
            ..DiffusionConfig::default()
        };
        let settings = SampleSettings {
            sampler: "ddim5".into(),
            ..SampleSettings::default()
        };
        let images = generate(&dit, &ps, &process, &settings, &[0, 1], 0).unwrap();
        assert!(images.all_finite().unwrap());
        let bad = SampleSettings {
            cfg_scale: f64::INFINITY,
            ..settings.clone()
        };
        let err = generate(&dit, &ps, &process, &bad, &[0], 0).unwrap_err();
        assert!(err.to_string().contains("sample.cfg_scale"), "{err}");
        let name = "blocks.0.attn.qkv.weight";
        let mut w = ps.tensor(name).unwrap().to_vec::<f32>().unwrap();
        w[3] = f32::NAN;
        let shape = ps.tensor(name).unwrap().shape().to_vec();
        ps.set(name, Tensor::from_vec(w, &shape).unwrap()).unwrap();
        let err = generate(&dit, &ps, &process, &settings, &[0], 0).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}
