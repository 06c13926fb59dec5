//! What every parity test shares: the dtypes, the comparison harness ([`Parity`]: one function
//! run on the CPU and on `cuda:0`, every output compared, failures collected and reported at
//! the end), and the inputs (random values, indices, views).

use std::panic::{catch_unwind, AssertUnwindSafe};

use difftune_tests::gpu::{cuda_or_self_test, note};
use rand::Rng;
use tensor::{DType, Device, Generator, Result, Tensor};

pub const F32: DType = DType::F32;
pub const F64: DType = DType::F64;
pub const BF16: DType = DType::BF16;
pub const F16: DType = DType::F16;
pub const U8: DType = DType::U8;
pub const I64: DType = DType::I64;

/// The float dtypes the CPU computes in.
pub const FLOATS: [DType; 2] = [F32, F64];
/// The dtypes of the training ops: the CPU's two, and the halves CUDA computes in.
pub const TRAIN: [DType; 4] = [F32, F64, BF16, F16];
/// Every dtype.
pub const ALL: [DType; 6] = [F32, F64, BF16, F16, U8, I64];

// ---------------------------------------------------------------------------------------------
// The comparison harness.
// ---------------------------------------------------------------------------------------------

/// How a CUDA output must match the CPU's.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Within the dtype's relative tolerance ([`tolerance`]), against a reference computed in the
    /// next wider dtype ([`reference_dtype`]).
    Close,
    /// As `Close`, within this relative tolerance.
    Within(f64),
    /// Element for element (NaN matches NaN), the CPU computing in the same dtype.
    Exact,
}

impl Mode {
    fn is_close(self) -> bool {
        self != Mode::Exact
    }
}

/// ‖cuda − cpu‖ / ‖cpu‖ allowed for outputs computed in `dtype`.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

/// The dtype the CPU computes a `Close` reference in, from the same inputs rounded to `dtype`: f32
/// for the halves (which the CPU does not compute in), f64 for f32, so that the error measured is
/// CUDA's alone (the CPU's own f32 sum of 20,000 numbers is some 1e-6 off, a tenth of the
/// tolerance).
fn reference_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => F32,
        DType::F32 => F64,
        other => other,
    }
}

/// The comparisons of one test: counts them, keeps the worst error and every failure, and
/// reports at the end ([`Parity::finish`]) rather than stopping at the first.
pub struct Parity {
    test: &'static str,
    /// The device compared with the CPU (the CPU itself in a self-test).
    pub device: Device,
    compared: usize,
    worst: f64,
    worst_at: String,
    failures: Vec<String>,
}

impl Parity {
    /// The harness on `cuda:0`, or `None` (the skip noted) without one.
    pub fn new(test: &'static str) -> Option<Parity> {
        let device = cuda_or_self_test(test)?;
        Some(Parity {
            test,
            device,
            compared: 0,
            worst: 0.0,
            worst_at: String::new(),
            failures: Vec::new(),
        })
    }

    /// `f` of `inputs` on the CPU and on the GPU, outputs within the tolerance of `dtype`. Float
    /// inputs are cast to `dtype` first (on the CPU, so both sides see the same values); the CPU
    /// then computes in [`reference_dtype`] on those values. Other inputs (indices, masks) are
    /// passed as they are.
    pub fn close(
        &mut self,
        what: &str,
        dtype: DType,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        self.check(what, dtype, Mode::Close, inputs, f)
    }

    /// As [`Parity::close`] within `tol` (for composites that round to a half dtype many times).
    pub fn close_within(
        &mut self,
        what: &str,
        dtype: DType,
        tol: f64,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        self.check(what, dtype, Mode::Within(tol), inputs, f)
    }

    /// As [`Parity::close`], but the outputs must match exactly, and half inputs stay half on
    /// the CPU too (for the ops the CPU runs in every dtype).
    pub fn exact(
        &mut self,
        what: &str,
        dtype: DType,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        self.check(what, dtype, Mode::Exact, inputs, f)
    }

