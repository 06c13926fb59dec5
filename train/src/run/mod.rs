//! The training loop shared by every method: pretraining and fine-tuning are one loop over a
//! [`RunConfig`], with atomic checkpoints, exact resumption, a JSONL metric log, a progress bar,
//! sample grids and a loss-curve picture.
//!
//! A run folder holds `config.json`, `metrics.jsonl`, `checkpoints/` (see [`checkpoint`]),
//! `samples/step-N.png` grids, `samples.png` (the final grid, one row per class), `loss.png`
//! and, for the config's `snapshots`, `snapshots/step-N.safetensors` (see [`snapshot_path`]).
//!
//! Exact resumption: everything random in step `s` comes from a generator seeded by
//! `(seed, s)`, and the loader's position is saved with the weights, the moving average and the
//! optimizer state, so a run stopped at any point and resumed from its last checkpoint ends with
//! the same weights as a run that never stopped.

pub mod checkpoint;
mod config;
pub mod export;
mod feed;
pub mod folder;
pub mod guard;
pub mod metrics;
mod network;
mod sample;
mod teacher;

use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::Var;
use models::ParamStore;
use serde_json::Value;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Error, Generator, Result, Tensor};

pub use config::{
    DiffusionSettings, DitSettings, ModelConfig, RunConfig, SampleSettings, UnetSettings,
};
pub use export::export;
pub use network::{Inputs, Network, Unet};
pub use sample::{
    generate, generate_chunked, generate_in_stages, grid_labels, repeat_labels, ConditionImages,
    Stage,
};

use self::checkpoint::{CheckpointState, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE};
use self::feed::Feed;
use self::metrics::{MetricLine, MetricLog};
use crate::data::{save_grid, DataSource, Dataset, LoaderConfig, LoaderState};
use crate::diffusion::create_diffusion;
use crate::methods::{Stream, StreamData, Term};
use crate::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig, Ema, EmaWarmup};

/// The run folder's record of which parameters train (a [`crate::methods::TrainableReport`]).
pub const TRAINABLE_FILE: &str = "trainable.json";

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
    /// Which parameters trained.
    pub trainable: crate::methods::TrainableReport,
}

