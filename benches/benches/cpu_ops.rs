//! CPU matmul and conv2d throughput in f32 (criterion reports FLOP/s, 2 per multiply-add), and
//! layer norm and group norm forward + backward (elements per second).
//!
//! Run: `cargo bench -p difftune-benches --bench cpu_ops`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use difftune_benches::{CONV_CASES, MATMUL_SIZES};
use tensor::{DType, Device, Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).expect("randn")
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    for n in MATMUL_SIZES {
        let (a, b) = (randn(&[n, n], 1), randn(&[n, n], 2));
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        group.bench_function(format!("{n}x{n}x{n}"), |bench| {
            bench.iter(|| a.matmul(&b).expect("matmul"))
        });
    }
    group.finish();
}

fn conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_f32");
    for case in CONV_CASES {
        let x = randn(&[case.n, case.cin, case.hw, case.hw], 3);
        let w = randn(&[case.cout, case.cin, case.k, case.k], 4);
        let p = case.params();
        group.throughput(Throughput::Elements(case.flops()));
        group.bench_function(case.name(), |bench| {
            bench.iter(|| x.conv2d(&w, &p).expect("conv2d"))
        });
    }
    group.finish();
}

/// Forward and backward of the small DiT's layer norm (batch 64, 49 tokens, width 96, no affine)
/// and of a U-Net group norm (`[8, 128, 32, 32]`, 32 groups, affine).
fn norms(c: &mut Criterion) {
    let mut group = c.benchmark_group("norm_f32_forward_backward");
    let x = randn(&[64, 49, 96], 5);
    let g = randn(x.shape(), 6);
    group.throughput(Throughput::Elements(x.elem_count() as u64));
    group.bench_function("layer_norm 64x49x96", |bench| {
        bench.iter(|| {
            let (_, mean, rstd) = x.layer_norm(1, None, None, 1e-6).expect("layer_norm");
            x.layer_norm_backward(&g, &mean, &rstd, None, 1)
                .expect("layer_norm_backward")
        })
    });
    let x = randn(&[8, 128, 32, 32], 7);
    let (g, w, b) = (randn(x.shape(), 8), randn(&[128], 9), randn(&[128], 10));
    group.throughput(Throughput::Elements(x.elem_count() as u64));
    group.bench_function("group_norm 8x128x32x32 /32", |bench| {
        bench.iter(|| {
            let (_, mean, rstd) = x
                .group_norm(32, Some(&w), Some(&b), 1e-5)
                .expect("group_norm");
            x.group_norm_backward(&g, &mean, &rstd, Some(&w), 32)
                .expect("group_norm_backward")
        })
    });
    group.finish();
}

criterion_group!(benches, matmul, conv2d, norms);
criterion_main!(benches);
