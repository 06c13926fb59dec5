//! DeMe end to end on tiny DiTs: a `deme` run per timestep range (projections, consistency),
//! `difftune merge` (uniform, given, grid: task arithmetic checked against the runs' own
//! weights), `difftune eval --ensemble`, and the bad inputs each refuses, named.

mod common;

use std::path::Path;

use tensor::safetensors::SafeTensorsFile;
use train::methods::merge::{Merge, MergeRecord, MERGE_KEY};
use train::methods::Method;
use train::run::{load_model, metrics, train, RunConfig, TrainOptions, Weights};

use common::{dit, image_folder, run_err, run_ok, scratch, tiny_config};

fn deme(ranges: usize, range: usize) -> Method {
    serde_json::from_value(serde_json::json!({
        "name": "deme", "ranges": ranges, "range": range
    }))
    .unwrap()
}

/// The largest absolute difference between two tensors' values.
fn gap(a: &tensor::Tensor, b: &tensor::Tensor) -> f64 {
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

#[test]
fn range_runs_merge_by_task_arithmetic_and_ensemble_by_timestep() {
    let dir = scratch("deme");
    let data = image_folder(&dir, usize::MAX, 2);
    let mut source = tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();

    // One run per range of N = 2, from the same pretrained weights.
    let tune = |range: usize| -> RunConfig {
        let mut c = tiny_config(&data, &dir.join(format!("range-{range}")));
        c.init = Some(source.out.clone());
        c.steps = 3;
        c.method = deme(2, range);
        train(&c, &TrainOptions::default()).unwrap();
        c
    };
    let runs = [tune(0), tune(1)];
    let lines = metrics::read(&runs[0].out.join("metrics.jsonl")).unwrap();
    assert!(lines.iter().all(|l| l.terms.contains_key("consistency")));
    let model = load_model(&runs[0].out, Weights::Ema).unwrap();
    let projection = model.params.tensor("blocks.1.projection.weight").unwrap();
    assert_eq!(projection.shape(), [32, 32]);
    let eye: Vec<f32> = (0..32 * 32)
        .map(|i| if i / 32 == i % 32 { 1.0 } else { 0.0 })
        .collect();
    assert_ne!(
        projection.to_vec::<f32>().unwrap(),
        eye,
        "the projection trains"
    );

    let path = |p: &Path| p.display().to_string();
    let [pre, r0, r1] = [&source.out, &runs[0].out, &runs[1].out].map(|p| path(p));
    let merge_args = |weights: &'static str, out: &str| -> Vec<String> {
        let args = [
            "merge",
            "--base",
            &pre,
            "--runs",
            &r0,
            &r1,
            "--weights",
            weights,
        ];
        [&args[..], &["--out", out]]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    };
    let merged = |weights: &'static str, out: &str, extra: &[&str]| {
        let out = path(&dir.join(out));
        let args = merge_args(weights, &out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&[&args[..], extra].concat());
        out
    };

    // Weights (1, 0) give the first run itself; uniform gives the mean of the two.
    let first = load_model(
        Path::new(&merged("1,0", "first.safetensors", &[])),
        Weights::Ema,
    )
    .unwrap();
    let uniform = load_model(
        Path::new(&merged("uniform", "u.safetensors", &[])),
        Weights::Ema,
    )
    .unwrap();
    let other = load_model(&runs[1].out, Weights::Ema).unwrap();
    for name in ["blocks.0.attn.qkv.weight", "blocks.1.projection.weight"] {
        let [a, b] = [&model, &other].map(|m| m.params.tensor(name).unwrap());
        assert!(
            gap(&first.params.tensor(name).unwrap(), &a) < 1e-6,
            "{name}"
        );
        let mean = a.add(&b).unwrap().mul_scalar(0.5).unwrap();
        assert!(
            gap(&uniform.params.tensor(name).unwrap(), &mean) < 1e-6,
            "{name}"
        );
    }
    // The base had identity projections: w = (0.5, 0.5) moves them halfway to each run's.
    let mut m = Merge::load(&source.out, &[runs[0].out.clone(), runs[1].out.clone()]).unwrap();
    m.set_weights(&[0.0, 0.0]).unwrap();
    let base = m.model.params.tensor("blocks.1.projection.weight").unwrap();
    assert_eq!(base.to_vec::<f32>().unwrap(), eye);

    // A grid search on a validation set keeps the combination of lowest FD.
    let classifier =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/classifiers/animal-mnist.safetensors");
    let validation = [
        "--grid",
        "0.5,1",
        "--samples",
        "10",
        "--sampler",
        "ddim2",
        "--reference",
        &path(&data),
        "--classifier",
        &path(&classifier),
        "--cache",
        &path(&dir.join("cache")),
    ];
    let grid = merged("grid", "grid.safetensors", &validation);
    let st = SafeTensorsFile::open(&grid).unwrap();
    let record: MergeRecord = serde_json::from_str(&st.metadata()[MERGE_KEY]).unwrap();
    assert_eq!(record.grid.len(), 4, "{record:?}");
    let best = record
        .grid
        .iter()
        .map(|p| p.fd)
        .fold(f64::INFINITY, f64::min);
    let chosen = record.grid.iter().find(|p| p.weights == record.weights);
    assert_eq!(chosen.map(|p| p.fd), Some(best), "{record:?}");
    assert_eq!(record.chosen_by, "grid");

    // The ensemble samples with every range's run; it needs each range exactly once.
    let (data_arg, classifier_arg, cache_arg) =
        (path(&data), path(&classifier), path(&dir.join("cache")));
    let eval = |runs: &[&str]| -> Vec<String> {
        let mut a = vec![
            "eval",
            "--samples",
            "10",
            "--sampler",
            "ddim2",
            "--ensemble",
        ];
        a.extend(runs);
        a.extend(["--reference", &data_arg, "--classifier", &classifier_arg]);
        a.extend([
            "--kid-subsets",
            "2",
            "--kid-subset-size",
            "5",
            "--cache",
            &cache_arg,
        ]);
        a.into_iter().map(String::from).collect()
    };
    let ok = eval(&[&r0, &r1]);
    assert!(run_ok(&ok.iter().map(String::as_str).collect::<Vec<_>>()).contains("FD"));
    for bad in [vec![&r0], vec![&r0, &r0], vec![&pre, &r1]] {
        let bad: Vec<&str> = bad.into_iter().map(String::as_str).collect();
        let args = eval(&bad);
        let err = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains("--ensemble"), "{err}");
    }

    // Refused, named: a run of another model, weights of the wrong length or not finite, an
    // existing output file.
    let mut wide = tiny_config(&data, &dir.join("wide"));
    dit(&mut wide).hidden_size = 48;
    wide.steps = 1;
    train(&wide, &TrainOptions::default()).unwrap();
    let out = path(&dir.join("never.safetensors"));
    let wide_run = path(&wide.out);
    let err = run_err(&[
        "merge", "--base", &pre, "--runs", &r0, &wide_run, "--out", &out,
    ]);
    assert!(err.contains(&wide_run) && err.contains("blocks.0"), "{err}");
    for weights in ["1,2,3", "1,inf", "a,b"] {
        let args = merge_args(weights, &out);
        let err = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains("--weights"), "{weights}: {err}");
    }
    let args = ["merge", "--base", &pre, "--runs", &r0, "--out", &grid];
    assert!(run_err(&args).contains("already exists"));
    assert!(!Path::new(&out).exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_range_options_are_refused_naming_the_key() {
    for (json, key) in [
        (
            r#"{"name": "deme", "ranges": 0, "range": 0}"#,
            "method.ranges",
        ),
        (
            r#"{"name": "deme", "ranges": 4, "range": 4}"#,
            "method.range",
        ),
        (
            r#"{"name": "deme", "ranges": 4, "range": 0, "full_prob": 1.5}"#,
            "method.full_prob",
        ),
        (
            r#"{"name": "deme", "ranges": 4, "range": 0, "consistency": -1}"#,
            "method.consistency",
        ),
    ] {
        let text = format!(r#"{{"method": {json}}}"#);
        let err = RunConfig::from_json_str(&text)
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
    let err = RunConfig::from_json_str(r#"{"method": {"name": "deme", "ranges": 2}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("range"), "{err}");
    // More ranges than the process has steps leave some empty.
    let method = deme(2000, 0);
    let err = method.streams(8, 1000).unwrap_err().to_string();
    assert!(err.contains("method.ranges"), "{err}");
}
