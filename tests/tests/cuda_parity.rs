//! Parity of every tensor op, forward and backward, on CUDA against the CPU: random inputs of odd
//! sizes (and a few large enough for several blocks), contiguous and strided (transposed,
//! narrowed with an offset, broadcast with stride 0, permuted), since the CUDA kernels read views
//! directly.
//!
//! Each comparison runs one function twice, on CPU inputs and on the same inputs moved to
//! `cuda:0`, and compares every output, as ‖cuda − cpu‖ / ‖cpu‖ or exactly:
//! - f32 within 1e-5 and f64 within 1e-12; bf16 and f16 within 1e-2 for the training ops
//!   (elementwise, reductions, matmul, conv, norms, softmax, pooling, index_add / scatter_add) and
//!   3e-2 for the autograd composites (attention and blocks, which round every intermediate).
//!   Float inputs are rounded to the dtype once, on the CPU; CUDA computes on them in the dtype,
//!   the CPU computes the reference on the same values one dtype wider (f32 for the halves, which
//!   it does not compute in; f64 for f32), so that the error measured is CUDA's alone;
//! - ops that only move, select or compare elements (copies, casts, cat, pad, gather, max, argmax,
//!   comparisons) must match exactly, the CPU computing in the same dtype.
//!
//! A backward op is given the saved values it reads (an op's output, softmax's y) as inputs,
//! computed once on the CPU, so that each kernel is compared on the same values; norms' backward
//! passes read the mean and rstd of their own device's forward.
//!
//! The ops are those of `tensor/src/cpu/*.rs` (every `pub fn`) and the creation, cast and
//! transfer functions of `tensor/src/tensor.rs`; `autograd_parity` adds the composite ops of
//! autograd (attention, losses, dropout) through a backward pass, and
//! `gemm_epilogues_on_tensor_cores_and_simt` calls `kernels::matmul::gemm_fused` on raw device
//! buffers, for the fused epilogue that no tensor op reaches yet, with an error bound per element.
//!
//! Without a GPU every test prints `skipped: no CUDA device (<reason>)` and passes. With
//! `DIFFTUNE_PARITY_SELF_TEST=1` the tests run with the CPU standing in for the GPU: nothing is
//! compared that could fail, but every case runs, which checks the cases themselves on a machine
//! without a GPU.

use std::panic::{catch_unwind, AssertUnwindSafe};

use autograd::Var;
use difftune_tests::gpu::{cuda_or_self_test, cuda_or_skip, note, SELF_TEST};
use rand::Rng;
use tensor::{
    AdamWStep, BinaryOp, CmpOp, Conv2dParams, DType, Device, Generator, Result, Tensor, UnaryOp,
};

const F32: DType = DType::F32;
const F64: DType = DType::F64;
const BF16: DType = DType::BF16;
const F16: DType = DType::F16;
const U8: DType = DType::U8;
const I64: DType = DType::I64;

/// The float dtypes the CPU computes in.
const FLOATS: [DType; 2] = [F32, F64];
/// The dtypes of the training ops: the CPU's two, and the halves CUDA computes in.
const TRAIN: [DType; 4] = [F32, F64, BF16, F16];
/// Every dtype.
const ALL: [DType; 6] = [F32, F64, BF16, F16, U8, I64];

// ---------------------------------------------------------------------------------------------
// The comparison harness.
// ---------------------------------------------------------------------------------------------

/// How a CUDA output must match the CPU's.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
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
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

