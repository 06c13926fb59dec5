//! Memory and time of one DiT-B/2 training step on the CPU, with and without gradient
//! checkpointing: `cargo run --release -p difftune-benches --bin dit_memory [-- --batch 8]`.
//!
//! All figures are tensor storage measured from the level before the step (parameters and inputs
//! excluded): what the tape holds once the forward is done, and the high-water mark over the
//! forward and backward.

use std::time::Instant;

use autograd::Var;
use models::dit::{Dit, DitConfig};
use models::ParamStore;
use tensor::{memory, DType, Device, Generator, Result, Tensor};

struct Step {
    held_after_forward: usize,
    peak: usize,
    seconds: f64,
}

/// One ε-prediction training step: forward, MSE on the first C output channels, backward.
fn step(
    model: &Dit,
    ps: &ParamStore,
    x: &Tensor,
    t: &Tensor,
    y: &Tensor,
    noise: &Tensor,
) -> Result<Step> {
    let before = memory::live_bytes();
    memory::reset_peak();
    let start = Instant::now();
    let out = model.forward(ps, &Var::constant(x.clone()), t, y, None)?;
    let eps = out.narrow(1, 0, noise.shape()[1])?;
    let loss = eps
        .sub(&Var::constant(noise.clone()))?
        .square()?
        .mean_all()?;
    let held_after_forward = memory::live_bytes() - before;
    let grads = loss.backward()?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = memory::peak_bytes() - before;
    drop(grads);
    Ok(Step {
        held_after_forward,
        peak,
        seconds,
    })
}

fn main() -> Result<()> {
    let batch: usize = match std::env::args().skip_while(|a| a != "--batch").nth(1) {
        Some(b) => b
            .parse()
            .map_err(|e| tensor::Error::msg(format!("--batch `{b}`: {e}")))?,
        None => 8,
    };
    let cfg = DitConfig {
        input_size: 32,
        num_classes: 1000,
        ..DitConfig::named("DiT-B/2")?
    };
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
    let mut model = Dit::new(&mut ps, cfg.clone())?;
    let mut gen = Generator::new(0);
    let side = cfg.input_size;
    let x = Tensor::randn(
        &[batch, cfg.in_channels, side, side],
        0.0,
        1.0,
        DType::F32,
        Device::Cpu,
        &mut gen,
    )?;
    let noise = Tensor::randn(x.shape(), 0.0, 1.0, DType::F32, Device::Cpu, &mut gen)?;
    let t = Tensor::from_vec((0..batch as i64).map(|i| i * 97 % 1000).collect(), &[batch])?;
    let y = Tensor::from_vec((0..batch as i64).map(|i| i * 31 % 1000).collect(), &[batch])?;
    println!(
        "DiT-B/2, input {side}x{side}x{}, batch {batch}, f32, {} parameters",
        cfg.in_channels,
        ps.param_count()
    );
    println!(
        "{:<14} {:>22} {:>17} {:>8}",
        "checkpointing", "held after forward MiB", "peak in step MiB", "step s"
    );
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    for on in [false, true, false, true] {
        model.set_checkpointing(on);
        let s = step(&model, &ps, &x, &t, &y, &noise)?;
        let name = if on { "on" } else { "off" };
        println!(
            "{name:<14} {:>22.1} {:>17.1} {:>8.2}",
            mib(s.held_after_forward),
            mib(s.peak),
            s.seconds
        );
    }
    Ok(())
}
