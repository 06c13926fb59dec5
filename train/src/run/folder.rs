//! The run folder: claimed by one run at a time (an advisory lock the OS releases when the
//! process dies, so a killed run never leaves a stale lock), and never written over: a fresh
//! run takes only a new or empty folder, or the folder of the same run interrupted before its
//! first checkpoint.

use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use tensor::{Error, Result};

use super::RunConfig;
use crate::files::io_error;

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Holds a run folder for the life of the value.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Creates `out` if needed and locks it for this process; another live run on the same folder
/// is an error naming it (and its process id).
pub fn lock(out: &Path) -> Result<RunLock> {
    fs::create_dir_all(out).map_err(io_error(out))?;
    match try_lock(&out.join(LOCK_FILE))? {
        Ok(lock) => Ok(lock),
        Err(holder) => Err(Error::msg(format!(
            "{} is in use by another difftune run (process {holder}); wait for it to finish or \
             choose another --out",
            out.display(),
        ))),
    }
}

/// A study's claim on one of its run folders, so that several processes can share a study's
/// runs: `None` when another process holds it. Independent of the run's own [`lock`].
pub fn claim(dir: &Path) -> Result<Option<RunLock>> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    Ok(try_lock(&dir.join(CLAIM_FILE))?.ok())
}

/// The file a study's claim on a run folder locks.
const CLAIM_FILE: &str = "study.lock";

/// Locks the file at `path` (creating it) and writes this process's id into it; `Err` holds
/// the holder's id when another process has it.
fn try_lock(path: &Path) -> Result<std::result::Result<RunLock, String>> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            return Ok(Err(holder.trim().to_string()));
        }
        Err(TryLockError::Error(e)) => return Err(io_error(path)(e)),
    }
    // Only the holder writes its id, so a reader sees whoever holds the lock now.
    file.set_len(0)
        .and_then(|_| write!(file, "{}", std::process::id()))
        .map_err(io_error(path))?;
    Ok(Ok(RunLock { _file: file }))
}

/// What a fresh run (one with no checkpoint to resume) may find in its folder: nothing, or the
/// files of the same run interrupted before its first checkpoint (its `config.json` equal to
/// `config` up to the keys that may change between a run and its resumption) when `resume` is
/// set. Anything else would be overwritten, and is refused with its names.
pub fn check_fresh(out: &Path, config: &RunConfig, resume: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let mut found: Vec<String> = fs::read_dir(out)
        .map_err(io_error(out))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != LOCK_FILE && name != CLAIM_FILE && !is_empty_dir(&out.join(name)))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let config_path = out.join("config.json");
    let same_run = fs::read_to_string(&config_path)
        .ok()
        .and_then(|text| RunConfig::from_json_str(&text).ok())
        .is_some_and(|saved| super::same_run(&saved, config));
    match (same_run, resume) {
        (true, true) => Ok(()),
        (true, false) => Err(Error::msg(format!(
            "{} holds this run, interrupted before its first checkpoint; pass --resume to start \
             it again there, or choose another --out",
            out.display()
        ))),
        (false, _) => Err(Error::msg(format!(
            "{} already holds files that a run would overwrite ({}) and no checkpoint to \
             resume; choose another --out (or remove them)",
            out.display(),
            found.join(", ")
        ))),
    }
}

fn is_empty_dir(path: &PathBuf) -> bool {
    fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("difftune-folder-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_claim_is_held_once_apart_from_the_run_lock_and_leaves_the_folder_fresh() {
        let dir = temp("claim");
        let claimed = claim(&dir).unwrap().expect("free");
        assert!(claim(&dir).unwrap().is_none(), "claimed twice");
        let run = lock(&dir).unwrap();
        check_fresh(&dir, &RunConfig::default(), false).unwrap();
        drop((claimed, run));
        assert!(claim(&dir).unwrap().is_some());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_lock_on_a_folder_is_refused_until_the_first_is_dropped() {
        let dir = temp("lock");
        let held = lock(&dir).unwrap();
        let err = lock(&dir).unwrap_err().to_string();
        assert!(err.contains("in use by another difftune run"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(held);
        lock(&dir).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fresh_run_never_takes_a_folder_with_other_files() {
        let dir = temp("fresh");
        let config = RunConfig::default();
        fs::create_dir_all(dir.join("checkpoints")).unwrap();
        check_fresh(&dir, &config, false).unwrap();
        fs::write(dir.join("samples.png"), b"a user's picture").unwrap();
        let err = check_fresh(&dir, &config, true).unwrap_err().to_string();
        assert!(
            err.contains("samples.png") && err.contains("--out"),
            "{err}"
        );
        fs::remove_file(dir.join("samples.png")).unwrap();
        // The same run, interrupted before its first checkpoint: only with --resume.
        fs::write(dir.join("config.json"), config.to_json()).unwrap();
        check_fresh(&dir, &config, true).unwrap();
        let err = check_fresh(&dir, &config, false).unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        // Another run's config is not ours to overwrite.
        let other = RunConfig {
            lr: 0.5,
            ..config.clone()
        };
        let err = check_fresh(&dir, &other, true).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
