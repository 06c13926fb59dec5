//! IDX files, the format of MNIST, Fashion-MNIST and Animal-MNIST: a big-endian header (two zero
//! bytes, a type code, the number of dimensions, then one `u32` size per dimension) followed by the
//! raw values. Only unsigned bytes (type code 0x08) are used by those data sets: magic 0x801 for
//! labels `[N]` and 0x803 for images `[N, H, W]`. Files ending in `.gz` are read through gzip.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tensor::{limits, Error, Result, Tensor};

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

/// Deflate's largest compression ratio (a 258-byte match coded in about two bits): a gzip file of
/// `n` bytes cannot decompress to more than about `1032 n` bytes, so a header that declares more
/// is refused before anything is allocated for it.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Reads an IDX file of unsigned bytes whose magic must be `magic` (streamed through gzip when
/// the name ends in `.gz`) and returns the dimensions and the values. The header is read first;
/// the size it declares is checked against [`limits::DECOMPRESSED_BYTES`] and against what the
/// file can hold before it is allocated; then exactly that much is read, and a short body or
/// trailing data is an error. Nothing but a regular file is opened.
fn read(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let what = if magic == LABELS_MAGIC {
        "labels"
    } else {
        "images"
    };
    let (file, file_len) = limits::open_regular_file(path)?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    // Reads up to `n` more bytes (fewer at the end of the data).
    let mut read_up_to = |n: usize| -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        reader
            .by_ref()
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(|source| match gzip {
                true => format_err(path, format!("gzip decompression failed: {source}")),
                false => Error::Io {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        Ok(out)
    };

    let rank = (magic & 0xff) as usize;
    let header_len = 4 + 4 * rank;
    let header = read_up_to(header_len)?;
    let Some(head) = header.get(..4) else {
        return Err(format_err(
            path,
            format!(
                "{} bytes is too short for an IDX file (4-byte magic expected)",
                header.len()
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
    if header.len() < header_len {
        return Err(format_err(
            path,
            format!(
                "truncated header: {} bytes, expected {header_len} for {rank} dimensions",
                header.len()
            ),
        ));
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let declared = limits::product(&dims);
    let says = format!("the header says {dims:?} = {declared} values");
    limits::DECOMPRESSED_BYTES
        .check(declared, &says)
        .map_err(|e| format_err(path, e.to_string()))?;
    let body = file_len.saturating_sub(header_len as u64);
    if !gzip && u128::from(body) != declared {
        let kind = if u128::from(body) < declared {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(format_err(
            path,
            format!("{kind}: {says} but {body} bytes follow it"),
        ));
    }
    if gzip && declared > u128::from(file_len) * u128::from(DEFLATE_MAX_RATIO) {
        return Err(format_err(
            path,
            format!(
                "truncated: {says} but a gzip file of {file_len} bytes decompresses to at most \
                 {} bytes",
                u128::from(file_len) * u128::from(DEFLATE_MAX_RATIO)
            ),
        ));
    }
    // Within the limit, so it fits in usize.
    let count = declared as usize;
    let data = read_up_to(count)?;
    if data.len() < count {
        return Err(format_err(
            path,
            format!("truncated: {says} but {} bytes follow it", data.len()),
        ));
    }
    if !read_up_to(1)?.is_empty() {
        return Err(format_err(
            path,
            format!("trailing bytes: {says} but more bytes follow it"),
        ));
    }
    Ok((dims, data))
}

/// Reads an IDX labels file (magic 0x801): a `u8` tensor `[N]`.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Tensor> {
    let (dims, data) = read(path.as_ref(), LABELS_MAGIC)?;
    Tensor::from_vec(data, &dims)
}

/// Reads an IDX images file (magic 0x803): a `u8` tensor `[N, H, W]`.
pub fn read_images(path: impl AsRef<Path>) -> Result<Tensor> {
    let (dims, data) = read(path.as_ref(), IMAGES_MAGIC)?;
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
    use std::fs;

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

    /// A gzip stream of `bytes`.
    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn declared_sizes_are_checked_before_the_body_is_read() {
        let dir = temp_dir("declared");
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        let header = |dims: [u32; 3]| {
            let mut h = vec![0, 0, 8, 3];
            dims.iter()
                .for_each(|d| h.extend_from_slice(&d.to_be_bytes()));
            h
        };
        // A header that declares 65535^3 bytes (281 TB) is refused for the limit, gzipped or not.
        for name in ["big.idx", "big.gz"] {
            let bytes = header([65535, 65535, 65535]);
            let bytes = if name.ends_with("gz") {
                gzip(&bytes)
            } else {
                bytes
            };
            fs::write(dir.join(name), bytes).unwrap();
            let e = err(read_images(dir.join(name)));
            assert!(
                e.contains(name) && e.contains("DIFFTUNE_MAX_DECOMPRESSED_BYTES"),
                "{e}"
            );
        }
        // Within the limit but more than the compressed file can hold: refused before reading.
        fs::write(dir.join("short.gz"), gzip(&header([1000, 1000, 1000]))).unwrap();
        let e = err(read_images(dir.join("short.gz")));
        assert!(e.contains("truncated") && e.contains("at most"), "{e}");
        // A gzip body cut short, and one with data after the declared values.
        let body = [header([1, 2, 2]), vec![7; 3]].concat();
        fs::write(dir.join("cut.gz"), gzip(&body)).unwrap();
        let e = err(read_images(dir.join("cut.gz")));
        assert!(
            e.contains("cut.gz") && e.contains("truncated") && e.contains("3 bytes"),
            "{e}"
        );
        let body = [header([1, 2, 2]), vec![7; 4 + 1000]].concat();
        fs::write(dir.join("long.gz"), gzip(&body)).unwrap();
        let e = err(read_images(dir.join("long.gz")));
        assert!(e.contains("long.gz") && e.contains("trailing bytes"), "{e}");
        // A folder is not an IDX file.
        let e = err(read_images(&dir));
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
