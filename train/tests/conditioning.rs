//! Multi-level conditioning and resolution transfer end to end on a tiny DiT: every
//! conditioning mode trains on augmented data with control metadata and samples under the two
//! guidance scales; a checkpoint of one resolution and mode starts a run of another; the bad
//! inputs each refuses, named.

mod common;

use models::dit::sincos_pos_embed_2d;
use train::run::{generate, load_model, train, RunConfig, TrainOptions, Weights};

use common::{dit, image_folder, run_err, run_ok, scratch, tiny_config, write_config};

fn with_control(c: &mut RunConfig, mode: &str) {
    c.crop_scale = 0.6;
    c.hflip = true;
    let d = dit(c);
    d.conditioning = mode.into();
    d.control = true;
    d.class_tokens = 2;
}

#[test]
fn every_mode_trains_with_control_and_samples_under_two_scales() {
    let dir = scratch("conditioning-modes");
    let data = image_folder(&dir, 3, 4);
    for mode in ["adaln", "cross_attention", "joint_attention"] {
        let mut c = tiny_config(&data, &dir.join(mode));
        with_control(&mut c, mode);
        c.steps = 4;
        c.lr = 1e-2;
        train(&c, &TrainOptions::default()).unwrap();
        let m = load_model(&c.out, Weights::Raw).unwrap();
        assert_eq!(m.network.control_dim(), 4);
        let process = c.diffusion_config().unwrap();
        let mut settings = c.sample.clone();
        settings.cfg_scale = 2.0;
        settings.control_scale = 1.5;
        let labels = [0i64, 1, 2];
        let draw = |control: Vec<f64>| {
            let s = train::run::SampleSettings {
                control,
                ..settings.clone()
            };
            generate(&m.network, &m.params, &process, &s, &labels, 7).unwrap()
        };
        let plain = draw(vec![]);
        let identity = draw(vec![1.0, 0.0, 0.0, 0.0]);
        let zoomed = draw(vec![0.6, 0.2, 0.2, 1.0]);
        assert!(plain.all_finite().unwrap(), "{mode}");
        // No control given is the identity augmentation; another control moves the samples.
        assert_eq!(plain.max_abs_diff(&identity).unwrap(), 0.0, "{mode}");
        assert!(zoomed.max_abs_diff(&identity).unwrap() > 0.0, "{mode}");
    }
}

#[test]
fn a_checkpoint_starts_a_run_of_another_resolution_and_mode() {
    let dir = scratch("conditioning-transfer");
    let data = image_folder(&dir, 3, 4);
    let mut pre = tiny_config(&data, &dir.join("pre-14"));
    pre.image_size = 14;
    pre.steps = 2;
    train(&pre, &TrainOptions::default()).unwrap();

    // 14 -> 28 pixels, 2 -> 4 patches per side: the grid interpolated, the schedule shifted.
    let mut fine = tiny_config(&data, &dir.join("fine-28"));
    fine.steps = 2;
    let config = write_config(&dir.join("fine.json"), &fine);
    let init = pre.out.display().to_string();
    run_ok(&[
        "finetune",
        "--config",
        &config,
        "--init",
        &init,
        "--interpolate-positions",
        "--shift-schedule",
        "--quiet",
    ]);
    let m = load_model(&fine.out, Weights::Ema).unwrap();
    let train::run::ModelConfig::Dit(d) = &m.state.config.model else {
        panic!("not a DiT")
    };
    assert_eq!(
        (d.positions_from, m.state.config.diffusion.shift_from),
        (Some(14), Some(14))
    );
    let table = m
        .params
        .tensor("pos_embed")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let want = sincos_pos_embed_2d(32, 4, 0.5);
    assert!(table
        .iter()
        .zip(&want)
        .all(|(a, b)| (*a as f64 - b).abs() < 1e-6));
    // The shifted schedule is noisier at every step.
    let plain = fine
        .diffusion_config()
        .unwrap()
        .schedule
        .betas(1000)
        .unwrap();
    let shifted = m.state.config.diffusion_config().unwrap();
    let shifted = shifted.schedule.betas(1000).unwrap();
    assert!(shifted.iter().zip(&plain).all(|(s, p)| s >= p));

    // An adaLN checkpoint without control starts a cross-attention model with control: the
    // new parameters keep their initialisation.
    let mut moved = tiny_config(&data, &dir.join("moved"));
    with_control(&mut moved, "cross_attention");
    moved.image_size = 14;
    moved.steps = 2;
    moved.init = Some(pre.out.clone());
    train(&moved, &TrainOptions::default()).unwrap();
}

