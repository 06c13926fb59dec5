//! The CUDA device for GPU tests, or a visible skip where there is none.
//!
//! GPU tests start with [`cuda_or_skip`]: on a machine without a usable `cuda:0` (no driver, no
//! NVRTC, no device) they print `<test>: skipped: no CUDA device (<reason>)` and pass, so
//! `cargo test` passes in CI; on the GPU machine `.gpu/run.sh` sets [`REQUIRE_CUDA`], so a device
//! that cannot be opened there fails the tests instead of skipping them.

use std::io::Write;

use tensor::Device;

/// Environment variable: when set to anything but `0`, a missing CUDA device fails the test.
pub const REQUIRE_CUDA: &str = "DIFFTUNE_REQUIRE_CUDA";

/// Environment variable: when set to anything but `0`, the tests that compare CUDA with the CPU
/// run with the CPU standing in for the GPU ([`cuda_or_self_test`]), which checks the test cases
/// themselves on a machine without a GPU.
pub const SELF_TEST: &str = "DIFFTUNE_PARITY_SELF_TEST";

/// `cuda:0` when it can be opened; else notes the skip (with the reason) and returns `None`, or
/// panics where [`REQUIRE_CUDA`] is set.
pub fn cuda_or_skip(test: &str) -> Option<Device> {
    match Device::cuda(0) {
        Ok(device) => Some(device),
        Err(e) if cuda_required() => {
            panic!("{test}: {REQUIRE_CUDA} is set but cuda:0 cannot be opened: {e}")
        }
        Err(e) => {
            note(&format!("{test}: skipped: no CUDA device ({e})"));
            None
        }
    }
}

/// As [`cuda_or_skip`], but the CPU where [`SELF_TEST`] is set (noted).
pub fn cuda_or_self_test(test: &str) -> Option<Device> {
    if std::env::var_os(SELF_TEST).is_some_and(|v| v != "0") {
        note(&format!("{test}: self-test, the CPU stands in for the GPU"));
        return Some(Device::Cpu);
    }
    cuda_or_skip(test)
}

/// Whether [`REQUIRE_CUDA`] asks for a GPU.
pub fn cuda_required() -> bool {
    std::env::var_os(REQUIRE_CUDA).is_some_and(|v| v != "0")
}

/// Writes `line` to the process's stderr directly: the test harness captures `println!` and
/// `eprintln!` of passing tests, and a skip or a summary must show in the output all the same.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
