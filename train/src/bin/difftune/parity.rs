//! `difftune parity`: run a reference fixture and compare every output and gradient.

use std::path::PathBuf;

use clap::Args;
use models::parity::{check_fixture, reference_model};
use tensor::DType;

/// Run a reference fixture (DiT, UNet2DModel, AutoencoderKL or CLIPVisionModelWithProjection:
/// model and config from its metadata) forward and backward and print the relative error of every
/// output and gradient.
/// Exits non-zero above tolerance.
#[derive(Args)]
pub struct ParityArgs {
    /// The fixture: a safetensors file with param/, input/, out/, cot/ and grad/ tensors.
    file: PathBuf,
    /// The dtype the model runs in.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
    dtype: String,
    /// Tolerance of the outputs' relative error (default: 1e-4 in f32, 1e-9 in f64).
    #[arg(long, value_parser = parse_tolerance)]
    forward_tol: Option<f64>,
    /// Tolerance of the gradients' relative error (default: 1e-3 in f32, 1e-7 in f64).
    #[arg(long, value_parser = parse_tolerance)]
    grad_tol: Option<f64>,
}

/// A tolerance flag: a finite number >= 0 (a NaN tolerance would fail or pass every comparison).
fn parse_tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}`: expected a finite number >= 0")),
    }
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
    let failed = report.failures().count();
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ParityArgs,
    }

    #[test]
    fn tolerances_must_be_finite_and_not_negative() {
        let parse =
            |flag: &str, v: &str| Cli::try_parse_from(["parity", "f", &format!("{flag}={v}")]);
        for flag in ["--forward-tol", "--grad-tol"] {
            for bad in ["NaN", "nan", "inf", "-1e-3", "x"] {
                let err = parse(flag, bad).err().expect(bad).to_string();
                assert!(
                    err.contains(flag) && err.contains("finite number >= 0"),
                    "{err}"
                );
            }
            let cli = parse(flag, "0").unwrap();
            assert_eq!(cli.args.forward_tol.or(cli.args.grad_tol), Some(0.0));
        }
    }
}
