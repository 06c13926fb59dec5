//! `kernels::matmul::gemm_fused` on raw device buffers: the fused epilogue (bias, GELU,
//! accumulate) and the reduction steps, which no tensor op reaches yet, on the tensor-core
//! kernel and on the SIMT kernel, with an error bound per element.

use difftune_tests::gpu::{cuda_or_skip, note, SELF_TEST};
use tensor::{DType, Device, Tensor, UnaryOp};

use super::harness::{is_half, randn, BF16, F16, F32, F64};

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
