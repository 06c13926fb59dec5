//! IDX files, the format of MNIST, Fashion-MNIST and Animal-MNIST: a big-endian header (two zero
//! bytes, a type code, the number of dimensions, then one `u32` size per dimension) followed by the
//! raw values. Only unsigned bytes (type code 0x08) are used by those data sets: magic 0x801 for
//! labels `[N]` and 0x803 for images `[N, H, W]`. Files ending in `.gz` are read through gzip.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tensor::{Error, Result, Tensor};

use crate::files::write_atomic;

/// The magic number of a `u8` IDX file with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0801;
/// The magic number of a `u8` IDX file with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0803;

fn format_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The decompressed bytes of `path` (gunzipped when the name ends in `.gz`).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("gzip decompression failed: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX buffer of unsigned bytes whose magic must be `magic`: returns the dimensions
/// and the values. `path` names the source in errors.
fn parse(path: &Path, bytes: &[u8], magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let what = if magic == LABELS_MAGIC {
        "labels"
    } else {
        "images"
    };
    let Some(head) = bytes.get(..4) else {
        return Err(format_err(
            path,
            format!(
                "{} bytes is too short for an IDX file (4-byte magic expected)",
                bytes.len()
            ),
        ));
    };
    let found = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if found != magic {
        return Err(format_err(
            path,
            format!("bad IDX magic {found:#06x}, expected {magic:#06x} ({what}, unsigned bytes)"),
        ));
    }
    let rank = (magic & 0xff) as usize;
    let header_len = 4 + 4 * rank;
    let Some(sizes) = bytes.get(4..header_len) else {
        return Err(format_err(
            path,
            format!(
                "truncated header: {} bytes, expected {header_len} for {rank} dimensions",
                bytes.len()
            ),
        ));
    };
    let dims: Vec<usize> = sizes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(path, format!("dimensions {dims:?} overflow")))?;
    let data = &bytes[header_len..];
    if data.len() != count {
        let kind = if data.len() < count {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(format_err(
            path,
            format!(
                "{kind}: the header says {dims:?} = {count} values but {} bytes follow it",
                data.len()
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}

/// Reads an IDX labels file (magic 0x801): a `u8` tensor `[N]`.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let (dims, data) = parse(path, &read_bytes(path)?, LABELS_MAGIC)?;
    Tensor::from_vec(data, &dims)
}

/// Reads an IDX images file (magic 0x803): a `u8` tensor `[N, H, W]`.
pub fn read_images(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let (dims, data) = parse(path, &read_bytes(path)?, IMAGES_MAGIC)?;
    Tensor::from_vec(data, &dims)
}

/// Reads a pair of IDX files: images `u8 [N, 1, H, W]` and labels `i64 [N]`, checking that both
/// hold the same number of items.
pub fn read_pair(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<(Tensor, Tensor)> {
    let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
    let x = read_images(images_path)?;
    let y = read_labels(labels_path)?;
    let (n, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if y.shape()[0] != n {
        return Err(format_err(
            labels_path,
            format!(
                "count mismatch: {} labels but {} holds {n} images",
                y.shape()[0],
                images_path.display()
            ),
        ));
    }
    Ok((x.reshape(&[n, 1, h, w])?, y.to_dtype(tensor::DType::I64)?))
}

/// Writes `u8` values with dimensions `dims` as an IDX file (gzip-compressed when the name ends in
/// `.gz`), atomically. One dimension gives a labels file, three an images file.
pub fn write(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let count: usize = dims.iter().product();
    if !matches!(dims.len(), 1 | 3) || count != data.len() {
        return Err(format_err(
            path,
            format!(
                "IDX write: {} values with dimensions {dims:?}; expected 1 (labels) or 3 (images) \
                 dimensions that hold exactly the values",
                data.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&(0x0800u32 | dims.len() as u32).to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| format_err(path, format!("IDX write: dimension {d} exceeds u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        gz.write_all(&bytes).map_err(io)?;
        bytes = gz.finish().map_err(io)?;
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("difftune-idx-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn gzipped_round_trip() {
        let dir = temp_dir("round");
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7) as u8).collect();
        write(dir.join("x.gz"), &[2, 3, 4], &pixels).unwrap();
        write(dir.join("y.gz"), &[2], &[5, 9]).unwrap();
        // The file really is gzip (magic 1f 8b).
        assert_eq!(&fs::read(dir.join("x.gz")).unwrap()[..2], &[0x1f, 0x8b]);
        let (x, y) = read_pair(dir.join("x.gz"), dir.join("y.gz")).unwrap();
        assert_eq!(x.shape(), &[2, 1, 3, 4]);
        assert_eq!(x.to_vec::<u8>().unwrap(), pixels);
        assert_eq!(y.to_vec::<i64>().unwrap(), vec![5, 9]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_named_and_explained() {
        let dir = temp_dir("corrupt");
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();

        // Images read as labels: bad magic.
        write(dir.join("x.gz"), &[1, 2, 2], &[0; 4]).unwrap();
        let e = err(read_labels(dir.join("x.gz")));
        assert!(
            e.contains("x.gz") && e.contains("bad IDX magic 0x0803"),
            "{e}"
        );

        // Truncated data (uncompressed file cut short).
        write(dir.join("t.idx"), &[2, 2, 2], &[1; 8]).unwrap();
        let mut bytes = fs::read(dir.join("t.idx")).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(dir.join("t.idx"), &bytes).unwrap();
        let e = err(read_images(dir.join("t.idx")));
        assert!(e.contains("t.idx") && e.contains("truncated"), "{e}");

        // Truncated header, and a file too short for the magic.
        fs::write(dir.join("h.idx"), [0, 0, 8, 3, 0, 0]).unwrap();
        let e = err(read_images(dir.join("h.idx")));
        assert!(e.contains("truncated header"), "{e}");
        fs::write(dir.join("s.idx"), [0, 0]).unwrap();
        assert!(err(read_images(dir.join("s.idx"))).contains("too short"));

        // Not gzip at all despite the name.
        fs::write(dir.join("n.gz"), b"plain text").unwrap();
        let e = err(read_images(dir.join("n.gz")));
        assert!(e.contains("n.gz") && e.contains("gzip"), "{e}");

        // Count mismatch between images and labels.
        write(dir.join("y.gz"), &[3], &[0, 1, 2]).unwrap();
        let e = read_pair(dir.join("x.gz"), dir.join("y.gz"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("count mismatch: 3 labels") && e.contains("1 images"),
            "{e}"
        );

        // A missing file is an I/O error naming it.
        let e = err(read_images(dir.join("missing.gz")));
        assert!(e.contains("missing.gz"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
