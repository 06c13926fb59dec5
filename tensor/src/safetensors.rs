//! Reading and writing [safetensors](https://github.com/huggingface/safetensors) files: the format of
//! checkpoints, latents and the reference fixtures.
//!
//! [`SafeTensorsFile::open`] memory-maps a file and validates its header without copying any
//! tensor; [`SafeTensorsFile::tensor`] then copies one tensor out. [`save`] writes tensors (views
//! in their logical order) to a temporary file beside the target, syncs it and renames it into
//! place, so a crash never leaves half a file. Every failure is an [`Error::Io`] or
//! [`Error::Format`] that names the file, and the tensor where one is involved.
//!
//! ```
//! use std::collections::HashMap;
//! use tensor::safetensors::{save, SafeTensorsFile};
//! use tensor::{DType, Tensor};
//!
//! let dir = std::env::temp_dir().join(format!("difftune-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//!
//! let w = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
//! let meta = HashMap::from([("model".to_string(), "tiny".to_string())]);
//! save(&path, &[("w", &w), ("w_t", &w.transpose(0, 1).unwrap())], Some(&meta)).unwrap();
//!
//! let file = SafeTensorsFile::open(&path).unwrap();
//! assert_eq!(file.names(), vec!["w", "w_t"]);
//! assert_eq!(file.info("w_t").unwrap(), (DType::F32, vec![3, 2]));
//! assert_eq!(file.metadata()["model"], "tiny");
//! let w_t = file.tensor("w_t").unwrap(); // saved in logical (transposed) order
//! assert_eq!(w_t.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use crate::{CpuStorage, DType, Element, Error, Result, Tensor};

/// The key of the free-form string map in a safetensors header.
const METADATA_KEY: &str = "__metadata__";

/// The largest header the format allows (the safetensors crate's limit).
const MAX_HEADER_BYTES: usize = 100_000_000;

fn format_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open safetensors file: the memory map and its parsed header. Tensors are copied out one at
/// a time by [`SafeTensorsFile::tensor`].
///
/// The file must not be modified in place while it is open (our own [`save`] never does: it
/// replaces files by renaming).
pub struct SafeTensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (after the length prefix and the header).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
}

impl SafeTensorsFile {
    /// Memory-maps `path` and validates its header (entries, byte lengths against shapes, offsets
    /// covering the data exactly, no duplicate names). No tensor is copied. A path that is not a
    /// regular file (a named pipe, a device, a folder) is refused before it is opened.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile> {
        let path = path.as_ref();
        let (file, _) = crate::limits::open_regular_file(path)?;
        // SAFETY: the map is read-only and private to this struct; the file must not be changed in
        // place while it is open, which the type's docs state (our writers replace by renaming).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        let (data_start, tensors, metadata) = parse_header(path, &mmap)?;
        Ok(SafeTensorsFile {
            path: path.to_path_buf(),
            mmap,
            data_start,
            tensors,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The `__metadata__` string map of the header (empty when the file has none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The dtype and shape of tensor `name`, without reading it.
    pub fn info(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        let info = self.entry(name)?;
        Ok((self.dtype_of(name, info.dtype)?, info.shape.clone()))
    }

    /// A copy of tensor `name` (contiguous, on the CPU).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.entry(name)?;
        let dtype = self.dtype_of(name, info.dtype)?;
        let (start, end) = info.data_offsets;
        // The header was validated: the range lies inside the map and matches the shape.
        let bytes = self
            .mmap
            .get(self.data_start + start..self.data_start + end)
            .ok_or_else(|| {
                format_err(
                    &self.path,
                    format!("tensor `{name}`: data bytes {start}..{end} lie outside the file"),
                )
            })?;
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(decode(bytes, f32::from_le_bytes)),
            DType::F64 => CpuStorage::F64(decode(bytes, f64::from_le_bytes)),
            DType::BF16 => CpuStorage::BF16(decode(bytes, |b| {
                half::bf16::from_bits(u16::from_le_bytes(b))
            })),
            DType::F16 => CpuStorage::F16(decode(bytes, |b| {
                half::f16::from_bits(u16::from_le_bytes(b))
            })),
            DType::U8 => CpuStorage::U8(bytes.to_vec()),
            DType::I64 => CpuStorage::I64(decode(bytes, i64::from_le_bytes)),
        };
        Tensor::from_storage(storage, &info.shape)
            .map_err(|e| format_err(&self.path, format!("tensor `{name}`: {e}")))
    }

    fn entry(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            format_err(
                &self.path,
                format!(
                    "no tensor named `{name}` (the file holds {} tensors)",
                    self.tensors.len()
                ),
            )
        })
    }

    fn dtype_of(&self, name: &str, dtype: Dtype) -> Result<DType> {
        Ok(match dtype {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::U8 => DType::U8,
            Dtype::I64 => DType::I64,
            other => {
                return Err(format_err(
                    &self.path,
                    format!(
                        "tensor `{name}` has dtype {other:?}, which difftune does not support \
                         (supported: F32, F64, BF16, F16, U8, I64)"
                    ),
                ))
            }
        })
    }
}

