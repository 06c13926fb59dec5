//! Checkpoints: a folder per save, `step-NNNNNNNN/` under the run's `checkpoints/`, holding the
//! weights, their moving average, the optimizer state and `state.json` (step, loader position,
//! config, and a checksum of every file; the state itself is sealed by a checksum of its text,
//! so that nothing in it is trusted unchecked). The folder is written under a temporary name and
//! renamed, then the `latest` pointer is replaced atomically, then older folders are removed: a
//! crash at any moment leaves `latest` naming a complete checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tensor::{Error, Result};

use super::RunConfig;
use crate::data::LoaderState;
use crate::files::{io_error, write_atomic};

/// The weights as trained.
pub const MODEL_FILE: &str = "model.safetensors";
/// The exponential moving average of the weights (what samples are drawn with).
pub const EMA_FILE: &str = "ema.safetensors";
/// AdamW's moments and step count.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Step, loader position, config and checksums.
pub const STATE_FILE: &str = "state.json";
const LATEST: &str = "latest";

/// What `state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimisation steps taken.
    pub step: u64,
    /// The loader's epoch at the next batch.
    pub loader_epoch: u64,
    /// The loader's position in that epoch.
    pub loader_position: usize,
    /// Where the loaders of the method's other data streams (a knowledge bank) stand, by
    /// stream name; the target's is `loader_epoch` and `loader_position`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_loaders: Vec<(String, LoaderState)>,
    /// The class names of the training data, in label order.
    pub classes: Vec<String>,
    /// `[channels, height, width]` of the model's images.
    pub image_shape: [usize; 3],
    /// The run's config.
    pub config: RunConfig,
    /// FNV-1a 64 of each weight file, in hex.
    pub checksums: Vec<(String, String)>,
}

impl CheckpointState {
    /// The target data's loader state.
    pub fn loader(&self) -> LoaderState {
        LoaderState {
            epoch: self.loader_epoch,
            position: self.loader_position,
        }
    }

    /// The loader state of each of `streams` (the target first), as saved; a stream the
    /// checkpoint lacks is an error naming it.
    pub fn loaders(&self, streams: &[&str]) -> Result<Vec<LoaderState>> {
        streams
            .iter()
            .enumerate()
            .map(|(i, name)| match i {
                0 => Ok(self.loader()),
                _ => self
                    .other_loaders
                    .iter()
                    .find(|(saved, _)| saved == name)
                    .map(|(_, state)| *state)
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "the checkpoint of step {} holds no loader state for the data stream `{name}`",
                            self.step
                        ))
                    }),
            })
            .collect()
    }
}

/// The `checkpoints/` folder of a run folder.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// FNV-1a 64 of `bytes`: detects a flipped or truncated byte, which the safetensors header alone
/// would not.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a 64 continued over `bytes` from `h`, the hash of what came before them.
fn fnv1a_continue(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: format!("corrupt or incomplete checkpoint: {msg}"),
    }
}

/// Writes a checkpoint of `step` into `run/checkpoints/`: `write_files` fills the given folder with
/// [`MODEL_FILE`], [`EMA_FILE`] and [`OPTIMIZER_FILE`]; the state is completed with their
/// checksums. Returns the checkpoint's folder.
pub fn save(
    run: &Path,
    mut state: CheckpointState,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run);
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(&name);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    write_files(&tmp)?;
    state.checksums.clear();
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
        let path = tmp.join(file);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        state
            .checksums
            .push((file.to_string(), format!("{:016x}", fnv1a(&bytes))));
    }
    write_atomic(&tmp.join(STATE_FILE), seal(&state).as_bytes())?;
    if done.exists() {
        fs::remove_dir_all(&done).map_err(io_error(&done))?;
    }
    fs::rename(&tmp, &done).map_err(io_error(&done))?;
    // The folder's entry must reach the disk before the pointer names it.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    write_atomic(&dir.join(LATEST), name.as_bytes())?;
    for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with("step-") && other != name {
            fs::remove_dir_all(entry.path()).map_err(io_error(&entry.path()))?;
        }
    }
    Ok(done)
}

/// The newest complete checkpoint of a run folder, if it has one.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run).join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = crate::files::read_user_file(&pointer, &tensor::limits::JSON_BYTES)?;
    let name = String::from_utf8_lossy(&name);
    let name = name.trim();
    if !name.starts_with("step-") || name.contains(['/', '\\']) {
        return Err(corrupt(
            &pointer,
            format!("it names `{name}`, not a step folder"),
        ));
    }
    Ok(Some(checkpoints_dir(run).join(name)))
}

/// Finds the checkpoint folder meant by `path`: a checkpoint folder itself, a run folder (its
/// latest checkpoint), or a run's `checkpoints/` folder.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let run = if path.file_name().is_some_and(|n| n == "checkpoints") {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    match latest(run)? {
        Some(dir) => Ok(dir),
        None if path.exists() => Err(Error::msg(format!(
            "{}: not a checkpoint (no {STATE_FILE}) nor a run folder with one (no checkpoints/{LATEST})",
            path.display()
        ))),
        None => Err(Error::msg(format!("{}: no such file or folder", path.display()))),
    }
}

/// `state.json`'s text for `state`: see [`seal_text`].
fn seal(state: &CheckpointState) -> String {
    seal_text(&serde_json::to_string_pretty(state).expect("checkpoint state is plain JSON"))
}

