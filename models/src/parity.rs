//! Parity with reference fixtures: run a model stored in a fixture file (weights `param/*`,
//! inputs `input/*`, reference outputs `out/*`, cotangents `cot/*`, reference gradients `grad/*`,
//! model type and config in the metadata), forward and backward, and measure the relative error
//! ‖ours − reference‖ / ‖reference‖ of every output and gradient.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use autograd::Var;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Error, Result, Tensor};

use crate::dit::{Dit, DitConfig};
use crate::encoder::{ClipConfig, EncoderConfig, ImageEncoder};
use crate::unet::UNet2DModel;
use crate::vae::AutoencoderKL;
use crate::ParamStore;

/// A model's forward as the fixture sees it: named inputs in, named outputs out (names without
/// the `input/` and `out/` prefixes).
pub type FixtureForward =
    Box<dyn Fn(&ParamStore, &BTreeMap<String, Var>) -> Result<Vec<(String, Var)>>>;

/// Builds a model from the fixture's `model` and `config` metadata into `ps` and returns its forward.
pub type ModelBuilder =
    fn(model: &str, config: &str, ps: &mut ParamStore) -> Result<FixtureForward>;

/// One compared tensor.
#[derive(Clone, Debug)]
pub struct ParityRow {
    /// `out/<name>`, `grad/<param>` or `grad/input/<name>`.
    pub name: String,
    /// ‖ours − reference‖ / ‖reference‖ (infinite when ours is missing, NaN when ours holds a NaN).
    pub rel_err: f64,
    /// The tolerance it is held to.
    pub tolerance: f64,
}

impl ParityRow {
    /// Whether the error is within the tolerance. A NaN error or tolerance fails: written as
    /// `err <= tol`, which is false when either is NaN (`err > tol` would pass them).
    pub fn passed(&self) -> bool {
        self.rel_err <= self.tolerance
    }
}

/// Every compared tensor of one fixture run.
#[derive(Clone, Debug)]
pub struct ParityReport {
    /// The fixture's model type.
    pub model: String,
    /// The dtype the model ran in.
    pub dtype: DType,
    /// Outputs first, then gradients.
    pub rows: Vec<ParityRow>,
}

impl ParityReport {
    /// Whether every row is within its tolerance.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(ParityRow::passed)
    }

    /// The rows that did not pass.
    pub fn failures(&self) -> impl Iterator<Item = &ParityRow> {
        self.rows.iter().filter(|r| !r.passed())
    }

    /// The largest relative error among rows whose name starts with `prefix`; NaN if any of them
    /// is NaN (`f64::max` would drop it and report the largest finite one).
    pub fn worst(&self, prefix: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .map(|r| r.rel_err)
            .fold(0.0, |worst: f64, e| {
                if worst.is_nan() || e.is_nan() {
                    f64::NAN
                } else {
                    worst.max(e)
                }
            })
    }
}

impl fmt::Display for ParityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} in {}: {} tensors compared",
            self.model,
            self.dtype,
            self.rows.len()
        )?;
        for r in &self.rows {
            let verdict = if r.passed() { "ok" } else { "FAIL" };
            writeln!(
                f,
                "  {:<60} rel err {:>10.3e}  (tol {:.0e})  {verdict}",
                r.name, r.rel_err, r.tolerance
            )?;
        }
        Ok(())
    }
}

/// Tolerances of the project: forward 1e-4 in f32 and 1e-9 in f64; gradients 1e-3 in f32 and 1e-7
/// in f64.
pub fn tolerances(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-9, 1e-7),
        _ => (1e-4, 1e-3),
    }
}

/// Below this norm a reference gradient is compared absolutely: a gradient that is zero in exact
/// arithmetic (attention's key bias: softmax ignores a shift shared by all keys) is rounding noise
/// in both implementations. The fixtures' nonzero gradients have norms above 1e-2.
pub const GRAD_FLOOR: f64 = 1e-3;

