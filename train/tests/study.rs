//! `difftune study` end to end on a tiny grid: 2 variants x 2 seeds of a tiny DiT, a few steps,
//! a handful of samples judged by the committed Animal-MNIST classifier against a small image
//! folder. The results match the runs' eval.json; a second invocation skips everything; an
//! interrupted run continues; a bad variant key is named with its variant.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use train::run::{checkpoint, metrics, train, RunConfig, TrainOptions};
use train::study::runner::read_record;
use train::study::Study;

use common::{difftune, image_folder, scratch};

const STEPS: u64 = 8;

/// The end-to-end tests' tiny DiT (see `common::tiny_config`), `STEPS` long; the study sets
/// each run's folder.
fn tiny_config(data: &Path) -> RunConfig {
    RunConfig {
        steps: STEPS,
        warmup_steps: 2,
        out: RunConfig::default().out,
        ..common::tiny_config(data, Path::new(""))
    }
}

/// A study of `variants` on the tiny config, evaluated with 20 samples (2 per class) against
/// the image folder; written to `dir/study.json`.
fn study_file(dir: &Path, data: &Path, variants: Value) -> PathBuf {
    let classifier =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/classifiers/animal-mnist.safetensors");
    let study = json!({
        "base": serde_json::to_value(tiny_config(data)).unwrap(),
        "variants": variants,
        "seeds": [0, 1],
        "x_label": "learning rate",
        "eval": {
            "samples": 20,
            "reference": data,
            "classifier": classifier,
            "cache": dir.join("cache"),
            "kid_subsets": 4,
            "kid_subset_size": 10,
            "is_splits": 2
        },
        "out": dir.join("study")
    });
    let path = dir.join("study.json");
    std::fs::write(&path, serde_json::to_string_pretty(&study).unwrap()).unwrap();
    path
}

