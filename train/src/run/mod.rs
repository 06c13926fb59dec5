//! The training loop shared by every method: pretraining and fine-tuning are one loop over a
//! [`RunConfig`], with atomic checkpoints, exact resumption, a JSONL metric log, a progress bar,
//! sample grids and a loss-curve picture.
//!
//! A run folder holds `config.json`, `metrics.jsonl`, `checkpoints/` (see [`checkpoint`]),
//! `samples/step-N.png` grids, `samples.png` (the final grid, one row per class) and `loss.png`.
//!
//! Exact resumption: everything random in step `s` comes from a generator seeded by
//! `(seed, s)`, and the loader's position is saved with the weights, the moving average and the
//! optimizer state, so a run stopped at any point and resumed from its last checkpoint ends with
//! the same weights as a run that never stopped.

pub mod checkpoint;
mod config;
pub mod metrics;
mod sample;

use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::Var;
use models::dit::Dit;
use models::ParamStore;
use tensor::{DType, Device, Error, Generator, Result, Tensor};

pub use config::{DiffusionSettings, ModelConfig, RunConfig, SampleSettings};
pub use sample::{generate, grid_labels, repeat_labels};

use self::checkpoint::{CheckpointState, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE};
use self::metrics::{MetricLine, MetricLog};
use crate::data::{save_grid, Batches, DataSource, Dataset, LoaderConfig, LoaderState};
use crate::diffusion::{create_diffusion, TimestepSampler};
use crate::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig, Ema, EmaWarmup};

/// How [`train`] behaves beyond the config.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from the run folder's latest checkpoint (a finished run then only redraws its
    /// pictures). Without it, a run folder that already has a checkpoint is an error.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Steps taken in total.
    pub steps: u64,
    /// The step this invocation started from (0 for a fresh run).
    pub started_at: u64,
    /// Mean loss of the first and last logged lines of the whole run.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
    /// The final checkpoint folder.
    pub checkpoint: PathBuf,
    /// The final sample grid.
    pub grid: PathBuf,
    /// The loss curve.
    pub loss_curve: PathBuf,
}

/// A model with its weights, as a checkpoint holds it.
pub struct LoadedModel {
    /// The network.
    pub dit: Dit,
    /// Its weights.
    pub params: ParamStore,
    /// The checkpoint's state: config, step, classes.
    pub state: CheckpointState,
    /// The checkpoint folder it was read from.
    pub dir: PathBuf,
}

/// Which weights of a checkpoint to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// The exponential moving average (what samples are drawn with).
    Ema,
    /// The weights as the optimizer left them.
    Raw,
}

/// Reads the training images of `config.data`: the whole named set (Fashion-MNIST's training
/// images, all of Animal-MNIST) or folder, see [`DataSource::reference`].
pub fn load_data(config: &RunConfig) -> Result<Dataset> {
    let channels = if config.color == "gray" { 1 } else { 3 };
    DataSource::parse(&config.data, "data")?.reference([
        channels,
        config.image_size,
        config.image_size,
    ])
}

/// The generator of step `step`: a pure function of the seed and the step, so a resumed run
/// draws what the uninterrupted run drew.
fn step_generator(seed: u64, step: u64) -> Generator {
    use crate::data::loader::mix;
    Generator::new(mix(mix(seed ^ 0x7472_6169_6e00).wrapping_add(step)))
}

/// Builds the DiT of `config` for `data` with freshly initialised weights.
fn build_model(config: &RunConfig, data: &Dataset, device: Device) -> Result<(Dit, ParamStore)> {
    let [c, h, w] = data.image_shape();
    if h != w {
        return Err(Error::msg(format!(
            "data `{}`: images are {h}x{w}; the DiT needs square images",
            config.data
        )));
    }
    let cfg = config.dit_config(c, h, data.classes().len())?;
    let mut ps = ParamStore::new(DType::F32, device, config.seed);
    let dit = Dit::new(&mut ps, cfg)?;
    ps.set_compute_dtype(config.compute_dtype()?);
    Ok((dit, ps))
}

/// Loads a model from a checkpoint folder or a run folder (its latest checkpoint).
pub fn load_model(path: &Path, weights: Weights) -> Result<LoadedModel> {
    let dir = checkpoint::resolve(path)?;
    let state = checkpoint::load_state(&dir)?;
    let [c, h, _] = state.image_shape;
    let cfg = state.config.dit_config(c, h, state.classes.len())?;
    let device: Device = state.config.device.parse().unwrap_or(Device::Cpu);
    let mut params = ParamStore::new(DType::F32, device, state.config.seed);
    let dit = Dit::new(&mut params, cfg)?;
    load_weights(&mut params, &dir, weights, false)?;
    if device.is_cuda() {
        params.set_compute_dtype(state.config.compute_dtype()?);
    }
    Ok(LoadedModel {
        dit,
        params,
        state,
        dir,
    })
}

