//! Registers, shared memory and spills of every kernel, from ptxas through NVRTC: no GPU needed.
//!
//! ```sh
//! source scripts/cuda-env.sh
//! cargo run --release -p kernels --example ptxas_report -- sm_90a [family]
//! ```

use kernels::nvrtc::resource_report;
use kernels::source::SOURCES;

fn main() {
    let mut args = std::env::args().skip(1);
    let arch = args.next().unwrap_or_else(|| "sm_90a".into());
    let family = args.next();
    for source in SOURCES
        .iter()
        .filter(|s| family.as_deref().is_none_or(|f| f == s.name))
    {
        match resource_report(source, &arch) {
            Ok(log) => {
                println!("== {}.cu ({arch})", source.name);
                // Per kernel: its name, stack frame and spill bytes, registers and shared memory.
                for line in log.lines().filter(|l| !l.contains("Compile time")) {
                    let line = line.trim_start_matches("ptxas info    : ").trim();
                    if !line.is_empty() {
                        println!("{line}");
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
}
