//! File writes that never leave half a file behind.

/// Writes bytes to a uniquely named temporary file beside the path, syncs it, renames it into
/// place and syncs the folder: a crash leaves either the old file or the new one, never a
/// truncated one (see [`tensor::atomic`]).
pub use tensor::atomic::write as write_atomic;