fn is_half(dtype: DType) -> bool {
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
struct Parity {
    test: &'static str,
    device: Device,
    compared: usize,
    worst: f64,
    worst_at: String,
    failures: Vec<String>,
}

impl Parity {
    /// The harness on `cuda:0`, or `None` (the skip noted) without one.
    fn new(test: &'static str) -> Option<Parity> {
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
    fn close(
        &mut self,
        what: &str,
        dtype: DType,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        self.check(what, dtype, Mode::Close, inputs, f)
    }

    /// As [`Parity::close`] within `tol` (for composites that round to a half dtype many times).
    fn close_within(
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
    fn exact(
        &mut self,
        what: &str,
        dtype: DType,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) {
        self.check(what, dtype, Mode::Exact, inputs, f)
    }

    /// `f` of `inputs` compared in `mode` (see [`Parity::close`] and [`Parity::exact`]).
    fn check(
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
    fn on(
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
    fn finish(self) {
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

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
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
fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, F64, Device::Cpu, &mut Generator::new(seed)).unwrap()
}

/// Uniform f64 values in `[lo, hi)` on the CPU.
fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    Tensor::rand(shape, lo, hi, F64, Device::Cpu, &mut Generator::new(seed)).unwrap()
}

/// Whole numbers in `[0, hi)` as f64: exact in every dtype (hi ≤ 256), with ties.
fn whole(shape: &[usize], hi: u32, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| gen.rng().random_range(0..hi) as f64)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// i64 indices in `[0, hi)`.
fn indices(shape: &[usize], hi: i64, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    let n = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|_| gen.rng().random_range(0..hi)).collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Values of `dtype` on the CPU for the exact tests: whole numbers for the integer dtypes,
/// normal values for the floats.
fn values(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
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
type ViewFn = fn(&Tensor) -> Result<Tensor>;

/// A view case: its name, the shape of the base tensor, and the view.
type View = (&'static str, &'static [usize], ViewFn);

/// The views the elementwise tests run on.
const VIEWS: &[View] = &[
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

// ---------------------------------------------------------------------------------------------
// tensor.rs: creation, transfer, casts, copies.
// ---------------------------------------------------------------------------------------------

#[test]
fn full_zeros_ones_of_every_dtype() {
    let Some(mut p) = Parity::new("full_zeros_ones_of_every_dtype") else {
        return;
    };
    let shapes: [&[usize]; 4] = [&[], &[7], &[3, 1, 65], &[1025, 3]];
    for dtype in ALL {
        // 2.7 rounds to 3 in the integer dtypes on the CPU; -3 is left out of u8.
        let mut fills = vec![0.0, 1.0, 2.7, 250.0];
        if dtype != U8 {
            fills.push(-3.0);
        }
        for shape in shapes {
            for &v in &fills {
                p.on(
                    &format!("full {shape:?} with {v}"),
                    dtype,
                    Mode::Exact,
                    |d| Ok(vec![Tensor::full(shape, v, dtype, d)?]),
                );
            }
            p.on(&format!("zeros, ones {shape:?}"), dtype, Mode::Exact, |d| {
                let z = Tensor::zeros(shape, dtype, d)?;
                let o = Tensor::ones(shape, dtype, d)?;
                Ok(vec![z.ones_like()?, o.zeros_like()?, z, o])
            });
        }
    }
    p.finish();
}

/// What a transfer round trip gave: the bits uploaded, the bits downloaded, shape and dtype.
type RoundTrip = (Vec<u64>, Vec<u64>, Vec<usize>, DType);

/// The elements of `t` as raw bits, for transfers that must be lossless (NaN payloads, -0.0
/// and i64 beyond 2^53 included).
fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()?
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::F64 => t.to_vec::<f64>()?.iter().map(|x| x.to_bits()).collect(),
        DType::BF16 => t
            .to_vec::<tensor::bf16>()?
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::F16 => t
            .to_vec::<tensor::f16>()?
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::U8 => t.to_vec::<u8>()?.iter().map(|&x| x as u64).collect(),
        DType::I64 => t.to_vec::<i64>()?.iter().map(|&x| x as u64).collect(),
    })
}

#[test]
fn to_device_round_trips_every_dtype_bit_for_bit() {
    let Some(p) = Parity::new("to_device_round_trips_every_dtype_bit_for_bit") else {
        return;
    };
    let dev = p.device;
    let mut failures = Vec::new();
    for dtype in ALL {
        let base = values(&[5, 11, 7], dtype, 1);
        // Special values where the dtype has them: transfers must not touch them.
        let base = if dtype.is_float() {
            let specials = [f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY, 1e-30];
            let mut v = base.to_f64_vec().unwrap();
            v[..specials.len()].copy_from_slice(&specials);
            Tensor::from_vec(v, base.shape())
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        } else {
            base
        };
        let cases: [(&str, ViewFn); 4] = [
            ("contiguous", |t| Ok(t.clone())),
            ("transposed", |t| t.transpose(0, 2)),
            ("narrowed (offset)", |t| t.narrow(1, 4, 5)?.narrow(0, 1, 3)),
            ("broadcast", |t| t.narrow(1, 2, 1)?.broadcast_as(&[5, 6, 7])),
        ];
        for (name, view) in cases {
            let want = view(&base).unwrap();
            let run = || -> Result<RoundTrip> {
                // Upload of a CPU view; download of the same view taken on the device.
                let up = view(&base)?.to_device(dev)?;
                let on_device = view(&base.to_device(dev)?)?;
                let back = on_device.to_device(Device::Cpu)?;
                let same_device = up.to_device(dev)?;
                if !same_device.same_storage(&up) {
                    return Err(tensor::Error::msg("to_device to its own device copied"));
                }
                Ok((
                    bits(&up)?,
                    bits(&back)?,
                    back.shape().to_vec(),
                    back.dtype(),
                ))
            };
            match catch_unwind(AssertUnwindSafe(run)) {
                Ok(Ok((up, back, shape, dt))) => {
                    let want_bits = bits(&want).unwrap();
                    if up != want_bits || back != want_bits || shape != want.shape() || dt != dtype
                    {
                        failures.push(format!(
                            "{dtype} {name}: the round trip changed the elements"
                        ));
                    }
                }
                Ok(Err(e)) => failures.push(format!("{dtype} {name}: {e}")),
                Err(panic) => {
                    failures.push(format!("{dtype} {name}: panicked: {}", panic_text(&*panic)))
                }
            }
        }
    }
    note(&format!(
        "to_device_round_trips_every_dtype_bit_for_bit: {} dtypes x 4 views on {dev}, {} failed",
        ALL.len(),
        failures.len()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn to_dtype_between_every_pair_of_dtypes() {
    let Some(mut p) = Parity::new("to_dtype_between_every_pair_of_dtypes") else {
        return;
    };
    // Whole numbers below 256 are exact in every dtype: every pair must agree exactly.
    let x = whole(&[13, 37], 256, 1);
    for from in ALL {
        for to in ALL {
            p.exact(
                &format!("whole numbers to {to} (transposed view)"),
                from,
                std::slice::from_ref(&x),
                |x| Ok(vec![x[0].transpose(0, 1)?.to_dtype(to)?]),
            );
        }
    }
    // Float to float rounds to nearest (even) on both sides.
    for from in [F64, F32] {
        for to in [F32, BF16, F16] {
            p.exact(
                &format!("normal values to {to}"),
                from,
                &[randn(&[7, 129], 2)],
                |x| Ok(vec![x[0].narrow(1, 1, 127)?.to_dtype(to)?]),
            );
        }
    }
    p.finish();
}

#[test]
fn float_to_integer_casts_round_as_on_the_cpu() {
    let Some(mut p) = Parity::new("float_to_integer_casts_round_as_on_the_cpu") else {
        return;
    };
    // Fractions (and halves: x.5 rounds away from zero on the CPU), within the target's range.
    let mut v: Vec<f64> = uniform(&[200], 0.0, 250.0, 3).to_f64_vec().unwrap();
    v.extend([0.5, 1.5, 2.5, 0.49, 254.5, 3.999]);
    let x = Tensor::from_vec(v, &[206]).unwrap();
    for from in [F32, F64, BF16, F16] {
        for to in [U8, I64] {
            p.exact(
                &format!("fractions to {to}"),
                from,
                std::slice::from_ref(&x),
                |x| Ok(vec![x[0].to_dtype(to)?]),
            );
        }
    }
    p.finish();
}

#[test]
fn contiguous_reshape_and_views_of_every_dtype() {
    let Some(mut p) = Parity::new("contiguous_reshape_and_views_of_every_dtype") else {
        return;
    };
    type CopyCase = (&'static str, ViewFn);
    let copies: [CopyCase; 8] = [
        ("transposed", |t| t.transpose(1, 2)?.contiguous()),
        ("permuted", |t| t.permute(&[2, 0, 1])?.contiguous()),
        ("narrowed with an offset", |t| {
            t.narrow(2, 3, 17)?.narrow(0, 1, 2)?.contiguous()
        }),
        ("narrowed, transposed", |t| {
            t.narrow(1, 2, 5)?.transpose(0, 2)?.contiguous()
        }),
        ("broadcast", |t| {
            t.narrow(1, 4, 1)?.broadcast_as(&[3, 4, 23])?.contiguous()
        }),
        ("reshape of a transposed view (copies)", |t| {
            t.transpose(0, 1)?.reshape(&[7, 69])
        }),
        ("flatten, squeeze, unsqueeze", |t| {
            t.narrow(1, 2, 1)?
                .squeeze(1)?
                .unsqueeze(0)?
                .transpose(0, 2)?
                .flatten_from(0)?
                .contiguous()
        }),
        ("chunk and split pieces", |t| {
            let c = t.chunk(2, 2)?;
            let s = t.split(3, 1)?;
            Tensor::cat(
                &[&c[1].contiguous()?, &s[2].narrow(2, 0, 11)?.contiguous()?],
                1,
            )
        }),
    ];
    for dtype in ALL {
        for (name, f) in copies {
            p.exact(name, dtype, &[values(&[3, 7, 23], dtype, 4)], |x| {
                Ok(vec![f(&x[0])?])
            });
        }
        p.exact(
            "a large transposed copy",
            dtype,
            &[values(&[513, 129], dtype, 5)],
            |x| Ok(vec![x[0].transpose(0, 1)?.contiguous()?]),
        );
    }
    p.finish();
}

#[test]
fn arange_rand_randn_on_the_device() {
    let Some(mut p) = Parity::new("arange_rand_randn_on_the_device") else {
        return;
    };
    for dtype in FLOATS {
        p.on("arange", dtype, Mode::Exact, |d| {
            Ok(vec![
                Tensor::arange(0.0, 37.0, 1.0, dtype, d)?,
                Tensor::arange(-2.5, 3.0, 0.25, dtype, d)?,
            ])
        });
        p.on("rand, randn with one seed", dtype, Mode::Exact, |d| {
            let mut gen = Generator::new(11);
            Ok(vec![
                Tensor::rand(&[17, 5], -1.0, 2.0, dtype, d, &mut gen)?,
                Tensor::randn(&[3, 33], 0.5, 2.0, dtype, d, &mut gen)?,
            ])
        });
    }
    p.finish();
}

#[test]
fn values_read_back_from_the_device() {
    let Some(mut p) = Parity::new("values_read_back_from_the_device") else {
        return;
    };
    // to_vec, to_scalar and max_abs_diff of device tensors (views included) give host values.
    p.close(
        "to_scalar, max_abs_diff",
        F64,
        &[randn(&[4, 6], 1), randn(&[6, 4], 2)],
        |x| {
            let s = x[0].narrow(1, 2, 1)?.narrow(0, 3, 1)?.to_scalar()?;
            let d = x[0].max_abs_diff(&x[1].transpose(0, 1)?)?;
            let v = x[0].transpose(0, 1)?.to_vec::<f64>()?;
            // Made on the host from the values read back, then moved where the inputs are.
            let device = x[0].device();
            Ok(vec![
                Tensor::from_vec(vec![s, d], &[2])?.to_device(device)?,
                Tensor::from_vec(v, &[24])?.to_device(device)?,
            ])
        },
    );
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/elementwise.rs
// ---------------------------------------------------------------------------------------------

/// Every unary op, with the domain its inputs are drawn from.
fn unary_ops() -> Vec<(UnaryOp, f64, f64)> {
    use UnaryOp::*;
    let anywhere = [
        Neg, Exp, Abs, Square, Tanh, Sigmoid, Relu, Silu, GeluErf, GeluTanh,
    ];
    let mut ops: Vec<(UnaryOp, f64, f64)> = anywhere.iter().map(|&op| (op, -3.0, 3.0)).collect();
    ops.extend([
        (Log, 0.05, 4.0),
        (Sqrt, 0.05, 4.0),
        (Rsqrt, 0.05, 4.0),
        (Powf(2.5), 0.05, 3.0),
        (Powf(-1.5), 0.2, 3.0),
        (Powf(3.0), -2.0, 2.0),
        (Clamp(-0.5, 0.7), -2.0, 2.0),
        (AddScalar(0.3), -3.0, 3.0),
        (MulScalar(-1.7), -3.0, 3.0),
    ]);
    ops
}

#[test]
fn unary_ops_forward() {
    let Some(mut p) = Parity::new("unary_ops_forward") else {
        return;
    };
    for dtype in TRAIN {
        for (op, lo, hi) in unary_ops() {
            for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
                p.close(
                    &format!("{} {name}", op.name()),
                    dtype,
                    &[uniform(shape, lo, hi, seed as u64)],
                    |x| Ok(vec![view(&x[0])?.unary(op)?]),
                );
            }
        }
        // The named methods are the same ops.
        p.close(
            "named unary methods",
            dtype,
            &[uniform(&[5, 9], 0.1, 2.0, 9)],
            |x| {
                let x = &x[0];
                Ok(vec![
                    x.neg()?,
                    x.exp()?,
                    x.log()?,
                    x.sqrt()?,
                    x.rsqrt()?,
                    x.abs()?,
                    x.square()?,
                    x.tanh()?,
                    x.sigmoid()?,
                    x.relu()?,
                    x.silu()?,
                    x.gelu()?,
                    x.gelu_tanh()?,
                    x.powf(1.5)?,
                    x.clamp(0.5, 1.5)?,
                    x.add_scalar(-1.0)?,
                    x.mul_scalar(3.0)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn unary_ops_backward() {
    let Some(mut p) = Parity::new("unary_ops_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (op, lo, hi) in unary_ops() {
            for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
                let seed = seed as u64;
                let out_shape = view(&Tensor::zeros(shape, F32, Device::Cpu).unwrap())
                    .unwrap()
                    .shape()
                    .to_vec();
                // The gradient, and a saved output, are reversed-dims views of their own bases,
                // so that both operands of the fused kernel are strided.
                let rev: Vec<usize> = (0..out_shape.len()).rev().collect();
                let mut grad_base = out_shape.clone();
                grad_base.reverse();
                let x = uniform(shape, lo, hi, seed);
                // A saved output is an input too, computed once (in f64): the backward kernel
                // is compared on the very values the forward is compared on separately.
                let y = view(&x)
                    .and_then(|v| v.unary(op))
                    .and_then(|y| y.permute(&rev))
                    .and_then(|y| y.contiguous())
                    .unwrap();
                let inputs = [x, randn(&grad_base, 100 + seed), y];
                let rev = &rev;
                p.close(
                    &format!("{} backward {name}", op.name()),
                    dtype,
                    &inputs,
                    |x| {
                        let g = x[1].permute(rev)?;
                        let saved = match op.saves() {
                            tensor::Saved::Nothing => None,
                            tensor::Saved::Input => Some(view(&x[0])?),
                            tensor::Saved::Output => Some(x[2].permute(rev)?),
                        };
                        Ok(vec![g.unary_backward(op, saved.as_ref())?])
                    },
                );
            }
        }
    }
    p.finish();
}

/// Operand pairs of the binary ops: shapes that broadcast, scalars, strided views.
type Pair = (
    &'static str,
    &'static [usize],
    &'static [usize],
    fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
);

const PAIRS: &[Pair] = &[
    ("equal shapes [7, 33]", &[7, 33], &[7, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "broadcast [3, 1, 33] and [5, 33]",
        &[3, 1, 33],
        &[5, 33],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    ("broadcast [4, 1] and [1, 5]", &[4, 1], &[1, 5], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("scalar and [7, 33]", &[], &[7, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[7, 33] and scalar", &[7, 33], &[], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "transposed [33, 7]^T and narrowed [7, 40][:, 5..38]",
        &[33, 7],
        &[7, 40],
        |a, b| Ok((a.transpose(0, 1)?, b.narrow(1, 5, 33)?)),
    ),
    (
        "permuted [5, 3, 9] and broadcast [9]",
        &[5, 3, 9],
        &[9],
        |a, b| Ok((a.permute(&[1, 2, 0])?.narrow(2, 1, 4)?, b.unsqueeze(1)?)),
    ),
    ("large [257, 300] and [300]", &[257, 300], &[300], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
];

#[test]
fn binary_ops() {
    let Some(mut p) = Parity::new("binary_ops") else {
        return;
    };
    use BinaryOp::*;
    for dtype in TRAIN {
        for op in [Add, Sub, Mul, Div, Maximum, Minimum] {
            for (seed, &(name, sa, sb, pair)) in PAIRS.iter().enumerate() {
                let seed = seed as u64;
                // Divisors away from zero, both signs.
                let b = if op == Div {
                    uniform(sb, 0.5, 2.0, seed + 50)
                        .mul(
                            &whole(sb, 2, seed)
                                .mul_scalar(2.0)
                                .unwrap()
                                .add_scalar(-1.0)
                                .unwrap(),
                        )
                        .unwrap()
                } else {
                    randn(sb, seed + 50)
                };
                p.close(
                    &format!("{} {name}", op.name()),
                    dtype,
                    &[randn(sa, seed), b],
                    |x| {
                        let (a, b) = pair(&x[0], &x[1])?;
                        Ok(vec![a.binary(op, &b)?])
                    },
                );
            }
        }
        p.close(
            "named binary methods",
            dtype,
            &[randn(&[3, 4], 1), uniform(&[4], 0.5, 2.0, 2)],
            |x| {
                let (a, b) = (&x[0], &x[1]);
                Ok(vec![
                    a.add(b)?,
                    a.sub(b)?,
                    a.mul(b)?,
                    a.div(b)?,
                    a.maximum(b)?,
                    a.minimum(b)?,
                ])
            },
        );
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/optim.rs: the fused AdamW update.
// ---------------------------------------------------------------------------------------------

#[test]
fn adamw_update() {
    let Some(mut p) = Parity::new("adamw_update") else {
        return;
    };
    // Step 3 of lr 1e-2, betas (0.9, 0.999), eps 1e-8, with and without weight decay 0.1.
    let (bc1, bc2) = (1.0 - 0.9f64.powi(3), 1.0 - 0.999f64.powi(3));
    let plain = AdamWStep {
        b1: 0.9,
        b2: 0.999,
        decay: 1.0,
        step_size: 1e-2 * bc2.sqrt() / bc1,
        eps: 1e-8 * bc2.sqrt(),
    };
    let decayed = AdamWStep {
        decay: 1.0 - 1e-2 * 0.1,
        ..plain
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, view)) in VIEWS.iter().enumerate() {
            let seed = 10 * seed as u64;
            // p, g, m, and v (a second moment: not negative).
            let inputs = [
                randn(shape, seed),
                randn(shape, seed + 1),
                randn(shape, seed + 2).mul_scalar(0.1).unwrap(),
                uniform(shape, 0.0, 0.1, seed + 3),
            ];
            for (what, step) in [("", plain), (" with weight decay", decayed)] {
                p.close(&format!("adamw_update {name}{what}"), dtype, &inputs, |x| {
                    let [pv, gv, mv, vv] = [0, 1, 2, 3].map(|i| view(&x[i]));
                    let (p, m, v) = pv?.adamw_update(&gv?, &mv?, &vv?, &step)?;
                    Ok(vec![p, m, v])
                });
            }
        }
    }
    p.finish();
}

#[test]
fn comparisons_where_and_masked_fill() {
    let Some(mut p) = Parity::new("comparisons_where_and_masked_fill") else {
        return;
    };
    use CmpOp::*;
    // Whole numbers below 4: many ties, so == and <= are exercised.
    for dtype in ALL {
        for op in [Eq, Ne, Lt, Le, Gt, Ge] {
            for (seed, &(name, sa, sb, pair)) in PAIRS.iter().enumerate() {
                let seed = seed as u64;
                p.exact(
                    &format!("cmp {op:?} {name}"),
                    dtype,
                    &[whole(sa, 4, seed), whole(sb, 4, seed + 9)],
                    |x| {
                        let (a, b) = pair(&x[0], &x[1])?;
                        Ok(vec![a.cmp(op, &b)?])
                    },
                );
            }
        }
    }
    // Mixed dtypes, the wider first.
    p.on("cmp of f64 with f32", F64, Mode::Exact, |d| {
        let a = whole(&[5, 6], 4, 1).to_device(d)?;
        let b = whole(&[6], 4, 2).to_dtype(F32)?.to_device(d)?;
        Ok(vec![a.cmp(Le, &b)?, a.cmp(Eq, &b)?])
    });
    for dtype in TRAIN {
        // A half where is a selection: exact; the f32 reference of rounded values is too.
        let mode = if is_half(dtype) {
            Mode::Close
        } else {
            Mode::Exact
        };
        let masks = [
            (
                "u8 mask [3, 1]",
                Tensor::from_vec(vec![1u8, 0, 1], &[3, 1]).unwrap(),
            ),
            ("i64 mask [3, 4]", indices(&[3, 4], 2, 7)),
            ("float mask of 0, 1, 2", whole(&[3, 4], 3, 8)),
        ];
        for (name, mask) in masks {
            let inputs = [mask, randn(&[4, 3], 1), randn(&[4], 2)];
            let what = format!("where {name}, transposed [4, 3]^T and [4]");
            let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                let t = x[1].transpose(0, 1)?;
                Ok(vec![
                    x[0].where_cond(&t, &x[2])?,
                    x[0].where_cond(&x[2], &t)?,
                ])
            };
            p.check(&what, dtype, mode, &inputs, f);
        }
        let what = "masked_fill where x > 0, of a transposed x";
        let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let t = x[0].transpose(0, 1)?;
            let zero = Tensor::zeros(&[], t.dtype(), t.device())?;
            let mask = t.cmp(Gt, &zero)?;
            Ok(vec![t.masked_fill(&mask, -4.0)?, mask])
        };
        p.check(what, dtype, mode, &[randn(&[9, 5], 3)], f);
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/reduce.rs
// ---------------------------------------------------------------------------------------------

/// Reduction cases: base shape, view, dims.
type Reduction = (&'static str, &'static [usize], ViewFn, &'static [usize]);

const REDUCTIONS: &[Reduction] = &[
    ("[5, 7, 9] dim 0", &[5, 7, 9], |t| Ok(t.clone()), &[0]),
    ("[5, 7, 9] dim 1", &[5, 7, 9], |t| Ok(t.clone()), &[1]),
    ("[5, 7, 9] dim 2", &[5, 7, 9], |t| Ok(t.clone()), &[2]),
    (
        "[5, 7, 9] dims [0, 2]",
        &[5, 7, 9],
        |t| Ok(t.clone()),
        &[0, 2],
    ),
    (
        "[5, 7, 9] all dims",
        &[5, 7, 9],
        |t| Ok(t.clone()),
        &[0, 1, 2],
    ),
    (
        "permuted [5, 7, 9] dim 1",
        &[5, 7, 9],
        |t| t.permute(&[2, 0, 1]),
        &[1],
    ),
    (
        "narrowed [6, 11, 3][:, 2..9] dims [0, 1]",
        &[6, 11, 3],
        |t| t.narrow(1, 2, 7),
        &[0, 1],
    ),
    (
        "broadcast [1, 13] to [6, 13] dim 0",
        &[1, 13],
        |t| t.broadcast_as(&[6, 13]),
        &[0],
    ),
    (
        "long rows [3, 5001] dim 1",
        &[3, 5001],
        |t| Ok(t.clone()),
        &[1],
    ),
    (
        "long columns [4099, 3] dim 0",
        &[4099, 3],
        |t| Ok(t.clone()),
        &[0],
    ),
    (
        "everything of [1234, 17]",
        &[1234, 17],
        |t| Ok(t.clone()),
        &[0, 1],
    ),
    (
        "transposed [300, 70]^T dim 1",
        &[300, 70],
        |t| t.transpose(0, 1),
        &[1],
    ),
];

#[test]
fn sum_mean_max_min() {
    let Some(mut p) = Parity::new("sum_mean_max_min") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, view, dims)) in REDUCTIONS.iter().enumerate() {
            let x = [randn(shape, seed as u64)];
            for keepdim in [false, true] {
                let k = if keepdim { ", keepdim" } else { "" };
                p.close(&format!("sum, mean {name}{k}"), dtype, &x, |x| {
                    let v = view(&x[0])?;
                    Ok(vec![v.sum(dims, keepdim)?, v.mean(dims, keepdim)?])
                });
                // The largest and smallest of the same values: exact in the CPU's dtypes.
                let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                    let v = view(&x[0])?;
                    Ok(vec![v.max(dims, keepdim)?, v.min(dims, keepdim)?])
                };
                if is_half(dtype) {
                    p.close(&format!("max, min {name}{k}"), dtype, &x, f);
                } else {
                    p.exact(&format!("max, min {name}{k}"), dtype, &x, f);
                }
            }
        }
        p.close("sum_all", dtype, &[randn(&[37, 29], 1)], |x| {
            Ok(vec![x[0].sum_all()?, x[0].transpose(0, 1)?.sum_all()?])
        });
    }
    p.finish();
}

#[test]
fn sum_to_the_backward_of_broadcasting() {
    let Some(mut p) = Parity::new("sum_to_the_backward_of_broadcasting") else {
        return;
    };
    let targets: [&[usize]; 6] = [&[3, 1], &[1, 5], &[5], &[], &[4, 1, 1], &[4, 3, 5]];
    for dtype in TRAIN {
        for target in targets {
            p.close(
                &format!("[4, 3, 5] to {target:?}"),
                dtype,
                &[randn(&[4, 3, 5], 1)],
                |x| Ok(vec![x[0].sum_to(target)?]),
            );
            p.close(
                &format!("permuted [5, 4, 3] to {target:?}"),
                dtype,
                &[randn(&[5, 4, 3], 2)],
                |x| Ok(vec![x[0].permute(&[1, 2, 0])?.sum_to(target)?]),
            );
        }
        p.close(
            "broadcast view [3, 1] to [2, 3, 7], summed back",
            dtype,
            &[randn(&[3, 1], 3)],
            |x| Ok(vec![x[0].broadcast_as(&[2, 3, 7])?.sum_to(&[3, 1])?]),
        );
        p.close(
            "large [1000, 65] to [65]",
            dtype,
            &[randn(&[1000, 65], 4)],
            |x| Ok(vec![x[0].sum_to(&[65])?]),
        );
    }
    p.finish();
}

#[test]
fn argmax() {
    let Some(mut p) = Parity::new("argmax") else {
        return;
    };
    for dtype in FLOATS {
        for dim in 0..3 {
            for keepdim in [false, true] {
                p.exact(
                    &format!("[5, 7, 9] dim {dim} keepdim {keepdim}"),
                    dtype,
                    &[randn(&[5, 7, 9], 1)],
                    |x| Ok(vec![x[0].argmax(dim, keepdim)?]),
                );
            }
            p.exact(
                &format!("permuted view, dim {dim}"),
                dtype,
                &[randn(&[5, 7, 9], 2)],
                |x| {
                    Ok(vec![x[0]
                        .permute(&[1, 2, 0])?
                        .narrow(1, 1, 6)?
                        .argmax(dim, false)?])
                },
            );
        }
        // Ties: the first index wins.
        p.exact(
            "ties in whole numbers below 3",
            dtype,
            &[whole(&[6, 40], 3, 3)],
            |x| Ok(vec![x[0].argmax(1, false)?, x[0].argmax(0, true)?]),
        );
        p.exact("long rows [3, 5001]", dtype, &[randn(&[3, 5001], 4)], |x| {
            Ok(vec![x[0].argmax(1, false)?])
        });
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/matmul.rs
// ---------------------------------------------------------------------------------------------

/// Matmul cases: lhs and rhs base shapes, and the views multiplied. In bf16 and f16, the cases
/// whose rows are whole 16-byte chunks (named "tensor-core rows", and the attention-like heads)
/// run on the tensor-core kernel, the others on the SIMT kernel.
type Product = (
    &'static str,
    &'static [usize],
    &'static [usize],
    fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
);

const PRODUCTS: &[Product] = &[
    ("[1, 1] x [1, 1]", &[1, 1], &[1, 1], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[7, 13] x [13, 5]", &[7, 13], &[13, 5], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[67, 129] x [129, 33]", &[67, 129], &[129, 33], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[130, 257] x [257, 65]", &[130, 257], &[257, 65], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    ("[1, 300] x [300, 1] (dot)", &[1, 300], &[300, 1], |a, b| {
        Ok((a.clone(), b.clone()))
    }),
    (
        "batched [3, 17, 33] x [3, 33, 9]",
        &[3, 17, 33],
        &[3, 33, 9],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "batch broadcast [2, 1, 5, 7] x [3, 7, 4]",
        &[2, 1, 5, 7],
        &[3, 7, 4],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "rhs without batch [4, 9, 31] x [31, 6]",
        &[4, 9, 31],
        &[31, 6],
        |a, b| Ok((a.clone(), b.clone())),
    ),
    (
        "transposed lhs [33, 17]^T x [33, 9]",
        &[33, 17],
        &[33, 9],
        |a, b| Ok((a.transpose(0, 1)?, b.clone())),
    ),
    (
        "transposed rhs [17, 33] x [9, 33]^T",
        &[17, 33],
        &[9, 33],
        |a, b| Ok((a.clone(), b.transpose(0, 1)?)),
    ),
    (
        "both transposed, batched [2, 33, 17]^T x [2, 9, 33]^T",
        &[2, 33, 17],
        &[2, 9, 33],
        |a, b| Ok((a.transpose(1, 2)?, b.transpose(1, 2)?)),
    ),
    (
        "narrowed (offsets) [20, 40][3..18, 1..36] x [50, 11][7..42]",
        &[20, 40],
        &[50, 11],
        |a, b| Ok((a.narrow(0, 3, 15)?.narrow(1, 1, 35)?, b.narrow(0, 7, 35)?)),
    ),
    (
        "stride-0 batch: [5, 8] broadcast to [3, 5, 8] x [3, 8, 6]",
        &[5, 8],
        &[3, 8, 6],
        |a, b| Ok((a.broadcast_as(&[3, 5, 8])?, b.clone())),
    ),
    (
        "attention-like heads [2, 3, 10, 8] x [2, 3, 10, 8]^T",
        &[2, 10, 3, 8],
        &[2, 10, 3, 8],
        |a, b| Ok((a.transpose(1, 2)?, b.transpose(1, 2)?.transpose(2, 3)?)),
    ),
    // Rows whose strides are whole 16-byte chunks: bf16 and f16 take the tensor-core kernel,
    // with m, n and k that are not multiples of its tiles (views of wider rows, so the strides
    // stay aligned while the sizes are odd).
    (
        "tensor-core rows, odd sizes [17, 72][.., ..65] x [65, 40][.., ..33]",
        &[17, 72],
        &[65, 40],
        |a, b| Ok((a.narrow(1, 0, 65)?, b.narrow(1, 0, 33)?)),
    ),
    (
        "tensor-core rows [130, 256][.., ..250] x [250, 72][.., ..67]",
        &[130, 256],
        &[250, 72],
        |a, b| Ok((a.narrow(1, 0, 250)?, b.narrow(1, 0, 67)?)),
    ),
    (
        "tensor-core rows, both transposed [250, 136][.., ..130]^T x [67, 256][.., ..250]^T",
        &[250, 136],
        &[67, 256],
        |a, b| {
            Ok((
                a.narrow(1, 0, 130)?.transpose(0, 1)?,
                b.narrow(1, 0, 250)?.transpose(0, 1)?,
            ))
        },
    ),
    (
        "tensor-core rows, batch of 3 [3, 17, 72][.., ..65] x [3, 65, 40][.., ..33]",
        &[3, 17, 72],
        &[3, 65, 40],
        |a, b| Ok((a.narrow(2, 0, 65)?, b.narrow(2, 0, 33)?)),
    ),
    (
        "tensor-core rows, offsets of whole chunks [20, 72][3..18, 8..65] x [60, 24][3..60]",
        &[20, 72],
        &[60, 24],
        |a, b| Ok((a.narrow(0, 3, 15)?.narrow(1, 8, 57)?, b.narrow(0, 3, 57)?)),
    ),
    (
        "tensor-core rows, several tiles and k-steps [300, 520] x [520, 264]",
        &[300, 520],
        &[520, 264],
        |a, b| Ok((a.clone(), b.clone())),
    ),
];

#[test]
fn matmul() {
    let Some(mut p) = Parity::new("matmul") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, sa, sb, pair)) in PRODUCTS.iter().enumerate() {
            let seed = seed as u64;
            p.close(name, dtype, &[randn(sa, seed), randn(sb, seed + 50)], |x| {
                let (a, b) = pair(&x[0], &x[1])?;
                Ok(vec![a.matmul(&b)?])
            });
        }
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// kernels::matmul::gemm_fused on raw device buffers
// ---------------------------------------------------------------------------------------------

/// A GEMM launched through `kernels::matmul::gemm_fused` on raw device buffers: the fused
/// epilogue (bias, GELU, accumulate) and the reduction steps, which `Tensor::matmul` does not
/// reach, on the tensor-core kernel and on the SIMT kernel.
#[derive(Clone, Copy, Debug)]
struct RawGemm {
    m: usize,
    n: usize,
    k: usize,
    batches: usize,
    red: usize,
    /// A stored transposed (`[k, m]` in memory), and B (`[n, k]`).
    a_t: bool,
    b_t: bool,
    /// Stored rows padded to whole 16-byte chunks (the tensor-core kernel, for bf16 and f16),
    /// else to an odd length (the SIMT kernel).
    aligned: bool,
    bias: bool,
    gelu: bool,
    accumulate: bool,
}

/// An aligned, plain `[m, k] x [k, n]` case, to be adjusted with `..raw(m, n, k)`.
fn raw(m: usize, n: usize, k: usize) -> RawGemm {
    RawGemm {
        m,
        n,
        k,
        batches: 1,
        red: 1,
        a_t: false,
        b_t: false,
        aligned: true,
        bias: false,
        gelu: false,
        accumulate: false,
    }
}

/// The layout of one stored operand of `rows × cols` (logical): row stride, column stride, and
/// the elements each matrix takes (whole chunks of 8 when aligned, so that every batch and
/// reduction offset is too).
fn raw_layout(rows: usize, cols: usize, transposed: bool, aligned: bool) -> (usize, usize, usize) {
    let pitch = |len: usize| {
        if aligned {
            len.div_ceil(8) * 8
        } else {
            len | 1
        }
    };
    let (rs, cs, lines) = if transposed {
        (1, pitch(rows), cols)
    } else {
        (pitch(cols), 1, rows)
    };
    (rs, cs, (lines * rs.max(cs)).div_ceil(8) * 8)
}

/// Host values of `dtype` as the bytes a device buffer holds.
fn raw_bytes(t: &Tensor) -> Vec<u8> {
    match t.dtype() {
        DType::BF16 => t
            .to_vec::<tensor::bf16>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec::<tensor::f16>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => panic!("raw GEMM of {other}"),
    }
}

/// The values of a device buffer's bytes holding `dtype` elements.
fn raw_values(bytes: &[u8], dtype: DType) -> Vec<f64> {
    let size = dtype.size_in_bytes();
    bytes
        .chunks_exact(size)
        .map(|b| match dtype {
            DType::BF16 => tensor::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
            DType::F16 => tensor::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            _ => f64::from_le_bytes(b.try_into().unwrap()),
        })
        .collect()
}

/// Normal values rounded to `dtype`: the tensor (for the upload) and its values.
fn raw_random(len: usize, dtype: DType, seed: u64) -> (Tensor, Vec<f64>) {
    let t = randn(&[len], seed).to_dtype(dtype).unwrap();
    let v = t.to_f64_vec().unwrap();
    (t, v)
}

/// GELU with the tanh approximation, in f64.
fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)).tanh())
}

/// Runs `case` in `dtype` on `gpu` (or, where `gpu` is `None`, emulates it on the CPU with tensor
/// ops: the self-test) and checks every element of C's buffer: in the matrices within the bound
/// below of the exact result, elsewhere (C's row padding) untouched. Returns whether the
/// tensor-core kernel ran.
///
/// The bound. The exact result `want` of the rounded inputs is computed in f64. The kernels
/// multiply 16-bit inputs exactly in f32 and add `k·red` products (then the bias and C's old
/// value) in f32; each addition errs by at most an f32 ulp of the running sum, 2^-23 of it, which
/// tensor cores may reach by truncating; so the sum is off by at most `(k·red + 2) · 2^-22 · mag`,
/// with `mag` the sum of the terms' magnitudes (twice the ulp for slack; 2^-51 for f64). GELU's
/// slope stays below 1.13, so it carries that error over (a factor of 1.2) and adds its own f32
/// evaluation error, a few ulps of its input (16 · 2^-22 · (1 + |input|)). Finally the value is
/// rounded once to the element type: at most `u·|want|` more, with u = 2^-8 (bf16), 2^-11 (f16),
/// 2^-24 (f32), 2^-53 (f64). With normal inputs and k = 250, `mag` is about 200 and `|want|` about
/// 16: the bound is some 0.07 for bf16, where a misplaced element or tile is off by order 16.
fn raw_gemm_check(
    gpu: Option<&std::sync::Arc<kernels::Gpu>>,
    dtype: DType,
    case: RawGemm,
    seed: u64,
) -> std::result::Result<bool, String> {
    use kernels::matmul::{gemm_fused, tensor_core_layout, Epilogue, GemmShape, MatOperand};
    let RawGemm {
        m,
        n,
        k,
        batches,
        red,
        ..
    } = case;
    let (a_rs, a_cs, a_len) = raw_layout(m, k, case.a_t, case.aligned);
    let (b_rs, b_cs, b_len) = raw_layout(k, n, case.b_t, case.aligned);
    // C row-major with one spare element per row, which must stay untouched.
    let (c_rs, c_len) = (n + 1, m * (n + 1));
    let (a_host, a) = raw_random(batches * red * a_len, dtype, seed);
    let (b_host, b) = raw_random(batches * red * b_len, dtype, seed + 1);
    let (c_host, c0) = raw_random(batches * c_len, dtype, seed + 2);
    let (bias_host, bias) = raw_random(n, dtype, seed + 3);
    let a_at =
        |z: usize, r: usize, i: usize, l: usize| a[(z * red + r) * a_len + i * a_rs + l * a_cs];
    let b_at =
        |z: usize, r: usize, l: usize, j: usize| b[(z * red + r) * b_len + l * b_rs + j * b_cs];

    let (u, eps) = match dtype {
        DType::BF16 => (2f64.powi(-8), 2f64.powi(-22)),
        DType::F16 => (2f64.powi(-11), 2f64.powi(-22)),
        DType::F32 => (2f64.powi(-24), 2f64.powi(-22)),
        _ => (2f64.powi(-53), 2f64.powi(-51)),
    };
    // (want, bound) of element (z, i, j) of C.
    let expect = |z: usize, i: usize, j: usize| {
        let (mut sum, mut mag) = (0.0, 0.0);
        for r in 0..red {
            for l in 0..k {
                let p = a_at(z, r, i, l) * b_at(z, r, l, j);
                sum += p;
                mag += p.abs();
            }
        }
        if case.bias {
            sum += bias[j];
            mag += bias[j].abs();
        }
        let mut err = (k * red + 2) as f64 * eps * mag;
        if case.gelu {
            err = 1.2 * err + 16.0 * eps * (1.0 + sum.abs());
            sum = gelu_tanh(sum);
        }
        if case.accumulate {
            let old = c0[z * c_len + i * c_rs + j];
            sum += old;
            err += (k * red + 2) as f64 * eps * old.abs();
        }
        (sum, u * sum.abs() + (1.0 + u) * err)
    };

    let (got, tensor_cores) = match gpu {
        Some(gpu) => {
            let upload = |t: &Tensor| gpu.upload(&raw_bytes(t)).map_err(|e| e.to_string());
            let (da, db) = (upload(&a_host)?, upload(&b_host)?);
            let (dc, dbias) = (upload(&c_host)?, upload(&bias_host)?);
            let operand = |ptr, rs: usize, cs: usize, len: usize| MatOperand {
                ptr,
                batch: kernels::Dims::new(&[batches], &[red * len], 0).unwrap(),
                rs: rs as i64,
                cs: cs as i64,
                red: len as i64,
            };
            let (a_op, b_op) = (
                operand(da.ptr(), a_rs, a_cs, a_len),
                operand(db.ptr(), b_rs, b_cs, b_len),
            );
            let c_op = MatOperand {
                ptr: dc.ptr(),
                batch: kernels::Dims::new(&[batches], &[c_len], 0).unwrap(),
                rs: c_rs as i64,
                cs: 1,
                red: 0,
            };
            let shape = GemmShape {
                m,
                n,
                k,
                batches,
                red,
            };
            let elem = match dtype {
                DType::BF16 => kernels::Elem::BF16,
                DType::F16 => kernels::Elem::F16,
                DType::F32 => kernels::Elem::F32,
                _ => kernels::Elem::F64,
            };
            let epilogue = Epilogue {
                bias: case.bias.then_some(dbias.ptr()),
                gelu_tanh: case.gelu,
                accumulate: case.accumulate,
            };
            let tc = tensor_core_layout(gpu.arch(), elem, &shape, &a_op, &b_op).is_some();
            gemm_fused(gpu, elem, shape, a_op, b_op, c_op, epilogue).map_err(|e| e.to_string())?;
            let mut bytes = vec![0u8; c0.len() * dtype.size_in_bytes()];
            dc.download_into(&mut bytes).map_err(|e| e.to_string())?;
            (raw_values(&bytes, dtype), tc)
        }
        None => (
            raw_emulated(
                case,
                dtype,
                &a,
                &b,
                &c0,
                &bias,
                (a_rs, a_cs, a_len),
                (b_rs, b_cs, b_len),
            ),
            false,
        ),
    };

    for (p, (&g, &old)) in got.iter().zip(&c0).enumerate() {
        let (z, i, j) = (p / c_len, p % c_len / c_rs, p % c_rs);
        if j == n {
            if g != old {
                return Err(format!("element {p} (padding) changed: {old} to {g}"));
            }
            continue;
        }
        let (want, bound) = expect(z, i, j);
        // Written so that a NaN fails too.
        let close = (g - want).abs() <= bound;
        if !close {
            return Err(format!(
                "C[{z}][{i}][{j}] = {g}, want {want} within {bound:.2e} (off by {:.2e})",
                (g - want).abs()
            ));
        }
    }
    Ok(tensor_cores)
}

/// The self-test's stand-in for the GPU: `case` computed with CPU tensor ops in f32 from the
/// logical matrices, rounded to `dtype`, written into a copy of C's buffer.
fn raw_emulated(
    case: RawGemm,
    dtype: DType,
    a: &[f64],
    b: &[f64],
    c0: &[f64],
    bias: &[f64],
    (a_rs, a_cs, a_len): (usize, usize, usize),
    (b_rs, b_cs, b_len): (usize, usize, usize),
) -> Vec<f64> {
    let RawGemm { m, n, k, red, .. } = case;
    let (c_rs, c_len) = (n + 1, m * (n + 1));
    // The kernels' arithmetic type: f32, or f64 for f64.
    let wide = if dtype == F64 { F64 } else { F32 };
    let matrix = |v: Vec<f64>, rows, cols| {
        Tensor::from_vec(v, &[rows, cols])
            .unwrap()
            .to_dtype(wide)
            .unwrap()
    };
    let mut got = c0.to_vec();
    for z in 0..case.batches {
        let mut sum = Tensor::zeros(&[m, n], wide, Device::Cpu).unwrap();
        for r in 0..red {
            let at = |base: &[f64], len: usize, rs: usize, cs: usize, rows: usize, cols: usize| {
                let off = (z * red + r) * len;
                let v = (0..rows * cols)
                    .map(|e| base[off + (e / cols) * rs + (e % cols) * cs])
                    .collect();
                matrix(v, rows, cols)
            };
            let prod = at(a, a_len, a_rs, a_cs, m, k)
                .matmul(&at(b, b_len, b_rs, b_cs, k, n))
                .unwrap();
            sum = sum.add(&prod).unwrap();
        }
        if case.bias {
            sum = sum.add(&matrix(bias.to_vec(), 1, n)).unwrap();
        }
        if case.gelu {
            sum = sum.unary(UnaryOp::GeluTanh).unwrap();
        }
        let old = |e: usize| c0[z * c_len + (e / n) * c_rs + e % n];
        if case.accumulate {
            sum = sum
                .add(&matrix((0..m * n).map(old).collect(), m, n))
                .unwrap();
        }
        let values = sum.to_dtype(dtype).unwrap().to_f64_vec().unwrap();
        for (e, v) in values.into_iter().enumerate() {
            got[z * c_len + (e / n) * c_rs + e % n] = v;
        }
    }
    got
}

#[test]
fn gemm_epilogues_on_tensor_cores_and_simt() {
    const TEST: &str = "gemm_epilogues_on_tensor_cores_and_simt";
    // The kernels are called directly, so the self-test has no Tensor to move: it emulates them.
    let self_test = std::env::var_os(SELF_TEST).is_some_and(|v| v != "0");
    let gpu = if self_test {
        note(&format!(
            "{TEST}: self-test, CPU tensor ops stand in for the kernels"
        ));
        None
    } else {
        if cuda_or_skip(TEST).is_none() {
            return;
        }
        Some(kernels::Gpu::get(0).expect("cuda:0 opened above"))
    };
    // Aligned halves must take the tensor-core kernel where the GPU has one (sm_80 and newer).
    let has_tensor_cores = gpu.as_ref().is_some_and(|g| {
        let digits: String = g.arch().chars().filter(char::is_ascii_digit).collect();
        digits.parse::<u32>().is_ok_and(|v| v >= 80)
    });
    let half_cases = [
        RawGemm {
            bias: true,
            ..raw(1, 1, 1)
        },
        raw(17, 33, 65),
        RawGemm {
            bias: true,
            gelu: true,
            ..raw(130, 67, 250)
        },
        RawGemm {
            batches: 3,
            a_t: true,
            accumulate: true,
            ..raw(17, 33, 65)
        },
        RawGemm {
            a_t: true,
            b_t: true,
            bias: true,
            accumulate: true,
            ..raw(130, 67, 250)
        },
        RawGemm {
            b_t: true,
            gelu: true,
            ..raw(130, 67, 250)
        },
        // A convolution weight gradient's shape: two reduction steps per output.
        RawGemm {
            red: 2,
            b_t: true,
            bias: true,
            ..raw(200, 136, 300)
        },
        // k = 0: C = GELU(bias), every element written all the same.
        RawGemm {
            bias: true,
            gelu: true,
            ..raw(5, 9, 0)
        },
        // Several tiles both ways and 17 k-steps: the copy pipeline wraps around its stages.
        RawGemm {
            batches: 2,
            bias: true,
            ..raw(257, 260, 520)
        },
        // Odd row lengths: the SIMT kernel, with the same epilogue.
        RawGemm {
            aligned: false,
            a_t: true,
            bias: true,
            gelu: true,
            accumulate: true,
            ..raw(17, 33, 65)
        },
        RawGemm {
            aligned: false,
            b_t: true,
            bias: true,
            ..raw(130, 67, 250)
        },
    ];
    let wide_cases = [
        RawGemm {
            bias: true,
            gelu: true,
            accumulate: true,
            ..raw(130, 67, 250)
        },
        RawGemm {
            aligned: false,
            a_t: true,
            red: 2,
            bias: true,
            ..raw(17, 33, 65)
        },
    ];
    let runs = [BF16, F16]
        .into_iter()
        .flat_map(|d| half_cases.iter().map(move |c| (d, *c)))
        .chain(
            [F32, F64]
                .into_iter()
                .flat_map(|d| wide_cases.iter().map(move |c| (d, *c))),
        );
    let (mut failures, mut on_tensor_cores, mut count) = (Vec::new(), 0, 0);
    for (seed, (dtype, case)) in runs.enumerate() {
        count += 1;
        match raw_gemm_check(gpu.as_ref(), dtype, case, 10 * seed as u64) {
            Ok(tc) => {
                on_tensor_cores += tc as usize;
                let expected = has_tensor_cores && is_half(dtype) && case.aligned;
                if tc != expected {
                    failures.push(format!(
                        "{case:?} [{dtype}]: tensor cores {tc}, expected {expected}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{case:?} [{dtype}]: {e}")),
        }
    }
    note(&format!(
        "{TEST}: {count} GEMMs checked ({on_tensor_cores} on tensor cores), {} failed",
        failures.len()
    ));
    assert!(failures.is_empty(), "{TEST}:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// cpu/conv.rs
// ---------------------------------------------------------------------------------------------

fn conv(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// A convolution case: name, input and weight base shapes, params, bias, and whether the input
/// and weight are channels-last views (`[N, H, W, C]` and `[Cout, kh, kw, Cin/g]` permuted).
type ConvCase = (
    &'static str,
    Vec<usize>,
    Vec<usize>,
    Conv2dParams,
    bool,
    bool,
);

#[test]
fn conv2d_forward_and_backward() {
    let Some(mut p) = Parity::new("conv2d_forward_and_backward") else {
        return;
    };
    let cases: Vec<ConvCase> = vec![
        (
            "3x3 stride 1 padding 1, bias",
            vec![2, 3, 11, 13],
            vec![5, 3, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 1),
            true,
            false,
        ),
        (
            "3x3 stride 2 padding 1",
            vec![2, 4, 15, 9],
            vec![6, 4, 3, 3],
            conv((2, 2), (1, 1), (1, 1), 1),
            false,
            false,
        ),
        (
            "2x3 dilation 2 padding 2",
            vec![1, 2, 17, 14],
            vec![3, 2, 2, 3],
            conv((1, 1), (2, 2), (2, 2), 1),
            false,
            false,
        ),
        (
            "groups 2, bias",
            vec![2, 4, 9, 9],
            vec![6, 2, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 2),
            true,
            false,
        ),
        (
            "depthwise (groups = channels)",
            vec![2, 6, 10, 7],
            vec![6, 1, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 6),
            true,
            false,
        ),
        (
            "1x1, bias",
            vec![2, 5, 7, 9],
            vec![8, 5, 1, 1],
            conv((1, 1), (0, 0), (1, 1), 1),
            true,
            false,
        ),
        (
            "1x1 stride 2",
            vec![1, 3, 9, 11],
            vec![4, 3, 1, 1],
            conv((2, 2), (0, 0), (1, 1), 1),
            false,
            false,
        ),
        (
            "5x5 stride (2, 1) padding (2, 1)",
            vec![2, 3, 19, 23],
            vec![4, 3, 5, 5],
            conv((2, 1), (2, 1), (1, 1), 1),
            true,
            false,
        ),
        (
            "channels-last input and weight views, stride (1, 2)",
            vec![2, 9, 10, 3],
            vec![4, 3, 3, 3],
            conv((1, 2), (1, 0), (1, 1), 1),
            true,
            true,
        ),
        (
            "32 to 48 channels, 3x3 padding 1",
            vec![2, 32, 16, 16],
            vec![48, 32, 3, 3],
            conv((1, 1), (1, 1), (1, 1), 1),
            true,
            false,
        ),
    ];
    for dtype in TRAIN {
        for (seed, (name, xs, ws, params, bias, channels_last)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let (params, bias, channels_last) = (*params, *bias, *channels_last);
            let view = move |x: &Tensor, w: &Tensor| -> Result<(Tensor, Tensor)> {
                if channels_last {
                    Ok((x.permute(&[0, 3, 1, 2])?, w.permute(&[0, 3, 1, 2])?))
                } else {
                    Ok((x.clone(), w.clone()))
                }
            };
            let (x0, w0) = view(&randn(xs, seed), &randn(ws, seed + 1)).unwrap();
            let out_shape = x0.conv2d(&w0, &params).unwrap().shape().to_vec();
            let cout = w0.shape()[0];
            // The output gradient as a transposed (H, W) view of its own base.
            let mut gs = out_shape.clone();
            gs.swap(2, 3);
            let inputs = [
                randn(xs, seed),
                randn(ws, seed + 1),
                randn(&[cout], seed + 2),
                randn(&gs, seed + 3),
            ];
            p.close(name, dtype, &inputs, |t| {
                let (x, w) = view(&t[0], &t[1])?;
                let b = bias.then_some(&t[2]);
                let g = t[3].transpose(2, 3)?;
                Ok(vec![
                    x.conv2d_bias(&w, b, &params)?,
                    g.conv2d_backward_input(&w, x.shape(), &params)?,
                    g.conv2d_backward_weight(&x, w.shape(), &params)?,
                ])
            });
        }
        p.close(
            "conv2d without bias",
            dtype,
            &[randn(&[1, 2, 6, 5], 90), randn(&[3, 2, 3, 2], 91)],
            |t| Ok(vec![t[0].conv2d(&t[1], &conv((1, 1), (0, 1), (1, 1), 1))?]),
        );
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/norm.rs
// ---------------------------------------------------------------------------------------------

/// Softmax cases: base shape, scale of the normal inputs, view, dim.
type Rows = (&'static str, &'static [usize], f64, ViewFn, usize);

const SOFTMAX_CASES: &[Rows] = &[
    ("[7, 33] dim 1", &[7, 33], 1.0, |t| Ok(t.clone()), 1),
    ("[7, 33] dim 0", &[7, 33], 1.0, |t| Ok(t.clone()), 0),
    (
        "permuted [3, 5, 9] dim 1",
        &[3, 5, 9],
        1.0,
        |t| t.permute(&[2, 0, 1]),
        1,
    ),
    (
        "narrowed [4, 40][:, 3..34] dim 1",
        &[4, 40],
        1.0,
        |t| t.narrow(1, 3, 31),
        1,
    ),
    ("[1, 1] dim 1", &[1, 1], 1.0, |t| Ok(t.clone()), 1),
    ("long rows [3, 2050]", &[3, 2050], 1.0, |t| Ok(t.clone()), 1),
    (
        "longer rows [2, 10007]",
        &[2, 10007],
        1.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "many rows [1100, 17]",
        &[1100, 17],
        1.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "large logits (sd 30) [6, 50]",
        &[6, 50],
        30.0,
        |t| Ok(t.clone()),
        1,
    ),
    (
        "attention scores [2, 3, 10, 10] dim 3",
        &[2, 3, 10, 10],
        1.0,
        |t| Ok(t.clone()),
        3,
    ),
];

#[test]
fn softmax_and_log_softmax_forward_and_backward() {
    let Some(mut p) = Parity::new("softmax_and_log_softmax_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(name, shape, scale, view, dim)) in SOFTMAX_CASES.iter().enumerate() {
            let seed = seed as u64;
            let out_shape = view(&Tensor::zeros(shape, F64, Device::Cpu).unwrap())
                .unwrap()
                .shape()
                .to_vec();
            let x = randn(shape, seed).mul_scalar(scale).unwrap();
            // The saved outputs the backward reads are inputs, computed once (in f64): the
            // backward kernels are compared on the very values the forward is compared on.
            let v = view(&x).unwrap();
            let (y, log_y) = (v.softmax(dim).unwrap(), v.log_softmax(dim).unwrap());
            let inputs = [x, randn(&out_shape, seed + 1), y, log_y];
            p.close(&format!("softmax {name}"), dtype, &inputs, |x| {
                Ok(vec![
                    view(&x[0])?.softmax(dim)?,
                    x[2].softmax_backward(&x[1], dim)?,
                ])
            });
            p.close(&format!("log_softmax {name}"), dtype, &inputs, |x| {
                Ok(vec![
                    view(&x[0])?.log_softmax(dim)?,
                    x[3].log_softmax_backward(&x[1], dim)?,
                ])
            });
        }
        // A strided saved output and a strided output gradient.
        let x = randn(&[9, 6], 70);
        let (y, log_y) = (x.softmax(1).unwrap(), x.log_softmax(1).unwrap());
        p.close(
            "backward of transposed y and grad",
            dtype,
            &[y, log_y, randn(&[9, 6], 71)],
            |x| {
                let g = x[2].transpose(0, 1)?;
                Ok(vec![
                    x[0].transpose(0, 1)?.softmax_backward(&g, 0)?,
                    x[1].transpose(0, 1)?.log_softmax_backward(&g, 0)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn layer_norm_forward_and_backward() {
    let Some(mut p) = Parity::new("layer_norm_forward_and_backward") else {
        return;
    };
    // (name, x base shape, view, normalised dims, weight, bias, mean shift)
    type Case = (
        &'static str,
        &'static [usize],
        ViewFn,
        usize,
        bool,
        bool,
        f64,
    );
    let cases: &[Case] = &[
        (
            "[6, 33] last dim, affine",
            &[6, 33],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "[6, 33] last dim, no affine",
            &[6, 33],
            |t| Ok(t.clone()),
            1,
            false,
            false,
            0.0,
        ),
        (
            "[4, 5, 7] last 2 dims, affine",
            &[4, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
            true,
            0.0,
        ),
        (
            "[4, 5, 7] last 2 dims, weight only",
            &[4, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
            false,
            0.0,
        ),
        (
            "[3, 8] bias only",
            &[3, 8],
            |t| Ok(t.clone()),
            1,
            false,
            true,
            0.0,
        ),
        (
            "permuted [7, 3, 5] to [3, 5, 7]",
            &[7, 3, 5],
            |t| t.permute(&[1, 2, 0]),
            1,
            true,
            true,
            0.0,
        ),
        (
            "narrowed [5, 40][:, 2..35]",
            &[5, 40],
            |t| t.narrow(1, 2, 33),
            1,
            true,
            true,
            0.0,
        ),
        (
            "long rows [3, 2050]",
            &[3, 2050],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "long rows [2, 3, 4099] last 2 dims",
            &[2, 3, 4099],
            |t| Ok(t.clone()),
            2,
            true,
            true,
            0.0,
        ),
        (
            "many rows [1100, 24]",
            &[1100, 24],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            0.0,
        ),
        (
            "mean far from zero (x + 5)",
            &[8, 96],
            |t| Ok(t.clone()),
            1,
            true,
            true,
            5.0,
        ),
        (
            "DiT tokens [2, 17, 48]",
            &[2, 17, 48],
            |t| Ok(t.clone()),
            1,
            false,
            false,
            0.0,
        ),
    ];
    for dtype in TRAIN {
        for (seed, &(name, shape, view, k, weight, bias, shift)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let x0 = view(&randn(shape, seed)).unwrap();
            let param = x0.shape()[x0.rank() - k..].to_vec();
            let inputs = [
                randn(shape, seed).add_scalar(shift).unwrap(),
                randn(&param, seed + 1),
                randn(&param, seed + 2),
                randn(x0.shape(), seed + 3),
            ];
            for eps in [1e-5, 1e-6] {
                p.close(&format!("{name}, eps {eps}"), dtype, &inputs, |t| {
                    let x = view(&t[0])?;
                    let (w, b) = (weight.then_some(&t[1]), bias.then_some(&t[2]));
                    let (y, mean, rstd) = x.layer_norm(k, w, b, eps)?;
                    let (dx, dw, db) = x.layer_norm_backward(&t[3], &mean, &rstd, w, k)?;
                    Ok(vec![y, dx, dw, db, mean, rstd])
                });
            }
        }
    }
    p.finish();
}

#[test]
fn group_norm_forward_and_backward() {
    let Some(mut p) = Parity::new("group_norm_forward_and_backward") else {
        return;
    };
    // (name, x base shape, view, groups, affine)
    type Case = (&'static str, &'static [usize], ViewFn, usize, bool);
    let cases: &[Case] = &[
        (
            "[2, 6, 5, 7] 1 group",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            1,
            true,
        ),
        (
            "[2, 6, 5, 7] 2 groups",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
        ),
        (
            "[2, 6, 5, 7] 3 groups, no affine",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            3,
            false,
        ),
        (
            "[2, 6, 5, 7] 6 groups (instance norm)",
            &[2, 6, 5, 7],
            |t| Ok(t.clone()),
            6,
            true,
        ),
        (
            "[3, 8] no spatial dims, 4 groups",
            &[3, 8],
            |t| Ok(t.clone()),
            4,
            true,
        ),
        (
            "[2, 4, 7] narrowed to [2, 4, 5], 2 groups",
            &[2, 4, 7],
            |t| t.narrow(2, 1, 5),
            2,
            true,
        ),
        (
            "channels-last [2, 9, 11, 6] to [2, 6, 9, 11], 3 groups",
            &[2, 9, 11, 6],
            |t| t.permute(&[0, 3, 1, 2]),
            3,
            true,
        ),
        (
            "UNet-like [2, 32, 9, 11], 8 groups",
            &[2, 32, 9, 11],
            |t| Ok(t.clone()),
            8,
            true,
        ),
        (
            "large groups [2, 64, 33, 17], 4 groups",
            &[2, 64, 33, 17],
            |t| Ok(t.clone()),
            4,
            true,
        ),
        (
            "3-D spatial [1, 4, 3, 5, 7], 2 groups",
            &[1, 4, 3, 5, 7],
            |t| Ok(t.clone()),
            2,
            true,
        ),
    ];
    for dtype in TRAIN {
        for (seed, &(name, shape, view, groups, affine)) in cases.iter().enumerate() {
            let seed = seed as u64;
            let x0 = view(&randn(shape, seed)).unwrap();
            let c = x0.shape()[1];
            let inputs = [
                randn(shape, seed)
                    .mul_scalar(2.0)
                    .unwrap()
                    .add_scalar(0.5)
                    .unwrap(),
                randn(&[c], seed + 1),
                randn(&[c], seed + 2),
                randn(x0.shape(), seed + 3),
            ];
            p.close(name, dtype, &inputs, |t| {
                let x = view(&t[0])?;
                let (w, b) = (affine.then_some(&t[1]), affine.then_some(&t[2]));
                let (y, mean, rstd) = x.group_norm(groups, w, b, 1e-5)?;
                let (dx, dw, db) = x.group_norm_backward(&t[3], &mean, &rstd, w, groups)?;
                Ok(vec![y, dx, dw, db, mean, rstd])
            });
        }
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/pool.rs
// ---------------------------------------------------------------------------------------------

/// A pooling window: kernel, stride, padding.
type Window = ((usize, usize), (usize, usize), (usize, usize));

const WINDOWS: &[Window] = &[
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (1, 1)),
    ((3, 2), (2, 1), (1, 0)),
    ((5, 5), (3, 3), (2, 2)),
    ((1, 1), (1, 1), (0, 0)),
    ((4, 3), (4, 3), (2, 1)),
];

#[test]
fn upsample_nearest_forward_and_backward() {
    let Some(mut p) = Parity::new("upsample_nearest_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (sh, sw) in [(2, 2), (3, 1), (1, 4), (1, 1)] {
            let inputs = [randn(&[2, 3, 7, 5], 1), randn(&[2, 3, 5 * sh, 7 * sw], 2)];
            let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                // The input is a transposed (H, W) view; the gradient one too.
                let up = x[0].transpose(2, 3)?.upsample_nearest2d(sh, sw)?;
                let g = x[1].transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
                Ok(vec![up, g.upsample_nearest2d_backward(sh, sw)?])
            };
            p.close(
                &format!("scale ({sh}, {sw}) of transposed [2, 3, 5, 7]"),
                dtype,
                &inputs,
                f,
            );
        }
        p.close(
            "large [4, 16, 32, 32] scale 2",
            dtype,
            &[randn(&[4, 16, 32, 32], 3), randn(&[4, 16, 64, 64], 4)],
            |x| {
                Ok(vec![
                    x[0].upsample_nearest2d(2, 2)?,
                    x[1].upsample_nearest2d_backward(2, 2)?,
                ])
            },
        );
    }
    p.finish();
}

#[test]
fn avg_pool_max_pool_forward_and_backward() {
    let Some(mut p) = Parity::new("avg_pool_max_pool_forward_and_backward") else {
        return;
    };
    for dtype in TRAIN {
        for (seed, &(kernel, stride, padding)) in WINDOWS.iter().enumerate() {
            let seed = seed as u64;
            let name = format!("kernel {kernel:?} stride {stride:?} padding {padding:?}");
            // Input [2, 3, 13, 11] as a transposed view of [2, 3, 11, 13].
            let x0 = randn(&[2, 3, 11, 13], seed).transpose(2, 3).unwrap();
            let pooled = x0
                .avg_pool2d(kernel, stride, padding)
                .unwrap()
                .shape()
                .to_vec();
            let inputs = [randn(&[2, 3, 11, 13], seed), randn(&pooled, seed + 1)];
            p.close(&format!("avg_pool2d {name}"), dtype, &inputs, |x| {
                let v = x[0].transpose(2, 3)?;
                Ok(vec![
                    v.avg_pool2d(kernel, stride, padding)?,
                    x[1].avg_pool2d_backward(v.shape(), kernel, stride, padding)?,
                ])
            });
            let half_kernel = 2 * padding.0 <= kernel.0 && 2 * padding.1 <= kernel.1;
            if half_kernel {
                p.close(
                    &format!("avg_pool2d_exclude_pad {name}"),
                    dtype,
                    &inputs[..1],
                    |x| {
                        Ok(vec![x[0]
                            .transpose(2, 3)?
                            .avg_pool2d_exclude_pad(kernel, stride, padding)?])
                    },
                );
                // The largest of the same values: exact where the CPU computes in the dtype.
                let f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
                    Ok(vec![x[0]
                        .transpose(2, 3)?
                        .max_pool2d(kernel, stride, padding)?])
                };
                if is_half(dtype) {
                    p.close(&format!("max_pool2d {name}"), dtype, &inputs[..1], f);
                } else {
                    p.exact(&format!("max_pool2d {name}"), dtype, &inputs[..1], f);
                }
            }
        }
        p.close(
            "avg_pool2d backward of a strided gradient",
            dtype,
            &[randn(&[2, 3, 4, 5], 40)],
            |x| {
                Ok(vec![x[0].transpose(2, 3)?.avg_pool2d_backward(
                    &[2, 3, 10, 8],
                    (2, 2),
                    (2, 2),
                    (0, 0),
                )?])
            },
        );
        p.close(
            "large [4, 16, 64, 64] 2x2 pools",
            dtype,
            &[randn(&[4, 16, 64, 64], 41)],
            |x| {
                Ok(vec![
                    x[0].avg_pool2d((2, 2), (2, 2), (0, 0))?,
                    x[0].max_pool2d((3, 3), (2, 2), (1, 1))?,
                ])
            },
        );
    }
    // NaN wins a max-pool window, as on the CPU.
    p.on("max_pool2d propagates NaN", F32, Mode::Exact, |d| {
        let x =
            Tensor::from_vec(vec![1f32, f32::NAN, 3., 4., 5., 6.], &[1, 1, 2, 3])?.to_device(d)?;
        Ok(vec![x.max_pool2d((1, 2), (1, 1), (0, 0))?])
    });
    p.finish();
}

#[test]
fn resize_bilinear() {
    let Some(mut p) = Parity::new("resize_bilinear") else {
        return;
    };
    let sizes = [(11, 16), (3, 4), (5, 7), (10, 3), (1, 1), (299, 299)];
    for dtype in TRAIN {
        for (oh, ow) in sizes {
            p.close(
                &format!("transposed [2, 3, 5, 7] to ({oh}, {ow})"),
                dtype,
                &[randn(&[2, 3, 7, 5], 1)],
                |x| Ok(vec![x[0].transpose(2, 3)?.resize_bilinear2d(oh, ow)?]),
            );
        }
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// cpu/index.rs
// ---------------------------------------------------------------------------------------------

#[test]
fn cat_stack_pad_of_every_dtype() {
    let Some(mut p) = Parity::new("cat_stack_pad_of_every_dtype") else {
        return;
    };
    for dtype in ALL {
        let inputs = [
            values(&[3, 4, 5], dtype, 1),
            values(&[3, 2, 5], dtype, 2),
            values(&[5, 6, 3], dtype, 3),
            values(&[1, 1, 5], dtype, 4),
        ];
        p.exact(
            "cat dim 1 of [3, 4, 5], [3, 2, 5], a permuted [3, 6, 5] and a broadcast [3, 1, 5]",
            dtype,
            &inputs,
            |x| {
                let t = x[2].permute(&[2, 1, 0])?;
                let b = x[3].broadcast_as(&[3, 1, 5])?;
                Ok(vec![Tensor::cat(&[&x[0], &x[1], &t, &b], 1)?])
            },
        );
        p.exact("cat dims 0 and 2, narrowed pieces", dtype, &inputs, |x| {
            let a = x[0].narrow(1, 1, 2)?;
            Ok(vec![
                Tensor::cat(&[&a, &x[1], &a], 0)?,
                Tensor::cat(&[&a, &x[1].narrow(2, 1, 3)?], 2)?,
                Tensor::cat(&[&x[0]], 0)?,
            ])
        });
        p.exact(
            "stack dims 0, 1, 3 with a transposed piece",
            dtype,
            &inputs,
            |x| {
                let a = x[0].narrow(1, 0, 2)?;
                let b = x[2].permute(&[2, 1, 0])?.narrow(1, 0, 2)?;
                Ok(vec![
                    Tensor::stack(&[&a, &b], 0)?,
                    Tensor::stack(&[&a, &b, &a], 1)?,
                    Tensor::stack(&[&b, &a], 3)?,
                ])
            },
        );
        let fill = if dtype == U8 { 7.0 } else { -2.0 };
        p.exact(
            "pad H and W of a narrowed NCHW input; pad of the last dim; no padding",
            dtype,
            &[values(&[2, 3, 6, 9], dtype, 5)],
            |x| {
                let v = x[0].narrow(3, 2, 5)?;
                Ok(vec![
                    v.pad(&[(1, 2), (0, 3)], fill)?,
                    v.transpose(2, 3)?.pad(&[(4, 0)], fill)?,
                    v.pad(&[(0, 0), (0, 0)], fill)?,
                    v.pad(&[(1, 1), (1, 1), (1, 1), (1, 1)], fill)?,
                ])
            },
        );
        p.exact(
            "a large cat [300, 129] and [300, 70]",
            dtype,
            &[values(&[300, 129], dtype, 6), values(&[70, 300], dtype, 7)],
            |x| Ok(vec![Tensor::cat(&[&x[0], &x[1].transpose(0, 1)?], 1)?]),
        );
    }
    p.finish();
}

#[test]
fn index_select_and_index_add() {
    let Some(mut p) = Parity::new("index_select_and_index_add") else {
        return;
    };
    // index_select: an exact copy in every dtype, from contiguous and strided sources.
    for dtype in ALL {
        for dim in 0..3 {
            let size = [6, 7, 8][dim];
            let idx = indices(&[11], size, 10 + dim as u64);
            p.exact(
                &format!("index_select dim {dim}, 11 indices with repeats"),
                dtype,
                &[values(&[6, 7, 8], dtype, 1), idx.clone()],
                |x| Ok(vec![x[0].index_select(dim, &x[1])?]),
            );
            p.exact(
                &format!("index_select dim {dim} of a permuted source, strided index"),
                dtype,
                &[
                    values(&[8, 6, 7], dtype, 2),
                    indices(&[2, 11], size, 20 + dim as u64),
                ],
                |x| {
                    let src = x[0].permute(&[1, 2, 0])?;
                    let idx = x[1].narrow(0, 1, 1)?.squeeze(0)?;
                    Ok(vec![src.index_select(dim, &idx)?])
                },
            );
        }
        p.exact(
            "embedding lookup [1000, 64] by 300 ids",
            dtype,
            &[values(&[1000, 64], dtype, 3), indices(&[300], 1000, 4)],
            |x| Ok(vec![x[0].index_select(0, &x[1])?]),
        );
    }
    // index_add accumulates repeated indices: a sum, compared within tolerance.
    for dtype in TRAIN {
        for dim in 0..3 {
            let target = vec![6, 7, 8];
            let size = target[dim];
            let mut src_shape = target.clone();
            src_shape[dim] = 11;
            let idx = indices(&[11], size as i64, 30 + dim as u64);
            p.close(
                &format!("index_add dim {dim}, 11 slices into {size} with repeats"),
                dtype,
                &[randn(&src_shape, 5), idx],
                |x| Ok(vec![x[0].index_add(dim, &x[1], &target)?]),
            );
        }
        // Many repeats: an embedding gradient where a few ids take most of the rows.
        let ids = whole(&[500], 5, 6).to_dtype(I64).unwrap();
        p.close(
            "index_add of 500 rows into 5 (embedding backward)",
            dtype,
            &[randn(&[32, 500], 7), ids],
            |x| Ok(vec![x[0].transpose(0, 1)?.index_add(0, &x[1], &[5, 32])?]),
        );
    }
    p.finish();
}

#[test]
fn gather_and_scatter_add() {
    let Some(mut p) = Parity::new("gather_and_scatter_add") else {
        return;
    };
    for dtype in ALL {
        for dim in 0..3 {
            let shape = [5, 6, 7];
            // The index is smaller than the source in the other dims.
            let mut ishape = vec![4, 3, 5];
            ishape[dim] = 9;
            p.exact(
                &format!("gather dim {dim}, index {ishape:?}"),
                dtype,
                &[
                    values(&shape, dtype, 1),
                    indices(&ishape, shape[dim] as i64, 40 + dim as u64),
                ],
                |x| Ok(vec![x[0].gather(dim, &x[1])?]),
            );
        }
        p.exact(
            "gather of a transposed source",
            dtype,
            &[values(&[7, 5], dtype, 2), indices(&[5, 3], 7, 50)],
            |x| Ok(vec![x[0].transpose(0, 1)?.gather(1, &x[1])?]),
        );
    }
    for dtype in TRAIN {
        for dim in 0..3 {
            let shape = [5, 6, 7];
            let mut ishape = vec![4, 3, 5];
            ishape[dim] = 9;
            let target = shape.to_vec();
            p.close(
                &format!("scatter_add dim {dim}, index {ishape:?} with repeats"),
                dtype,
                &[
                    randn(&ishape, 3),
                    indices(&ishape, shape[dim] as i64, 60 + dim as u64),
                ],
                |x| Ok(vec![x[0].scatter_add(dim, &x[1], &target)?]),
            );
        }
        p.close(
            "scatter_add of a transposed source (cross-entropy backward)",
            dtype,
            &[randn(&[1, 64], 4), indices(&[64, 1], 10, 70)],
            |x| {
                Ok(vec![x[0].transpose(0, 1)?.scatter_add(
                    1,
                    &x[1],
                    &[64, 10],
                )?])
            },
        );
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Through autograd: the composite ops and a backward pass each.
// ---------------------------------------------------------------------------------------------

/// The tolerance of the composites of autograd in bf16 and f16, which round many intermediates.
const COMPOSITE_HALF_TOLERANCE: f64 = 3e-2;

/// `f` of Vars made from `inputs` (all but the last, which is the output's cotangent), then a
/// backward pass: the output and the gradient of every input.
fn forward_backward(inputs: &[Tensor], f: impl Fn(&[Var]) -> Result<Var>) -> Result<Vec<Tensor>> {
    let (cot, inputs) = inputs.split_last().expect("a cotangent");
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::leaf(t.clone(), t.dtype().is_float()))
        .collect();
    let out = f(&vars)?;
    let cot = cot.reshape(out.shape())?;
    let grads = out.mul(&Var::constant(cot))?.sum_all()?.backward()?;
    let mut outs = vec![out.value().clone()];
    for v in vars.iter().filter(|v| v.requires_grad()) {
        outs.push(
            grads
                .get(v)
                .cloned()
                .ok_or_else(|| tensor::Error::msg("a gradient is missing"))?,
        );
    }
    Ok(outs)
}

#[test]
fn autograd_parity() {
    let Some(mut p) = Parity::new("autograd_parity") else {
        return;
    };
    let causal = {
        let s = 10;
        let m: Vec<u8> = (0..s * s).map(|i| (i % s <= i / s) as u8).collect();
        Tensor::from_vec(m, &[s, s]).unwrap()
    };
    for dtype in TRAIN {
        // In bf16 and f16 the composites round every intermediate (scores, probabilities,
        // activations) to the half dtype on the GPU and not in the f32 reference.
        let tol = if is_half(dtype) {
            COMPOSITE_HALF_TOLERANCE
        } else {
            tolerance(dtype)
        };
        p.close_within(
            "attention, causal mask, heads broadcast",
            dtype,
            tol,
            &[
                randn(&[2, 3, 10, 8], 1),
                randn(&[2, 1, 10, 8], 2),
                randn(&[2, 3, 10, 6], 3),
                causal.clone(),
                randn(&[2, 3, 10, 6], 4),
            ],
            |x| {
                forward_backward(x, |v| {
                    v[0].scaled_dot_product_attention(&v[1], &v[2], Some(v[3].value()), None)
                })
            },
        );
        p.close_within(
            "attention of transposed q, k, v (tokens-major), no mask",
            dtype,
            tol,
            &[
                randn(&[2, 17, 4, 16], 5),
                randn(&[2, 17, 4, 16], 6),
                randn(&[2, 17, 4, 16], 7),
                randn(&[2, 4, 17, 16], 8),
            ],
            |x| {
                forward_backward(x, |v| {
                    let (q, k, w) = (
                        v[0].transpose(1, 2)?,
                        v[1].transpose(1, 2)?,
                        v[2].transpose(1, 2)?,
                    );
                    q.scaled_dot_product_attention(&k, &w, None, Some(0.3))
                })
            },
        );
        p.close_within(
            "MLP block: layer_norm, matmul, gelu_tanh, matmul, residual",
            dtype,
            tol,
            &[
                randn(&[2, 9, 24], 10),
                randn(&[24, 64], 11),
                randn(&[64, 24], 12),
                randn(&[24], 13),
                randn(&[2, 9, 24], 14),
            ],
            |x| {
                forward_backward(x, |v| {
                    let h = v[0].layer_norm(1, Some(&v[3]), None, 1e-6)?;
                    let h = h.matmul(&v[1])?.gelu_tanh()?.matmul(&v[2])?;
                    h.add(&v[0])
                })
            },
        );
        p.close_within(
            "conv block: group_norm, silu, conv2d, avg_pool, upsample",
            dtype,
            tol,
            &[
                randn(&[2, 8, 12, 10], 20),
                randn(&[8], 21),
                randn(&[8], 22),
                randn(&[6, 8, 3, 3], 23),
                randn(&[6], 24),
                randn(&[2, 6, 12, 10], 25),
            ],
            |x| {
                forward_backward(x, |v| {
                    let h = v[0].group_norm(4, Some(&v[1]), Some(&v[2]), 1e-5)?.silu()?;
                    let params = Conv2dParams {
                        padding: (1, 1),
                        ..Default::default()
                    };
                    h.conv2d(&v[3], Some(&v[4]), &params)?
                        .avg_pool2d((2, 2), (2, 2), (0, 0))?
                        .upsample_nearest2d(2, 2)
                })
            },
        );
        p.close_within(
            "mse_loss and softmax",
            dtype,
            tol,
            &[randn(&[6, 7], 30), randn(&[6, 7], 31), randn(&[1], 32)],
            |x| forward_backward(x, |v| v[0].softmax(1)?.mse_loss(&v[1])),
        );
    }
    for dtype in FLOATS {
        p.close(
            "cross_entropy of transposed logits",
            dtype,
            &[randn(&[10, 6], 40), indices(&[6], 10, 41), randn(&[1], 42)],
            |x| forward_backward(x, |v| v[0].transpose(0, 1)?.cross_entropy(v[1].value())),
        );
        p.close(
            "embedding and dropout with one seed",
            dtype,
            &[
                randn(&[12, 5], 50),
                indices(&[3, 4], 12, 51),
                randn(&[3, 4, 5], 52),
            ],
            |x| {
                forward_backward(x, |v| {
                    v[0].embedding(v[1].value())?
                        .dropout(0.3, &mut Generator::new(7), true)
                })
            },
        );
        p.close(
            "var, max, min, mean",
            dtype,
            &[randn(&[5, 8], 60), randn(&[1], 61)],
            |x| {
                forward_backward(x, |v| {
                    let a = v[0].var(&[1], false, true)?.sum_all()?;
                    let b = v[0]
                        .max(&[0], false)?
                        .sub(&v[0].min(&[0], false)?)?
                        .mean_all()?;
                    a.add(&b)?.reshape(&[1])
                })
            },
        );
    }
    p.finish();
}