    /// `f` of `inputs` compared in `mode` (see [`Parity::close`] and [`Parity::exact`]).
    pub fn check(
        &mut self,
        what: &str,
        dtype: DType,
        mode: Mode,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        let reference = if mode.is_close() {
            reference_dtype(dtype)
        } else {
            dtype
        };
        self.run(what, dtype, mode, |device, is_reference| {
            let moved = inputs
                .iter()
                .map(|t| {
                    if !t.dtype().is_float() {
                        return t.to_device(device);
                    }
                    let t = t.to_dtype(dtype)?;
                    if is_reference {
                        t.to_dtype(reference)
                    } else if device == Device::Cpu && is_half(dtype) && mode.is_close() {
                        // Self-test: the CPU does not compute in the halves.
                        t.to_dtype(F32)
                    } else {
                        // On CUDA; or in a self-test, the CPU in f32 against its own f64.
                        t.to_device(device)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            f(&moved)
        })
    }

    /// `f(Device::Cpu)` against `f(cuda:0)`: the most general comparison, for functions that
    /// make their own tensors.
    pub fn on(
        &mut self,
        what: &str,
        dtype: DType,
        mode: Mode,
        f: impl Fn(Device) -> Result<Vec<Tensor>>,
    ) {
        self.run(what, dtype, mode, |device, _| f(device))
    }

    /// `f(Device::Cpu, true)`, the reference, against `f(cuda:0, false)`.
    fn run(
        &mut self,
        what: &str,
        dtype: DType,
        mode: Mode,
        f: impl Fn(Device, bool) -> Result<Vec<Tensor>>,
    ) {
        let what = format!("{what} [{dtype}]");
        let cpu = match f(Device::Cpu, true) {
            Ok(outs) => outs,
            Err(e) => return self.fail(&what, format!("the CPU reference failed: {e}")),
        };
        let device = self.device;
        let gpu = match catch_unwind(AssertUnwindSafe(|| f(device, false))) {
            Ok(Ok(outs)) => outs,
            Ok(Err(e)) => return self.fail(&what, format!("error on {device}: {e}")),
            Err(panic) => return self.fail(&what, format!("panicked: {}", panic_text(&*panic))),
        };
        if cpu.len() != gpu.len() {
            let msg = format!("{} outputs, the CPU gave {}", gpu.len(), cpu.len());
            return self.fail(&what, msg);
        }
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let at = if cpu.len() > 1 {
                format!("{what} output {i}")
            } else {
                what.clone()
            };
            self.compared += 1;
            match self.compare(c, g, dtype, mode, i) {
                Ok(err) if err > self.worst || self.worst_at.is_empty() => {
                    self.worst = err;
                    self.worst_at = at;
                }
                Ok(_) => {}
                Err(msg) => self.fail(&at, msg),
            }
        }
    }

    /// The error of one output (0 for an exact match), or what is wrong with it.
    fn compare(
        &self,
        cpu: &Tensor,
        gpu: &Tensor,
        dtype: DType,
        mode: Mode,
        index: usize,
    ) -> std::result::Result<f64, String> {
        let err = |e: tensor::Error| e.to_string();
        if gpu.device() != self.device {
            return Err(format!(
                "result on {}, expected {}",
                gpu.device(),
                self.device
            ));
        }
        if gpu.shape() != cpu.shape() {
            return Err(format!(
                "shape {:?}, the CPU gave {:?}",
                gpu.shape(),
                cpu.shape()
            ));
        }
        let widened = mode.is_close()
            && reference_dtype(dtype) != dtype
            && cpu.dtype() == reference_dtype(dtype);
        let dtype_ok = if widened {
            // The first output is the op's result, in the input's dtype; others may be f32
            // statistics (a norm's mean and rstd of half inputs). A self-test computes the
            // halves in f32.
            gpu.dtype() == dtype
                || (index > 0 && gpu.dtype() == F32)
                || (self.device == Device::Cpu && is_half(dtype) && gpu.dtype() == F32)
        } else {
            gpu.dtype() == cpu.dtype()
        };
        if !dtype_ok {
            return Err(format!(
                "dtype {}, the CPU gave {}",
                gpu.dtype(),
                cpu.dtype()
            ));
        }
        if cpu.dtype() == I64 && gpu.dtype() == I64 {
            // i64 compared as i64: f64 would hide differences above 2^53.
            let (a, b) = (
                gpu.to_vec::<i64>().map_err(err)?,
                cpu.to_vec::<i64>().map_err(err)?,
            );
            return match a.iter().zip(&b).position(|(x, y)| x != y) {
                None => Ok(0.0),
                Some(k) => Err(mismatch(k, a[k] as f64, b[k] as f64, &a, &b)),
            };
        }
        let (a, b) = (
            gpu.to_f64_vec().map_err(err)?,
            cpu.to_f64_vec().map_err(err)?,
        );
        let same = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
        if mode == Mode::Exact {
            return match a.iter().zip(&b).position(|(&x, &y)| !same(x, y)) {
                None => Ok(0.0),
                Some(k) => Err(mismatch(k, a[k], b[k], &a, &b)),
            };
        }
        // Non-finite values must be where the CPU has them; the rest are compared as vectors.
        let finite = |k: usize| a[k].is_finite() && b[k].is_finite();
        if let Some(k) = (0..a.len()).find(|&k| !finite(k) && !same(a[k], b[k])) {
            return Err(format!("element {k}: {} where the CPU has {}", a[k], b[k]));
        }
        let (mut diff, mut norm, mut largest) = (0.0f64, 0.0f64, (0.0f64, 0usize));
        for (k, (&x, &y)) in a.iter().zip(&b).enumerate() {
            if x.is_finite() && y.is_finite() {
                let d = (x - y).abs();
                diff += d * d;
                norm += y * y;
                if d > largest.0 {
                    largest = (d, k);
                }
            }
        }
        let rel = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        let tol = match mode {
            Mode::Within(tol) => tol,
            _ => tolerance(dtype),
        };
        if rel <= tol {
            Ok(rel)
        } else {
            let k = largest.1;
            Err(format!(
                "relative error {rel:.3e} > {tol:.0e} (largest difference at element {k}: {} vs the CPU's {})",
                a[k], b[k]
            ))
        }
    }

    fn fail(&mut self, what: &str, msg: String) {
        self.failures.push(format!("{what}: {msg}"));
    }

    /// Notes the summary (shown for passing tests too) and fails the test on any failure.
    pub fn finish(self) {
        note(&format!(
            "{}: {} outputs compared on {}, worst relative error {:.2e} ({}), {} failed",
            self.test,
            self.compared,
            self.device,
            self.worst,
            if self.worst_at.is_empty() {
                "-"
            } else {
                &self.worst_at
            },
            self.failures.len()
        ));
        assert!(
            self.failures.is_empty(),
            "{}: {} comparison(s) failed:\n{}",
            self.test,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// One mismatch in words: where, the two values, and how many elements differ.
fn mismatch<T: PartialEq>(k: usize, got: f64, want: f64, a: &[T], b: &[T]) -> String {
    let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
    format!(
        "element {k}: {got} vs the CPU's {want} ({differ} of {} elements differ)",
        a.len()
    )
}

pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

// ---------------------------------------------------------------------------------------------
// Inputs.
// ---------------------------------------------------------------------------------------------

/// Standard normal f64 values on the CPU.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, F64, Device::Cpu, &mut Generator::new(seed)).unwrap()
}

/// Uniform f64 values in `[lo, hi)` on the CPU.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    Tensor::rand(shape, lo, hi, F64, Device::Cpu, &mut Generator::new(seed)).unwrap()
}

/// Whole numbers in `[0, hi)` as f64: exact in every dtype (hi ≤ 256), with ties.
pub fn whole(shape: &[usize], hi: u32, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| gen.rng().random_range(0..hi) as f64)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// i64 indices in `[0, hi)`.
pub fn indices(shape: &[usize], hi: i64, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    let n = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|_| gen.rng().random_range(0..hi)).collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Values of `dtype` on the CPU for the exact tests: whole numbers for the integer dtypes,
/// normal values for the floats.
pub fn values(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    match dtype {
        DType::U8 => whole(shape, 256, seed).to_dtype(U8).unwrap(),
        DType::I64 => {
            // Beyond 2^53 too: a transfer or copy through f64 would lose the low bits.
            let mut gen = Generator::new(seed);
            let n = shape.iter().product();
            let v: Vec<i64> = (0..n)
                .map(|_| gen.rng().random_range(-(1i64 << 60)..1i64 << 60))
                .collect();
            Tensor::from_vec(v, shape).unwrap()
        }
        _ => randn(shape, seed).to_dtype(dtype).unwrap(),
    }
}

/// A view of a tensor (or any function of one).
pub type ViewFn = fn(&Tensor) -> Result<Tensor>;

/// A view case: its name, the shape of the base tensor, and the view.
pub type View = (&'static str, &'static [usize], ViewFn);

/// The views the elementwise tests run on.
pub const VIEWS: &[View] = &[
    ("contiguous [13, 37]", &[13, 37], |t| Ok(t.clone())),
    ("transposed [37, 13]^T", &[37, 13], |t| t.transpose(0, 1)),
    ("narrowed [6, 41, 5][:, 3..40]", &[6, 41, 5], |t| {
        t.narrow(1, 3, 37)
    }),
    ("broadcast [1, 37] to [9, 37]", &[1, 37], |t| {
        t.broadcast_as(&[9, 37])
    }),
    (
        "permuted [3, 4, 5, 7] to [2, 0, 3, 1]",
        &[3, 4, 5, 7],
        |t| t.permute(&[2, 0, 3, 1]),
    ),
    ("large [300, 257]", &[300, 257], |t| Ok(t.clone())),
];
