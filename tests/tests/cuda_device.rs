//! The CUDA device through the public API. Everywhere: opening or parsing `cuda:N` where it
//! cannot be opened is an error that names the device and says why, never a panic, and so is
//! making a tensor there. With a GPU (skipped elsewhere): ops that mix a CPU and a CUDA tensor,
//! and bad shapes, dtypes and indices on CUDA, are errors, never panics or device faults (with
//! `DIFFTUNE_PARITY_SELF_TEST=1` the last two run on the CPU, which checks the cases).

use std::panic::{catch_unwind, AssertUnwindSafe};

use autograd::Var;
use difftune_tests::gpu::{cuda_or_self_test, cuda_or_skip, note};
use tensor::{Conv2dParams, DType, Device, Error, Generator, Result, Tensor, UnaryOp};

/// The error of `f`, after checking that it neither panicked nor succeeded.
#[track_caller]
fn error_of<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Error {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("{what}: expected an error, got Ok"),
        Err(_) => panic!("{what}: panicked instead of returning an error"),
    }
}

#[test]
fn opening_cuda_0_works_or_says_why_not() {
    let opened = catch_unwind(|| Device::cuda(0)).expect("Device::cuda(0) panicked");
    match opened {
        Ok(device) => {
            assert_eq!(device, Device::Cuda(0));
            note("opening_cuda_0_works_or_says_why_not: cuda:0 opened");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    Error::Device {
                        device: Device::Cuda(0),
                        ..
                    }
                ),
                "{msg}"
            );
            assert!(msg.contains("cuda:0"), "`{msg}` does not name cuda:0");
            // The reason follows the device: a missing driver is named as such.
            let reason = msg.split_once("cuda:0: ").map_or("", |(_, r)| r);
            assert!(reason.len() > 10, "`{msg}` does not say why");
            if !kernels::driver_available() {
                assert!(msg.contains("driver"), "`{msg}` does not name the driver");
            }
            note(&format!(
                "opening_cuda_0_works_or_says_why_not: no cuda:0 here ({msg})"
            ));
        }
    }
}

#[test]
fn an_ordinal_no_machine_has_is_an_error_naming_it() {
    let e = error_of("Device::cuda(1000)", || Device::cuda(1000));
    assert!(e.to_string().contains("cuda:1000"), "{e}");
    let e = error_of("parse cuda:1000", || "cuda:1000".parse::<Device>());
    assert!(e.to_string().contains("cuda:1000"), "{e}");
}

#[test]
fn parsing_device_names() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    for name in ["cuda:0", "cuda"] {
        match catch_unwind(|| name.parse::<Device>()).expect("parsing panicked") {
            Ok(device) => assert_eq!(device, Device::Cuda(0), "{name}"),
            Err(e) => assert!(e.to_string().contains("cuda:0"), "{name}: {e}"),
        }
    }
    for bad in [
        "gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA:0", "cpu:0", "", "cuda:0 ",
    ] {
        let e = error_of(bad, || bad.parse::<Device>());
        let msg = e.to_string();
        assert!(
            msg.contains("expected `cpu` or `cuda:N`") && msg.contains(&format!("`{bad}`")),
            "{bad:?}: {msg}"
        );
    }
    assert_eq!(Device::Cpu.to_string(), "cpu");
    assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
    assert!(Device::Cuda(3).is_cuda() && !Device::Cpu.is_cuda());
}

#[test]
fn tensors_on_a_device_that_cannot_be_opened_are_errors() {
    // cuda:1000 exists nowhere, so this runs the same on every machine.
    let nowhere = Device::Cuda(1000);
    let x = Tensor::ones(&[2, 3], DType::F32, Device::Cpu).unwrap();
    let errors = [
        error_of("zeros", || Tensor::zeros(&[2, 3], DType::F32, nowhere)),
        error_of("full", || Tensor::full(&[4], 1.5, DType::BF16, nowhere)),
        error_of("to_device", || x.to_device(nowhere)),
        error_of("randn", || {
            Tensor::randn(&[3], 0.0, 1.0, DType::F32, nowhere, &mut Generator::new(0))
        }),
        error_of("arange", || {
            Tensor::arange(0.0, 4.0, 1.0, DType::F64, nowhere)
        }),
    ];
    for e in errors {
        assert!(e.to_string().contains("cuda:1000"), "{e}");
    }
}

/// A normal f32 tensor of `shape` on `device`.
fn randn(shape: &[usize], device: Device, seed: u64) -> Tensor {
    Tensor::randn(
        shape,
        0.0,
        1.0,
        DType::F32,
        device,
        &mut Generator::new(seed),
    )
    .unwrap()
}

