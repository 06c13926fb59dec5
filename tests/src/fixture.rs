//! Reading the reference fixtures of `../shared/fixtures/` (see its README): config, inputs,
//! outputs, cotangents and gradients, and relative-error comparisons against them.

use std::path::PathBuf;

use autograd::{Grads, Var};
use models::ParamStore;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Tensor};

/// The path of fixture `name` (e.g. `unet_tiny.safetensors`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name)
}

/// ‖a − b‖ / ‖b‖, computed in f64.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    rel_err_floor(a, b, f64::MIN_POSITIVE)
}

/// ‖a − b‖ / max(‖b‖, floor): relative, but absolute for a reference whose norm is below
/// `floor` — a gradient that is zero in exact arithmetic, such as that of attention's key bias
/// (softmax ignores a shift shared by all keys), is rounding noise in both implementations.
pub fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    diff.sqrt() / norm.sqrt().max(floor)
}

/// Below this norm a reference gradient is compared absolutely (see [`rel_err_floor`]); the
/// fixtures' nonzero gradients have norms above 1e-2.
pub const GRAD_FLOOR: f64 = 1e-3;

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

    /// The relative error of `ours` against `out/<name>`.
    pub fn out_err(&self, name: &str, ours: &Var) -> f64 {
        rel_err(ours.value(), &self.tensor(&format!("out/{name}")))
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

    /// Checks every `grad/<param>` and `grad/input/<name>` against `grads` within `tol`
    /// (relative, absolute below [`GRAD_FLOOR`]); every parameter of `ps` must have a reference gradient. Returns the largest
    /// relative error among the nonzero reference gradients, and its name.
    pub fn check_grads(
        &self,
        ps: &ParamStore,
        inputs: &[(&str, &Var)],
        grads: &Grads,
        tol: f64,
    ) -> (f64, String) {
        let mut worst = (0.0, String::new());
        let params = ps.iter().map(|(n, v)| (n.to_string(), v.clone()));
        let inputs = inputs
            .iter()
            .map(|(n, v)| (format!("input/{n}"), (*v).clone()));
        let mut checked = 0;
        for (name, var) in params.chain(inputs) {
            let reference = self.tensor(&format!("grad/{name}"));
            let ours = grads
                .get(&var)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let err = rel_err_floor(ours, &reference, GRAD_FLOOR);
            assert!(err < tol, "grad/{name}: relative error {err:.3e}");
            let zero =
                rel_err_floor(&reference.zeros_like().unwrap(), &reference, 1.0) < GRAD_FLOOR;
            if !zero && err > worst.0 {
                worst = (err, name);
            }
            checked += 1;
        }
        let in_file = self
            .file
            .names()
            .iter()
            .filter(|n| n.starts_with("grad/"))
            .count();
        assert_eq!(checked, in_file, "not every reference gradient was checked");
        worst
    }
}
