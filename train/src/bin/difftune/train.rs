//! `difftune pretrain` and `difftune finetune`: one training loop, two sets of defaults.

use std::path::PathBuf;

use clap::Args;
use tensor::{Error, Result};
use train::methods::Method;
use train::run::{init_image_shape, train, ModelConfig, RunConfig, TrainOptions};

/// The flags of a training run: a config file, and flags that override it.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A JSON config (see configs/); flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `fashion-mnist`, `animal-mnist`, `animal-mnist-train`, `animal-mnist-test`, or a folder of
    /// class sub-folders of images; `NAME:K` takes K images of each class (a fixed choice).
    #[arg(long)]
    data: Option<String>,
    /// Optimisation steps of the whole run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Images per step.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// Learning rate after warmup.
    #[arg(long)]
    lr: Option<f64>,
    /// Steps between checkpoints.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    /// Steps between sample grids (0: only at the end).
    #[arg(long)]
    sample_every: Option<u64>,
    /// Seed of everything random.
    #[arg(long)]
    seed: Option<u64>,
    /// `cpu` or `cuda:N`.
    #[arg(long)]
    device: Option<String>,
    /// Compute precision: f32, or bf16/f16 on CUDA (f32 master weights).
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    precision: Option<String>,
    /// The run folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in the run folder from its latest checkpoint (a finished run only
    /// redraws its pictures).
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Fine-tuning: a training run that starts from a pretrained checkpoint.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The pretrained checkpoint: a run folder, a checkpoint folder or an exported weights file
    /// (data/pretrained/fashion-dit.safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// The training objective, with its default options (a config file sets the options).
    #[arg(long, value_parser = Method::NAMES)]
    method: Option<String>,
    /// Which parameters train, with default options: full, lora (rank 4 on the blocks' Linear
    /// weights), bitfit or difffit (a config file sets the options).
    #[arg(long, value_parser = ["full", "lora", "bitfit", "difffit"])]
    trainable: Option<String>,
    /// Resolution transfer (a DiT): interpolate the checkpoint's position grid over the new
    /// resolution (positions scaled by its side over the data's) instead of extending it.
    #[arg(long)]
    interpolate_positions: bool,
    /// Resolution transfer: shift the noise schedule toward more noise at a larger side
    /// (logSNR + 2 ln(old side / new side)).
    #[arg(long)]
    shift_schedule: bool,
    #[command(flatten)]
    run: TrainArgs,
}

/// Fine-tuning's defaults where no config file says otherwise: Animal-MNIST, a lower learning
/// rate, fewer steps.
fn finetune_defaults() -> RunConfig {
    RunConfig {
        data: "animal-mnist".into(),
        steps: 600,
        lr: 3e-4,
        warmup_steps: 50,
        checkpoint_every: 200,
        out: "runs/finetune".into(),
        ..RunConfig::default()
    }
}

impl TrainArgs {
    /// The config file (or `defaults`) with the flags applied, validated.
    fn resolve(&self, defaults: RunConfig) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(path) => RunConfig::from_file(path)?,
            None => defaults,
        };
        if let Some(v) = &self.data {
            c.data = v.clone();
        }
        if let Some(v) = self.steps {
            c.steps = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v as usize;
        }
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if let Some(v) = self.checkpoint_every {
            c.checkpoint_every = v;
        }
        if let Some(v) = self.sample_every {
            c.sample_every = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = &self.precision {
            c.precision = v.clone();
        }
        if let Some(v) = &self.device {
            c.device = v.clone();
        }
        if let Some(v) = &self.out {
            c.out = v.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

fn run(config: RunConfig, args: &TrainArgs) -> Result<()> {
    let options = TrainOptions {
        resume: args.resume,
        progress: !args.quiet,
    };
    let r = train(&config, &options)?;
    if r.started_at == r.steps {
        println!(
            "{}: already trained for {} steps",
            config.out.display(),
            r.steps
        );
    }
    println!(
        "steps {}; loss {:.4} (first log line) -> {:.4} (last)",
        r.steps, r.first_loss, r.last_loss
    );
    println!("checkpoint: {}", r.checkpoint.display());
    println!("samples:    {}", r.grid.display());
    println!("loss curve: {}", r.loss_curve.display());
    Ok(())
}

/// `difftune pretrain`.
pub fn pretrain(args: TrainArgs) -> Result<()> {
    let config = args.resolve(RunConfig::default())?;
    if config.init.is_some() {
        return Err(Error::msg(
            "pretrain: the config sets `init`; use `difftune finetune` to start from a checkpoint",
        ));
    }
    run(config, &args)
}

/// `difftune finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<()> {
    let mut config = args.run.resolve(finetune_defaults())?;
    if let Some(init) = args.init {
        config.init = Some(init);
    }
    if let Some(name) = args.method {
        config.method = Method::from_name(&name)?;
    }
    if let Some(kind) = args.trainable {
        config.trainable = serde_json::from_value(serde_json::json!({ "kind": kind }))
            .map_err(|e| Error::msg(format!("--trainable {kind}: {e}")))?;
    }
    let Some(init) = &config.init else {
        return Err(Error::msg(
            "finetune: no pretrained checkpoint; pass --init RUN_FOLDER or set `init` in the config",
        ));
    };
    if args.interpolate_positions || args.shift_schedule {
        let [_, side, _] = init_image_shape(init)?;
        if args.shift_schedule {
            config.diffusion.shift_from = Some(side);
        }
        if args.interpolate_positions {
            let ModelConfig::Dit(dit) = &mut config.model else {
                return Err(Error::msg(
                    "--interpolate-positions: the model is a U-Net, which has no position grid",
                ));
            };
            dit.positions_from = Some(side);
        }
    }
    config.validate()?;
    run(config, &args.run)
}