/// Loads a checkpoint folder's weights into `ps`: the model file (every parameter, frozen ones
/// included), then for [`Weights::Ema`] the averages of the trained ones over it. With
/// `new_labels`, the class table may differ in size (a domain with other classes) and keeps its
/// fresh initialisation; anything else that does not fit is an error.
fn load_weights(ps: &mut ParamStore, dir: &Path, weights: Weights, new_labels: bool) -> Result<()> {
    let mut files = vec![MODEL_FILE];
    if weights == Weights::Ema {
        files.push(EMA_FILE);
    }
    for file in files {
        let report = ps.load(dir.join(file), "", false)?;
        // The average tracks only trained parameters: the others come from the model file.
        let missing_ok = file == EMA_FILE;
        let fits = (missing_ok || report.missing.is_empty())
            && report.unexpected.is_empty()
            && report
                .mismatched
                .iter()
                .all(|(name, ..)| new_labels && name.starts_with("y_embedder."));
        if !fits {
            return Err(Error::msg(format!(
                "{}: the checkpoint does not fit this model: {report}",
                dir.join(file).display()
            )));
        }
    }
    Ok(())
}

/// Starts the weights from `init` (a pretrained checkpoint's moving average).
fn load_init(init: &Path, ps: &mut ParamStore, image_shape: [usize; 3]) -> Result<()> {
    let dir = checkpoint::resolve(init)?;
    let state = checkpoint::load_state(&dir)?;
    if state.image_shape != image_shape {
        return Err(Error::msg(format!(
            "init {}: the checkpoint's images are {:?}, the data's {:?}",
            init.display(),
            state.image_shape,
            image_shape
        )));
    }
    load_weights(ps, &dir, Weights::Ema, true)
}

/// The fields that may change between a run and its resumption.
fn resumable_view(c: &RunConfig) -> RunConfig {
    RunConfig {
        steps: 0,
        checkpoint_every: 0,
        sample_every: 0,
        log_every: 0,
        out: PathBuf::new(),
        device: String::new(),
        ..c.clone()
    }
}

/// Names the top-level config keys whose values differ.
fn differing_keys(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    match (a, b) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} (saved {v}, now {})", b[k]))
            .collect(),
        _ => vec!["(unreadable)".into()],
    }
}

/// Trains the model of `config`, writing everything to `config.out`.
pub fn train(config: &RunConfig, options: &TrainOptions) -> Result<RunReport> {
    // A step is thousands of small parallel loops: see `on_cpu_workers` for why they run there.
    tensor::on_cpu_workers(|| train_on_pool(config, options))
}

