//! The one error type of the tensor layer: every variant names the op (or file) and what was expected.

use std::fmt;
use std::path::PathBuf;

use crate::{DType, Device};

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, and where.
#[derive(Debug)]
pub enum Error {
    /// Shapes that do not fit the op, e.g. `matmul: lhs [2, 3] and rhs [4, 5]: inner dimensions 3 and 4 differ`.
    Shape {
        /// The op that refused the shapes.
        op: &'static str,
        /// The shapes involved and what was expected.
        msg: String,
    },
    /// A dtype the op does not support, or two dtypes that do not match.
    DType {
        /// The op that refused the dtype.
        op: &'static str,
        /// The dtype(s) found and what was expected.
        msg: String,
    },
    /// A device the op does not support, or tensors on different devices.
    Device {
        /// The op that refused the device.
        op: &'static str,
        /// The device found.
        device: Device,
        /// What was expected.
        msg: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is not what was expected (bad header, missing tensor, wrong size).
    Format {
        /// The file (or the name of the in-memory buffer).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Anything else, with a message that says what and where.
    Msg(String),
}

impl Error {
    /// A shape error for `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }

    /// A dtype error for `op`: `found` is not among what the op supports.
    pub fn dtype(op: &'static str, found: DType, expected: &str) -> Self {
        Error::DType {
            op,
            msg: format!("got {found}, expected {expected}"),
        }
    }

    /// An error with a free-form message.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error::Msg(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg } => write!(f, "{op}: shape error: {msg}"),
            Error::DType { op, msg } => write!(f, "{op}: dtype error: {msg}"),
            Error::Device { op, device, msg } => write!(f, "{op}: device error on {device}: {msg}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { path, msg } => write!(f, "{}: {msg}", path.display()),
            Error::Msg(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Returns a shape error from the current function unless `cond` holds.
#[macro_export]
macro_rules! ensure_shape {
    ($cond:expr, $op:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::shape($op, format!($($fmt)+)));
        }
    };
}