/// A model with its weights, as a checkpoint holds it.
pub struct LoadedModel {
    /// The network.
    pub network: Network,
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

/// Reads the training images of `config.data` at `config.image_size` (before the loader's
/// `pad`): the whole named set (Fashion-MNIST's training images, all of Animal-MNIST) or folder,
/// see [`DataSource::reference`].
pub fn load_data(config: &RunConfig) -> Result<Dataset> {
    let channels = if config.color == "gray" { 1 } else { 3 };
    DataSource::parse(&config.data, "data")?.reference([
        channels,
        config.image_size,
        config.image_size,
    ])
}

/// The data set of each of `streams` but the target's (which is `target`): read and checked
/// against the target's image shape before training starts; errors name the method's option.
fn stream_data(streams: &[Stream], target: &Dataset) -> Result<Vec<Dataset>> {
    let shape = target.image_shape();
    streams
        .iter()
        .filter_map(|stream| match &stream.data {
            StreamData::Target => None,
            StreamData::Source { key, value } => Some((key, value)),
        })
        .map(|(key, value)| {
            let named = |e: Error| Error::msg(format!("config `method.{key}` ({value}): {e}"));
            let data = DataSource::parse(value, &format!("method.{key}"))?
                .exact(shape)
                .map_err(named)?;
            if data.image_shape() != shape {
                return Err(named(Error::msg(format!(
                    "its images are {:?} ([C, H, W]), the target data's {shape:?}",
                    data.image_shape()
                ))));
            }
            Ok(data)
        })
        .collect()
}

/// The exported model (the moving average, as [`export()`] writes it) a run in `run` writes at
/// `step` when its config lists the step in `snapshots`: `run/snapshots/step-NNNNNNNN.safetensors`.
pub fn snapshot_path(run: &Path, step: u64) -> PathBuf {
    run.join("snapshots")
        .join(format!("step-{step:08}.safetensors"))
}

/// The generator of step `step`: a pure function of the seed and the step, so a resumed run
/// draws what the uninterrupted run drew.
fn step_generator(seed: u64, step: u64) -> Generator {
    use crate::data::loader::mix;
    Generator::new(mix(mix(seed ^ 0x7472_6169_6e00).wrapping_add(step)))
}

/// `[C, H, W]` of the images a run of `config` trains on: `data`'s, padded by `config.pad`.
fn padded_shape(config: &RunConfig, data: &Dataset) -> [usize; 3] {
    let [c, h, w] = data.image_shape();
    [c, h + 2 * config.pad, w + 2 * config.pad]
}

/// Builds the network of `config` for `data` (padded) with freshly initialised weights.
fn build_model(
    config: &RunConfig,
    data: &Dataset,
    device: Device,
) -> Result<(Network, ParamStore)> {
    let mut ps = ParamStore::new(DType::F32, device, config.seed);
    let classes = data.classes().len();
    let network = Network::new(&mut ps, config, padded_shape(config, data), classes)
        .map_err(|e| Error::msg(format!("data `{}`: {e}", config.data)))?;
    ps.set_compute_dtype(config.compute_dtype()?);
    Ok((network, ps))
}

/// Loads a model from a checkpoint folder, a run folder (its latest checkpoint) or a weights file
/// written by [`export`] (which holds one set of weights: `weights` does not apply).
pub fn load_model(path: &Path, weights: Weights) -> Result<LoadedModel> {
    let (dir, state, files) = if path.is_file() {
        let state = export::read_state(path)?;
        (path.to_path_buf(), state, vec![path.to_path_buf()])
    } else {
        let dir = checkpoint::resolve(path)?;
        let state = checkpoint::load_state(&dir)?;
        (dir.clone(), state, checkpoint_files(&dir, weights))
    };
    let (network, mut params) = fresh_model(&state)?;
    let added = (state.config.method)
        .prepare(&state.config.trainable, &network, &mut params)?
        .added;
    let leeway = Leeway {
        missing: added,
        ..Leeway::default()
    };
    load_weights(&mut params, &files, &leeway)?;
    if params.device().is_cuda() {
        params.set_compute_dtype(state.config.compute_dtype()?);
    }
    Ok(LoadedModel {
        network,
        params,
        state,
        dir,
    })
}

/// The weight files of a checkpoint folder to load, in order: the model file (every parameter,
/// frozen ones included), then for [`Weights::Ema`] the averages of the trained ones over it.
fn checkpoint_files(dir: &Path, weights: Weights) -> Vec<PathBuf> {
    let mut files = vec![dir.join(MODEL_FILE)];
    if weights == Weights::Ema {
        files.push(dir.join(EMA_FILE));
    }
    files
}

/// What the first of a checkpoint's weight files may hold differently from the model it loads
/// into; anything else that does not fit is an error.
#[derive(Default)]
struct Leeway<'a> {
    /// The class table, which may have other rows (a domain with other classes): (name, source
    /// classes, target classes), see [`reuse_label_rows`].
    labels: Option<(&'a str, usize, usize)>,
    /// Parameters it may lack: they keep their initialisation (what a method or a conditioning
    /// mode adds).
    missing: Vec<String>,
    /// Its tensors the model has no use for (another mode's class table), ignored.
    unused: Vec<String>,
    /// Parameters it holds in another shape, whose fresh values are kept (the position table
    /// of another resolution, which the model computes for its own).
    own: Vec<String>,
}

/// Loads weight `files` into `ps` in order: the first holds the whole model but for what
/// `leeway` allows; later ones (moving averages) hold any part of it. Anything else that does
/// not fit is an error naming the file and the tensors.
fn load_weights(ps: &mut ParamStore, files: &[PathBuf], leeway: &Leeway) -> Result<()> {
    for (i, path) in files.iter().enumerate() {
        let report = ps.load(path, "", false)?;
        let table = leeway.labels.map(|(table, ..)| table);
        let fits = (i > 0 || report.missing.iter().all(|m| leeway.missing.contains(m)))
            && report.unexpected.iter().all(|u| leeway.unused.contains(u))
            && report
                .mismatched
                .iter()
                .all(|(name, ..)| Some(name.as_str()) == table || leeway.own.contains(name));
        if !fits {
            return Err(Error::msg(format!(
                "{}: the checkpoint does not fit this model: {report}",
                path.display()
            )));
        }
        let table_differs = report
            .mismatched
            .iter()
            .any(|(name, ..)| Some(name.as_str()) == table);
        if let (Some((name, source, target)), true) = (leeway.labels, table_differs) {
            let pretrained = SafeTensorsFile::open(path)?.tensor(name)?;
            let table = reuse_label_rows(&ps.tensor(name)?, &pretrained, source, target)
                .map_err(|e| Error::msg(format!("{}: `{name}`: {e}", path.display())))?;
            ps.set(name, table)?;
        }
    }
    Ok(())
}

/// A pretrained class table of `source` classes carried over to a `fresh` table of `target`
/// classes, as the official Diff-Tuning code does: target class `i` takes source row `i` for
/// `i` below both counts, the null row takes the source's null row, and rows with no source
/// counterpart keep their fresh initialisation.
pub fn reuse_label_rows(
    fresh: &Tensor,
    pretrained: &Tensor,
    source: usize,
    target: usize,
) -> Result<Tensor> {
    let (rows, pre_rows) = (fresh.shape()[0], pretrained.shape()[0]);
    let fits = fresh.rank() == 2
        && pretrained.rank() == 2
        && fresh.shape()[1] == pretrained.shape()[1]
        && (rows == target || rows == target + 1)
        && (pre_rows == source || pre_rows == source + 1);
    if !fits {
        return Err(Error::msg(format!(
            "the class table is {:?} in the checkpoint ({source} classes) and {:?} here \
             ({target} classes): expected a row per class (and one for the null class) of one \
             width",
            pretrained.shape(),
            fresh.shape()
        )));
    }
    let shared = source.min(target);
    let mut parts = vec![pretrained.narrow(0, 0, shared)?];
    if target > shared {
        parts.push(fresh.narrow(0, shared, target - shared)?);
    }
    if rows == target + 1 {
        parts.push(if pre_rows == source + 1 {
            pretrained.narrow(0, source, 1)?
        } else {
            fresh.narrow(0, target, 1)?
        });
    }
    let parts: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&parts, 0)?.to_dtype(fresh.dtype())
}

