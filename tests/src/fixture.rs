//! Reading the reference fixtures of `../shared/fixtures/` (see its README): config, inputs,
//! outputs, cotangents and gradients, and relative-error comparisons against them.

use std::path::PathBuf;

use autograd::Var;
use models::ParamStore;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Tensor};

/// The environment variable that names the `shared/` folder (the one holding `fixtures/`), for
/// test binaries run away from this checkout: `.gpu/run.sh` sets it to the copy in `.gpu/shared`.
pub const SHARED_ENV: &str = "DIFFTUNE_SHARED";

/// The `shared/` folder: `$DIFFTUNE_SHARED`, else `../shared` beside the repository (a path fixed
/// at compile time, which a binary copied to another machine cannot rely on).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os(SHARED_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")),
    }
}

/// The path of fixture `name` (e.g. `unet_tiny.safetensors`).
pub fn path(name: &str) -> PathBuf {
    shared_dir().join("fixtures").join(name)
}

pub use models::parity::GRAD_FLOOR;

/// ‖a − b‖ / ‖b‖, computed in f64 (the parity runner's measure).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    models::parity::relative_error(a, b).unwrap()
}

/// ‖a − b‖ / max(‖b‖, floor) (see [`GRAD_FLOOR`]).
pub fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    models::parity::relative_error_floor(a, b, floor).unwrap()
}

/// An open fixture file.
pub struct Fixture {
    /// The file.
    pub file: SafeTensorsFile,
    /// Its path.
    pub path: PathBuf,
}

impl Fixture {
    /// Opens fixture `name`.
    pub fn open(name: &str) -> Fixture {
        let path = path(name);
        let file = SafeTensorsFile::open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        Fixture { file, path }
    }

    /// The model's JSON config from the metadata.
    pub fn config(&self) -> String {
        self.file.metadata()["config"].clone()
    }

    /// Tensor `name`, unchanged.
    pub fn tensor(&self, name: &str) -> Tensor {
        self.file.tensor(name).unwrap()
    }

    /// Tensor `name` as `dtype`, as a leaf that requires a gradient.
    pub fn input(&self, name: &str, dtype: DType) -> Var {
        Var::param(self.tensor(name).to_dtype(dtype).unwrap())
    }

    /// An empty store of `dtype` on the CPU.
    pub fn store(dtype: DType) -> ParamStore {
        ParamStore::new(dtype, Device::Cpu, 0)
    }

    /// Loads `param/*` into `ps` strictly.
    pub fn load_params(&self, ps: &mut ParamStore) {
        let report = ps.load(&self.path, "param/", true).unwrap();
        assert_eq!(report.loaded, ps.len());
    }

    /// `sum_k sum(out_k · cot/k)` over the named outputs.
    pub fn loss(&self, outs: &[(&str, &Var)]) -> Var {
        let mut loss: Option<Var> = None;
        for (name, out) in outs {
            let cot = self
                .tensor(&format!("cot/{name}"))
                .to_dtype(out.value().dtype())
                .unwrap();
            let term = out.mul(&Var::constant(cot)).unwrap().sum_all().unwrap();
            loss = Some(match loss {
                Some(l) => l.add(&term).unwrap(),
                None => term,
            });
        }
        loss.expect("no outputs")
    }

    /// Number of reference gradients in the file.
    pub fn grad_count(&self) -> usize {
        self.file
            .names()
            .iter()
            .filter(|n| n.starts_with("grad/"))
            .count()
    }
}

/// Runs the fixture at `path` through the shared runner behind `difftune parity` in `dtype`, and
/// asserts that every output and every reference gradient was compared and is within tolerance.
pub fn assert_parity(path: &std::path::Path, dtype: DType) -> models::parity::ParityReport {
    use models::parity::{check_fixture, reference_model};
    let report = check_fixture(path, dtype, reference_model).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    let file = SafeTensorsFile::open(path).unwrap();
    let expected = file
        .names()
        .iter()
        .filter(|n| n.starts_with("out/") || n.starts_with("grad/"))
        .count();
    assert_eq!(
        report.rows.len(),
        expected,
        "not every output and gradient was compared"
    );
    report
}
