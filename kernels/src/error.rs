//! The one error type of the crate: a message that says what failed and what was expected.

use std::fmt;

/// A failed CUDA call, compilation or launch, with a message naming what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with this message.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error(format!("CUDA driver: {e}"))
    }
}
