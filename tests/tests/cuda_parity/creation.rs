//! Creation, transfer, casts and copies (`tensor/src/tensor.rs`): `full`, `zeros`, `ones`,
//! `to_device` round trips, `to_dtype` between every pair of dtypes, `contiguous` and the
//! views, `arange`, `rand`, `randn`, and values read back from the device.

use std::panic::{catch_unwind, AssertUnwindSafe};

use difftune_tests::gpu::note;
use tensor::{DType, Device, Generator, Result, Tensor};

use super::harness::{
    panic_text, randn, uniform, values, whole, Mode, Parity, ViewFn, ALL, BF16, F16, F32, F64,
    FLOATS, I64, U8,
};

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