/// The state of a pretrained `init` (an exported weights file, a run or checkpoint folder) and
/// the weight files a run starting from it loads (the moving average of a checkpoint).
fn init_files(init: &Path) -> Result<(CheckpointState, Vec<PathBuf>)> {
    if init.is_file() {
        Ok((export::read_state(init)?, vec![init.to_path_buf()]))
    } else {
        let dir = checkpoint::resolve(init)?;
        Ok((
            checkpoint::load_state(&dir)?,
            checkpoint_files(&dir, Weights::Ema),
        ))
    }
}

/// The `[C, H, W]` of the images a pretrained `init` was trained on.
pub fn init_image_shape(init: &Path) -> Result<[usize; 3]> {
    Ok(init_files(init)?.0.image_shape)
}

/// Starts the weights from `init`: a pretrained run or checkpoint (its moving average), or a
/// weights file written by [`export`]. It may lack exactly the parameters the run's method
/// `added`, and its classes may differ from the `classes` of the data.
fn load_init(init: &Path, ps: &mut ParamStore, network: &Network, added: &[String]) -> Result<()> {
    let (image_shape, classes) = (network.image_shape(), network.classes());
    let (state, files) = init_files(init)?;
    // Resolution transfer: a DiT computes its position table for its own grid.
    let resized = state.image_shape[0] == image_shape[0] && matches!(network, Network::Dit(_));
    if state.image_shape != image_shape && !resized {
        return Err(Error::msg(format!(
            "init {}: the checkpoint's images are {:?}, the data's {:?}",
            init.display(),
            state.image_shape,
            image_shape
        )));
    }
    let table = network.label_table();
    let leeway = Leeway {
        labels: table
            .as_deref()
            .map(|table| (table, state.classes.len(), classes)),
        missing: added
            .iter()
            .cloned()
            .chain(network.new_parameters(ps))
            .collect(),
        // An adaLN checkpoint's class table, in a model that reads class tokens instead.
        unused: network.unused_parameters(),
        own: vec!["pos_embed".to_string()],
    };
    load_weights(ps, &files, &leeway)
}