impl std::fmt::Debug for SafeTensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SafeTensorsFile({}, {} tensors)",
            self.path.display(),
            self.tensors.len()
        )
    }
}

/// Little-endian elements of `N` bytes each.
fn decode<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            f(b)
        })
        .collect()
}

type Header = (usize, HashMap<String, TensorInfo>, HashMap<String, String>);

/// Parses and validates the header of the whole-file buffer `bytes`: the data offset, the tensor
/// entries and the metadata.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let Some(prefix) = bytes.get(..8) else {
        return Err(format_err(
            path,
            format!(
                "{} bytes is too short for a safetensors file (8-byte header length expected)",
                bytes.len()
            ),
        ));
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(len);
    let available = bytes.len() - 8;
    if header_len > MAX_HEADER_BYTES as u64 || header_len as usize > available {
        return Err(format_err(
            path,
            format!(
                "the header length says {header_len} bytes but {available} follow the length \
                 (truncated, or not a safetensors file)"
            ),
        ));
    }
    let data_start = 8 + header_len as usize;
    let header = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| format_err(path, format!("the header is not UTF-8: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header)
        .map_err(|e| format_err(path, format!("the header is not a JSON object: {e}")))?;

    // serde_json keeps only the last of equal keys: look for repeats in the text itself.
    let mut seen = HashSet::new();
    if let Some(dup) = top_level_keys(header)
        .into_iter()
        .find(|k| !seen.insert(k.clone()))
    {
        return Err(format_err(
            path,
            format!("the header names `{dup}` more than once"),
        ));
    }

    let data_len = bytes.len() - data_start;
    let mut tensors = HashMap::with_capacity(json.len());
    let mut metadata = HashMap::new();
    for (name, value) in json {
        if name == METADATA_KEY {
            metadata = serde_json::from_value(value).map_err(|e| {
                format_err(
                    path,
                    format!("`{METADATA_KEY}` must map strings to strings: {e}"),
                )
            })?;
            continue;
        }
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| format_err(path, format!("tensor `{name}`: invalid header entry: {e}")))?;
        let (start, end) = info.data_offsets;
        let expected = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        let Some(expected) = expected else {
            return Err(format_err(
                path,
                format!("tensor `{name}`: shape {:?} overflows", info.shape),
            ));
        };
        if end < start || end - start != expected {
            return Err(format_err(
                path,
                format!(
                    "tensor `{name}` ({:?} {:?}) needs {expected} bytes but its offsets {start}..{end} \
                     hold {}",
                    info.dtype,
                    info.shape,
                    end.saturating_sub(start)
                ),
            ));
        }
        if end > data_len {
            return Err(format_err(
                path,
                format!(
                    "tensor `{name}` ends at data byte {end} but the file holds only {data_len} data \
                     bytes (truncated?)"
                ),
            ));
        }
        tensors.insert(name, info);
    }
    // What is left to check (offsets neither overlapping nor leaving gaps, the data fully
    // covered) is the safetensors crate's own validation.
    SafeTensors::read_metadata(bytes)
        .map_err(|e| format_err(path, format!("invalid safetensors file: {e}")))?;
    Ok((data_start, tensors, metadata))
}

