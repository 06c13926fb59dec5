//! The `difftune` command line: one module per subcommand.

mod classifier;
mod demo;
mod eval;
mod parity;

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
    Classifier(classifier::ClassifierArgs),
    Demo(demo::DemoArgs),
    Eval(eval::EvalArgs),
    Parity(parity::ParityArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Classifier(args) => classifier::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Parity(args) => parity::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
