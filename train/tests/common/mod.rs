#![allow(dead_code)] // Each test binary uses a part of it.
//! What the end-to-end tests of `train` share: small image folders of real data, a tiny DiT.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use train::data::{save_image_folder, Dataset};
use train::run::{DitSettings, ModelConfig, RunConfig, UnetSettings};

/// A fresh scratch folder for the test `name` (of this process).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difftune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `difftune` binary with `args`, its output captured.
pub fn difftune(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_difftune"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs difftune and fails with its standard error unless it succeeds; its standard output.
pub fn run_ok(args: &[&str]) -> String {
    let out = difftune(args).output().unwrap();
    assert!(
        out.status.success(),
        "difftune {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs difftune and fails unless it fails; its standard error.
pub fn run_err(args: &[&str]) -> String {
    let out = difftune(args).output().unwrap();
    assert!(
        !out.status.success(),
        "difftune {} succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `config` to `path`; the path as text.
pub fn write_config(path: &Path, config: &RunConfig) -> String {
    std::fs::write(path, config.to_json()).unwrap();
    path.display().to_string()
}

/// `per_class` Animal-MNIST images of each of its first `classes` classes (all of them when
/// `classes` is larger), as an image folder `dir/images`.
pub fn image_folder(dir: &Path, classes: usize, per_class: usize) -> PathBuf {
    let data = Dataset::animal_mnist().unwrap();
    let mut picked = Vec::new();
    for class in 0..classes.min(data.classes().len()) as i64 {
        picked.extend(
            (0..data.len())
                .filter(|&i| data.labels()[i] == class)
                .take(per_class),
        );
    }
    let subset = data.subset(&picked).unwrap();
    let images = train::data::transform::scale(&subset.images_tensor().unwrap()).unwrap();
    let root = dir.join("images");
    save_image_folder(&root, &images, subset.labels(), subset.classes()).unwrap();
    root
}

/// A DiT small enough to train in the dev profile in seconds.
pub fn tiny_config(data: &Path, out: &Path) -> RunConfig {
    let mut c = RunConfig {
        data: data.display().to_string(),
        color: "gray".into(),
        model: ModelConfig::Dit(DitSettings {
            patch_size: 7,
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            ..DitSettings::default()
        }),
        batch_size: 8,
        warmup_steps: 5,
        checkpoint_every: 4,
        log_every: 2,
        out: out.to_path_buf(),
        ..RunConfig::default()
    };
    c.sample.sampler = "ddim4".into();
    c.sample.per_class = 1;
    c.sample.cfg_scale = 1.0;
    c
}

/// The DiT settings of a config that has a DiT.
pub fn dit(c: &mut RunConfig) -> &mut DitSettings {
    match &mut c.model {
        ModelConfig::Dit(d) => d,
        other => panic!("not a DiT: {other:?}"),
    }
}

/// A U-Net small enough to train in the dev profile in seconds: 28 and 14 pixel levels of 8 and
/// 16 channels, attention at the coarser one.
pub fn tiny_unet(data: &Path, out: &Path, conditional: bool) -> RunConfig {
    let mut c = tiny_config(data, out);
    c.model = ModelConfig::Unet(UnetSettings {
        channels: vec![8, 16],
        attention: vec![false, true],
        head_dim: 8,
        norm_groups: 4,
        conditional,
        ..UnetSettings::default()
    });
    c.steps = 4;
    c.checkpoint_every = 2;
    if !conditional {
        c.sample.cfg_scale = 1.0;
    }
    c
}