/// A named function that must return an error.
type Case<'a> = (&'static str, Box<dyn Fn() -> Result<Tensor> + 'a>);

/// Runs each case, which must return an error (not succeed, not panic) whose message contains
/// one of `naming`, and fails the test with the list of those that did not.
fn expect_errors(test: &str, cases: Vec<Case>, naming: &[&str]) {
    let mut failures = Vec::new();
    let count = cases.len();
    for (name, f) in cases {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Err(e)) => {
                let msg = e.to_string();
                if !naming.iter().any(|n| msg.contains(n)) {
                    failures.push(format!("{name}: `{msg}` names none of {naming:?}"));
                }
            }
            Ok(Ok(t)) => failures.push(format!(
                "{name}: succeeded (a tensor {:?} on {})",
                t.shape(),
                t.device()
            )),
            Err(_) => failures.push(format!("{name}: panicked")),
        }
    }
    note(&format!("{test}: {count} cases, {} failed", failures.len()));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ops_mixing_cpu_and_cuda_tensors_are_errors() {
    let Some(dev) = cuda_or_skip("ops_mixing_cpu_and_cuda_tensors_are_errors") else {
        return;
    };
    let cpu = Device::Cpu;
    let (a, ga) = (randn(&[3, 4], cpu, 1), randn(&[3, 4], dev, 1));
    let (m, gm) = (randn(&[4, 2], cpu, 2), randn(&[4, 2], dev, 2));
    let (x, gx) = (randn(&[1, 2, 5, 5], cpu, 3), randn(&[1, 2, 5, 5], dev, 3));
    let (w, gw) = (randn(&[3, 2, 3, 3], cpu, 4), randn(&[3, 2, 3, 3], dev, 4));
    let (b, gb) = (randn(&[3], cpu, 5), randn(&[3], dev, 5));
    let (n, gn) = (randn(&[4], cpu, 6), randn(&[4], dev, 6));
    let idx = Tensor::from_vec(vec![0i64, 2, 1], &[3]).unwrap();
    let gidx = idx.to_device(dev).unwrap();
    let gather_idx = Tensor::from_vec(vec![0i64, 3, 1], &[3, 1]).unwrap();
    let ggather_idx = gather_idx.to_device(dev).unwrap();
    let mask = Tensor::from_vec(vec![1u8, 0, 1], &[3, 1]).unwrap();
    let gmask = mask.to_device(dev).unwrap();
    let p = Conv2dParams::default();
    let gy = randn(&[1, 3, 3, 3], dev, 7);
    let y = randn(&[1, 3, 3, 3], cpu, 7);
    let cases: Vec<Case> = vec![
        ("add cpu + cuda", Box::new(|| a.add(&ga))),
        ("add cuda + cpu", Box::new(|| ga.add(&a))),
        (
            "mul cuda * cpu scalar",
            Box::new(|| ga.mul(&Tensor::scalar(2.0, DType::F32))),
        ),
        ("maximum cuda, cpu", Box::new(|| ga.maximum(&a))),
        ("matmul cpu x cuda", Box::new(|| a.matmul(&gm))),
        ("matmul cuda x cpu", Box::new(|| ga.matmul(&m))),
        ("cmp cpu, cuda", Box::new(|| a.cmp(tensor::CmpOp::Lt, &ga))),
        ("cmp cuda, cpu", Box::new(|| ga.cmp(tensor::CmpOp::Lt, &a))),
        (
            "where cpu mask, cuda values",
            Box::new(|| mask.where_cond(&ga, &ga)),
        ),
        (
            "where cuda mask, cpu values",
            Box::new(|| gmask.where_cond(&a, &a)),
        ),
        (
            "where cuda and cpu values",
            Box::new(|| gmask.where_cond(&ga, &a)),
        ),
        (
            "masked_fill cuda with a cpu mask",
            Box::new(|| ga.masked_fill(&mask, 0.0)),
        ),
        (
            "unary_backward with a cpu saved value",
            Box::new(|| ga.unary_backward(UnaryOp::Tanh, Some(&a))),
        ),
        ("cat cuda, cpu", Box::new(|| Tensor::cat(&[&ga, &a], 0))),
        ("cat cpu, cuda", Box::new(|| Tensor::cat(&[&a, &ga], 1))),
        ("stack cuda, cpu", Box::new(|| Tensor::stack(&[&ga, &a], 0))),
        (
            "conv2d cuda input, cpu weight",
            Box::new(|| gx.conv2d(&w, &p)),
        ),
        (
            "conv2d cpu input, cuda weight",
            Box::new(|| x.conv2d(&gw, &p)),
        ),
        (
            "conv2d cuda, cpu bias",
            Box::new(|| gx.conv2d_bias(&gw, Some(&b), &p)),
        ),
        (
            "conv2d cpu, cuda bias",
            Box::new(|| x.conv2d_bias(&w, Some(&gb), &p)),
        ),
        (
            "conv2d_backward_input cuda grad, cpu weight",
            Box::new(|| gy.conv2d_backward_input(&w, &[1, 2, 5, 5], &p)),
        ),
        (
            "conv2d_backward_weight cuda grad, cpu input",
            Box::new(|| gy.conv2d_backward_weight(&x, &[3, 2, 3, 3], &p)),
        ),
        (
            "conv2d_backward_weight cpu grad, cuda input",
            Box::new(|| y.conv2d_backward_weight(&gx, &[3, 2, 3, 3], &p)),
        ),
        (
            "layer_norm cuda, cpu weight",
            Box::new(|| Ok(ga.layer_norm(1, Some(&n), None, 1e-5)?.0)),
        ),
        (
            "layer_norm cpu, cuda bias",
            Box::new(|| Ok(a.layer_norm(1, None, Some(&gn), 1e-5)?.0)),
        ),
        (
            "group_norm cuda, cpu weight",
            Box::new(|| Ok(gx.group_norm(1, Some(&randn(&[2], cpu, 8)), None, 1e-5)?.0)),
        ),
        (
            "layer_norm_backward cuda, cpu grad",
            Box::new(|| {
                let (_, mean, rstd) = ga.layer_norm(1, None, None, 1e-5)?;
                Ok(ga.layer_norm_backward(&a, &mean, &rstd, None, 1)?.0)
            }),
        ),
        (
            "group_norm_backward cuda, cpu grad",
            Box::new(|| {
                let (_, mean, rstd) = gx.group_norm(2, None, None, 1e-5)?;
                Ok(gx.group_norm_backward(&x, &mean, &rstd, None, 2)?.0)
            }),
        ),
        (
            "softmax_backward cuda y, cpu grad",
            Box::new(|| ga.softmax(1)?.softmax_backward(&a, 1)),
        ),
        (
            "log_softmax_backward cpu y, cuda grad",
            Box::new(|| a.log_softmax(1)?.log_softmax_backward(&ga, 1)),
        ),
        (
            "index_select cuda, cpu index",
            Box::new(|| ga.index_select(1, &idx)),
        ),
        (
            "index_select cpu, cuda index",
            Box::new(|| a.index_select(1, &gidx)),
        ),
        (
            "index_add cuda, cpu index",
            Box::new(|| ga.index_add(0, &idx, &[3, 4])),
        ),
        (
            "index_add cpu, cuda index",
            Box::new(|| a.index_add(0, &gidx, &[3, 4])),
        ),
        (
            "gather cuda, cpu index",
            Box::new(|| ga.gather(1, &gather_idx)),
        ),
        (
            "gather cpu, cuda index",
            Box::new(|| a.gather(1, &ggather_idx)),
        ),
        (
            "scatter_add cuda, cpu index",
            Box::new(|| randn(&[3, 1], dev, 9).scatter_add(1, &gather_idx, &[3, 4])),
        ),
        (
            "scatter_add cpu, cuda index",
            Box::new(|| randn(&[3, 1], cpu, 9).scatter_add(1, &ggather_idx, &[3, 4])),
        ),
        (
            "autograd: Var add of cuda and cpu",
            Box::new(|| {
                Ok(Var::param(ga.clone())
                    .add(&Var::constant(a.clone()))?
                    .value()
                    .clone())
            }),
        ),
        (
            "autograd: attention with a cpu mask",
            Box::new(|| {
                let q = Var::param(randn(&[1, 3, 4], dev, 10));
                let mask = Tensor::ones(&[3, 3], DType::U8, cpu)?;
                Ok(q.scaled_dot_product_attention(&q, &q, Some(&mask), None)?
                    .value()
                    .clone())
            }),
        ),
    ];
    expect_errors(
        "ops_mixing_cpu_and_cuda_tensors_are_errors",
        cases,
        &["cpu", "cuda:0"],
    );
}

