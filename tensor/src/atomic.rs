//! Atomic file writes: a crash, a full disk or a second writer never leaves half a file behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// Writes a file through `write` into a temporary sibling of `path`, syncs it and renames it over
/// `path`, then syncs the folder so that the rename itself survives a crash. Readers see the old
/// file or the new one, never half of one.
///
/// The temporary name is unique to the process and the call (`.NAME.PID-N.tmp`), so two writers
/// never share one, and it is removed when anything fails. The folder must exist.
///
/// ```
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("atomic-doc-{}.txt", std::process::id()));
/// tensor::atomic::write_with(&path, |w| w.write_all(b"hello")).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        msg: "not a file path".into(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io)?;
    let written = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_dir(dir);
    Ok(())
}

/// [`write_with`] for bytes already in memory.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Makes the entries of `dir` (a rename, a new or removed file) durable. Best effort: some
/// filesystems refuse to sync a folder, and the files themselves are complete either way.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("difftune-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = temp_dir("replace");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_its_temporary() {
        let dir = temp_dir("fail");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.bin");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.bin"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary() {
        let dir = temp_dir("race");
        let path = dir.join("shared.txt");
        std::fs::create_dir_all(&dir).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let text = format!("writer {i} ").repeat(10_000);
                    for _ in 0..10 {
                        write(&path, text.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Whoever won, the file is one writer's whole text.
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.split(' ').next().unwrap().to_string() + " ";
        let i = text.split(' ').nth(1).unwrap();
        assert_eq!(text, format!("{first}{i} ").repeat(10_000));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
