//! `difftune export`: a run's weights as one small file for `--init`, `sample` and `eval`.

use std::path::PathBuf;

use clap::Args;
use tensor::Result;

/// Write a run's moving-average weights (LoRA merged, DiffFit's scales folded in) under the
/// reference parameter names, with the run's config and classes in the metadata.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run folder (its latest checkpoint) or a checkpoint folder.
    run: PathBuf,
    /// The `.safetensors` file to write (never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `difftune export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let r = train::run::export(&args.run, &args.out)?;
    println!(
        "{}: {} tensors, {} parameters, step {}",
        args.out.display(),
        r.tensors,
        r.parameters,
        r.step
    );
    Ok(())
}
