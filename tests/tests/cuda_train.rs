//! End to end on the GPU: a small DiT trained for a few steps on `cuda:0` follows the same
//! losses and weights as on the CPU (f32), and trains in bf16 mixed precision with f32 master
//! weights. Skipped (visibly) where there is no CUDA device; `DIFFTUNE_PARITY_SELF_TEST=1` runs
//! the f32 comparison with the CPU standing in for the GPU.

use autograd::Var;
use difftune_tests::gpu::{cuda_or_self_test, cuda_or_skip};
use models::dit::{Dit, DitConfig};
use models::ParamStore;
use tensor::{DType, Device, Generator, Tensor};
use train::diffusion::{create_diffusion, DiffusionConfig};
use train::optim::{clip_grad_norm, AdamW, AdamWConfig};

const STEPS: usize = 4;

/// The losses of `STEPS` steps (diffusion loss, clipping, AdamW) and the final value of one
/// weight, on `device` computing in `compute` (master weights f32).
fn train(device: Device, compute: Option<DType>) -> (Vec<f64>, Tensor) {
    let cfg = DitConfig {
        input_size: 8,
        in_channels: 2,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        num_classes: 3,
        ..DitConfig::named("DiT-S/2").unwrap()
    };
    let mut ps = ParamStore::new(DType::F32, device, 0);
    let dit = Dit::new(&mut ps, cfg).unwrap();
    ps.set_compute_dtype(compute);
    let diffusion = create_diffusion("", &DiffusionConfig::default()).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-3,
        ..AdamWConfig::default()
    });
    let mut losses = Vec::new();
    for step in 0..STEPS {
        // The batch is drawn on the host from a seed, so both devices see the same numbers.
        let mut gen = Generator::new(step as u64);
        let x0 = Tensor::rand(&[4, 2, 8, 8], -1.0, 1.0, DType::F32, Device::Cpu, &mut gen)
            .unwrap()
            .to_device(device)
            .unwrap();
        let noise = Tensor::randn(&[4, 2, 8, 8], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen)
            .unwrap()
            .to_device(device)
            .unwrap();
        let t = Tensor::from_vec(vec![3i64, 250, 600, 999], &[4]).unwrap();
        let y = Tensor::from_vec(vec![0i64, 1, 2, 3], &[4]).unwrap();
        let terms = diffusion
            .training_losses_with(
                |x: &Var, t: &Tensor| dit.forward(&ps, x, t, &y, None),
                &x0,
                &t,
                &noise,
            )
            .unwrap();
        let loss = terms.loss.mean_all().unwrap();
        losses.push(loss.value().to_scalar().unwrap());
        let mut grads = loss.backward().unwrap();
        clip_grad_norm(&ps, &mut grads, 1.0).unwrap();
        opt.step(&mut ps, &grads).unwrap();
    }
    let w = ps.tensor("blocks.1.mlp.fc2.weight").unwrap();
    assert_eq!((w.device(), w.dtype()), (device, DType::F32));
    (losses, w.to_device(Device::Cpu).unwrap())
}

fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let d = a.sub(b).unwrap().square().unwrap().sum_all().unwrap();
    let n = b.square().unwrap().sum_all().unwrap();
    (d.to_scalar().unwrap() / n.to_scalar().unwrap()).sqrt()
}

#[test]
fn training_steps_on_cuda_follow_the_cpu() {
    let Some(cuda) = cuda_or_self_test("training_steps_on_cuda_follow_the_cpu") else {
        return;
    };
    let (cpu_losses, cpu_w) = train(Device::Cpu, None);
    let (gpu_losses, gpu_w) = train(cuda, None);
    for (step, (a, b)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(
            ((a - b) / b).abs() < 1e-4,
            "step {step}: loss {a} on CUDA, {b} on the CPU"
        );
    }
    let rel = relative(&gpu_w, &cpu_w);
    assert!(rel < 1e-3, "weights after {STEPS} steps differ by {rel}");
}

#[test]
fn bf16_mixed_precision_trains_on_cuda() {
    let Some(cuda) = cuda_or_skip("bf16_mixed_precision_trains_on_cuda") else {
        return;
    };
    let (cpu_losses, cpu_w) = train(Device::Cpu, None);
    let (bf16_losses, bf16_w) = train(cuda, Some(DType::BF16));
    for (step, (a, b)) in bf16_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(a.is_finite(), "step {step}: loss {a}");
        assert!(
            ((a - b) / b).abs() < 5e-2,
            "step {step}: bf16 loss {a}, f32 loss {b}"
        );
    }
    let rel = relative(&bf16_w, &cpu_w);
    assert!(
        rel < 5e-2,
        "bf16 weights after {STEPS} steps differ by {rel}"
    );
}
