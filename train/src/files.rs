//! File writes that never leave half a file behind, and reads of user files that refuse what
//! is not a regular file or is larger than a limit.

use std::io::Read;
use std::path::Path;

use tensor::limits::{open_regular_file, Limit};
use tensor::{Error, Result};

/// Reads the whole of a small user file (a config, a checkpoint's `state.json`): anything that
/// is not a regular file (a named pipe, a device, a folder) is refused before it is opened, and
/// so is a file larger than `limit`. Errors name the path.
pub fn read_user_file(path: &Path, limit: &Limit) -> Result<Vec<u8>> {
    let (file, len) = open_regular_file(path)?;
    let format = |e: Error| Error::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    limit.check(len.into(), "the file holds").map_err(format)?;
    // The length was checked, but the file may grow while it is read: never read past the limit.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.get().map_err(format)?.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    limit
        .check(bytes.len() as u128, "the file grew to")
        .map_err(format)?;
    Ok(bytes)
}

/// Reads a user file of any size in chunks given to `f`, never holding it whole (a weight file
/// can be gigabytes); what is not a regular file is refused before it is opened. Returns the
/// number of bytes read.
pub fn read_user_chunks(path: &Path, mut f: impl FnMut(&[u8])) -> Result<u64> {
    let (mut file, _) = open_regular_file(path)?;
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                f(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
}

/// Maps an I/O error on `path` to the project's error, naming the path.
pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path`, creating its folder if needed, through a uniquely named temporary
/// file that is synced and renamed into place, then the folder synced: a crash leaves either the
/// old file or the new one, never a truncated one (see [`tensor::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    tensor::atomic::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn user_files_must_be_regular_and_within_the_limit() {
        let json = &tensor::limits::JSON_BYTES;
        let dir = std::env::temp_dir().join(format!("difftune-files-read-{}", std::process::id()));
        let path = dir.join("c.json");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(read_user_file(&path, json).unwrap(), b"{}");
        let e = read_user_file(&dir, json).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("folder"),
            "{e}"
        );
        let mut chunks = Vec::new();
        assert_eq!(
            read_user_chunks(&path, |c| chunks.extend_from_slice(c)).unwrap(),
            2
        );
        assert_eq!(chunks, b"{}");
        assert!(read_user_chunks(&dir, |_| {}).is_err());
        // A sparse file one byte over the default limit: refused from its length, unread.
        let big = dir.join("big.json");
        let file = fs::File::create(&big).unwrap();
        file.set_len(tensor::limits::JSON_BYTES.default_value() + 1)
            .unwrap();
        let e = read_user_file(&big, json).unwrap_err().to_string();
        assert!(
            e.contains("big.json") && e.contains("DIFFTUNE_MAX_JSON_BYTES"),
            "{e}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
