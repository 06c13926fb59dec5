//! Cross-crate tests live in `tests/`; this library only holds helpers they share.

pub mod fixture;
pub mod fuzz;
pub mod gpu;
