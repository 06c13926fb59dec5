//! ANL transfer end to end on a tiny U-Net: only the modules train and the U-Net's own weights
//! stay those of the pretrained run, samples follow their condition images (masked sampling
//! included), the copying check, and the bad inputs each refuses, named.

mod common;

use std::path::{Path, PathBuf};

use models::encoder::{EncoderConfig, EncoderKind, ImageEncoder};
use models::ParamStore;
use tensor::{DType, Device};
use train::methods::{Method, Trainable};
use train::run::{load_model, train, RunConfig, TrainOptions, Weights};

use common::{image_folder, run_err, run_ok, scratch, tiny_config, tiny_unet, write_config};

/// A freshly initialised encoder of `kind` for `[C, H, W]` images, saved to `dir/<kind>.safetensors`.
fn encoder_file(dir: &Path, kind: EncoderKind, image: [usize; 3]) -> PathBuf {
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 3);
    let config = EncoderConfig::small(kind, image, 3);
    let encoder = ImageEncoder::new(&mut ps, &config).unwrap();
    let path = dir.join(format!("{}-{}.safetensors", kind.name(), image[1]));
    encoder.save(&ps, &path).unwrap();
    path
}

fn anl(encoder: Option<&Path>, nonlinear: bool) -> Method {
    let mut m = serde_json::json!({ "name": "anl", "heads": 2, "nonlinear": nonlinear });
    if let Some(e) = encoder {
        m["encoder"] = e.display().to_string().into();
    }
    serde_json::from_value(m).unwrap()
}

fn none() -> Trainable {
    serde_json::from_value(serde_json::json!({ "kind": "none" })).unwrap()
}