fn train_on_pool(config: &RunConfig, options: &TrainOptions) -> Result<RunReport> {
    config.validate()?;
    let device: Device = config.device.parse()?;
    let out = &config.out;
    let data = load_data(config)?;
    let (dit, mut ps) = build_model(config, &data, device)?;
    let image_shape = data.image_shape();
    let process = config.diffusion_config()?;
    let diffusion = create_diffusion("", &process)?;
    let timesteps = TimestepSampler::uniform(diffusion.num_timesteps())?;
    let schedule = config.lr_schedule()?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: config.lr,
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    });

    let mut step = 0;
    let mut loader = LoaderState::default();
    let previous = checkpoint::latest(out)?;
    match (&previous, options.resume) {
        (Some(dir), false) => {
            return Err(Error::msg(format!(
                "{} already holds a checkpoint ({}); pass --resume to continue that run, or choose another --out",
                out.display(),
                dir.display()
            )))
        }
        (None, _) => {
            if let Some(init) = &config.init {
                load_init(init, &mut ps, image_shape)?;
            }
        }
        (Some(_), true) => {}
    }
    let mut ema = Ema::new(&ps, config.ema_decay).with_warmup(EmaWarmup::Ramp);
    if let (Some(dir), true) = (&previous, options.resume) {
        let state = checkpoint::load_state(dir)?;
        let diff = differing_keys(&resumable_view(&state.config), &resumable_view(config));
        if !diff.is_empty() {
            return Err(Error::msg(format!(
                "--resume: {} was trained with another config; differing: {}",
                dir.display(),
                diff.join("; ")
            )));
        }
        ps.load(dir.join(MODEL_FILE), "", true)?;
        ema.load(dir.join(EMA_FILE))?;
        opt.load(dir.join(OPTIMIZER_FILE), &ps)?;
        step = state.step;
        loader = state.loader();
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    crate::files::write_atomic(&out.join("config.json"), config.to_json().as_bytes())?;
    let started_at = step;

    let loader_config = LoaderConfig::new(config.batch_size, config.seed).hflip(config.hflip);
    let mut batches = Batches::resume(&data, loader_config, loader)?;
    let mut log = MetricLog::open(&out.join("metrics.jsonl"), step)?;
    let bar = options
        .progress
        .then(|| crate::progress::bar(config.steps, "train"));
    if let Some(bar) = &bar {
        bar.set_position(step);
    }
    let save = |step: u64, ps: &ParamStore, ema: &Ema, opt: &AdamW, at: LoaderState| {
        let state = CheckpointState {
            step,
            loader_epoch: at.epoch,
            loader_position: at.position,
            classes: data.classes().to_vec(),
            image_shape,
            config: config.clone(),
            checksums: vec![],
        };
        checkpoint::save(out, state, |dir| {
            ps.save(dir.join(MODEL_FILE), None)?;
            ema.save(dir.join(EMA_FILE))?;
            opt.save(dir.join(OPTIMIZER_FILE))
        })
    };
    let draw = |ema: &Ema, ps: &ParamStore, path: &Path| -> Result<()> {
        let weights = ema.store(ps)?;
        let labels = grid_labels(data.classes().len(), config.sample.per_class)?;
        let images = generate(
            &dit,
            &weights,
            &process,
            &config.sample,
            &labels,
            config.seed,
        )?;
        let len = labels.len();
        save_grid(path, &images, Some(&Tensor::from_vec(labels, &[len])?), 2)?;
        Ok(())
    };

    let (mut sum, mut grad_sum, mut count, mut since) = (0.0, 0.0, 0u64, Instant::now());
    let mut last_checkpoint = None;
    while step < config.steps {
        let mut gen = step_generator(config.seed, step);
        let batch = batches.next_batch()?;
        let n = batch.labels.elem_count();
        let (t, _) = timesteps.sample(n, &mut gen)?;
        let noise = Tensor::randn(batch.images.shape(), 0.0, 1.0, DType::F32, device, &mut gen)?;
        let x0 = batch.images.to_device(device)?;
        let terms = diffusion.training_losses_with(
            |x_t: &Var, t: &Tensor| dit.forward(&ps, x_t, t, &batch.labels, Some(&mut gen)),
            &x0,
            &t,
            &noise,
        )?;
        let loss = terms.loss.mean_all()?;
        let value = loss.value().to_scalar()?;
        if !value.is_finite() {
            return Err(Error::msg(format!(
                "the loss is {value} at step {step}; lower `lr` (now {}) or raise `warmup_steps`",
                config.lr
            )));
        }
        let mut grads = loss.backward()?;
        let norm = if config.grad_clip > 0.0 {
            clip_grad_norm(&ps, &mut grads, config.grad_clip)?
        } else {
            grad_norm(&ps, &grads)?
        };
        opt.config.lr = schedule.lr_at(step);
        opt.step(&mut ps, &grads)?;
        ema.update(&ps)?;
        step += 1;
        (sum, grad_sum, count) = (sum + value, grad_sum + norm, count + 1);

        if step % config.log_every == 0 || step == config.steps {
            let line = MetricLine {
                step,
                loss: sum / count as f64,
                grad_norm: grad_sum / count as f64,
                lr: opt.config.lr,
                steps_per_sec: count as f64 / since.elapsed().as_secs_f64().max(1e-9),
            };
            log.write(&line)?;
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4}", line.loss));
            }
            (sum, grad_sum, count, since) = (0.0, 0.0, 0, Instant::now());
        }
        if step % config.checkpoint_every == 0 || step == config.steps {
            last_checkpoint = Some(save(step, &ps, &ema, &opt, batches.state())?);
        }
        if config.sample_every > 0 && step % config.sample_every == 0 && step < config.steps {
            draw(&ema, &ps, &out.join(format!("samples/step-{step:08}.png")))?;
        }
        if let Some(bar) = &bar {
            bar.set_position(step);
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    // A run saves at its last step; one resumed after its last step has the checkpoint it ended with.
    let checkpoint = last_checkpoint
        .or(previous)
        .expect("a run that took no step was resumed from a checkpoint");
    let grid = out.join("samples.png");
    if options.progress {
        eprintln!("sampling the final grid ({})", config.sample.sampler);
    }
    draw(&ema, &ps, &grid)?;
    let lines = metrics::read(&out.join("metrics.jsonl"))?;
    let loss_curve = out.join("loss.png");
    if !lines.is_empty() {
        metrics::plot_loss_curves(&loss_curve, &[("train", &lines)])?;
    }
    Ok(RunReport {
        steps: step,
        started_at,
        first_loss: lines.first().map_or(f64::NAN, |l| l.loss),
        last_loss: lines.last().map_or(f64::NAN, |l| l.loss),
        checkpoint,
        grid,
        loss_curve,
    })
}
