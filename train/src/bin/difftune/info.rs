//! `difftune info`: what a checkpoint, run folder or safetensors file holds.

use std::path::{Path, PathBuf};

use clap::Args;
use tensor::safetensors::SafeTensorsFile;
use tensor::Result;
use train::run::{load_model, metrics, Weights};

/// Summarise a run folder, a checkpoint folder or a safetensors file.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The run folder, checkpoint folder or `.safetensors` file.
    path: PathBuf,
}

/// Runs `difftune info`.
pub fn run(args: InfoArgs) -> Result<()> {
    if args.path.is_file() {
        return file_info(&args.path);
    }
    let model = load_model(&args.path, Weights::Ema)?;
    let dir = &model.dir;
    let s = &model.state;
    let c = &s.config;
    println!("checkpoint   {}", dir.display());
    println!("step         {} of {}", s.step, c.steps);
    println!(
        "data         {} ({} classes: {})",
        c.data,
        s.classes.len(),
        s.classes.join(", ")
    );
    println!("images       {:?}", s.image_shape);
    println!("model        {}", model.network.describe(&model.params));
    println!(
        "diffusion    {} schedule, {} steps, predicts {}, learned sigma {}",
        c.diffusion.schedule,
        c.diffusion.steps,
        c.diffusion.prediction,
        c.model.learn_sigma()
    );
    println!(
        "training     method {}, trainable {}, batch {}, lr {} ({}), ema {}, seed {}",
        c.method.name(),
        c.trainable.name(),
        c.batch_size,
        c.lr,
        c.lr_decay,
        c.ema_decay,
        c.seed
    );
    if let Some(init) = &c.init {
        println!("initialised  from {}", init.display());
    }
    let run = dir.parent().and_then(Path::parent);
    if let Some(lines) = run
        .map(|r| metrics::read(&r.join("metrics.jsonl")))
        .transpose()?
    {
        if let (Some(first), Some(last)) = (lines.first(), lines.last()) {
            println!(
                "loss         {:.4} at step {} -> {:.4} at step {} ({:.2} steps/s lately)",
                first.loss, first.step, last.loss, last.step, last.steps_per_sec
            );
        }
    }
    Ok(())
}

fn file_info(path: &Path) -> Result<()> {
    let file = SafeTensorsFile::open(path)?;
    let mut names = file.names();
    names.sort_unstable();
    let mut total = 0usize;
    for name in &names {
        let (dtype, shape) = file.info(name)?;
        total += shape.iter().product::<usize>();
        println!("{name:<60} {dtype:?} {shape:?}");
    }
    println!("{} tensors, {total} scalars", names.len());
    let mut meta: Vec<_> = file.metadata().iter().collect();
    meta.sort();
    for (k, v) in meta {
        println!("metadata {k} = {v}");
    }
    Ok(())
}
