//! The `difftune` command line: one module per subcommand.

mod bank;
mod classifier;
mod demo;
mod encoder;
mod eval;
mod export;
mod forgetting;
mod info;
mod leakage;
mod merge;
mod parity;
mod sample;
mod study;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "difftune",
    version,
    about = "Pretrain diffusion models and transfer them to new domains."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain a DiT (default: a small one on Fashion-MNIST).
    Pretrain(train::TrainArgs),
    /// Fine-tune a pretrained DiT on a new domain (default: Animal-MNIST).
    Finetune(train::FinetuneArgs),
    Bank(bank::BankArgs),
    Forgetting(forgetting::ForgettingArgs),
    Merge(merge::MergeArgs),
    Sample(sample::SampleArgs),
    Eval(eval::EvalArgs),
    Export(export::ExportArgs),
    Classifier(classifier::ClassifierArgs),
    Encoder(encoder::EncoderArgs),
    Study(study::StudyArgs),
    Leakage(leakage::LeakageArgs),
    Info(info::InfoArgs),
    Parity(parity::ParityArgs),
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let command = Cli::parse().command;
    // Every command runs many tensor ops in a row: on the CPU kernels' worker threads (see
    // `tensor::on_cpu_workers`) each op's parallel loop splits its work without a hand-off.
    let result = tensor::on_cpu_workers(|| match command {
        Command::Pretrain(args) => train::pretrain(args),
        Command::Finetune(args) => train::finetune(args),
        Command::Bank(args) => bank::run(args),
        Command::Forgetting(args) => forgetting::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Info(args) => info::run(args),
        Command::Leakage(args) => leakage::run(args),
        Command::Classifier(args) => classifier::run(args),
        Command::Encoder(args) => encoder::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Study(args) => study::run(args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks glibc's allocator to keep freed memory for reuse. By default it hands blocks of a few
/// MiB back to the system (they are mapped on their own, or trimmed off the heap's top) once
/// freed; a training step frees and allocates its activations again every step, so each step
/// paid fresh pages: page faults and the kernel zeroing them (BENCHMARKS.md). Blocks under
/// 32 MiB now come from the heap, which is trimmed only past 1 GiB of free space at its top.
/// All threads share that one heap: the commands run on the kernels' worker threads, and a
/// worker's own arena grows in heaps of at most 64 MiB that glibc unmaps as soon as they empty,
/// which cost a U-Net step on two cores 16,000 page faults and about 10% of its time.
/// Elsewhere (another libc) this does nothing.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // From glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: mallopt only sets the allocator's tuning parameters; it is called before any
        // thread starts.
        unsafe {
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
