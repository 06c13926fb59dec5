//! Limits on what a file (or a flag) may make difftune allocate: the one place that defines them.
//!
//! Every reader of user files (images, IDX data, checkpoints, configs) checks the sizes a file
//! declares against these limits *before* allocating for them, so a corrupt or hostile file is
//! refused with an error instead of aborting the process on allocation or running for hours. The
//! defaults are generous for real use; a file that needs more is refused with an error that names
//! the limit and the environment variable that raises it:
//!
//! | limit | environment variable | default | bounds |
//! | --- | --- | --- | --- |
//! | [`IMAGE_PIXELS`] | `DIFFTUNE_MAX_IMAGE_PIXELS` | 100,000,000 | pixels (width × height) of a PNG or JPEG before it is decoded, and of the images a config or checkpoint asks for |
//! | [`MODEL_PARAMS`] | `DIFFTUNE_MAX_MODEL_PARAMS` | 1,000,000,000 | scalars of a model built from a config (4 GB in f32; DiT-XL/2 has 675 M) |
//! | [`DIFFUSION_STEPS`] | `DIFFTUNE_MAX_DIFFUSION_STEPS` | 100,000 | steps of a diffusion process (DiT uses 1,000) |
//! | [`DECOMPRESSED_BYTES`] | `DIFFTUNE_MAX_DECOMPRESSED_BYTES` | 4 GiB | bytes a data set decodes to: an IDX file (gzipped or not), the images of a folder |
//! | [`SAMPLES`] | `DIFFTUNE_MAX_SAMPLES` | 100,000 | images drawn or evaluated by one command (FID uses 50,000), and a config's `batch_size` |
//! | [`JSON_BYTES`] | `DIFFTUNE_MAX_JSON_BYTES` | 64 MiB | size of a JSON or text file read whole (run config, checkpoint `state.json` and `latest`, `metrics.jsonl`) |
//!
//! A variable takes a whole number (`_` separators allowed: `DIFFTUNE_MAX_IMAGE_PIXELS=400_000_000`);
//! a malformed one is an error naming it wherever the limit is checked. [`Limit::set`] overrides
//! a limit inside the process (tests, programs that embed difftune).
//!
//! ```
//! use tensor::limits::IMAGE_PIXELS;
//! assert!(IMAGE_PIXELS.check(640 * 480, "photo.png: 640x480").is_ok());
//! let e = IMAGE_PIXELS.check(200_000 * 200_000, "bomb.png: 200000x200000").unwrap_err();
//! assert!(e.to_string().contains("DIFFTUNE_MAX_IMAGE_PIXELS"));
//! ```

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{Error, Result};

/// One limit: a default, raised or lowered by an environment variable or by [`Limit::set`].
pub struct Limit {
    /// What is counted, plural (`image pixels`).
    name: &'static str,
    /// The environment variable that sets it.
    env: &'static str,
    default: u64,
    overridden: AtomicBool,
    value: AtomicU64,
}

impl Limit {
    const fn new(name: &'static str, env: &'static str, default: u64) -> Limit {
        Limit {
            name,
            env,
            default,
            overridden: AtomicBool::new(false),
            value: AtomicU64::new(0),
        }
    }

    /// What the limit counts (`image pixels`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The environment variable that sets the limit.
    pub fn env_var(&self) -> &'static str {
        self.env
    }

    /// The value used when neither the environment nor [`Limit::set`] gives one.
    pub fn default_value(&self) -> u64 {
        self.default
    }

    /// The limit now: the value of [`Limit::set`], else the environment variable, else the
    /// default. A malformed variable is an error naming it.
    pub fn get(&self) -> Result<u64> {
        if self.overridden.load(Ordering::Acquire) {
            return Ok(self.value.load(Ordering::Acquire));
        }
        match std::env::var(self.env) {
            Err(std::env::VarError::NotPresent) => Ok(self.default),
            Ok(text) => text.trim().replace('_', "").parse().map_err(|_| {
                Error::msg(format!(
                    "{}={text:?} is not a whole number (the limit on {})",
                    self.env, self.name
                ))
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::msg(format!(
                "{} is not a whole number (the limit on {})",
                self.env, self.name
            ))),
        }
    }

    /// Overrides the limit in this process (`None` returns to the environment or the default).
    pub fn set(&self, value: Option<u64>) {
        self.value.store(value.unwrap_or(0), Ordering::Release);
        self.overridden.store(value.is_some(), Ordering::Release);
    }

    /// Checks that `value` is within the limit; the error starts with `what` (the file and what
    /// it declares), and names the limit and how to raise it.
    pub fn check(&self, value: u128, what: impl fmt::Display) -> Result<()> {
        let limit = self.get()?;
        if value <= u128::from(limit) {
            return Ok(());
        }
        Err(Error::msg(format!(
            "{what}: {value} {} exceeds the limit of {limit} (if this is meant, raise the limit \
             with the environment variable {}=N)",
            self.name, self.env
        )))
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limit({}, {})", self.env, self.name)
    }
}