/// ‖a − b‖ / ‖b‖ in f64 (‖a − b‖ when b is zero).
pub fn relative_error(ours: &Tensor, reference: &Tensor) -> Result<f64> {
    relative_error_floor(ours, reference, 0.0)
}

/// ‖a − b‖ / max(‖b‖, floor): relative, but absolute for a reference smaller than `floor`.
pub fn relative_error_floor(ours: &Tensor, reference: &Tensor, floor: f64) -> Result<f64> {
    if ours.shape() != reference.shape() {
        return Err(Error::shape(
            "relative_error",
            format!(
                "ours {:?} vs reference {:?}",
                ours.shape(),
                reference.shape()
            ),
        ));
    }
    let (a, b) = (ours.to_f64_vec()?, reference.to_f64_vec()?);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    let scale = norm.max(floor);
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

/// The input `name` of a fixture run.
fn input<'a>(inputs: &'a BTreeMap<String, Var>, name: &str) -> Result<&'a Var> {
    inputs
        .get(name)
        .ok_or_else(|| Error::msg(format!("the fixture has no `input/{name}`")))
}

/// Builds the model a fixture's metadata names (DiT, UNet2DModel, AutoencoderKL or
/// CLIPVisionModelWithProjection, whose config is HuggingFace's CLIPVisionConfig) from its
/// config, and returns its forward over the fixture's inputs.
pub fn reference_model(model: &str, config: &str, ps: &mut ParamStore) -> Result<FixtureForward> {
    if model.starts_with("DiT") {
        let dit = Dit::new(ps, DitConfig::from_json(config)?)?;
        return Ok(Box::new(move |ps, inputs| {
            let (t, y) = (input(inputs, "t")?.value(), input(inputs, "y")?.value());
            Ok(vec![(
                "forward".to_string(),
                dit.forward(ps, input(inputs, "x")?, t, y, None)?,
            )])
        }));
    }
    if model.starts_with("UNet2DModel") {
        let unet = UNet2DModel::from_json(ps, config)?;
        return Ok(Box::new(move |ps, inputs| {
            let t = input(inputs, "t")?.value();
            let y = inputs.get("y").map(|y| y.value());
            Ok(vec![(
                "forward".to_string(),
                unet.forward(ps, input(inputs, "x")?, t, y)?,
            )])
        }));
    }
    if model.starts_with("AutoencoderKL") {
        let vae = AutoencoderKL::from_json(ps, config)?;
        return Ok(Box::new(move |ps, inputs| {
            let (mean, logvar) = vae.encode(ps, input(inputs, "x")?)?;
            let decoded = vae.decode(ps, input(inputs, "z")?)?;
            Ok(vec![
                ("encode_mean".into(), mean),
                ("encode_logvar".into(), logvar),
                ("decode".into(), decoded),
            ])
        }));
    }
    if model.starts_with("CLIPVisionModelWithProjection") {
        let config = EncoderConfig::clip(ClipConfig::from_hf_json(config, true)?);
        // The tower without CLIP's training-only temperature, which the reference lacks.
        let mut all = ParamStore::new(ps.dtype(), ps.device(), 0);
        let clip = ImageEncoder::new(&mut all, &config)?;
        for (name, var) in all
            .iter()
            .filter(|(n, _)| *n != crate::encoder::clip::LOGIT_SCALE)
        {
            ps.insert(name, var.value().clone())?;
        }
        return Ok(Box::new(move |ps, inputs| {
            clip.clip_outputs(ps, input(inputs, "pixel_values")?)
        }));
    }
    Err(Error::msg(format!("unknown model `{model}` in the fixture metadata: expected DiT, UNet2DModel, AutoencoderKL or CLIPVisionModelWithProjection")))
}