/// The network of a checkpoint's `state` with fresh weights, on the device of its config (the
/// CPU when that one is not here).
fn fresh_model(state: &CheckpointState) -> Result<(Network, ParamStore)> {
    let device: Device = state.config.device.parse().unwrap_or(Device::Cpu);
    let mut params = ParamStore::new(DType::F32, device, state.config.seed);
    let network = Network::new(
        &mut params,
        &state.config,
        state.image_shape,
        state.classes.len(),
    )?;
    Ok((network, params))
}

/// The model of `state`'s config, with what its method adds (DeMe's identity projections), and
/// the weights of `init` as a run of that config starting from it loads them.
pub(crate) fn load_init_store(init: &Path, state: &CheckpointState) -> Result<LoadedModel> {
    let (network, mut params) = fresh_model(state)?;
    let added = state.config.method.add_parameters(&network, &mut params)?;
    load_init(init, &mut params, &network, &added)?;
    Ok(LoadedModel {
        network,
        params,
        state: state.clone(),
        dir: init.to_path_buf(),
    })
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

/// Whether `saved` and `config` describe the same run: equal but for what may change between a
/// run and its resumption.
fn same_run(saved: &RunConfig, config: &RunConfig) -> bool {
    differing_keys(&resumable_view(saved), &resumable_view(config)).is_empty()
}

/// Names the top-level config keys whose values differ (a key left out of one, such as empty
/// `snapshots`, is null there).
fn differing_keys(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    match (a, b) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let null = Value::Null;
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    let (saved, now) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                    format!("{k} (saved {saved}, now {now})")
                })
                .collect()
        }
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
    let (network, mut ps) = build_model(config, &data, device)?;
    let trainable = config
        .method
        .prepare(&config.trainable, &network, &mut ps)?;
    // What the model sees: the data padded by the loader.
    let image_shape = padded_shape(config, &data);
    let process = config.diffusion_config()?;
    let diffusion = create_diffusion("", &process)?;
    let streams = config
        .method
        .streams(config.batch_size, diffusion.num_timesteps())?;
    let null_class = match (network.null_class(), streams.iter().any(|s| s.null_labels)) {
        (Some(null), _) => null,
        (None, false) => data.classes().len(),
        (None, true) => {
            return Err(Error::msg(format!(
                "method `{}` gives some images the null label, but the model has no null class: \
                 make it class-conditional with `model.class_dropout_prob` above 0",
                config.method.name()
            )))
        }
    };
    let other_data = stream_data(&streams, &data)?;
    let control_dropout = match &config.model {
        ModelConfig::Dit(d) => d.control_dropout_prob,
        ModelConfig::Unet(_) => 0.0,
    };
    // The frozen starting model, where a loss term compares with it.
    let consistency = (config.method.terms().into_iter())
        .map(|Term::Consistency { weight }| weight)
        .next();
    let teacher = consistency
        .map(|weight| {
            let teacher = teacher::Teacher::load(config, image_shape, data.classes().len())?;
            Ok::<_, Error>((teacher, weight))
        })
        .transpose()?;
    let schedule = config.lr_schedule()?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: config.lr,
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    });
    opt.groups = config.param_groups.clone();
    for (i, group) in opt.groups.iter().enumerate() {
        // A group that names no trainable parameter is a typo, not a choice.
        let mut trained = ps.iter().filter(|(_, v)| v.requires_grad());
        if !trained.any(|(name, _)| models::params::matches(&group.params, name)) {
            return Err(Error::msg(format!(
                "config `param_groups[{i}].params`: `{}` matches no parameter that trains",
                group.params
            )));
        }
    }

    // Held until the run returns: a second run on the same folder is refused.
    let _lock = folder::lock(out)?;
    let mut step = 0;
    let mut loaders = vec![LoaderState::default(); streams.len()];
    let names: Vec<&str> = streams.iter().map(|s| s.name).collect();
    let mut term_names = names.clone();
    if teacher.is_some() {
        term_names.push("consistency");
    }
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
            folder::check_fresh(out, config, options.resume)?;
            if let Some(init) = &config.init {
                load_init(init, &mut ps, &network, &trainable.added)?;
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
        loaders = state.loaders(&names)?;
    }
    crate::files::write_atomic(&out.join("config.json"), config.to_json().as_bytes())?;
    let report = serde_json::to_string_pretty(&trainable).expect("plain JSON");
    crate::files::write_atomic(&out.join(TRAINABLE_FILE), report.as_bytes())?;
    if options.progress {
        eprintln!("{}: {trainable}", config.trainable.name());
    }
    let started_at = step;

    let loader_config = LoaderConfig::new(config.batch_size, config.seed)
        .hflip(config.hflip)
        .crop_scale(config.crop_scale)
        .pad(config.pad);
    let stream_sets = std::iter::once(&data).chain(&other_data).collect();
    let mut feed = Feed::new(streams, stream_sets, &loader_config, &loaders)?;
    let mut log = MetricLog::open(&out.join("metrics.jsonl"), step)?;
    let bar = options
        .progress
        .then(|| crate::progress::bar(config.steps, "train"));
    if let Some(bar) = &bar {
        bar.set_position(step);
    }
    let state_at = |step: u64, feed: &Feed| {
        let mut at = feed.states().into_iter();
        let (_, target) = at.next().expect("a method has a target stream");
        CheckpointState {
            step,
            loader_epoch: target.epoch,
            loader_position: target.position,
            other_loaders: at.map(|(name, s)| (name.to_string(), s)).collect(),
            classes: data.classes().to_vec(),
            image_shape,
            config: config.clone(),
            checksums: vec![],
        }
    };
    let save = |step: u64, ps: &ParamStore, ema: &Ema, opt: &AdamW, feed: &Feed| {
        guard::check_state(step, ps, ema, opt)?;
        checkpoint::save(out, state_at(step, feed), |dir| {
            ps.save(dir.join(MODEL_FILE), None)?;
            ema.save(dir.join(EMA_FILE))?;
            opt.save(dir.join(OPTIMIZER_FILE))
        })
    };
    let draw = |ema: &Ema, ps: &ParamStore, path: &Path| -> Result<()> {
        let weights = ema.store(ps)?;
        let labels = grid_labels(data.classes().len(), config.sample.per_class)?;
        // ANL: each row's condition an image of its class from the training data.
        let condition = network
            .needs_condition()
            .then(|| {
                ConditionImages::of_classes(&data, &labels, 0.0, config.seed)?.padded(config.pad)
            })
            .transpose()?;
        let stage = Stage {
            condition: condition.as_ref(),
            ..Stage::new(&network, &weights)
        };
        let images = generate_in_stages(&[stage], &process, &config.sample, &labels, config.seed)?;
        let len = labels.len();
        save_grid(path, &images, Some(&Tensor::from_vec(labels, &[len])?), 2)?;
        Ok(())
    };

    let (mut sum, mut grad_sum, mut count, mut since) = (0.0, 0.0, 0u64, Instant::now());
    let mut term_sums = vec![0.0; term_names.len()];
    let mut last_checkpoint = None;
    while step < config.steps {
        let mut gen = step_generator(config.seed, step);
        let batch = feed.next(&mut gen, null_class)?;
        let noise = Tensor::randn(batch.images.shape(), 0.0, 1.0, DType::F32, device, &mut gen)?;
        let x0 = batch.images.to_device(device)?;
        let labels = network.drop_labels(&batch.labels, &mut gen)?;
        // ANL: the modules read the embedding of the very image being denoised.
        let condition = network.condition(&x0, 0.0, &mut gen)?;
        // Control metadata: the loader's augmentation of each image, dropped apart from labels.
        let control = network.drop_control(&batch.control, control_dropout, &mut gen)?;
        let inputs = Inputs {
            condition: condition.as_ref(),
            control: control.as_ref(),
        };
        let mut gap = None;
        let terms = diffusion.training_losses_with(
            |x_t: &Var, t: &Tensor| {
                let prediction = network.forward_with(&ps, x_t, t, &labels, &inputs)?;
                if let Some((teacher, _)) = &teacher {
                    let frozen = teacher.predict(x_t, t, &labels)?;
                    gap = Some(teacher::consistency(&prediction, &frozen, image_shape[0])?);
                }
                Ok(prediction)
            },
            &x0,
            &batch.timesteps,
            &noise,
        )?;
        let (mut loss, mut term_values) = feed.loss(&batch, &terms.loss)?;
        if let (Some(gap), Some((_, weight))) = (gap, &teacher) {
            term_values.push(gap.value().to_scalar()?);
            loss = loss.add(&gap.mul_scalar(*weight)?)?;
        }
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
        guard::check_gradients(step, &ps, &grads, norm)?;
        opt.config.lr = schedule.lr_at(step);
        opt.step(&mut ps, &grads)?;
        ema.update(&ps)?;
        step += 1;
        (sum, grad_sum, count) = (sum + value, grad_sum + norm, count + 1);
        for (total, value) in term_sums.iter_mut().zip(term_values) {
            *total += value;
        }

        if step % config.log_every == 0 || step == config.steps {
            let line = MetricLine {
                step,
                loss: sum / count as f64,
                grad_norm: grad_sum / count as f64,
                lr: opt.config.lr,
                steps_per_sec: count as f64 / since.elapsed().as_secs_f64().max(1e-9),
                // The loss's parts, where it has more than one.
                terms: match term_names.len() {
                    1 => Default::default(),
                    _ => term_names
                        .iter()
                        .zip(&term_sums)
                        .map(|(name, total)| (name.to_string(), total / count as f64))
                        .collect(),
                },
            };
            term_sums.iter_mut().for_each(|v| *v = 0.0);
            log.write(&line)?;
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4}", line.loss));
            }
            (sum, grad_sum, count, since) = (0.0, 0.0, 0, Instant::now());
        }
        if config.snapshots.contains(&step) {
            // A resumed run that passes a snapshot step again keeps the snapshot it wrote then.
            let snapshot = snapshot_path(out, step);
            if !snapshot.exists() {
                guard::check_state(step, &ps, &ema, &opt)?;
                let mut weights = ema.store(&ps)?;
                let state = state_at(step, &feed);
                let values = export::plain_weights_of(&network, &mut weights, &state)?;
                let dir = snapshot.parent().expect("a snapshot is in a folder");
                std::fs::create_dir_all(dir).map_err(crate::files::io_error(dir))?;
                export::write_weights(&snapshot, state, &values, &[])?;
            }
        }
        if step % config.checkpoint_every == 0 || step == config.steps {
            last_checkpoint = Some(save(step, &ps, &ema, &opt, &feed)?);
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
        trainable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[f32]) -> Tensor {
        Tensor::from_vec(rows.to_vec(), &[rows.len(), 1]).unwrap()
    }

    #[test]
    fn target_classes_reuse_the_first_source_rows_and_the_null_row() {
        // Source: 4 classes (rows 10..13) and the null row 19.
        let pre = table(&[10.0, 11.0, 12.0, 13.0, 19.0]);
        let fewer = reuse_label_rows(&table(&[0.0, 1.0, 2.0]), &pre, 4, 2).unwrap();
        assert_eq!(fewer.to_vec::<f32>().unwrap(), [10.0, 11.0, 19.0]);
        // More target classes than source ones: the extra rows keep their fresh values.
        let more = reuse_label_rows(&table(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &pre, 4, 6);
        assert_eq!(
            more.unwrap().to_vec::<f32>().unwrap(),
            [10.0, 11.0, 12.0, 13.0, 4.0, 5.0, 19.0]
        );
        // A source without a null row leaves ours fresh; another width is an error (the caller
        // names the table and the file).
        let bare = table(&[10.0, 11.0, 12.0, 13.0]);
        let out = reuse_label_rows(&table(&[0.0, 1.0, 2.0]), &bare, 4, 2).unwrap();
        assert_eq!(out.to_vec::<f32>().unwrap(), [10.0, 11.0, 2.0]);
        let wide = Tensor::from_vec(vec![0f32; 6], &[3, 2]).unwrap();
        let err = reuse_label_rows(&wide, &pre, 4, 2).unwrap_err().to_string();
        assert!(
            err.contains("class table") && err.contains("[3, 2]"),
            "{err}"
        );
    }
}
