//! Diff-Tuning's knowledge bank: images sampled once from the pretrained model before fine-tuning,
//! which the `diff-tuning` method replays (with the null label, timesteps near the data) so that
//! the model keeps what it knew there.
//!
//! A bank is an image folder ([`crate::data::Dataset::from_folder`]'s layout: a sub-folder per
//! class), so any data source can serve as one (real source images, for the ablation), with a
//! manifest, [`MANIFEST`], that records how it was made.

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tensor::{Error, Generator, Result};

use crate::data::save_image_folder;
use crate::files::{io_error, write_atomic};
use crate::run::{generate_chunked, LoadedModel, SampleSettings, Stage};

/// The file in a bank folder that records how it was made.
pub const MANIFEST: &str = "bank.json";

/// Images per call of the sampler: the unit of the progress bar.
const CHUNK: usize = 100;

/// How a bank was made, as [`MANIFEST`] records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BankManifest {
    /// The pretrained model the images were sampled from, as given.
    pub init: String,
    /// Its training step.
    pub step: u64,
    /// How many images.
    pub size: usize,
    /// The sampler: a respacing such as `ddim50`.
    pub sampler: String,
    /// DDIM's eta.
    pub eta: f64,
    /// The classifier-free guidance scale.
    pub cfg_scale: f64,
    /// The seed of the class draws and the noise.
    pub seed: u64,
    /// The folders' classes: the source model's, or `unconditional` for a model without labels.
    pub classes: Vec<String>,
    /// How many images of each class (drawn uniformly at random).
    pub per_class: Vec<usize>,
}

/// Samples `size` images from `model` (loaded from `init`) with `settings` into a new image
/// folder `out`, with a [`MANIFEST`]: classes drawn uniformly at random (none for an
/// unconditional model), noise seeded by `seed`. The images are written to a temporary folder
/// beside `out` and renamed into place once complete, so `out` is a whole bank or nothing; an
/// existing `out` is never written into.
pub fn make_bank(
    model: &LoadedModel,
    init: &str,
    settings: &SampleSettings,
    size: usize,
    seed: u64,
    out: &Path,
    progress: bool,
) -> Result<BankManifest> {
    if out.exists() {
        return Err(Error::msg(format!(
            "--out {}: already exists; a bank is written to a new folder only",
            out.display()
        )));
    }
    if size == 0 {
        return Err(Error::msg("--size: a bank needs at least one image"));
    }
    tensor::limits::SAMPLES.check(size as u128, "--size (bank images)")?;
    // Checked before sampling, and never removed: the folder may be someone's.
    let partial = partial_path(out);
    if partial.exists() {
        return Err(Error::msg(format!(
            "{}: already exists (a bank interrupted before?); remove it or choose another --out",
            partial.display()
        )));
    }
    let process = model.state.config.diffusion_config()?;
    settings.validate(process.steps)?;
    let network = &model.network;
    let (classes, labels) = if network.conditional() {
        let mut gen = Generator::new(seed);
        let n = network.classes();
        let labels: Vec<i64> = (0..size)
            .map(|_| gen.rng().random_range(0..n) as i64)
            .collect();
        (model.state.classes.clone(), labels)
    } else {
        (vec!["unconditional".to_string()], vec![0; size])
    };
    let bar = progress.then(|| {
        eprintln!(
            "sampling a bank of {size} images from {init} ({}, eta {}, guidance {})",
            settings.sampler, settings.eta, settings.cfg_scale
        );
        crate::progress::bar(size as u64, "sample")
    });
    let stage = Stage::new(network, &model.params);
    // Noise seeds from `seed + 1`: `seed` drew the classes.
    let images = generate_chunked(
        &[stage],
        &process,
        settings,
        &labels,
        seed.wrapping_add(1),
        CHUNK,
        bar.as_ref(),
    )?;
    if let Some(bar) = bar {
        bar.finish();
    }
    let mut per_class = vec![0; classes.len()];
    for &l in &labels {
        per_class[l as usize] += 1;
    }
    let manifest = BankManifest {
        init: init.to_string(),
        step: model.state.step,
        size,
        sampler: settings.sampler.clone(),
        eta: settings.eta,
        cfg_scale: settings.cfg_scale,
        seed,
        classes,
        per_class,
    };
    save_image_folder(&partial, &images, &labels, &manifest.classes)?;
    let json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::msg(format!("{MANIFEST}: {e}")))?;
    write_atomic(&partial.join(MANIFEST), json.as_bytes())?;
    if out.exists() {
        return Err(Error::msg(format!(
            "--out {}: appeared while the bank was sampled; the bank is left in {}",
            out.display(),
            partial.display()
        )));
    }
    std::fs::rename(&partial, out).map_err(io_error(out))?;
    Ok(manifest)
}

/// The temporary folder a bank for `out` is written to: beside it, named after it.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}