/// Runs the fixture at `path` in `dtype` with the model `build` makes, and compares.
pub fn check_fixture(
    path: impl AsRef<Path>,
    dtype: DType,
    build: ModelBuilder,
) -> Result<ParityReport> {
    let path = path.as_ref();
    let file = SafeTensorsFile::open(path)?;
    let meta = |key: &str| {
        file.metadata()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Format {
                path: path.to_path_buf(),
                msg: format!("metadata has no `{key}`"),
            })
    };
    let (model, config) = (meta("model")?, meta("config")?);
    // A NaN reference would make every comparison with it false, and so pass unseen.
    for name in file.names() {
        if !file.tensor(name)?.all_finite()? {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!("tensor `{name}` holds NaN or infinite values"),
            });
        }
    }
    let mut ps = ParamStore::new(dtype, Device::Cpu, 0);
    let forward = build(&model, &config, &mut ps)?;
    ps.load(path, "param/", true)?;

    let mut inputs = BTreeMap::new();
    for name in file
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("input/"))
    {
        let t = file.tensor(&format!("input/{name}"))?;
        let trainable = file.contains(&format!("grad/input/{name}"));
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        inputs.insert(name.to_string(), Var::leaf(t, trainable));
    }
    let outputs = forward(&ps, &inputs)?;
    let (fwd_tol, grad_tol) = tolerances(dtype);
    let mut rows = Vec::new();
    let mut loss: Option<Var> = None;
    for (name, out) in &outputs {
        let reference = file.tensor(&format!("out/{name}"))?;
        rows.push(ParityRow {
            name: format!("out/{name}"),
            rel_err: relative_error(out.value(), &reference)?,
            tolerance: fwd_tol,
        });
        let cot = Var::constant(file.tensor(&format!("cot/{name}"))?.to_dtype(dtype)?);
        let term = out.mul(&cot)?.sum_all()?;
        loss = Some(match loss {
            Some(l) => l.add(&term)?,
            None => term,
        });
    }
    let loss = loss.ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        msg: "the model produced no output".into(),
    })?;
    let grads = loss.backward()?;
    for name in file
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("grad/"))
    {
        let var = match name.strip_prefix("input/") {
            Some(input) => inputs
                .get(input)
                .cloned()
                .ok_or_else(|| Error::msg(format!("no input `{input}` for `grad/{name}`")))?,
            None => ps.var(name)?,
        };
        let reference = file.tensor(&format!("grad/{name}"))?;
        let rel_err = match grads.get(&var) {
            Some(g) => relative_error_floor(g, &reference, GRAD_FLOOR)?,
            None => f64::INFINITY,
        };
        rows.push(ParityRow {
            name: format!("grad/{name}"),
            rel_err,
            tolerance: grad_tol,
        });
    }
    Ok(ParityReport { model, dtype, rows })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::nn::Linear;

    fn linear_builder(model: &str, config: &str, ps: &mut ParamStore) -> Result<FixtureForward> {
        assert_eq!((model, config), ("Linear", "{}"));
        let lin = Linear::new(ps, "proj", 3, 2, true)?;
        Ok(Box::new(move |ps, inputs| {
            Ok(vec![(
                "forward".to_string(),
                lin.forward(ps, &inputs["x"])?,
            )])
        }))
    }

    /// A fixture of y = x Wᵀ + b written by hand: dL/dW = cotᵀ x, dL/db = Σ cot, dL/dx = cot W.
    /// `edit(name, tensor)` may change any tensor before it is written.
    fn write_fixture(path: &Path, edit: impl Fn(&str, Tensor) -> Tensor) {
        let t = |v: Vec<f64>, s: &[usize]| Tensor::from_vec(v, s).unwrap();
        let (w, b, x, cot) = (
            t(vec![1., 2., 3., -1., 0.5, 0.], &[2, 3]),
            t(vec![0.1, -0.2], &[2]),
            t(vec![1., 0., 2., -1., 1., 1.], &[2, 3]),
            t(vec![1., -1., 0.5, 2.], &[2, 2]),
        );
        let y = x
            .matmul(&w.transpose(0, 1).unwrap())
            .unwrap()
            .add(&b)
            .unwrap();
        let gw = cot.transpose(0, 1).unwrap().matmul(&x).unwrap();
        let gb = cot.sum(&[0], false).unwrap();
        let gx = cot.matmul(&w).unwrap();
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let tensors = [
            ("param/proj.weight", f32s(&w)),
            ("param/proj.bias", f32s(&b)),
            ("input/x", f32s(&x)),
            ("out/forward", y),
            ("cot/forward", cot),
            ("grad/proj.weight", gw),
            ("grad/proj.bias", gb),
            ("grad/input/x", gx),
        ]
        .map(|(name, t)| (name, edit(name, t)));
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let meta = HashMap::from([
            ("model".to_string(), "Linear".to_string()),
            ("config".to_string(), "{}".to_string()),
        ]);
        tensor::safetensors::save(path, &refs, Some(&meta)).unwrap();
    }

    #[test]
    fn a_matching_model_passes_and_a_wrong_reference_fails() {
        let dir = std::env::temp_dir().join(format!("difftune-parity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, bad) = (dir.join("good.safetensors"), dir.join("bad.safetensors"));
        write_fixture(&good, |_, t| t);
        write_fixture(&bad, |name, t| match name {
            "out/forward" => t.mul_scalar(1.01).unwrap(),
            _ => t,
        });
        for dtype in [DType::F32, DType::F64] {
            let r = check_fixture(&good, dtype, linear_builder).unwrap();
            assert!(r.passed(), "{r}");
            assert_eq!(r.rows.len(), 4);
        }
        let r = check_fixture(&bad, DType::F64, linear_builder).unwrap();
        assert!(
            !r.passed() && r.worst("out/") > 5e-3 && r.worst("grad/") < 1e-12,
            "{r}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_non_finite_fixture_tensor_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("difftune-parity-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (poisoned, value) in [
            ("param/proj.weight", f64::NAN),
            ("out/forward", f64::NAN),
            ("grad/proj.bias", f64::INFINITY),
        ] {
            let path = dir.join("fixture.safetensors");
            write_fixture(&path, |name, t| {
                if name != poisoned {
                    return t;
                }
                let mut v = t.to_f64_vec().unwrap();
                v[0] = value;
                Tensor::from_vec(v, t.shape())
                    .unwrap()
                    .to_dtype(t.dtype())
                    .unwrap()
            });
            let err = check_fixture(&path, DType::F64, linear_builder)
                .map(|r| r.to_string())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(poisoned) && err.contains("fixture.safetensors"),
                "{err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nan_errors_and_tolerances_fail() {
        let row = |name: &str, rel_err: f64, tolerance: f64| ParityRow {
            name: name.into(),
            rel_err,
            tolerance,
        };
        let report = |rows| ParityReport {
            model: "Linear".into(),
            dtype: DType::F32,
            rows,
        };
        let ok = report(vec![row("out/a", 1e-6, 1e-4), row("grad/w", 1e-5, 1e-3)]);
        assert!(ok.passed() && ok.failures().count() == 0);
        for (err, tol) in [(f64::NAN, 1e-4), (1e-6, f64::NAN), (f64::INFINITY, 1e-4)] {
            let r = report(vec![row("out/a", err, tol), row("out/b", 1e-6, 1e-4)]);
            assert!(!r.passed(), "{r}");
            assert_eq!(r.failures().count(), 1);
            assert!(r.to_string().contains("FAIL"), "{r}");
        }
        // The worst error is NaN wherever a NaN row stands, not the largest finite one.
        for rows in [
            vec![row("out/a", f64::NAN, 1e-4), row("out/b", 1e-6, 1e-4)],
            vec![row("out/b", 1e-6, 1e-4), row("out/a", f64::NAN, 1e-4)],
        ] {
            assert!(report(rows).worst("out/").is_nan());
        }
    }
}
