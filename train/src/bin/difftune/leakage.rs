//! `difftune leakage`: does a DiT's control metadata leak into what its images show?

use std::path::PathBuf;

use clap::Args;
use models::classifier::Classifier;
use serde_json::json;
use tensor::{Error, Result, Tensor};
use train::data::save_grid;
use train::data::DataSource;
use train::eval::leakage::{measure, real_accuracy, sweep, LeakageSweep};
use train::run::{load_model, Weights};

/// Draw the same samples (noise and classes) of each model under every control value of a sweep
/// and measure, with a classifier, how often the asked class survives and how far the features
/// move from the first control's samples. Writes `leakage.json` and `leakage.png` (a row per
/// control value; in each row, the models' samples side by side in the order given).
#[derive(Args, Debug)]
pub struct LeakageArgs {
    /// The models (run folders, checkpoint folders or exported files), DiTs with control
    /// metadata, e.g. one per conditioning mode.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<PathBuf>,
    /// The control values, `;`-separated rows of `,`-separated values (scale, crop_top,
    /// crop_left, flip); the first is the reference.
    #[arg(
        long,
        default_value = "1,0,0,0;0.85,0.075,0.075,0;0.7,0.15,0.15,0;0.55,0.225,0.225,0;1,0,0,1"
    )]
    controls: String,
    /// The classifier (see `difftune classifier train`) whose classes are the models'.
    #[arg(long, default_value = "data/classifiers/fashion-mnist.safetensors")]
    classifier: PathBuf,
    /// Real images transformed as each control says, the classifier's accuracy on which is
    /// reported beside the models' (what a model that renders its control faithfully would
    /// score), read at the models' size.
    #[arg(long, default_value = "fashion-mnist-test")]
    reference: String,
    /// Samples per control value and model (image i asks for class i mod classes).
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Samples per model shown in the picture (the first ones).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Seed of the sampling noise (the same for every model and control).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The folder to write into (a new one, or one without a report).
    #[arg(long)]
    out: PathBuf,
}

/// Parses `--controls`.
fn parse_controls(text: &str) -> Result<Vec<Vec<f64>>> {
    text.split(';')
        .map(|row| {
            row.split(',')
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|_| {
                        Error::msg(format!("--controls: `{v}` in row `{row}` is not a number"))
                    })
                })
                .collect()
        })
        .collect()
}

/// Runs `difftune leakage`.
pub fn run(args: LeakageArgs) -> Result<()> {
    if args.out.join("leakage.json").exists() {
        return Err(Error::msg(format!(
            "--out {}: holds a report already; choose another folder",
            args.out.display()
        )));
    }
    let spec = LeakageSweep {
        controls: parse_controls(&args.controls)?,
        samples: args.samples,
    };
    spec.validate("--controls/--samples:")?;
    let classifier = Classifier::load(&args.classifier)?;
    let classes = classifier.config.classes.len() as i64;
    let labels: Vec<i64> = (0..args.samples as i64).map(|i| i % classes).collect();
    let show = args.show.min(args.samples);
    let (mut reports, mut shown) = (Vec::new(), Vec::new());
    let mut real = None;
    for path in &args.models {
        let model = load_model(path, Weights::Ema)?;
        if model.state.classes != classifier.config.classes {
            return Err(Error::msg(format!(
                "{}: its classes are not the classifier's ({})",
                path.display(),
                classifier.config.classes.join(", ")
            )));
        }
        eprintln!(
            "{}: {} control values x {} samples",
            path.display(),
            spec.controls.len(),
            args.samples
        );
        let rows = sweep(
            &model.network,
            &model.params,
            &model.state.config.diffusion_config()?,
            &model.state.config.sample,
            &labels,
            args.seed,
            &spec.controls,
        )?;
        let leakage = measure(&rows, &labels, &classifier)?;
        if real.is_none() {
            let data = DataSource::parse(&args.reference, "--reference")?
                .reference(model.network.image_shape())?;
            real = Some(real_accuracy(&data, &spec.controls, &classifier)?);
        }
        let (accuracy, shift) = leakage.summary();
        println!(
            "{}: accuracy under the other controls {accuracy:.3} (reference {:.3}), feature \
             shift {shift:.3}",
            path.display(),
            leakage.accuracy[0]
        );
        reports.push(json!({
            "model": path.display().to_string(),
            "leak_accuracy": accuracy,
            "leak_shift": shift,
            "per_control": leakage,
        }));
        shown.push(
            rows.iter()
                .map(|r| r.narrow(0, 0, show))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    // Row r of the picture: control r's first samples of every model, model after model.
    let mut images = Vec::new();
    let mut rows = Vec::new();
    for r in 0..spec.controls.len() {
        for model in &shown {
            images.push(model[r].clone());
            rows.extend(std::iter::repeat_n(r as i64, show));
        }
    }
    let images = Tensor::cat(&images.iter().collect::<Vec<_>>(), 0)?;
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let picture = args.out.join("leakage.png");
    let n = rows.len();
    save_grid(&picture, &images, Some(&Tensor::from_vec(rows, &[n])?), 2)?;
    let report = json!({
        "controls": spec.controls,
        "samples": args.samples,
        "seed": args.seed,
        "classifier": args.classifier.display().to_string(),
        "reference": args.reference,
        "real_accuracy": real,
        "models": reports,
    });
    train::files::write_atomic(
        &args.out.join("leakage.json"),
        serde_json::to_string_pretty(&report)
            .expect("plain JSON")
            .as_bytes(),
    )?;
    if let Some(real) = &real {
        println!(
            "real {} images under the same controls: accuracy {real:.3?}",
            args.reference
        );
    }
    println!("report: {}/leakage.{{json,png}}", args.out.display());
    Ok(())
}