#[test]
fn bad_conditioning_settings_are_refused_naming_the_key() {
    let dir = scratch("conditioning-bad");
    let data = image_folder(&dir, 3, 4);
    let refused = |edit: &dyn Fn(&mut RunConfig), key: &str| {
        let mut c = tiny_config(&data, &dir.join("bad"));
        c.steps = 1;
        edit(&mut c);
        let config = write_config(&dir.join("bad.json"), &c);
        let err = run_err(&["pretrain", "--config", &config, "--quiet"]);
        assert!(err.contains(key), "{key}: {err}");
    };
    refused(
        &|c| dit(c).conditioning = "film".into(),
        "model.conditioning",
    );
    refused(
        &|c| {
            dit(c).control = true;
            c.sample.control = vec![1.0, 0.0];
        },
        "sample.control",
    );
    refused(
        &|c| c.sample.control = vec![1.0, 0.0, 0.0, 0.0],
        "sample.control",
    );
    refused(&|c| c.image_size = 30, "`patch_size` 7");
    refused(&|c| dit(c).control_alpha = vec![1.0, 2.0], "control_alpha");
    refused(&|c| dit(c).positions_from = Some(0), "model.positions_from");
}

#[test]
fn the_leakage_command_sweeps_the_control_and_reports_real_images_alike() {
    let dir = scratch("conditioning-leakage");
    let data = image_folder(&dir, usize::MAX, 2);
    let mut c = tiny_config(&data, &dir.join("run"));
    with_control(&mut c, "joint_attention");
    c.steps = 2;
    train(&c, &TrainOptions::default()).unwrap();
    let classifier = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/classifiers/animal-mnist.safetensors");
    let (run, out) = (c.out.display().to_string(), dir.join("leak"));
    let args = |out: &std::path::Path| {
        vec![
            "leakage".to_string(),
            "--models".into(),
            format!("{run},{run}"),
            "--controls".into(),
            "1,0,0,0;0.5,0.25,0.25,0".into(),
            "--classifier".into(),
            classifier.display().to_string(),
            "--reference".into(),
            data.display().to_string(),
            "--samples".into(),
            "10".into(),
            "--show".into(),
            "3".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let first = args(&out);
    run_ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leakage.json")).unwrap()).unwrap();
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    // The same model twice: the same samples, the same numbers.
    assert_eq!(models[0]["per_control"], models[1]["per_control"]);
    assert_eq!(models[0]["per_control"]["shift"][0], serde_json::json!(0.0));
    assert_eq!(report["real_accuracy"].as_array().unwrap().len(), 2);
    // The picture: 2 rows (controls) of 2 models x 3 samples, 28 pixels and a 2-pixel gap each.
    let png = train::data::folder::decode(&out.join("leakage.png"), train::data::ColorMode::Gray)
        .unwrap();
    assert_eq!(
        (png.width, png.height),
        (6 * 30 + 2, 2 * 30 + 2),
        "{}",
        strs(&first)
    );
    // A report is never overwritten; a control of the wrong length is refused, named.
    let err = run_err(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("holds a report already"), "{err}");
    let mut bad = args(&dir.join("bad"));
    bad[4] = "1,0,0;0.5,0.25,0.25".into();
    let err = run_err(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("sample.control") && err.contains("3 values"),
        "{err}"
    );
}
