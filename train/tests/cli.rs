//! `difftune parity` end to end on hostile input: a fixture holding a NaN, and tolerances that
//! make no sense, are refused with the tensor or flag named, never passed with exit status 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tensor::safetensors::{self, SafeTensorsFile};
use tensor::Tensor;

fn difftune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_difftune"))
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difftune-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the fixture at `from` with the first value of tensor `name` set to NaN.
fn poisoned_copy(from: &Path, name: &str, to: &Path) {
    let meta = SafeTensorsFile::open(from).unwrap().metadata().clone();
    let tensors: Vec<(String, Tensor)> = safetensors::load(from)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            if n != name {
                return (n, t);
            }
            let mut v = t.to_f64_vec().unwrap();
            v[0] = f64::NAN;
            let t = Tensor::from_vec(v, t.shape())
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap();
            (n, t)
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::save(to, &refs, Some(&meta)).unwrap();
}

#[test]
fn parity_refuses_nan_in_a_fixture_and_nan_tolerances() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/dit_patch1_no_null_class.safetensors");
    let clean = fixture.to_str().unwrap();
    let out = difftune(&["parity", clean]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = scratch("parity");
    for name in ["out/forward", "grad/y_embedder.embedding_table.weight"] {
        let bad = dir.join("poisoned.safetensors");
        poisoned_copy(&fixture, name, &bad);
        let out = difftune(&["parity", bad.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a NaN in {name} passed: {err}");
        assert!(err.contains(name) && err.contains("NaN"), "{err}");
    }
    for flag in ["--forward-tol=NaN", "--grad-tol=inf", "--forward-tol=-1"] {
        let out = difftune(&["parity", clean, flag]);
        let err = String::from_utf8_lossy(&out.stderr);
        let name = flag.split('=').next().unwrap();
        assert!(!out.status.success(), "{flag} was accepted");
        assert!(
            err.contains(name) && err.contains("finite number >= 0"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