/// The text of a `state.json` holding the state JSON `body`, sealed by the checksum of its text
/// as [`save`] writes it: `{"fnv1a": "<FNV-1a 64 of body>", "state": <body>}`. For tools and
/// tests that craft a checkpoint's state by hand.
pub fn seal_text(body: &str) -> String {
    format!(
        "{{\n\"fnv1a\": \"{:016x}\",\n\"state\": {body}\n}}\n",
        fnv1a(body.as_bytes())
    )
}

/// The state sealed in `text` (see [`seal`]), after checking its checksum: the raw text of the
/// state is hashed as it was written, before any of it is interpreted.
fn unseal(path: &Path, text: &str) -> Result<CheckpointState> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sealed<'a> {
        fnv1a: String,
        #[serde(borrow)]
        state: &'a serde_json::value::RawValue,
    }
    let sealed: Sealed = serde_json::from_str(text).map_err(|e| {
        corrupt(
            path,
            format!("{e} (expected {{\"fnv1a\": ..., \"state\": ...}}; a state.json of a difftune older than 2026-12 has no checksum)"),
        )
    })?;
    let found = format!("{:016x}", fnv1a(sealed.state.get().as_bytes()));
    if found != sealed.fnv1a {
        return Err(corrupt(
            path,
            format!(
                "the state's checksum {found} differs from the {} written at save time",
                sealed.fnv1a
            ),
        ));
    }
    serde_json::from_str(sealed.state.get()).map_err(|e| corrupt(path, e))
}

/// Reads and verifies a checkpoint folder's state: its own checksum, then every weight file
/// present with the checksum written at save time, then the config's values.
pub fn load_state(dir: &Path) -> Result<CheckpointState> {
    let path = dir.join(STATE_FILE);
    let text = crate::files::read_user_file(&path, &tensor::limits::JSON_BYTES)?;
    let text = String::from_utf8(text).map_err(|e| corrupt(&path, e))?;
    let state = unseal(&path, &text)?;
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
        let expected = state
            .checksums
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, c)| c)
            .ok_or_else(|| corrupt(&path, format!("no checksum for {file}")))?;
        let p = dir.join(file);
        // In chunks: a weight file can be gigabytes.
        let mut hash = fnv1a(&[]);
        let len = crate::files::read_user_chunks(&p, |chunk| hash = fnv1a_continue(hash, chunk))?;
        let found = format!("{hash:016x}");
        if &found != expected {
            return Err(corrupt(
                &p,
                format!(
                    "checksum {found} differs from the {expected} written at save time ({len} bytes)"
                ),
            ));
        }
    }
    state
        .config
        .validate()
        .map_err(|e| corrupt(&path, format!("its {e}")))?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        CheckpointState {
            step,
            loader_epoch: 0,
            loader_position: 0,
            other_loaders: vec![],
            classes: vec!["a".into()],
            image_shape: [1, 4, 4],
            config: RunConfig::default(),
            checksums: vec![],
        }
    }

    fn write_dummy(dir: &Path) -> Result<()> {
        for f in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
            fs::write(dir.join(f), f.as_bytes()).map_err(io_error(dir))?;
        }
        Ok(())
    }

    #[test]
    fn save_replaces_the_previous_checkpoint_and_detects_damage() {
        let run = std::env::temp_dir().join(format!("difftune-ckpt-{}", std::process::id()));
        let first = save(&run, state(5), write_dummy).unwrap();
        let second = save(&run, state(10), write_dummy).unwrap();
        assert!(!first.exists(), "the older checkpoint is removed");
        assert_eq!(resolve(&run).unwrap(), second);
        assert_eq!(load_state(&second).unwrap().step, 10);
        // One changed byte is refused, naming the file.
        fs::write(second.join(EMA_FILE), b"ema.safetensorz").unwrap();
        let err = load_state(&second).unwrap_err().to_string();
        assert!(
            err.contains("ema.safetensors") && err.contains("checksum"),
            "{err}"
        );
        fs::remove_dir_all(run).unwrap();
    }

    #[test]
    fn an_edited_state_is_refused_even_when_it_parses() {
        let run = std::env::temp_dir().join(format!("difftune-ckpt-seal-{}", std::process::id()));
        let dir = save(&run, state(5), write_dummy).unwrap();
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).unwrap();
        // A plausible edit: the step, the model's width (a huge allocation) or the shapes.
        for (from, to) in [
            ("\"step\": 5", "\"step\": 6"),
            ("\"hidden_size\": 96", "\"hidden_size\": 960000"),
        ] {
            assert!(text.contains(from), "{text}");
            fs::write(&path, text.replace(from, to)).unwrap();
            let err = load_state(&dir).unwrap_err().to_string();
            assert!(
                err.contains("state.json") && err.contains("checksum"),
                "{err}"
            );
        }
        // Without the seal (the older layout) it is refused too, saying why.
        let bare = serde_json::to_string_pretty(&state(5)).unwrap();
        fs::write(&path, bare).unwrap();
        let err = load_state(&dir).unwrap_err().to_string();
        assert!(
            err.contains("fnv1a") && err.contains("no checksum"),
            "{err}"
        );
        fs::write(&path, text).unwrap();
        assert_eq!(load_state(&dir).unwrap().step, 5);
        fs::remove_dir_all(run).unwrap();
    }
}
