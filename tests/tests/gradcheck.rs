//! The gradient check of every differentiable op, against central finite differences in f64, on
//! random shapes with broadcasting and non-contiguous (permuted, narrowed) inputs.
//!
//! `cases` matches [`Op`] exhaustively: a new op does not compile until it is given a family here,
//! and `every_op_has_a_passing_gradient_check` fails while its family has no case for it.
//!
//! The same cases run again on `cuda:0` where there is one (`..._on_cuda`, skipped elsewhere):
//! `common::on_device` makes every input and constant of the cases there.

mod gradcheck {
    pub mod common;
    pub mod conv;
    pub mod elementwise;
    pub mod nn;
    pub mod reduce;
    pub mod shape;
}

use std::panic::{catch_unwind, AssertUnwindSafe};

use autograd::check::{gradcheck, CheckOptions};
use autograd::Op;
use difftune_tests::gpu::{cuda_or_skip, note};
use gradcheck::common::Case;
use gradcheck::*;
use tensor::Device;

fn cases(op: Op) -> Vec<Case> {
    use Op::*;
    match op {
        Add | Sub | Mul | Div | Neg | AddScalar | MulScalar | Exp | Log | Sqrt | Rsqrt | Powf
        | Abs | Square | Tanh | Sigmoid | Relu | Silu | Gelu | GeluTanh | Clamp | Where
        | MaskedFill | ToDtype => elementwise::cases(op),
        Sum | Mean | Max | Min | Var | Matmul => reduce::cases(op),
        Checkpoint => checkpoint_cases(),
        Reshape | Permute | Transpose | Narrow | BroadcastAs | Squeeze | Unsqueeze | Contiguous
        | Cat | Stack | Chunk | Split | IndexSelect | Embedding | Gather | Pad => shape::cases(op),
        Conv2d | UpsampleNearest2d | AvgPool2d => conv::cases(op),
        Softmax
        | LogSoftmax
        | LayerNorm
        | GroupNorm
        | ScaledDotProductAttention
        | Attention
        | Dropout
        | MseLoss
        | CrossEntropy => nn::cases(op),
    }
}

fn checkpoint_cases() -> Vec<Case> {
    let block = |x: &autograd::Var, w: &autograd::Var| x.matmul(w)?.tanh()?.matmul(w)?.silu();
    vec![common::case(
        "checkpointed block: gradients reach the input and the captured weight",
        vec![common::randn(&[3, 4], 1), common::randn(&[4, 4], 2)],
        move |v| {
            let w = v[1].clone();
            let y = autograd::checkpoint(&[&v[0]], &[&v[1]], move |x| block(&x[0], &w))?;
            y.square()
        },
    )]
}

/// Every op's cases checked on `device` (inputs, constants and perturbations there): how many
/// cases ran, and the failures, one line each.
fn check_every_op(device: Device) -> (usize, Vec<String>) {
    common::on_device(device, || {
        let (mut count, mut failures) = (0, Vec::new());
        for &op in Op::ALL {
            let cases = cases(op);
            if cases.is_empty() {
                failures.push(format!("{op:?}: no gradient check"));
            }
            for case in cases {
                count += 1;
                let opts = case.opts.clone().unwrap_or_default();
                // A panic in an op (a CUDA path missing, say) is one failure, not the end of the run.
                let run =
                    catch_unwind(AssertUnwindSafe(|| gradcheck(&case.f, &case.inputs, &opts)));
                match run {
                    Ok(Ok(r)) if r.passed() && r.checked > 0 => {}
                    Ok(Ok(r)) => failures.push(format!("{op:?} / {}: {r:?}", case.name)),
                    Ok(Err(e)) => failures.push(format!("{op:?} / {}: error: {e}", case.name)),
                    Err(_) => failures.push(format!("{op:?} / {}: panicked", case.name)),
                }
            }
        }
        (count, failures)
    })
}

#[test]
fn every_op_has_a_passing_gradient_check() {
    let (_, failures) = check_every_op(Device::Cpu);
    assert!(
        failures.is_empty(),
        "gradient checks failed:\n{}",
        failures.join("\n")
    );
}

/// The same cases in f64 with the same tolerances, every tensor on `cuda:0`: the CUDA ops'
/// forward and backward against finite differences computed on the GPU.
#[test]
fn every_op_has_a_passing_gradient_check_on_cuda() {
    let Some(device) = cuda_or_skip("every_op_has_a_passing_gradient_check_on_cuda") else {
        return;
    };
    let (count, failures) = check_every_op(device);
    note(&format!(
        "every_op_has_a_passing_gradient_check_on_cuda: {count} cases on {device}, {} failed",
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "gradient checks on {device} failed:\n{}",
        failures.join("\n")
    );
}

/// The checker itself must be able to fail on `device`: a function whose recorded backward is
/// wrong, and one that drops its gradient.
fn wrong_gradients_fail(device: Device) {
    common::on_device(device, || {
        let x = common::randn(&[3, 2], 1);
        let wrong = |v: &[autograd::Var]| {
            let y = v[0].value().exp()?;
            Ok(autograd::Var::from_op(Op::Exp, y, &[&v[0]], |g, _| {
                Ok(vec![Some(g.clone())])
            }))
        };
        let report = gradcheck(wrong, std::slice::from_ref(&x), &CheckOptions::default()).unwrap();
        assert!(!report.passed(), "{device}: {report:?}");
        let dropped = |v: &[autograd::Var]| Ok(autograd::Var::constant(v[0].value().exp()?));
        assert!(
            !gradcheck(dropped, &[x], &CheckOptions::default())
                .unwrap()
                .passed(),
            "{device}"
        );
    })
}

#[test]
fn a_wrong_gradient_fails_the_check() {
    wrong_gradients_fail(Device::Cpu);
}

#[test]
fn a_wrong_gradient_fails_the_check_on_cuda() {
    if let Some(device) = cuda_or_skip("a_wrong_gradient_fails_the_check_on_cuda") {
        wrong_gradients_fail(device);
    }
}