/// The keys of the top-level object of `json` (valid JSON), in order and with repeats kept.
fn top_level_keys(json: &str) -> Vec<String> {
    let b = json.as_bytes();
    let (mut keys, mut depth, mut expect_key, mut i) = (Vec::new(), 0usize, false, 0);
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    // `"` is ASCII, so both ends are char boundaries.
                    if let Some(Ok(key)) = json.get(start..=i).map(serde_json::from_str) {
                        keys.push(key);
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Every tensor of the file at `path`, sorted by name.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let file = SafeTensorsFile::open(path)?;
    file.names()
        .into_iter()
        .map(|name| Ok((name.to_string(), file.tensor(name)?)))
        .collect()
}

/// The safetensors dtype of ours.
fn st_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::U8 => Dtype::U8,
        DType::I64 => Dtype::I64,
    }
}

/// The elements of `t` in logical (row-major) order as little-endian bytes.
fn encode(t: &Tensor) -> Result<Vec<u8>> {
    fn le<T: Element, const N: usize>(t: &Tensor, f: fn(T) -> [u8; N]) -> Result<Vec<u8>> {
        Ok(t.to_vec::<T>()?.into_iter().flat_map(f).collect())
    }
    match t.dtype() {
        DType::F32 => le(t, f32::to_le_bytes),
        DType::F64 => le(t, f64::to_le_bytes),
        DType::BF16 => le(t, |x: half::bf16| x.to_bits().to_le_bytes()),
        DType::F16 => le(t, |x: half::f16| x.to_bits().to_le_bytes()),
        DType::U8 => t.to_vec::<u8>(),
        DType::I64 => le(t, i64::to_le_bytes),
    }
}

/// Writes `tensors` (any layout: views are saved in logical order) and optional `metadata` to
/// `path`. The bytes go to a temporary file in the same directory, which is synced to disk and
/// then renamed over `path`: readers see the old file or the new one, never half of one.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    for &(name, _) in tensors {
        if name == METADATA_KEY {
            return Err(format_err(
                path,
                format!("`{METADATA_KEY}` is reserved and cannot name a tensor"),
            ));
        }
        if !seen.insert(name) {
            return Err(format_err(
                path,
                format!("tensor `{name}` is given more than once"),
            ));
        }
    }
    let mut encoded = tensors
        .iter()
        .map(|&(name, t)| {
            let bytes = encode(t).map_err(|e| format_err(path, format!("tensor `{name}`: {e}")))?;
            Ok((name, st_dtype(t.dtype()), t.shape().to_vec(), bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    // Wider dtypes first, then by name: every tensor then starts aligned to its element size.
    encoded.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    let mut offset = 0;
    let infos = encoded
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            offset += bytes.len();
            let info = TensorInfo {
                dtype: *dtype,
                shape: shape.clone(),
                data_offsets: (offset - bytes.len(), offset),
            };
            (name.to_string(), info)
        })
        .collect();
    let header = Metadata::new(metadata.cloned(), infos)
        .map_err(|e| format_err(path, format!("cannot build the header: {e}")))?;
    let mut header = serde_json::to_vec(&header)
        .map_err(|e| format_err(path, format!("cannot encode the header: {e}")))?;
    // Pad with spaces so that the data starts 8-byte aligned.
    header.resize(header.len().next_multiple_of(8), b' ');

    crate::atomic::write_with(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (_, _, _, bytes) in &encoded {
            w.write_all(bytes)?;
        }
        Ok(())
    })
}
