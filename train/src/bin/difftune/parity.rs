//! `difftune parity`: run a reference fixture and compare every output and gradient.

use std::path::PathBuf;

use clap::Args;
use models::parity::{check_fixture, reference_model};
use tensor::DType;

/// Run a reference fixture (DiT, UNet2DModel or AutoencoderKL: model and config from its
/// metadata) forward and backward and print the relative error of every output and gradient.
/// Exits non-zero above tolerance.
#[derive(Args)]
pub struct ParityArgs {
    /// The fixture: a safetensors file with param/, input/, out/, cot/ and grad/ tensors.
    file: PathBuf,
    /// The dtype the model runs in.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
    dtype: String,
    /// Tolerance of the outputs' relative error (default: 1e-4 in f32, 1e-9 in f64).
    #[arg(long)]
    forward_tol: Option<f64>,
    /// Tolerance of the gradients' relative error (default: 1e-3 in f32, 1e-7 in f64).
    #[arg(long)]
    grad_tol: Option<f64>,
}

pub fn run(args: ParityArgs) -> tensor::Result<()> {
    let dtype = if args.dtype == "f64" {
        DType::F64
    } else {
        DType::F32
    };
    let mut report = check_fixture(&args.file, dtype, reference_model)?;
    for row in &mut report.rows {
        let custom = if row.name.starts_with("out/") {
            args.forward_tol
        } else {
            args.grad_tol
        };
        row.tolerance = custom.unwrap_or(row.tolerance);
    }
    print!("{report}");
    let failed = report
        .rows
        .iter()
        .filter(|r| r.rel_err > r.tolerance)
        .count();
    if failed > 0 {
        return Err(tensor::Error::msg(format!(
            "{}: {failed} of {} tensors above tolerance",
            args.file.display(),
            report.rows.len()
        )));
    }
    println!("all {} tensors within tolerance", report.rows.len());
    Ok(())
}
