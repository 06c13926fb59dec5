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
    tensor::keep_freed_memory();
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
