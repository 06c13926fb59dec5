//! A finite-difference gradient checker: analytic gradients from [`Var::backward`] against
//! central differences, all in f64.

use tensor::{DType, Error, Generator, Result, Tensor};

use crate::{no_grad, Var};

/// Settings of [`gradcheck`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// At most this many elements per input are perturbed (chosen at random, seeded).
    pub max_elems: usize,
    /// Seed of the cotangent and of the element choice.
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            eps: 1e-6,
            atol: 1e-7,
            rtol: 1e-5,
            max_elems: 64,
            seed: 0,
        }
    }
}

/// What [`gradcheck`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Elements compared, over all inputs.
    pub checked: usize,
    /// Largest |analytic − numeric| seen.
    pub max_abs_err: f64,
    /// Largest |analytic − numeric| / (atol + rtol·|numeric|); at most 1 passes.
    pub worst_ratio: f64,
    /// Where the worst ratio was: (input, flat element, analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
}

impl CheckReport {
    /// Whether every compared gradient is within tolerance.
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

/// Checks the gradients of `f` at `inputs`. Float inputs are converted to f64 and differentiated;
/// other inputs (indices, masks) are passed as constants. The scalar differentiated is
/// `sum(f(inputs) · c)` for a fixed random cotangent `c`, so every output element counts.
///
/// An input whose analytic gradient is missing counts as zero: an op that drops a gradient fails.
/// Inputs may live on any device (all on one); the check runs there, perturbations included.
///
/// ```
/// use autograd::check::{gradcheck, CheckOptions};
/// use tensor::{DType, Device, Generator, Tensor};
/// let x = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, Device::Cpu, &mut Generator::new(1)).unwrap();
/// let report = gradcheck(|v| v[0].tanh(), &[x], &CheckOptions::default()).unwrap();
/// assert!(report.passed(), "{report:?}");
/// ```
pub fn gradcheck(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                t.to_dtype(DType::F64)?.contiguous()
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<_>>()?;
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::leaf(t.clone(), t.dtype().is_float()))
        .collect();
    let out = f(&vars)?;
    let mut gen = Generator::new(opts.seed);
    let cot = Tensor::randn(
        out.shape(),
        0.0,
        1.0,
        DType::F64,
        out.value().device(),
        &mut gen,
    )?;
    let scalar = |out: &Tensor| -> Result<f64> {
        out.to_dtype(DType::F64)?.mul(&cot)?.sum_all()?.to_scalar()
    };
    let grads = if out.requires_grad() {
        Some(
            out.mul(&Var::constant(cot.clone()))?
                .sum_all()?
                .backward()?,
        )
    } else {
        None
    };

    let mut report = CheckReport {
        checked: 0,
        max_abs_err: 0.0,
        worst_ratio: 0.0,
        worst: None,
    };
    for (i, x) in inputs
        .iter()
        .enumerate()
        .filter(|(_, x)| x.dtype().is_float())
    {
        let analytic = match grads.as_ref().and_then(|g| g.get(&vars[i])) {
            Some(g) => g.to_f64_vec()?,
            None => vec![0.0; x.elem_count()],
        };
        let base = x.to_vec::<f64>()?;
        let n = base.len();
        let picks: Vec<usize> = if n <= opts.max_elems {
            (0..n).collect()
        } else {
            use rand::seq::index::sample;
            sample(gen.rng(), n, opts.max_elems).into_vec()
        };
        for j in picks {
            let eval_at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut args = vars.clone();
                // The perturbed copy goes where the input lives (a CUDA check stays on the GPU).
                args[i] = Var::constant(Tensor::from_vec(v, x.shape())?.to_device(x.device())?);
                no_grad(|| scalar(f(&args)?.value()))
            };
            let numeric = (eval_at(opts.eps)? - eval_at(-opts.eps)?) / (2.0 * opts.eps);
            let err = (analytic[j] - numeric).abs();
            let ratio = err / (opts.atol + opts.rtol * numeric.abs());
            if !ratio.is_finite() {
                return Err(Error::msg(format!("gradcheck: non-finite gradient at input {i} element {j}: analytic {}, numeric {numeric}", analytic[j])));
            }
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if ratio > report.worst_ratio {
                report.worst_ratio = ratio;
                report.worst = Some((i, j, analytic[j], numeric));
            }
        }
    }
    Ok(report)
}
