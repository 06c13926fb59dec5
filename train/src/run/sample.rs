//! Drawing images from a trained network: ancestral DDPM or DDIM over a respaced process, with
//! classifier-free guidance.

use autograd::{no_grad, Var};
use models::ParamStore;
use tensor::{DType, Error, Generator, Result, Tensor};

use super::checkpoint::CheckpointState;
use super::config::SampleSettings;
use super::network::Inputs;
use super::Network;
use crate::data::{identity_control, transform, DataSource, Dataset, CONTROL_KINDS};
use crate::diffusion::{classifier_free_guidance, Diffusion, DiffusionConfig, Respacing};
use models::dit::Control;

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
    let stage = Stage::new(network, ps);
    generate_in_stages(&[stage], process, settings, labels, seed)
}

/// A network with its weights that denoises the steps `t >= from` of a chain (until a later
/// stage takes over), given the asked labels or, with `null_labels`, its null class.
#[derive(Clone, Copy)]
pub struct Stage<'a> {
    /// The network.
    pub network: &'a Network,
    /// Its weights.
    pub params: &'a ParamStore,
    /// The first (smallest) timestep of the process it denoises.
    pub from: usize,
    /// Whether it is given its null class instead of the labels (unconditional denoising).
    pub null_labels: bool,
    /// The condition images of an ANL model, one per sample.
    pub condition: Option<&'a ConditionImages>,
}

impl<'a> Stage<'a> {
    /// A network that denoises the whole chain with the asked labels and no condition.
    pub fn new(network: &'a Network, params: &'a ParamStore) -> Stage<'a> {
        Stage {
            network,
            params,
            from: 0,
            null_labels: false,
            condition: None,
        }
    }
}

/// What an ANL model's samples are conditioned on: an image per sample, and the fraction of
/// the embedding's tokens masked (masked sampling).
#[derive(Clone, Debug)]
pub struct ConditionImages {
    /// `f32 [N, C, H, W]` in [-1, 1].
    pub images: Tensor,
    /// The fraction of tokens hidden, in [0, 1].
    pub mask: f64,
}

impl ConditionImages {
    /// For each label, an image of its class drawn at random (seeded) from the data source
    /// `source` (`(value, what names it in errors)`), else from the training data of the run of
    /// `state`, masked by `mask`. The source's classes must be the run's.
    pub fn of_source(
        source: Option<(&str, &str)>,
        state: &CheckpointState,
        labels: &[i64],
        mask: f64,
        seed: u64,
    ) -> Result<Self> {
        let (source, what) = source.unwrap_or((state.config.data.as_str(), "the run's `data`"));
        // The model's images are its data padded by the run's `pad`.
        let pad = state.config.pad;
        let [c, h, w] = state.image_shape;
        let unpadded = [c, h.saturating_sub(2 * pad), w.saturating_sub(2 * pad)];
        let data = DataSource::parse(source, what)?.reference(unpadded)?;
        if data.classes() != state.classes {
            return Err(Error::msg(format!(
                "{what} {source}: its classes ({}) are not the run's ({})",
                data.classes().join(", "),
                state.classes.join(", ")
            )));
        }
        Self::of_classes(&data, labels, mask, seed)?.padded(pad)
    }

    /// For each label, an image of that class drawn at random (seeded) from `data` (e.g. the
    /// target's training split), masked by `mask`. A class without images is an error naming it.
    pub fn of_classes(data: &Dataset, labels: &[i64], mask: f64, seed: u64) -> Result<Self> {
        let mut by_class = vec![Vec::new(); data.classes().len()];
        for (i, &l) in data.labels().iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut gen = Generator::new(seed);
        let mut picks = Vec::with_capacity(labels.len());
        for &l in labels {
            let pool = usize::try_from(l)
                .ok()
                .and_then(|l| by_class.get(l))
                .filter(|pool| !pool.is_empty())
                .ok_or_else(|| {
                    Error::msg(format!(
                        "condition images: class {l} has no image among the {} condition images",
                        data.len()
                    ))
                })?;
            picks.push(pool[rand::Rng::random_range(gen.rng(), 0..pool.len())]);
        }
        Self::new(&data.subset(&picks)?, mask)
    }