#[test]
fn anl_trains_only_its_modules_and_samples_follow_the_condition() {
    let dir = scratch("anl");
    let data = image_folder(&dir, 3, 4);
    let source = tiny_unet(&data, &dir.join("pre"), true);
    train(&source, &TrainOptions::default()).unwrap();
    let encoder = encoder_file(&dir, EncoderKind::Cnn, [1, 28, 28]);

    let transfer = |name: &str, method: Method| -> RunConfig {
        let mut c = tiny_unet(&data, &dir.join(name), true);
        c.init = Some(source.out.clone());
        c.method = method;
        c.trainable = none();
        c.lr = 1e-2;
        c.warmup_steps = 0;
        c
    };
    let run = transfer("anl", anl(Some(&encoder), true));
    train(&run, &TrainOptions::default()).unwrap();
    // A run starts from the moving average of the run it transfers.
    let pre = load_model(&source.out, Weights::Ema).unwrap();
    let tuned = load_model(&run.out, Weights::Raw).unwrap();
    for name in pre.params.names() {
        assert_eq!(
            pre.params.tensor(name).unwrap().to_vec::<f32>().unwrap(),
            tuned.params.tensor(name).unwrap().to_vec::<f32>().unwrap(),
            "`{name}` is frozen"
        );
    }
    let proj = "anl.mid_block.resnets.0.proj_out.weight";
    let moved = tuned.params.tensor(proj).unwrap().to_vec::<f32>().unwrap();
    assert!(moved.iter().any(|&w| w != 0.0), "the modules train");
    let report = std::fs::read_to_string(run.out.join("trainable.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["trainable"].as_u64().unwrap() as usize,
        tuned.params.param_count() - pre.params.param_count(),
        "only the modules train"
    );

    // Sampling: the run's data gives each class its condition; masking changes the samples,
    // one image conditions them all, guidance has nothing to act on.
    let out = run.out.display().to_string();
    let grid = dir.join("grid.png").display().to_string();
    let printed = run_ok(&[
        "sample",
        &out,
        "--out",
        &grid,
        "--per-class",
        "2",
        "--mask",
        "0,0.5,1",
    ]);
    assert!(printed.contains("one block per --mask value"), "{printed}");
    let image = data.join(
        std::fs::read_dir(&data)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let first = std::fs::read_dir(&image)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let one = first.display().to_string();
    run_ok(&["sample", &out, "--out", &grid, "--condition-image", &one]);
    let err = run_err(&["sample", &out, "--out", &grid, "--cfg-scale", "2"]);
    assert!(err.contains("cfg_scale 1"), "{err}");
    let err = run_err(&["sample", &out, "--out", &grid, "--mask", "1.5"]);
    assert!(err.contains("--mask") && err.contains("[0, 1]"), "{err}");
    let err = run_err(&["sample", &source.out.display().to_string(), "--mask", "0.5"]);
    assert!(err.contains("ANL"), "{err}");
    // A condition image of another size is refused, naming the file.
    let big = dir.join("big.png");
    train::data::save_grid(
        &big,
        &tensor::Tensor::zeros(&[1, 1, 32, 32], DType::F32, Device::Cpu).unwrap(),
        None,
        0,
    )
    .unwrap();
    let big_text = big.display().to_string();
    let err = run_err(&[
        "sample",
        &out,
        "--out",
        &grid,
        "--condition-image",
        &big_text,
    ]);
    assert!(
        err.contains("big.png") && err.contains("expected 28x28"),
        "{err}"
    );

    // The ablation without the non-linear mapping and the unconditional variant train too.
    let ablation = transfer("linear", anl(Some(&encoder), false));
    train(&ablation, &TrainOptions::default()).unwrap();
    let linear = load_model(&ablation.out, Weights::Raw).unwrap();
    assert!(!linear.params.names().any(|n| n.contains("mlp")));
    let unconditional = transfer("unconditional", anl(None, true));
    train(&unconditional, &TrainOptions::default()).unwrap();
    let uncond = unconditional.out.display().to_string();
    run_ok(&["sample", &uncond, "--out", &grid]);
}

#[test]
fn anl_bad_configs_are_refused_before_any_work_naming_the_key() {
    let dir = scratch("anl-bad");
    let data = image_folder(&dir, 2, 4);
    let mut source = tiny_unet(&data, &dir.join("pre"), true);
    source.steps = 1;
    train(&source, &TrainOptions::default()).unwrap();
    let try_run = |name: &str, edit: &dyn Fn(&mut RunConfig)| -> String {
        let mut c = tiny_unet(&data, &dir.join(name), true);
        c.init = Some(source.out.clone());
        c.trainable = none();
        edit(&mut c);
        let file = write_config(&dir.join(format!("{name}.json")), &c);
        let err = run_err(&["finetune", "--config", &file, "--quiet"]);
        assert!(
            !dir.join(name).join("checkpoints").exists(),
            "{name}: no work"
        );
        err
    };
    // An encoder of another image size, a classifier file instead of an encoder.
    let small = encoder_file(&dir, EncoderKind::Vit, [1, 14, 14]);
    let err = try_run("size", &|c| c.method = anl(Some(&small), true));
    assert!(
        err.contains("method.encoder") && err.contains("[1, 14, 14]"),
        "{err}"
    );
    let classifier = Path::new("../data/classifiers/animal-mnist.safetensors");
    let err = try_run("classifier", &|c| c.method = anl(Some(classifier), true));
    assert!(err.contains("method.encoder"), "{err}");
    // Full tuning under ANL, `none` without ANL, ANL on a DiT, heads that do not divide.
    let encoder = encoder_file(&dir, EncoderKind::Cnn, [1, 28, 28]);
    let err = try_run("full", &|c| {
        c.method = anl(Some(&encoder), true);
        c.trainable = Trainable::default();
    });
    assert!(err.contains("trainable"), "{err}");
    let err = try_run("standard", &|c| c.method = Method::default());
    assert!(
        err.contains("trainable.kind") && err.contains("adds nothing"),
        "{err}"
    );
    let err = try_run("dit", &|c| {
        *c = RunConfig {
            method: anl(Some(&encoder), true),
            trainable: none(),
            init: c.init.clone(),
            ..tiny_config(&data, &dir.join("dit"))
        }
    });
    assert!(err.contains("U-Net"), "{err}");
    let err = try_run("heads", &|c| {
        c.method = serde_json::from_value(serde_json::json!({
            "name": "anl", "encoder": encoder.display().to_string(), "heads": 3
        }))
        .unwrap()
    });
    assert!(err.contains("heads"), "{err}");
}