/// Runs the study of `file`, failing with its standard error unless it succeeds.
fn study_ok(file: &Path) {
    let out = difftune_study(file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn difftune_study(file: &Path) -> Output {
    difftune(&["study", &file.display().to_string(), "--quiet"])
        .output()
        .unwrap()
}

#[test]
fn a_study_runs_every_variant_and_seed_resumes_and_skips() {
    let dir = scratch("grid");
    let data = image_folder(&dir, usize::MAX, 3);
    let variants = json!([
        {"name": "slow", "overrides": {"lr": 0.001}, "x": 0.001},
        {"name": "fast", "overrides": {"lr": 0.003}, "x": 0.003}
    ]);
    let file = study_file(&dir, &data, variants);
    let study = Study::from_file(&file).unwrap();

    // An interrupted study: one run stopped at its first checkpoint (step 4 of 8).
    let configs = study.configs().unwrap();
    let partial = study.run_config(&configs[1].1, "fast", 1);
    let stopped = RunConfig {
        steps: 4,
        ..partial.clone()
    };
    train(&stopped, &TrainOptions::default()).unwrap();

    let out = difftune_study(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 runs trained and evaluated now, 0 already done"),
        "{stdout}"
    );

    // The stopped run went on from step 4 (its log has each step once) to the end.
    let last = checkpoint::latest(&partial.out).unwrap().unwrap();
    assert_eq!(checkpoint::load_state(&last).unwrap().step, STEPS);
    let logged: Vec<u64> = metrics::read(&partial.out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|l| l.step)
        .collect();
    assert_eq!(logged, [2, 4, 6, 8]);

    // Every run is evaluated, and the gathered numbers are its eval.json's.
    let results = train::study::gather(&study).unwrap();
    assert_eq!(results.len(), 2);
    for (variant, result) in study.variants.iter().zip(&results) {
        assert_eq!(result.name, variant.name);
        assert!(
            result.steps_per_sec.unwrap() > 0.0 && result.trainable.as_ref().unwrap().trainable > 0
        );
        for (i, &seed) in study.seeds.iter().enumerate() {
            let record = read_record(&study.run_dir(&variant.name, seed))
                .unwrap()
                .unwrap();
            assert_eq!(record.step, STEPS);
            assert_eq!(record.metrics.len(), result.metrics.len());
            for (name, values) in &result.metrics {
                assert_eq!(record.metrics[name].as_f64(), Some(values[i]), "{name}");
            }
        }
        let names: Vec<&str> = result.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"FD-animal-mnist") && names.contains(&"class_accuracy"));
    }
    for file in ["samples.png", "metrics.png", "sweep.png"] {
        assert!(study.out.join(file).is_file(), "{file}");
    }
    check_reports(&study);

    // A second invocation finds everything done.
    let again = train::study::run(&study, "again", false).unwrap();
    assert_eq!((again.counts.ran, again.counts.skipped), (0, 4));
    assert_eq!(again.results, results);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_study_merges_and_ensembles_its_hidden_range_runs_and_shares_its_runs_between_processes() {
    let dir = scratch("deme-study");
    let data = image_folder(&dir, usize::MAX, 3);
    // The pretrained model all runs start from.
    let mut source = common::tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();
    let base = train::run::export::export(&source.out, &dir.join("pretrained.safetensors"));
    base.unwrap();
    let range = |r: usize| {
        json!({"name": format!("range-{r}"), "hidden": true, "overrides": {
            "init": dir.join("pretrained.safetensors"), "steps": 4,
            "method": {"name": "deme", "ranges": 2, "range": r}}})
    };
    let parts = json!(["range-0", "range-1"]);
    let variants = json!([
        {"name": "pretrained", "model": dir.join("pretrained.safetensors")},
        range(0),
        range(1),
        {"name": "ensemble", "ensemble": parts},
        {"name": "merged", "merge": {"runs": parts}},
        {"name": "merged-grid", "merge": {"runs": parts, "weights": "grid", "grid": [0.5, 1],
            "validation": {"reference": format!("{}:1", data.display()), "samples": 10}}}
    ]);
    let file = study_file(&dir, &data, variants);
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    json["paired_with"] = json!("pretrained");
    std::fs::write(&file, json.to_string()).unwrap();
    let study = Study::from_file(&file).unwrap();

    // Two processes share the study's runs; whichever finishes last writes the results (a
    // third invocation writes them should both have finished at once).
    let [a, b] = [0, 1].map(|_| {
        difftune(&["study", &file.display().to_string(), "--quiet"])
            .spawn()
            .unwrap()
    });
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let last = train::study::run(&study, "again", false).unwrap();
    assert_eq!(
        (last.counts.ran, last.counts.busy),
        (0, 0),
        "{:?}",
        last.counts
    );
    assert_eq!(last.counts.skipped, 2 * 6);
    // Hidden runs are trained, not evaluated nor reported.
    for seed in [0, 1] {
        let run = study.run_dir("range-1", seed);
        assert!(checkpoint::latest(&run).unwrap().is_some());
        assert!(read_record(&run).unwrap().is_none());
        assert!(study
            .run_dir("merged", seed)
            .join("merged.safetensors")
            .is_file());
    }
    let names: Vec<String> = last.results.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["pretrained", "ensemble", "merged", "merged-grid"]);
    assert!(last
        .results
        .iter()
        .all(|r| r.trainable.is_none() && r.steps_per_sec.is_none()));
    let md = std::fs::read_to_string(study.out.join("results.md")).unwrap();
    assert!(
        md.contains("| merged | — (merge of range-0, range-1, weights uniform) | — |"),
        "{md}"
    );
    // Each metric's table compares every variant with the pretrained model seed by seed.
    assert!(
        md.contains("| variant | FD-animal-mnist | minus pretrained, seed by seed |"),
        "{md}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(study.out.join("results.json")).unwrap())
            .unwrap();
    let fd = |v: usize| report["variants"][v]["metrics"]["FD-animal-mnist"].clone();
    let gaps = fd(2)["paired_difference"]["values"].clone();
    assert_eq!(gaps.as_array().unwrap().len(), 2, "{report}");
    for (seed, gap) in gaps.as_array().unwrap().iter().enumerate() {
        let own = fd(2)["values"][seed].as_f64().unwrap();
        let base = fd(0)["values"][seed].as_f64().unwrap();
        assert!((gap.as_f64().unwrap() - (own - base)).abs() < 1e-12);
    }
    assert_eq!(fd(0)["paired_difference"]["mean"], json!(0.0));
    // The grid merge records its search in the merged file.
    let merged = study.run_dir("merged-grid", 0).join("merged.safetensors");
    let st = tensor::safetensors::SafeTensorsFile::open(&merged).unwrap();
    let record: Value = serde_json::from_str(&st.metadata()["difftune.merge"]).unwrap();
    assert_eq!(record["grid"].as_array().unwrap().len(), 4, "{record}");

    // A merge whose definition changed is made again, not taken from the old file.
    json["variants"][4]["merge"]["weights"] = json!("1,0");
    std::fs::write(&file, json.to_string()).unwrap();
    let study = Study::from_file(&file).unwrap();
    let again = train::study::run(&study, "changed", false).unwrap();
    assert_eq!(again.counts.ran, 2, "{:?}", again.counts);
    let merged = study.run_dir("merged", 0).join("merged.safetensors");
    let st = tensor::safetensors::SafeTensorsFile::open(&merged).unwrap();
    let record: Value = serde_json::from_str(&st.metadata()["difftune.merge"]).unwrap();
    assert_eq!(record["weights"], json!([1.0, 0.0]), "{record}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A variant `of` another evaluates that variant's runs again under its own `eval` keys (ANL's
/// masked sampling at another fraction, here another sampler), without training anything.
#[test]
fn an_of_variant_evaluates_another_variants_runs_under_its_own_eval() {
    let dir = scratch("of");
    let data = image_folder(&dir, usize::MAX, 3);
    let variants = json!([
        {"name": "a", "x": 1},
        {"name": "a-ddim2", "of": "a", "eval": {"sampler": "ddim2", "samples": 10}}
    ]);
    let file = study_file(&dir, &data, variants);
    let study = Study::from_file(&file).unwrap();
    study_ok(&file);
    for seed in [0, 1] {
        let own = read_record(&study.run_dir("a-ddim2", seed))
            .unwrap()
            .unwrap();
        assert_eq!(
            (own.protocol.sampler.as_deref(), own.protocol.samples),
            (Some("ddim2"), 10)
        );
        assert_eq!(own.report["images"], json!(10));
        let base = read_record(&study.run_dir("a", seed)).unwrap().unwrap();
        assert_eq!((base.protocol.sampler, base.protocol.samples), (None, 20));
        assert!(
            !study.run_dir("a-ddim2", seed).join("checkpoints").exists(),
            "nothing is trained again"
        );
    }
    let md = std::fs::read_to_string(study.out.join("results.md")).unwrap();
    assert!(md.contains("the runs of a, evaluated with"), "{md}");
    let again = train::study::run(&study, "again", false).unwrap();
    assert_eq!(again.counts.ran, 0);

    // `eval` on a trained variant, `of` a variant that is not a trained one: refused, named.
    for (variant, message) in [
        (
            json!({"name": "m", "eval": {"samples": 10}}),
            "`eval` applies to variants that are not trained",
        ),
        (
            json!({"name": "m", "of": "nope"}),
            "`nope` is not a trained variant",
        ),
        (
            json!({"name": "m", "of": "a", "eval": {"mask": 2}}),
            "`mask`",
        ),
    ] {
        let file = study_file(&dir, &data, json!([{"name": "a"}, variant]));
        let err = Study::from_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("variant `m`") && err.contains(message),
            "{message}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A model trained on its 28x28 images padded by 2 is a 32x32 model, judged through the 28x28
/// classifier by the centre of its samples; `at_step` variants evaluate its snapshots (and are
/// evaluated again when they name another step), drawn with its final weights as one named
/// curve of `sweep.png`.
#[test]
fn at_step_variants_evaluate_snapshots_of_a_padded_run_on_a_named_curve() {
    let dir = scratch("at-step");
    let data = image_folder(&dir, usize::MAX, 3);
    let padded = json!({"pad": 2, "model": {"patch_size": 4}, "snapshots": [4, 6]});
    let mut fast = padded.clone();
    fast["lr"] = json!(0.003);
    let variants = json!([
        {"name": "a", "overrides": padded, "x": STEPS, "curve": "a"},
        {"name": "a-early", "of": "a", "at_step": 4, "x": 4, "curve": "a"},
        {"name": "b", "overrides": fast, "x": STEPS}
    ]);
    let file = study_file(&dir, &data, variants);
    let study = Study::from_file(&file).unwrap();
    study_ok(&file);
    let fd = |r: &train::study::runner::EvalRecord| r.metrics["FD-animal-mnist"].as_f64();
    for seed in [0, 1] {
        let run = study.run_dir("a", seed);
        let last = checkpoint::latest(&run).unwrap().unwrap();
        assert_eq!(
            checkpoint::load_state(&last).unwrap().image_shape,
            [1, 32, 32]
        );
        assert!(train::run::snapshot_path(&run, 4).is_file());
        let early = read_record(&study.run_dir("a-early", seed))
            .unwrap()
            .unwrap();
        let final_ = read_record(&run).unwrap().unwrap();
        assert_eq!((early.step, final_.step), (4, STEPS));
        assert_eq!(early.report["images"], json!(20));
        assert_ne!(
            fd(&early),
            fd(&final_),
            "the snapshot is not the final model"
        );
    }
    let md = std::fs::read_to_string(study.out.join("results.md")).unwrap();
    assert!(
        md.contains("| variant | learning rate | curve | trainable parameters | steps/s |")
            && md.contains("| a-early | 4 | a | — (the runs of a at step 4) | — |")
            && md.contains("| b | 8 | — |"),
        "{md}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(study.out.join("results.json")).unwrap())
            .unwrap();
    let curves: Vec<&Value> = (0..3).map(|v| &report["variants"][v]["curve"]).collect();
    assert_eq!(curves, [&json!("a"), &json!("a"), &Value::Null]);
    assert!(study.out.join("sweep.png").is_file());
    let again = train::study::run(&study, "again", false).unwrap();
    assert_eq!((again.counts.ran, again.counts.skipped), (0, 6));

    // Another step is another evaluation; nothing is trained again.
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    json["variants"][1]["at_step"] = json!(6);
    std::fs::write(&file, json.to_string()).unwrap();
    let study = Study::from_file(&file).unwrap();
    let moved = train::study::run(&study, "at 6", false).unwrap();
    assert_eq!((moved.counts.ran, moved.counts.skipped), (2, 4));
    let record = read_record(&study.run_dir("a-early", 0)).unwrap().unwrap();
    assert_eq!(record.step, 6);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn derived_variants_are_checked_before_anything_runs() {
    let dir = scratch("deme-bad");
    let data = image_folder(&dir, 2, 1);
    let eval_reference = data.display().to_string();
    let cases = [
        (
            json!({"name": "m", "merge": {"runs": ["nope"]}}),
            "`nope` is not a trained variant",
        ),
        (
            json!({"name": "m", "merge": {"runs": ["a"], "weights": "1,2"}}),
            "2 weights for 1 runs",
        ),
        (
            json!({"name": "m", "merge": {"runs": ["a"], "weights": "grid"}}),
            "other than the evaluation's",
        ),
        (
            json!({"name": "m", "merge": {"runs": ["a"], "weights": "grid",
            "validation": {"reference": eval_reference}}}),
            "other than the evaluation's",
        ),
        (
            json!({"name": "m", "ensemble": ["a"], "model": "x"}),
            "one of `model`",
        ),
        (
            json!({"name": "m", "model": "/no/such/model"}),
            "no such file",
        ),
        (
            json!({"name": "m", "ensemble": ["a"], "hidden": true}),
            "`hidden`",
        ),
    ];
    for (variant, message) in cases {
        let file = study_file(&dir, &data, json!([{"name": "a"}, variant]));
        let err = Study::from_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("variant `m`") && err.contains(message),
            "{message}: {err}"
        );
    }
    let file = study_file(&dir, &data, json!([{"name": "a"}]));
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    json["paired_with"] = json!("nope");
    std::fs::write(&file, json.to_string()).unwrap();
    let err = Study::from_file(&file).unwrap_err().to_string();
    assert!(
        err.contains("`paired_with`") && err.contains("`nope`"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// results.json and results.md hold each run's eval.json numbers, their mean and 95% interval.
fn check_reports(study: &Study) {
    let text = std::fs::read_to_string(study.out.join("results.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let md = std::fs::read_to_string(study.out.join("results.md")).unwrap();
    assert!(
        md.contains("difftune study") && md.contains("seeds 0, 1"),
        "{md}"
    );
    let variants = json["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    let mut fd_means = Vec::new();
    for (variant, reported) in study.variants.iter().zip(variants) {
        assert_eq!(reported["name"], variant.name.as_str());
        assert!(reported["trainable"].as_u64().unwrap() > 0);
        assert!(reported["steps_per_sec"].as_f64().unwrap() > 0.0);
        let records: Vec<_> = study
            .seeds
            .iter()
            .map(|&s| {
                read_record(&study.run_dir(&variant.name, s))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let metrics = reported["metrics"].as_object().unwrap();
        assert_eq!(metrics.len(), records[0].metrics.len());
        for (name, m) in metrics {
            let (a, b) = (
                records[0].metrics[name].as_f64().unwrap(),
                records[1].metrics[name].as_f64().unwrap(),
            );
            assert_eq!(m["values"], json!([a, b]), "{name}");
            let mean = m["mean"].as_f64().unwrap();
            assert!(
                (mean - (a + b) / 2.0).abs() <= 1e-12 * mean.abs().max(1.0),
                "{name}"
            );
            // Two seeds: t(0.975, 1) = 12.706 times the standard error |a - b| / 2.
            let half = m["half_width"].as_f64().unwrap();
            let expected = 12.7062 * (a - b).abs() / 2.0;
            assert!(
                (half - expected).abs() <= 1e-4 * expected.max(1e-12),
                "{name}: {half}"
            );
            let cell = format!("{}", train::eval::interval::Interval::of(&[a, b]).unwrap());
            assert!(
                md.contains(&format!("| {cell} |")),
                "{name}: {cell} not in\n{md}"
            );
            if name.starts_with("FD-") {
                fd_means.push(mean);
            }
        }
    }
    // Lower FD is better: the variant with the smaller mean is marked.
    let best = if fd_means[0] <= fd_means[1] { 0 } else { 1 };
    assert_eq!(
        json["best"]["FD-animal-mnist"],
        study.variants[best].name.as_str()
    );
    let fd_table = md
        .split("## FD-animal-mnist (lower is better)")
        .nth(1)
        .unwrap();
    let fd_table = fd_table.split("## ").next().unwrap();
    let marked = format!("**{}** (best)", study.variants[best].name);
    assert!(fd_table.contains(&marked), "{fd_table}");
}

#[test]
fn a_bad_variant_key_is_named_with_its_variant_before_anything_runs() {
    let dir = scratch("bad");
    // The check reads no image: an empty folder stands for the data.
    let data = dir.join("images");
    std::fs::create_dir_all(&data).unwrap();
    let variants = json!([
        {"name": "ok"},
        {"name": "typo", "overrides": {"trainable": {"kind": "lora", "rnak": 2}}}
    ]);
    let file = study_file(&dir, &data, variants);
    let out = difftune_study(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("variant `typo`") && err.contains("rnak"),
        "{err}"
    );
    assert!(
        !dir.join("study").exists(),
        "a run started before the check"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_committed_studies_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("configs/studies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("\"variants\""))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Parsed without `Study::validate`, whose paths are relative to the repository's root:
        // a base config file is read from there and put inline.
        let mut study: Study = serde_json::from_str(&text).unwrap();
        if let Value::String(base) = &study.base {
            study.base =
                serde_json::from_str(&std::fs::read_to_string(root.join(base)).unwrap()).unwrap();
        }
        let configs = study.configs().unwrap();
        let trained = study.variants.iter().filter(|v| v.is_trained()).count();
        assert_eq!(configs.len(), trained, "{}", file.display());
        for v in &study.variants {
            for part in v.parts() {
                assert!(
                    configs.iter().any(|(t, _)| &t.name == part),
                    "{}",
                    file.display()
                );
            }
            if let Some(model) = &v.model {
                assert!(root.join(model).exists(), "{}", model.display());
            }
        }
        assert!(root.join(&study.eval.classifier).is_file());
    }
}

/// A DiT with control metadata, trained on random crops, reports its control leakage: the
/// samples under each control of the sweep, judged by the classifier.
#[test]
fn the_leakage_check_reports_per_control_and_headline_numbers() {
    let dir = scratch("leakage");
    let data = image_folder(&dir, usize::MAX, 3);
    let variants = json!([{"name": "cross", "overrides": {
        "crop_scale": 0.6,
        "model": {"control": true, "conditioning": "cross_attention", "class_tokens": 2}
    }}]);
    let file = study_file(&dir, &data, variants);
    let mut study: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    study["seeds"] = json!([0]);
    study["eval"]["leakage"] = json!({
        "controls": [[1, 0, 0, 0], [0.6, 0.2, 0.2, 0], [1, 0, 0, 1]],
        "samples": 10
    });
    std::fs::write(&file, study.to_string()).unwrap();
    study_ok(&file);
    let study = Study::from_file(&file).unwrap();
    let record = read_record(&study.run_dir("cross", 0)).unwrap().unwrap();
    let leakage = &record.report["leakage"];
    assert_eq!(leakage["accuracy"].as_array().unwrap().len(), 3);
    let shift = leakage["shift"].as_array().unwrap();
    assert_eq!(shift[0], json!(0.0), "the reference is its own reference");
    let headline = record.metrics["leak_shift"].as_f64().unwrap();
    let mean = (shift[1].as_f64().unwrap() + shift[2].as_f64().unwrap()) / 2.0;
    assert!((headline - mean).abs() < 1e-12, "{headline} {mean}");
    assert!(record.metrics["leak_accuracy"].as_f64().unwrap() >= 0.0);
    let md = std::fs::read_to_string(study.out.join("results.md")).unwrap();
    assert!(md.contains("## leak_shift (lower is better)"), "{md}");

    // A sweep of one control is refused, named.
    let mut bad: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    bad["eval"]["leakage"]["controls"] = json!([[1, 0, 0, 0]]);
    std::fs::write(&file, bad.to_string()).unwrap();
    let err = Study::from_file(&file).unwrap_err().to_string();
    assert!(err.contains("leakage.controls"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