    /// The images of `data`, in order, masked by `mask`.
    pub fn new(data: &Dataset, mask: f64) -> Result<Self> {
        models::anl::check_mask(mask, "mask")?;
        Ok(ConditionImages {
            images: transform::scale(&data.images_tensor()?)?,
            mask,
        })
    }

    /// The same images padded by `pad` zero pixels (-1) on every side, as the loader pads a
    /// run's training images.
    pub fn padded(self, pad: usize) -> Result<Self> {
        if pad == 0 {
            return Ok(self);
        }
        Ok(ConditionImages {
            images: (self.images).pad(&[(0, 0), (0, 0), (pad, pad), (pad, pad)], -1.0)?,
            mask: self.mask,
        })
    }

    /// The images `start..start + len`.
    fn part(&self, start: usize, len: usize) -> Result<ConditionImages> {
        Ok(ConditionImages {
            images: self.images.narrow(0, start, len)?.contiguous()?,
            mask: self.mask,
        })
    }
}

/// Where the masking draws come from: a stream apart from the sampling noise, so that masked
/// and unmasked samples of one seed start from the same noise.
const MASK_STREAM: u64 = 0x6d61_736b;

/// [`generate`] with the chain split between networks: at timestep `t` the stage with the
/// largest `from <= t` denoises (e.g. Diff-Tuning's chain of forgetting: a fine-tuned model far
/// from the data, the pretrained one near it). `stages` are in order of decreasing `from`, the
/// last from 0, every network of the first's image shape; labels are the first's classes.
pub fn generate_in_stages(
    stages: &[Stage],
    process: &DiffusionConfig,
    settings: &SampleSettings,
    labels: &[i64],
    seed: u64,
) -> Result<Tensor> {
    let Some(first) = stages.first() else {
        return Err(Error::msg("sample: no network to sample with"));
    };
    if stages.last().map(|s| s.from) != Some(0) || stages.windows(2).any(|w| w[0].from <= w[1].from)
    {
        return Err(Error::msg(
            "sample: stages must start at decreasing timesteps, the last at 0",
        ));
    }
    let network = first.network;
    let classes = network.classes();
    if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(Error::msg(format!(
            "sample: class {bad} is not one of the model's {classes} classes"
        )));
    }
    settings.validate(process.steps)?;
    let control = sampling_control(network, settings)?;
    // The copies of each chunk the guidance combines, most conditioned first: (labels dropped,
    // control dropped), with the scale of each step down the chain (see
    // `classifier_free_guidance`). A last step of scale 1 only returns the copy above it.
    let (mut copies, mut scales) = match &control {
        Some(_) => (
            vec![(false, false), (false, true), (true, true)],
            vec![settings.control_scale, settings.cfg_scale],
        ),
        None => (
            vec![(false, false), (true, false)],
            vec![settings.cfg_scale],
        ),
    };
    while scales.last() == Some(&1.0) {
        scales.pop();
        copies.pop();
    }
    let guided = !scales.is_empty();
    let null_class = |network: &Network, why: &str| match network.null_class() {
        Some(null) => Ok(null),
        None => Err(Error::msg(format!(
            "sample: {why} needs a model trained with label dropout (a null class); this one \
             has none: sample with cfg_scale 1"
        ))),
    };
    let guidance = format!("guidance {}", settings.cfg_scale);
    // The label of the copies without a class.
    let guided_null = copies
        .iter()
        .any(|c| c.0)
        .then(|| null_class(network, &guidance))
        .transpose()?;
    for stage in stages {
        if stage.network.image_shape() != network.image_shape() {
            return Err(Error::msg(format!(
                "sample: the stages' images differ in shape: {:?} and {:?}",
                network.image_shape(),
                stage.network.image_shape()
            )));
        }
        if stage.null_labels {
            null_class(stage.network, "unconditional denoising")?;
        }
        if stage.network.needs_condition() {
            if guided {
                return Err(Error::msg(format!(
                    "sample: {guidance} has nothing to act on in an ANL model, whose frozen \
                     U-Net runs on its null class; sample with cfg_scale 1"
                )));
            }
            match stage.condition {
                Some(c) if c.images.shape().first() == Some(&labels.len()) => {}
                Some(c) => {
                    return Err(Error::msg(format!(
                        "sample: {} condition images for {} samples",
                        c.images.shape().first().copied().unwrap_or(0),
                        labels.len()
                    )))
                }
                None => {
                    return Err(Error::msg(
                        "sample: this ANL model is conditioned on an image; give condition \
                         images (`--condition`, or the run's data by default)",
                    ))
                }
            }
        }
        if let Some(name) = stage.params.first_non_finite()? {
            return Err(Error::msg(format!(
                "sample: the weights are not finite: parameter `{name}` holds NaN or infinite \
                 values"
            )));
        }
    }
    let respacing = settings.respacing()?;
    let diffusion = Diffusion::respaced(&respacing, process)?;
    let mut gen = Generator::new(seed);
    let mut mask_gen = Generator::new(seed ^ MASK_STREAM);
    let mut chunks = Vec::new();
    for (k, chunk) in labels.chunks(CHUNK).enumerate() {
        let n = chunk.len();
        // Each stage's condition for this chunk (ANL models only).
        let conditions = stages
            .iter()
            .map(
                |s| match s.condition.filter(|_| s.network.needs_condition()) {
                    Some(c) => {
                        let part = c.part(k * CHUNK, n)?;
                        s.network.condition(&part.images, part.mask, &mut mask_gen)
                    }
                    None => Ok(None),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        let [c, h, w] = network.image_shape();
        let noise = Tensor::randn(
            &[n, c, h, w],
            0.0,
            1.0,
            DType::F32,
            first.params.device(),
            &mut gen,
        )?;
        let y: Vec<i64> = copies
            .iter()
            .flat_map(|&(drop_label, _)| match (drop_label, guided_null) {
                (true, Some(null)) => vec![null as i64; n],
                _ => chunk.to_vec(),
            })
            .collect();
        let len = y.len();
        let y = Tensor::from_vec(y, &[len])?;
        let control = control
            .as_ref()
            .map(|value| {
                let keep = copies.iter().flat_map(|c| vec![!c.1; n]).collect();
                Control::repeat(value, len)?.with_keep(keep)
            })
            .transpose()?;
        // Each stage's labels for this chunk: the asked ones, or all its null class.
        let stage_y = stages
            .iter()
            .map(|s| match (s.null_labels, s.network.null_class()) {
                (true, Some(null)) => Tensor::from_vec(vec![null as i64; len], &[len]),
                _ => Ok(y.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let net = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
            // One timestep per call: the chain's.
            let now = t.to_vec::<i64>()?.first().copied().unwrap_or(0).max(0) as usize;
            let k = stages.iter().position(|s| now >= s.from).unwrap_or(0);
            let (stage, y) = (&stages[k], &stage_y[k]);
            let inputs = Inputs {
                condition: conditions[k].as_ref(),
                control: control.as_ref().filter(|_| stage.network.control_dim() > 0),
            };
            no_grad(|| {
                stage
                    .network
                    .forward_with(stage.params, &Var::constant(x.clone()), t, y, &inputs)
            })
            .map(|v| v.value().clone())
        };
        let x = if guided {
            let model = classifier_free_guidance(net, &scales, Some(c));
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

/// The control metadata a network with control is sampled with: `settings.control`, or the
/// identity augmentation (no crop, no flip) when that is empty; `None` for a network without
/// control, which refuses a control setting.
fn sampling_control(network: &Network, settings: &SampleSettings) -> Result<Option<Vec<f64>>> {
    let k = network.control_dim();
    if k == 0 {
        if !settings.control.is_empty() || settings.control_scale != 1.0 {
            return Err(Error::msg(
                "sample: `sample.control` and `sample.control_scale` (--control, \
                 --control-scale) need a model with control metadata (`model.control`); this one \
                 has none",
            ));
        }
        return Ok(None);
    }
    if settings.control.is_empty() {
        return Ok(Some(identity_control().iter().map(|&v| v as f64).collect()));
    }
    if settings.control.len() != k {
        return Err(Error::msg(format!(
            "sample: `sample.control` (--control) has {} values; the model reads {k} ({})",
            settings.control.len(),
            CONTROL_KINDS.join(", ")
        )));
    }
    Ok(Some(settings.control.clone()))
}

/// [`generate_in_stages`] over `labels` in chunks of `chunk` images, chunk `i` with the noise
/// seed `seed + i`, advancing `bar` after each: long requests with a progress bar.
pub fn generate_chunked(
    stages: &[Stage],
    process: &DiffusionConfig,
    settings: &SampleSettings,
    labels: &[i64],
    seed: u64,
    chunk: usize,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    let chunk = chunk.max(1);
    for (i, part) in labels.chunks(chunk).enumerate() {
        let part_seed = seed.wrapping_add(i as u64);
        // Each part's condition images.
        let conditions = stages
            .iter()
            .map(|s| {
                s.condition
                    .map(|c| c.part(i * chunk, part.len()))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let part_stages: Vec<Stage> = stages
            .iter()
            .zip(&conditions)
            .map(|(s, c)| Stage {
                condition: c.as_ref(),
                ..*s
            })
            .collect();
        parts.push(generate_in_stages(
            &part_stages,
            process,
            settings,
            part,
            part_seed,
        )?);
        if let Some(bar) = bar {
            bar.inc(part.len() as u64);
        }
    }
    Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)
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

    /// A tiny DiT of 2 classes (and a null class) with weights drawn from `seed`.
    fn tiny_dit(seed: u64) -> (Network, ParamStore) {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, seed);
        let config = DitConfig {
            input_size: 4,
            patch_size: 2,
            in_channels: 1,
            hidden_size: 8,
            depth: 1,
            num_heads: 2,
            num_classes: 2,
            learn_sigma: false,
            ..DitConfig::default()
        };
        (Network::Dit(Dit::new(&mut ps, config).unwrap()), ps)
    }

    fn process() -> DiffusionConfig {
        DiffusionConfig {
            var_type: crate::diffusion::VarType::FixedSmall,
            ..DiffusionConfig::default()
        }
    }

    #[test]
    fn stages_hand_the_chain_over_at_their_timestep() {
        // Every weight random (DiT zeroes its conditioning layers), so labels count.
        let random = |seed| {
            let (net, mut ps) = tiny_dit(seed);
            let mut gen = Generator::new(seed);
            let names: Vec<String> = ps.names().map(String::from).collect();
            for name in names {
                let shape = ps.tensor(&name).unwrap().shape().to_vec();
                let w = Tensor::randn(&shape, 0.0, 0.3, DType::F32, Device::Cpu, &mut gen);
                ps.set(&name, w.unwrap()).unwrap();
            }
            (net, ps)
        };
        let ((a, pa), (b, pb)) = (random(1), random(2));
        let stage = |network, params, from, null_labels| Stage {
            network,
            params,
            from,
            null_labels,
            condition: None,
        };
        let settings = SampleSettings {
            sampler: "ddim4".into(),
            ..SampleSettings::default()
        };
        let run = |stages: &[Stage]| {
            generate_in_stages(stages, &process(), &settings, &[0, 1], 5)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        let alone = generate(&a, &pa, &process(), &settings, &[0, 1], 5).unwrap();
        assert_eq!(
            run(&[stage(&a, &pa, 0, false)]),
            alone.to_vec::<f32>().unwrap()
        );
        // Beyond the last step the second network denoises every step, with its null class.
        let handed = run(&[stage(&a, &pa, 1000, false), stage(&b, &pb, 0, true)]);
        assert_eq!(handed, run(&[stage(&b, &pb, 0, true)]));
        assert_ne!(handed, run(&[stage(&b, &pb, 0, false)]), "labels matter");
        // Half way, neither alone.
        let half = run(&[stage(&a, &pa, 500, false), stage(&b, &pb, 0, true)]);
        assert!(half != handed && half != alone.to_vec::<f32>().unwrap());
        for bad in [
            vec![stage(&a, &pa, 10, false)],
            vec![stage(&a, &pa, 0, false), stage(&b, &pb, 0, true)],
            vec![],
        ] {
            let err = generate_in_stages(&bad, &process(), &settings, &[0], 0).unwrap_err();
            assert!(err.to_string().contains("sample:"), "{err}");
        }
    }

    #[test]
    fn generate_refuses_non_finite_weights_and_bad_settings() {
        let (dit, mut ps) = tiny_dit(0);
        let process = process();
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
