//! Memory of the tape, measured with the process-wide byte counter of tensor storage: backward
//! releases the graph, frozen weights record none, and gradient accumulation adds.
//!
//! The counter counts every tensor of the process, so this file is its own test binary and every
//! test takes [`serial`] first: no two of them allocate at the same time.

use std::sync::{Mutex, MutexGuard, PoisonError};

use autograd::{no_grad, Grads, Var};
use tensor::{memory, DType, Device, Generator, Result, Tensor};

const BATCH: usize = 32;
const IN: usize = 16;
const HIDDEN: usize = 64;
const OUT: usize = 4;
/// Bytes of one hidden activation ([BATCH, HIDDEN] f32).
const ACTIVATION_BYTES: usize = BATCH * HIDDEN * 4;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the others may still run.
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor {
    Tensor::randn(
        shape,
        0.0,
        std,
        DType::F32,
        Device::Cpu,
        &mut Generator::new(seed),
    )
    .unwrap()
}

/// The weights and biases of a 3-layer MLP, trainable or frozen.
fn mlp_params(trainable: bool) -> Vec<Var> {
    let shapes: [&[usize]; 6] = [
        &[IN, HIDDEN],
        &[HIDDEN],
        &[HIDDEN, HIDDEN],
        &[HIDDEN],
        &[HIDDEN, OUT],
        &[OUT],
    ];
    shapes
        .iter()
        .zip(1..)
        .map(|(shape, seed)| Var::leaf(randn(shape, 0.3, seed), trainable))
        .collect()
}

fn input() -> Var {
    Var::constant(randn(&[BATCH, IN], 1.0, 100))
}

/// mean((tanh(tanh(x W1 + b1) W2 + b2) W3 + b3)²): the intermediates live only on the tape.
fn forward(x: &Var, p: &[Var]) -> Result<Var> {
    let h1 = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
    let h2 = h1.matmul(&p[2])?.add(&p[3])?.tanh()?;
    h2.matmul(&p[4])?.add(&p[5])?.square()?.mean_all()
}

fn bytes_of(v: &Var) -> usize {
    v.value().elem_count() * v.value().dtype().size_in_bytes()
}

#[test]
fn backward_releases_the_tape() {
    let _serial = serial();
    let (params, x) = (mlp_params(true), input());
    let before = memory::live_bytes();
    memory::reset_peak();

    let loss = forward(&x, &params).unwrap();
    let during = memory::live_bytes();
    assert!(loss.requires_grad());
    // The tape holds at least the two hidden activations that the backward pass needs.
    assert!(
        during >= before + 2 * ACTIVATION_BYTES,
        "the forward recorded only {} bytes",
        during - before
    );

    let grads = loss.backward().unwrap();
    assert_eq!(grads.len(), params.len());
    let param_bytes: usize = params.iter().map(bytes_of).sum();
    assert!(memory::live_bytes() >= before + param_bytes);
    assert!(memory::peak_bytes() >= during);
    drop(grads);

    // The loss is alive, but backward freed its graph: only its own value remains.
    let after = memory::live_bytes();
    assert!(
        after <= before + bytes_of(&loss),
        "{} bytes still live after backward (loss: {} bytes; during the forward: {})",
        after - before,
        bytes_of(&loss),
        during - before
    );
    assert!(loss.backward().is_err(), "the graph should be gone");
}

#[test]
fn frozen_parameters_record_no_graph() {
    let _serial = serial();
    let (frozen, x) = (mlp_params(false), input());
    let before = memory::live_bytes();
    let out = forward(&x, &frozen).unwrap();
    assert!(!out.requires_grad());
    assert!(out.op().is_none(), "a constant output has no node");
    assert!(
        memory::live_bytes() <= before + bytes_of(&out),
        "{} bytes live after a frozen forward (output: {})",
        memory::live_bytes() - before,
        bytes_of(&out)
    );
    drop(out);

    // Trainable weights under no_grad record nothing either.
    let trainable = mlp_params(true);
    let before = memory::live_bytes();
    let out = no_grad(|| forward(&x, &trainable)).unwrap();
    assert!(!out.requires_grad());
    assert!(memory::live_bytes() <= before + bytes_of(&out));
    drop(out);

    // And the same forward with grad enabled does keep its tape: the contrast the checks above rely on.
    let out = forward(&x, &trainable).unwrap();
    assert!(memory::live_bytes() >= before + 2 * ACTIVATION_BYTES);
    drop(out);
    assert_eq!(memory::live_bytes(), before);
}

#[test]
fn backward_into_accumulates() {
    let _serial = serial();
    let (params, x) = (mlp_params(true), input());
    let once = forward(&x, &params).unwrap().backward().unwrap();
    let mut twice = Grads::default();
    for _ in 0..2 {
        forward(&x, &params)
            .unwrap()
            .backward_into(&mut twice)
            .unwrap();
    }
    assert_eq!(twice.len(), params.len());
    for (i, p) in params.iter().enumerate() {
        let (g1, g2) = (once.get(p).unwrap(), twice.get(p).unwrap());
        let doubled = g1.mul_scalar(2.0).unwrap();
        let scale = g1.abs().unwrap().max(&[0], false).unwrap();
        let scale = scale.to_f64_vec().unwrap().into_iter().fold(0.0, f64::max);
        assert!(scale > 0.0, "param {i} got a zero gradient");
        let diff = g2.max_abs_diff(&doubled).unwrap();
        assert!(
            diff <= 1e-5 * scale,
            "param {i}: |2 g - accumulated| = {diff}, |g| up to {scale}"
        );
    }
}
