//! `difftune study`: a grid of config variants times seeds, evaluated under one protocol.

use std::path::PathBuf;

use clap::Args;
use tensor::Result;
use train::study::Study;

/// Train and evaluate every variant of a study with every seed; report means with 95% intervals.
#[derive(Args)]
pub struct StudyArgs {
    /// The study file (JSON; see `train::study` for the format).
    study: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: StudyArgs) -> Result<()> {
    let study = Study::from_file(&args.study)?;
    let command = format!("difftune study {}", args.study.display());
    let outcome = train::study::run(&study, &command, !args.quiet)?;
    println!(
        "{}: {} runs trained and evaluated now, {} already done",
        study.out.display(),
        outcome.counts.ran,
        outcome.counts.skipped
    );
    if outcome.counts.busy > 0 {
        println!(
            "{} runs are in the hands of another process on this study; the last to finish \
             writes the results (or run the study again when they are done)",
            outcome.counts.busy
        );
    }
    for path in &outcome.written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