/// Pixels (width × height) of one image: checked against a PNG's or JPEG's header before it is
/// decoded, and against the image size a config or checkpoint asks for.
pub static IMAGE_PIXELS: Limit =
    Limit::new("image pixels", "DIFFTUNE_MAX_IMAGE_PIXELS", 100_000_000);

/// Scalars of a model built from a config (a run config, a checkpoint's `state.json`, a
/// diffusers `config.json`); checked before its parameters are allocated.
pub static MODEL_PARAMS: Limit = Limit::new(
    "model parameters",
    "DIFFTUNE_MAX_MODEL_PARAMS",
    1_000_000_000,
);

/// Steps of a diffusion process (its schedules hold one value per step).
pub static DIFFUSION_STEPS: Limit =
    Limit::new("diffusion steps", "DIFFTUNE_MAX_DIFFUSION_STEPS", 100_000);

/// Bytes a data set decodes to: the values an IDX file (gzipped or not) declares, the pixels of
/// an image folder's images once read.
pub static DECOMPRESSED_BYTES: Limit = Limit::new(
    "decompressed bytes",
    "DIFFTUNE_MAX_DECOMPRESSED_BYTES",
    4 << 30,
);

/// Images drawn or evaluated by one command (`--per-class` × classes, `--samples`), and the
/// images of one training batch (`batch_size`).
pub static SAMPLES: Limit = Limit::new("samples", "DIFFTUNE_MAX_SAMPLES", 100_000);

/// Bytes of a JSON or text file read whole (run configs, a checkpoint's `state.json` and its
/// `latest` pointer, a run's `metrics.jsonl`).
pub static JSON_BYTES: Limit = Limit::new("JSON bytes", "DIFFTUNE_MAX_JSON_BYTES", 64 << 20);

/// Every limit, for documentation and tests.
pub static ALL: [&Limit; 6] = [
    &IMAGE_PIXELS,
    &MODEL_PARAMS,
    &DIFFUSION_STEPS,
    &DECOMPRESSED_BYTES,
    &SAMPLES,
    &JSON_BYTES,
];

/// The product of `factors` (saturating at `u128::MAX`), for checking a shape against a limit
/// without overflow.
pub fn product(factors: &[usize]) -> u128 {
    factors
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX)
}

/// Opens a user file for reading, refusing anything that is not a regular file (a named pipe
/// would block the reader forever, a device never ends, a folder is not data); returns it with
/// its length. The error names the path.
pub fn open_regular_file(path: &Path) -> Result<(File, u64)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            msg: format!(
                "not a regular file (found {}); expected a file",
                kind(&meta)
            ),
        });
    }
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    Ok((file, len))
}

/// A word for what a non-regular path is.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_the_environment_and_name_it_in_errors() {
        // A limit of its own, so that no other test sees the variable.
        static L: Limit = Limit::new("widgets", "DIFFTUNE_TEST_MAX_WIDGETS", 10);
        assert_eq!(L.get().unwrap(), 10);
        assert!(L.check(10, "w").is_ok());
        let e = L.check(11, "file.x: 11 widgets").unwrap_err().to_string();
        assert!(
            e.contains("file.x")
                && e.contains("limit of 10")
                && e.contains("DIFFTUNE_TEST_MAX_WIDGETS=N"),
            "{e}"
        );
        std::env::set_var("DIFFTUNE_TEST_MAX_WIDGETS", "1_000");
        assert_eq!(L.get().unwrap(), 1000);
        std::env::set_var("DIFFTUNE_TEST_MAX_WIDGETS", "lots");
        let e = L.check(1, "w").unwrap_err().to_string();
        assert!(
            e.contains("DIFFTUNE_TEST_MAX_WIDGETS") && e.contains("lots"),
            "{e}"
        );
        L.set(Some(3));
        assert_eq!(L.get().unwrap(), 3);
        L.set(None);
        std::env::remove_var("DIFFTUNE_TEST_MAX_WIDGETS");
        assert_eq!(L.get().unwrap(), 10);
        assert_eq!(product(&[usize::MAX, usize::MAX, 2]), u128::MAX);
        assert_eq!(product(&[3, 4]), 12);
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = std::env::temp_dir().join(format!("difftune-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = open_regular_file(&dir).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("a folder"),
            "{e}"
        );
        let file = dir.join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(open_regular_file(&file).unwrap().1, 3);
        #[cfg(unix)]
        {
            let e = open_regular_file(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/dev/zero") && e.contains("a device"), "{e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
