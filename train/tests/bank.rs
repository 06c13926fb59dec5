//! `difftune bank` end to end: a knowledge bank sampled from a tiny pretrained DiT is an image
//! folder with its manifest, made the same way twice from the same seed, never written over an
//! existing folder, and a `diff-tuning` run trains on it.

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
    std::fs::remove_dir_all(dir).unwrap();
}
