//! End-to-end runs of the training loop on tiny models: a killed run resumes to the same weights,
//! damaged checkpoints are refused, a tiny model overfits a small batch, bad configs are named.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tensor::safetensors;
use train::methods::{DiffTuningForm, Method, Trainable, TrainableReport};
use train::run::checkpoint::{self, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
use train::run::{
    load_model, metrics, snapshot_path, train, RunConfig, TrainOptions, Weights, TRAINABLE_FILE,
};

use common::{difftune, dit, image_folder, run_ok, scratch, tiny_config, write_config};

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> = safetensors::load(path)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_vec::<f32>().unwrap()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Polls `run` until its latest checkpoint is at `step` or later; that step, or `None` on timeout.
fn wait_for_checkpoint(run: &Path, step: u64, timeout: Duration) -> Option<u64> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let state = checkpoint::latest(run)
            .ok()
            .flatten()
            .and_then(|d| checkpoint::load_state(&d).ok());
        if let Some(s) = state.filter(|s| s.step >= step) {
            return Some(s.step);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Kills (SIGKILL: no clean-up) of the resumption test: 2 in CI; `DIFFTUNE_KILLS=20` on demand.
fn kills() -> u64 {
    std::env::var("DIFFTUNE_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(2)
}

/// Trains `config` whole into `dir/whole` and, killed and resumed [`kills`] times, into
/// `dir/killed`, and checks that both end with the same weights, moving average, optimizer state
/// and metric lines. Returns the two final checkpoints.
fn killed_run_matches_whole(dir: &Path, mut config: RunConfig) -> (PathBuf, PathBuf) {
    let kills = kills();
    // Room for every kill, a checkpoint (4 steps) apart at least, and a resumption after them.
    let steps = 60.max(8 * (kills + 2));
    config.steps = steps;
    config.out = dir.join("whole");
    let whole = write_config(&dir.join("whole.json"), &config);
    config.out = dir.join("killed");
    let killed = write_config(&dir.join("killed.json"), &config);

    run_ok(&["pretrain", "--config", &whole, "--quiet"]);

    // Each round resumes the run, waits for a checkpoint past the last one, lets it go on for a
    // few milliseconds more (so some kills land inside a checkpoint's write) and kills it.
    let mut last_step = 0;
    let mut survived = 0;
    for round in 0..kills {
        let mut args = vec!["pretrain", "--config", &killed, "--quiet"];
        if round > 0 {
            args.push("--resume");
        }
        let mut child = difftune(&args).spawn().unwrap();
        let seen = wait_for_checkpoint(&config.out, last_step + 1, Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(round * 7 % 23));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        last_step = seen.expect("no new checkpoint came in 5 minutes");
        let last =
            checkpoint::load_state(&checkpoint::latest(&config.out).unwrap().unwrap()).unwrap();
        last_step = last_step.max(last.step);
        assert!(
            running && last.step < steps,
            "the run finished (step {}) before kill {round} at {last_step}",
            last.step
        );
        survived += 1;
        if round == 0 {
            // Without --resume the run folder is not overwritten.
            let refused = difftune(&["pretrain", "--config", &killed, "--quiet"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success() && err.contains("--resume"),
                "{err}"
            );
        }
    }
    run_ok(&["pretrain", "--config", &killed, "--resume", "--quiet"]);

    let a = checkpoint::latest(&dir.join("whole")).unwrap().unwrap();
    let b = checkpoint::latest(&config.out).unwrap().unwrap();
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
        assert_eq!(
            tensors(&a.join(file)),
            tensors(&b.join(file)),
            "{file} differs"
        );
    }
    eprintln!("{survived} kills survived with identical weights");
    // One metric line per logged step, none lost or repeated across the kill, and the same ones.
    let lines = metrics::read(&config.out.join("metrics.jsonl")).unwrap();
    let steps_logged: Vec<u64> = lines.iter().map(|l| l.step).collect();
    assert_eq!(
        steps_logged,
        (1..=steps / 2).map(|i| 2 * i).collect::<Vec<_>>()
    );
    let whole_lines = metrics::read(&dir.join("whole/metrics.jsonl")).unwrap();
    let losses = |lines: &[metrics::MetricLine]| -> Vec<_> {
        lines.iter().map(|l| (l.loss, l.terms.clone())).collect()
    };
    assert_eq!(losses(&lines), losses(&whole_lines));
    assert!(config.out.join("samples.png").exists() && config.out.join("loss.png").exists());
    (a, b)
}

#[test]
fn a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let dir = scratch("resume");
    let data = image_folder(&dir, 4, 6);
    let (a, b) = killed_run_matches_whole(&dir, tiny_config(&data, Path::new("")));
    let lines = metrics::read(&dir.join("killed/metrics.jsonl")).unwrap();
    assert!(
        lines[0].terms.is_empty(),
        "one stream logs no per-stream loss"
    );

    // Damaged checkpoints are refused with the file named.
    let damage = |file: &str, f: &dyn Fn(&mut Vec<u8>)| -> String {
        let copy = dir.join(format!("damaged-{file}"));
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&b).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let mut bytes = std::fs::read(copy.join(file)).unwrap();
        f(&mut bytes);
        std::fs::write(copy.join(file), bytes).unwrap();
        match load_model(&copy, Weights::Ema) {
            Ok(_) => panic!("a damaged {file} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    let truncated = damage(MODEL_FILE, &|b| b.truncate(b.len() / 2));
    assert!(
        truncated.contains(MODEL_FILE) && truncated.contains("corrupt"),
        "{truncated}"
    );
    let flipped = damage(EMA_FILE, &|b| {
        let i = b.len() - 3;
        b[i] ^= 0x10;
    });
    assert!(
        flipped.contains(EMA_FILE) && flipped.contains("checksum"),
        "{flipped}"
    );
    let state = damage(STATE_FILE, &|b| b.truncate(b.len() - 10));
    assert!(state.contains(STATE_FILE), "{state}");

    // Fine-tuning on a domain with 2 classes starts from the pretrained average; the class table
    // (4 classes + null before, 2 + null now) is new.
    let target = image_folder(&dir.join("target"), 2, 4);
    let mut tune = tiny_config(&target, &dir.join("tuned"));
    tune.init = Some(dir.join("whole"));
    tune.steps = 1;
    tune.lr = 1e-12;
    tune.min_lr = 0.0;
    train(&tune, &TrainOptions::default()).unwrap();
    let tuned = checkpoint::latest(&tune.out).unwrap().unwrap();
    let before: std::collections::HashMap<_, _> = tensors(&a.join(EMA_FILE)).into_iter().collect();
    for (name, values) in tensors(&tuned.join(MODEL_FILE)) {
        if name.starts_with("y_embedder.") {
            assert_eq!(values.len(), 3 * 32, "{name}");
        } else if let Some(old) = before.get(&name) {
            let diff = old
                .iter()
                .zip(&values)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-6,
                "{name} moved by {diff} from the pretrained average"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two data sources, each loader at its own place in its own epoch (the bank's epoch is 15
/// steps, the target's 4), and two timestep samplers: a killed run still resumes exactly.
#[test]
fn a_run_with_two_data_sources_resumes_exactly_after_a_kill() {
    let dir = scratch("resume-two");
    let data = image_folder(&dir, 4, 6);
    let bank = image_folder(&dir.join("bank"), 10, 3);
    let mut config = tiny_config(&data, Path::new(""));
    config.method = Method::DiffTuning {
        bank: bank.display().to_string(),
        bank_share: 0.25,
        lambda: 0.5,
        tau: 1.0,
        tau_retention: None,
        form: DiffTuningForm::Sampled,
    };
    let (_, b) = killed_run_matches_whole(&dir, config);
    let state = checkpoint::load_state(&b).unwrap();
    // 60 steps or more of 2 bank images out of 30: the bank's loader is 4 epochs on at least.
    let bank_at = &state.other_loaders;
    assert!(
        bank_at.len() == 1 && bank_at[0].0 == "bank" && bank_at[0].1.epoch >= 3,
        "{bank_at:?}"
    );
    let lines = metrics::read(&dir.join("killed/metrics.jsonl")).unwrap();
    let keys: Vec<&String> = lines[0].terms.keys().collect();
    assert_eq!(keys, ["bank", "target"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The consistency term compares the model with a frozen copy of where it started: zero (and
/// so no change to the first step) until the model moves, then logged beside the loss.
#[test]
fn a_consistency_loss_starts_at_zero_and_is_logged_as_the_model_moves() {
    let dir = scratch("consistency");
    let data = image_folder(&dir, 2, 4);
    let mut source = tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();
    let run = |name: &str, consistency: f64, steps: u64| {
        let mut tune = tiny_config(&data, &dir.join(name));
        tune.init = Some(source.out.clone());
        tune.method = Method::Standard { consistency };
        tune.steps = steps;
        tune.log_every = 1;
        tune.checkpoint_every = steps;
        train(&tune, &TrainOptions::default()).unwrap();
        let latest = checkpoint::latest(&tune.out).unwrap().unwrap();
        let lines = metrics::read(&tune.out.join("metrics.jsonl")).unwrap();
        (tensors(&latest.join(MODEL_FILE)), lines)
    };
    let (plain, _) = run("plain-1", 0.0, 1);
    let (held, lines) = run("held-1", 10.0, 1);
    assert_eq!(
        plain, held,
        "a zero consistency term changed the first step"
    );
    assert_eq!(lines[0].terms["consistency"], 0.0);
    // Once the model has moved, the term pulls it: five steps end elsewhere than plain ones.
    let (held, lines) = run("held-5", 10.0, 5);
    assert_ne!(run("plain-5", 0.0, 5).0, held);
    let gaps: Vec<f64> = lines.iter().map(|l| l.terms["consistency"]).collect();
    assert!(
        gaps[0] == 0.0 && gaps[1..].iter().all(|g| *g > 0.0 && g.is_finite()),
        "{gaps:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_tiny_model_overfits_a_batch_of_eight_images() {
    let dir = scratch("overfit");
    let data = image_folder(&dir, 2, 4);
    let mut config = tiny_config(&data, &dir.join("run"));
    dit(&mut config).patch_size = 4;
    dit(&mut config).hidden_size = 64;
    dit(&mut config).class_dropout_prob = 0.0;
    config.steps = 800;
    config.lr = 2e-3;
    config.lr_decay = "constant".into();
    config.log_every = 10;
    config.checkpoint_every = 800;
    let report = train(&config, &TrainOptions::default()).unwrap();
    let lines = metrics::read(&config.out.join("metrics.jsonl")).unwrap();
    // The first 10 steps against the last 50 (the loss of a random timestep is noisy).
    let first = lines[0].loss;
    let last = lines[lines.len() - 5..].iter().map(|l| l.loss).sum::<f64>() / 5.0;
    assert!(
        first / last >= 10.0,
        "loss {first:.4} over the first 10 steps, {last:.4} over the last 50: not a 10x fall"
    );
    assert_eq!(report.steps, 800);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_configs_and_flags_are_named() {
    let dir = scratch("errors");
    let file = |name: &str, json: &str| -> Vec<String> {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        vec!["--config".into(), path.display().to_string()]
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (file("bad.json", r#"{ "stepz": 3 }"#), "stepz"),
        (file("floor.json", r#"{ "min_lr": -1e-5 }"#), "min_lr"),
        (
            file("above.json", r#"{ "lr": 1e-4, "min_lr": 1e-3 }"#),
            "min_lr",
        ),
        (
            file("decay.json", r#"{ "weight_decay": -0.1 }"#),
            "weight_decay",
        ),
        (
            file(
                "group.json",
                r#"{ "param_groups": [{ "params": "no.such.*" }] }"#,
            ),
            "param_groups[0].params",
        ),
        (
            file(
                "bank.json",
                r#"{ "method": { "name": "diff-tuning", "bank": "/no/such/bank" } }"#,
            ),
            "method.bank",
        ),
        (
            file(
                "share.json",
                r#"{ "method": { "name": "diff-tuning", "bank": "fashion-mnist", "bank_share": 1 } }"#,
            ),
            "method.bank_share",
        ),
        (
            file(
                "kind.json",
                r#"{ "model": { "kind": "unet", "patch_size": 2 } }"#,
            ),
            "patch_size",
        ),
        (
            file(
                "teacher.json",
                r#"{ "method": { "name": "standard", "consistency": 1 } }"#,
            ),
            "set `init`",
        ),
        (
            vec![
                "--config".into(),
                dir.join("missing.json").display().to_string(),
            ],
            "missing.json",
        ),
        (vec!["--device".into(), "gpu".into()], "gpu"),
        (vec!["--data".into(), "no-such-set".into()], "no-such-set"),
        (vec!["--lr=0".into()], "lr"),
        (vec!["--precision".into(), "bf16".into()], "precision"),
        // Without a GPU the device itself is refused, naming it; with one the run would start.
        (vec!["--device".into(), "cuda:99".into()], "cuda:99"),
    ];
    for (args, named) in cases {
        let mut all = vec!["pretrain".to_string(), "--quiet".into()];
        all.extend(args.iter().cloned());
        all.extend(["--out".into(), dir.join("out").display().to_string()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = difftune(&refs).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            err.contains(named),
            "{args:?}: the error does not name `{named}`: {err}"
        );
    }
    // `"out": ""` would be the current folder: refused before anything is written there.
    let here = RunConfig {
        out: PathBuf::new(),
        ..RunConfig::default()
    };
    let err = here.validate().unwrap_err().to_string();
    assert!(err.contains("`out`"), "{err}");
    let out = difftune(&["finetune", "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--init"), "{err}");
    let out = difftune(&["sample", dir.join("nothing").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nothing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A run with `pad` (and random crops) is a model of the padded size everywhere: its
/// checkpoint, its export, a run that starts from it. `image_size` downsamples a named set.
#[test]
fn a_padded_run_is_a_model_of_the_padded_size_and_named_sets_resize() {
    let dir = scratch("pad");
    let data = image_folder(&dir, 2, 4);
    let padded = |name: &str, pad: usize| {
        let mut c = tiny_config(&data, &dir.join(name));
        dit(&mut c).patch_size = 4;
        (c.pad, c.crop_scale, c.hflip, c.steps) = (pad, 0.5, true, 2);
        c
    };
    let config = padded("padded", 2);
    train(&config, &TrainOptions::default()).unwrap();
    let model = load_model(&config.out, Weights::Ema).unwrap();
    assert_eq!(model.state.image_shape, [1, 32, 32]);
    assert_eq!(model.network.image_shape(), [1, 32, 32]);
    let file = dir.join("padded.safetensors");
    train::run::export(&config.out, &file).unwrap();
    let exported = train::run::export::read_state(&file).unwrap();
    assert_eq!(exported.image_shape, [1, 32, 32]);
    let mut tune = padded("tuned", 2);
    tune.init = Some(file);
    train(&tune, &TrainOptions::default()).unwrap();
    let tuned = load_model(&tune.out, Weights::Ema).unwrap();
    assert_eq!(tuned.state.image_shape, [1, 32, 32]);

    let mut small = tiny_config(Path::new("animal-mnist"), &dir.join("small"));
    dit(&mut small).patch_size = 4;
    (small.image_size, small.steps) = (16, 1);
    train(&small, &TrainOptions::default()).unwrap();
    let model = load_model(&small.out, Weights::Ema).unwrap();
    assert_eq!(model.state.image_shape, [1, 16, 16]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `snapshots`: at each listed step the moving average is written as `difftune export` writes
/// it (LoRA merged, for a LoRA run tuning the first run's export), once: a run that passes the
/// step again keeps the file. A run resumed with other snapshots is refused, naming the key.
#[test]
fn snapshots_are_exported_models_written_once() {
    let dir = scratch("snapshots");
    let data = image_folder(&dir, 2, 4);
    let lora = Trainable::Lora {
        rank: 2,
        alpha: 2.0,
        targets: vec![],
    };
    // LoRA's factors learn nothing from scratch (a fresh DiT's zeroed modulation hides the
    // attention and MLP from the loss): it tunes the first run.
    let mut init = None;
    for (name, trainable) in [("full", Trainable::Full {}), ("lora", lora)] {
        let mut config = tiny_config(&data, &dir.join(name));
        (config.steps, config.checkpoint_every, config.snapshots) = (4, 4, vec![4, 1]);
        (config.trainable, config.init) = (trainable, init.take());
        train(&config, &TrainOptions::default()).unwrap();
        let snapshots = std::fs::read_dir(config.out.join("snapshots")).unwrap();
        assert_eq!(snapshots.count(), 2);
        let (first, last) = (snapshot_path(&config.out, 1), snapshot_path(&config.out, 4));
        let exported = dir.join(format!("{name}.safetensors"));
        train::run::export(&config.out, &exported).unwrap();
        assert!(tensors(&last) == tensors(&exported), "{name}");
        let early = load_model(&first, Weights::Ema).unwrap();
        assert_eq!(early.state.step, 1);
        // The LoRA run's snapshots differ in its merged weights, not only its class table.
        let moved = |a: &Path, b: &Path| -> Vec<String> {
            let (a, b) = (tensors(a), tensors(b));
            let pairs = a.into_iter().zip(b);
            pairs.filter(|(a, b)| a != b).map(|(a, _)| a.0).collect()
        };
        let changed = moved(&first, &last);
        assert!(
            changed.iter().any(|n| n.ends_with("attn.qkv.weight")),
            "{name}: {changed:?}"
        );

        // Started again from step 0 (its checkpoints lost), the run leaves both files alone.
        std::fs::write(&first, b"written at step 1").unwrap();
        std::fs::remove_dir_all(config.out.join("checkpoints")).unwrap();
        let resume = TrainOptions {
            resume: true,
            progress: false,
        };
        train(&config, &resume).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"written at step 1");
        assert!(tensors(&last) == tensors(&exported), "{name}");

        // Other snapshots (or none, a key the saved config leaves out) are another run.
        for other in [vec![2], vec![]] {
            let changed = RunConfig {
                snapshots: other,
                ..config.clone()
            };
            let err = train(&changed, &resume).unwrap_err().to_string();
            assert!(err.contains("snapshots (saved [4,1]"), "{err}");
        }
        init = Some(exported);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_diverged_run_writes_no_checkpoint_of_non_finite_weights() {
    let dir = scratch("diverged");
    let data = image_folder(&dir, 2, 4);
    let mut config = tiny_config(&data, &dir.join("run"));
    // A learning rate beyond f32's range: the first update makes the weights infinite while the
    // loss of that step was finite, so only the check before the checkpoint can see it.
    config.lr = 1e39;
    config.min_lr = 0.0;
    config.lr_decay = "constant".into();
    config.warmup_steps = 0;
    config.checkpoint_every = 1;
    config.steps = 3;
    let err = train(&config, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step 1") && err.contains("not finite") && err.contains("not checkpointed"),
        "{err}"
    );
    assert_eq!(checkpoint::latest(&config.out).unwrap(), None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_run_never_overwrites_a_folder_it_does_not_own_nor_shares_one() {
    let dir = scratch("folder");
    let data = image_folder(&dir, 2, 4);
    // A folder with someone's files: refused, and the files are untouched.
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("samples.png"), b"not ours").unwrap();
    let config = tiny_config(&data, &theirs);
    let err = train(&config, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("samples.png") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(theirs.join("samples.png")).unwrap(),
        b"not ours"
    );
    assert!(!theirs.join("config.json").exists());

    // A second run on the folder of a live run is refused while the first holds it.
    let mut config = tiny_config(&data, &dir.join("live"));
    config.steps = 1_000_000;
    let path = write_config(&dir.join("live.json"), &config);
    let mut first = difftune(&["pretrain", "--config", &path, "--quiet"])
        .spawn()
        .unwrap();
    let seen = wait_for_checkpoint(&config.out, 4, Duration::from_secs(300));
    // The same run, short (`steps` may change on resumption): were it let in, it would finish.
    config.steps = 8;
    let short = write_config(&dir.join("short.json"), &config);
    let second = difftune(&["pretrain", "--config", &short, "--resume", "--quiet"])
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    seen.expect("the first run wrote no checkpoint in 5 minutes");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("in use by another difftune run"),
        "{err}"
    );
    // Once the first is gone (killed: the OS released its lock), the folder resumes.
    run_ok(&["pretrain", "--config", &short, "--resume", "--quiet"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The weights a fine-tuning run starts from: the pretrained moving average over its model file.
fn pretrained_start(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let dir = checkpoint::latest(run).unwrap().unwrap();
    let mut start: std::collections::BTreeMap<_, _> =
        tensors(&dir.join(MODEL_FILE)).into_iter().collect();
    start.extend(tensors(&dir.join(EMA_FILE)));
    start
}

/// The model's output on fixed noisy images, timesteps and labels.
fn forward_once(m: &train::run::LoadedModel) -> tensor::Tensor {
    use tensor::{DType, Device, Generator, Tensor};
    let mut gen = Generator::new(5);
    let x = Tensor::randn(&[2, 1, 28, 28], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap();
    let t = Tensor::from_vec(vec![3i64, 700], &[2]).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1], &[2]).unwrap();
    let x = autograd::Var::constant(x);
    m.network
        .forward(&m.params, &x, &t, &y)
        .unwrap()
        .value()
        .clone()
}

#[test]
fn peft_runs_change_only_their_trainable_parameters() {
    let dir = scratch("peft");
    let data = image_folder(&dir, 2, 4);
    let mut source = tiny_config(&data, &dir.join("pretrained"));
    source.steps = 4;
    train(&source, &TrainOptions::default()).unwrap();
    let start = pretrained_start(&source.out);

    let lora = Trainable::Lora {
        rank: 2,
        alpha: 2.0,
        targets: vec![
            "blocks.*.attn.qkv.weight".into(),
            "blocks.*.mlp.fc2.weight".into(),
        ],
    };
    // Which parameters each kind trains, by name: the rule the run must follow.
    type Rule = fn(&str) -> bool;
    let kinds: [(Trainable, Rule); 3] = [
        (lora, |n| n.contains(".lora_")),
        (Trainable::Bitfit {}, |n| n.ends_with("bias")),
        (Trainable::Difffit {}, |n| {
            n.ends_with("bias")
                || n.ends_with("difffit_scale")
                || n == "y_embedder.embedding_table.weight"
        }),
    ];
    for (kind, trains) in kinds {
        let name = kind.name();
        let mut tune = tiny_config(&data, &dir.join(name));
        tune.init = Some(source.out.clone());
        tune.trainable = kind;
        tune.steps = 3;
        tune.warmup_steps = 0;
        tune.checkpoint_every = 3;
        if name == "difffit" {
            // A parameter group with no learning rate holds block 0's scale where it started.
            tune.param_groups =
                serde_json::from_str(r#"[{ "params": "blocks.0.difffit_scale", "lr_scale": 0 }]"#)
                    .unwrap();
        }
        let report = train(&tune, &TrainOptions::default()).unwrap();
        let saved: TrainableReport =
            serde_json::from_str(&std::fs::read_to_string(tune.out.join(TRAINABLE_FILE)).unwrap())
                .unwrap();
        assert_eq!(saved, report.trainable, "{name}");
        let tuned = tensors(
            &checkpoint::latest(&tune.out)
                .unwrap()
                .unwrap()
                .join(MODEL_FILE),
        );
        if name == "difffit" {
            let scale = |i: usize| {
                let name = format!("blocks.{i}.difffit_scale");
                tuned.iter().find(|(n, _)| *n == name).unwrap().1.clone()
            };
            assert_eq!((scale(0), scale(1) != [1.0]), (vec![1.0], true));
        }
        let (mut counted, mut moved) = (0, 0);
        for (param, values) in &tuned {
            if trains(param) {
                counted += values.len();
                moved += usize::from(start.get(param) != Some(values));
            } else {
                assert_eq!(
                    start.get(param),
                    Some(values),
                    "{name}: frozen `{param}` changed or is new"
                );
            }
        }
        assert_eq!(counted, saved.trainable, "{name}: the trainable count");
        assert!(moved > 0, "{name}: no trainable parameter moved");
        assert!(saved.trainable < saved.total / 2, "{name}: {}", saved);
        for added in &saved.added {
            assert!(
                trains(added) && !start.contains_key(added),
                "{name}: added `{added}`"
            );
        }
        // Exported with LoRA merged and DiffFit's scales folded: reference names only, the same
        // function, and never over an existing file.
        let file = dir.join(format!("{name}.safetensors"));
        let (run, out) = (tune.out.to_str().unwrap(), file.to_str().unwrap());
        run_ok(&["export", run, "--out", out]);
        let again = difftune(&["export", run, "--out", out]).output().unwrap();
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(
            !again.status.success() && err.contains("overwritten"),
            "{err}"
        );
        let names: Vec<String> = tensors(&file).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, start.keys().cloned().collect::<Vec<_>>(), "{name}");
        let (a, b) = (
            load_model(&tune.out, Weights::Ema).unwrap(),
            load_model(&file, Weights::Ema).unwrap(),
        );
        let (ya, yb) = (forward_once(&a), forward_once(&b));
        let scale = ya.max_abs_diff(&ya.zeros_like().unwrap()).unwrap();
        let diff = ya.max_abs_diff(&yb).unwrap();
        assert!(
            diff <= 1e-4 * scale,
            "{name}: the export computes another function ({diff})"
        );
    }

    // A fine-tuning run starts from an exported file as from a run folder.
    let mut from_file = tiny_config(&data, &dir.join("from-file"));
    from_file.init = Some(dir.join("difffit.safetensors"));
    from_file.steps = 1;
    train(&from_file, &TrainOptions::default()).unwrap();

    // A pretrained model that does not fit is refused, naming the tensors: one block too many
    // (missing), and another width (mis-shaped).
    let mut deeper = tiny_config(&data, &dir.join("deeper"));
    deeper.init = Some(source.out.clone());
    dit(&mut deeper).depth = 3;
    let err = train(&deeper, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.2.attn.qkv.weight") && err.contains("missing"),
        "{err}"
    );
    let mut wider = tiny_config(&data, &dir.join("wider"));
    wider.init = Some(source.out.clone());
    dit(&mut wider).hidden_size = 16;
    let err = train(&wider, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.attn.qkv.weight"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