#[test]
fn bad_shapes_and_dtypes_on_cuda_are_errors() {
    let Some(dev) = cuda_or_self_test("bad_shapes_and_dtypes_on_cuda_are_errors") else {
        return;
    };
    let a = randn(&[3, 4], dev, 1);
    let ints = Tensor::from_vec(vec![1i64, 2, 3], &[3])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let bytes = Tensor::from_vec(vec![1u8, 2, 3], &[3])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let x = randn(&[1, 2, 5, 5], dev, 2);
    let w3 = randn(&[3, 3, 3, 3], dev, 3);
    let shapes: Vec<Case> = vec![
        ("matmul [3, 4] x [3, 4]", Box::new(|| a.matmul(&a))),
        (
            "add [3, 4] + [4, 3]",
            Box::new(|| a.add(&a.transpose(0, 1)?.contiguous()?)),
        ),
        (
            "conv2d with 3 input channels for 2",
            Box::new(|| x.conv2d(&w3, &Conv2dParams::default())),
        ),
        (
            "layer_norm over 3 dims of a 2-D tensor",
            Box::new(|| Ok(a.layer_norm(3, None, None, 1e-5)?.0)),
        ),
        (
            "group_norm of 4 channels in 3 groups",
            Box::new(|| Ok(a.group_norm(3, None, None, 1e-5)?.0)),
        ),
        ("softmax over dim 5", Box::new(|| a.softmax(5))),
        ("sum over dim 2", Box::new(|| a.sum(&[2], false))),
        (
            "max_pool2d of a 2-D tensor",
            Box::new(|| a.max_pool2d((2, 2), (1, 1), (0, 0))),
        ),
        (
            "cat of [3, 4] and [2, 3]",
            Box::new(|| Tensor::cat(&[&a, &randn(&[2, 3], dev, 4)], 0)),
        ),
    ];
    expect_errors("bad_shapes_on_cuda", shapes, &["shape"]);
    let dtypes: Vec<Case> = vec![
        ("exp of i64", Box::new(|| ints.exp())),
        ("sum of u8", Box::new(|| bytes.sum(&[0], false))),
        ("softmax of i64", Box::new(|| ints.softmax(0))),
        ("f32 + f64", Box::new(|| a.add(&a.to_dtype(DType::F64)?))),
        (
            "matmul f32 x bf16",
            Box::new(|| a.matmul(&a.transpose(0, 1)?.to_dtype(DType::BF16)?)),
        ),
        (
            "index_select with f32 indices",
            Box::new(|| a.index_select(0, &a.narrow(1, 0, 1)?.squeeze(1)?)),
        ),
    ];
    expect_errors(
        "bad_dtypes_on_cuda",
        dtypes,
        &["dtype", "i64", "u8", "f32", "f64"],
    );
}

