//! Diff-Tuning's tools end to end on tiny DiTs. `difftune bank`: a knowledge bank is an image
//! folder with its manifest, made the same way twice from the same seed, never written over an
//! existing folder, and a `diff-tuning` run (either form) trains on it. `difftune forgetting`:
//! a table, JSON and curve of scores per switch point and seed, bad switch points refused.

mod common;

use std::path::Path;

use train::methods::bank::{BankManifest, MANIFEST};
use train::methods::{DiffTuningForm, Method};
use train::run::{metrics, train, TrainOptions};

use common::{image_folder, run_err, run_ok, scratch, tiny_config};

/// The PNG files under `dir`, sorted, with their bytes.
fn images(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for class in std::fs::read_dir(dir).unwrap() {
        let class = class.unwrap().path();
        if class.is_dir() {
            for f in std::fs::read_dir(&class).unwrap() {
                let f = f.unwrap().path();
                let name = f.strip_prefix(dir).unwrap().display().to_string();
                all.push((name, std::fs::read(&f).unwrap()));
            }
        }
    }
    all.sort();
    all
}

#[test]
fn a_bank_is_sampled_once_into_a_new_folder_and_a_diff_tuning_run_trains_on_it() {
    let dir = scratch("bank");
    let data = image_folder(&dir, 3, 4);
    let mut source = tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();
    let init = source.out.display().to_string();

    let bank = dir.join("bank");
    let make = |out: &Path| {
        let out = out.display().to_string();
        let args = ["bank", "--init", &init, "--size", "7", "--out", &out];
        run_ok(&[&args[..], &["--sampler", "ddim2", "--seed", "3"]].concat())
    };
    let stdout = make(&bank);
    assert!(stdout.contains("7 images of 3 classes"), "{stdout}");
    let manifest: BankManifest =
        serde_json::from_str(&std::fs::read_to_string(bank.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(
        (manifest.size, manifest.step, manifest.seed),
        (7, 4, 3),
        "{manifest:?}"
    );
    assert_eq!(manifest.sampler, "ddim2");
    assert_eq!(manifest.cfg_scale, source.sample.cfg_scale, "the run's own");
    assert_eq!(manifest.per_class.iter().sum::<usize>(), 7);
    let made = images(&bank);
    assert_eq!(made.len(), 7);
    // The same seed makes the same bank, byte for byte.
    make(&dir.join("again"));
    assert_eq!(images(&dir.join("again")), made);

    // An existing folder is never written into; nor is a leftover temporary one removed.
    let out = bank.display().to_string();
    let err = run_err(&["bank", "--init", &init, "--size", "7", "--out", &out]);
    assert!(err.contains("--out") && err.contains(&out), "{err}");
    assert_eq!(images(&bank), made);
    std::fs::create_dir_all(dir.join("new.partial/mine")).unwrap();
    let new = dir.join("new").display().to_string();
    let err = run_err(&["bank", "--init", &init, "--size", "7", "--out", &new]);
    assert!(err.contains("new.partial"), "{err}");
    assert!(dir.join("new.partial/mine").is_dir() && !dir.join("new").exists());
    let err = run_err(&["bank", "--init", &init, "--size", "0", "--out", &new]);
    assert!(err.contains("--size"), "{err}");

    // A diff-tuning run replays the bank.
    let mut tune = tiny_config(&data, &dir.join("tuned"));
    tune.init = Some(source.out.clone());
    tune.steps = 2;
    tune.method = Method::DiffTuning {
        bank: out.clone(),
        bank_share: 0.25,
        lambda: 0.1,
        tau: 1.0,
        tau_retention: None,
        form: DiffTuningForm::Sampled,
    };
    train(&tune, &TrainOptions::default()).unwrap();
    let lines = metrics::read(&tune.out.join("metrics.jsonl")).unwrap();
    assert!(
        lines.iter().all(|l| l.terms.contains_key("bank")),
        "{lines:?}"
    );
    // And so does its weighted form.
    if let Method::DiffTuning { form, .. } = &mut tune.method {
        *form = DiffTuningForm::Weighted;
    }
    tune.out = dir.join("weighted");
    train(&tune, &TrainOptions::default()).unwrap();
    let lines = metrics::read(&tune.out.join("metrics.jsonl")).unwrap();
    assert!(lines
        .iter()
        .all(|l| l.loss.is_finite() && l.terms.contains_key("bank")));
    // A bank that is missing, empty, has an empty class, or holds an image of another size or
    // channel count than the model's 28x28 gray (which would be resized or converted if it were
    // the run's own data) is refused before training, named.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("hollow/a-class")).unwrap();
    let save = |bank: &str, side: usize, channels: usize| {
        std::fs::create_dir_all(dir.join(bank).join("a")).unwrap();
        let file = dir.join(bank).join("a/0.png");
        let pixels = vec![9; side * side * channels];
        train::data::folder::save_png(&file, side, side, channels, &pixels).unwrap();
    };
    save("large", 32, 1);
    save("rgb", 28, 3);
    for bank in ["missing", "empty", "hollow", "large", "rgb"] {
        let path = dir.join(bank).display().to_string();
        if let Method::DiffTuning { bank, .. } = &mut tune.method {
            bank.clone_from(&path);
        }
        tune.out = dir.join(format!("refused-{bank}"));
        let err = train(&tune, &TrainOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("method.bank") && err.contains(&path), "{err}");
        assert!(!tune.out.join("checkpoints").exists(), "{bank}: trained");
        if bank == "large" || bank == "rgb" {
            assert!(
                err.contains("a/0.png") && err.contains("expected 28x28 with 1"),
                "{err}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn the_chain_of_forgetting_is_scored_at_every_switch_point_and_seed() {
    let dir = scratch("forgetting");
    let data = image_folder(&dir, usize::MAX, 2);
    let mut source = tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();
    let mut tune = tiny_config(&data, &dir.join("tuned"));
    tune.init = Some(source.out.clone());
    tune.steps = 2;
    train(&tune, &TrainOptions::default()).unwrap();

    let classifier =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/classifiers/animal-mnist.safetensors");
    let paths = [
        &source.out,
        &tune.out,
        &data,
        &classifier,
        &dir.join("cache"),
    ];
    let [pre, fine, data, classifier, cache] = paths.map(|p| p.display().to_string());
    let out = dir.join("report").display().to_string();
    let args = |switch: &str| {
        let mut a: Vec<String> = ["forgetting", "--pretrained", &pre, "--finetuned", &fine]
            .map(String::from)
            .into();
        for (flag, value) in [
            ("--switch", switch),
            ("--seeds", "0,1"),
            ("--samples", "10"),
            ("--sampler", "ddim2"),
            ("--reference", &data),
            ("--classifier", &classifier),
            ("--kid-subsets", "2"),
            ("--kid-subset-size", "5"),
            ("--cache", &cache),
            ("--out", &out),
        ] {
            a.extend([flag.to_string(), value.to_string()]);
        }
        a
    };
    let err = run_err(&strs(&args("0,1001")));
    assert!(err.contains("--switch 1001"), "{err}");
    let stdout = run_ok(&strs(&args("0,500,1000")));
    assert!(stdout.contains("| class_accuracy |"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/forgetting.json")).unwrap())
            .unwrap();
    let points = report["switches"].as_array().unwrap();
    let at: Vec<u64> = points
        .iter()
        .map(|p| p["t_switch"].as_u64().unwrap())
        .collect();
    assert_eq!(at, [0, 500, 1000]);
    for p in points {
        let fd = &p["metrics"]["FD-animal-mnist"];
        assert_eq!(fd["values"].as_array().unwrap().len(), 2, "{p}");
        assert!(fd["mean"].as_f64().unwrap().is_finite());
    }
    assert!(dir.join("report/forgetting.png").is_file());
    // A report is never written over.
    let err = run_err(&strs(&args("0")));
    assert!(err.contains("--out"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