/// Runs after the tests above (libtest runs them in name order, one at a time in `.gpu/run.sh`):
/// an index kernel that reads out of bounds would leave the device unusable for what follows.
#[test]
fn out_of_range_indices_on_cuda_are_errors() {
    let Some(dev) = cuda_or_self_test("out_of_range_indices_on_cuda_are_errors") else {
        return;
    };
    let a = randn(&[3, 4], dev, 1);
    let far = Tensor::from_vec(vec![0i64, 9], &[2])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let negative = Tensor::from_vec(vec![-1i64], &[1])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let far2 = Tensor::from_vec(vec![0i64, 9, 1], &[3, 1])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let indices: Vec<Case> = vec![
        (
            "index_select index 9 of 3",
            Box::new(|| a.index_select(0, &far)),
        ),
        (
            "index_select index -1",
            Box::new(|| a.index_select(1, &negative)),
        ),
        (
            "index_add index 9 of 3",
            Box::new(|| randn(&[2, 4], dev, 5).index_add(0, &far, &[3, 4])),
        ),
        ("gather index 9 of 4", Box::new(|| a.gather(1, &far2))),
        (
            "scatter_add index 9 of 4",
            Box::new(|| randn(&[3, 1], dev, 6).scatter_add(1, &far2, &[3, 4])),
        ),
        (
            "embedding id 9 of 3",
            Box::new(|| Ok(Var::param(a.clone()).embedding(&far)?.value().clone())),
        ),
    ];
    expect_errors(
        "out_of_range_indices_on_cuda_are_errors",
        indices,
        &["out of range", "index"],
    );
    // The device is still usable after the errors above (no sticky fault).
    let sum = a.sum_all().and_then(|s| s.to_scalar());
    assert!(
        sum.is_ok(),
        "cuda:0 unusable after the error cases: {sum:?}"
    );
}
