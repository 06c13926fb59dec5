//! Times the bf16 and f16 GEMMs on `cuda:0`: the tensor-core kernel in its four layouts, and the
//! SIMT kernel on the same product (reached by storing A's rows one element apart from whole
//! 16-byte chunks, which the tensor-core kernel refuses). Prints the median TFLOP/s of each and
//! their ratio. Needs a GPU; `scripts/gpu-build.sh` packs it into `.gpu/bench/`.
//!
//! ```sh
//! cargo run --release -p kernels --example gemm_bench           # default sizes
//! cargo run --release -p kernels --example gemm_bench 4096 4096 4096
//! ```

use std::time::Instant;

use kernels::matmul::{gemm, tensor_core_layout, GemmShape, MatOperand};
use kernels::{Dims, Elem, Gpu, Result};

/// Median seconds of one launch of `run`, over `reps` timings of `iters` launches each, after a
/// warm-up (which also compiles the kernels).
fn time(gpu: &Gpu, reps: usize, iters: usize, run: &dyn Fn() -> Result<()>) -> Result<f64> {
    run()?;
    gpu.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..iters {
            run()?;
        }
        gpu.synchronize()?;
        times.push(start.elapsed().as_secs_f64() / iters as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

/// `len` random 16-bit floats of magnitude 1/4 to 2 (never zeros, which would flatter the
/// timing), as little-endian bytes, from a fixed xorshift seed.
fn random_halves(len: usize, elem: Elem, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (sign, exp, mant) = ((x >> 63) as u16, (x >> 32) as u16 % 3, x as u16);
            let bits = match elem {
                // bf16: exponent bias 127, 7 mantissa bits.
                Elem::BF16 => sign << 15 | (125 + exp) << 7 | (mant & 0x7f),
                // f16: exponent bias 15, 10 mantissa bits.
                _ => sign << 15 | (13 + exp) << 10 | (mant & 0x3ff),
            };
            bits.to_le_bytes()
        })
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes: Vec<(usize, usize, usize)> = match args[..] {
        [m, n, k] => vec![(m, n, k)],
        _ => vec![
            (1024, 1024, 1024),
            (2048, 2048, 2048),
            (4096, 4096, 4096),
            // A DiT-XL/2 MLP: 2·256 tokens of width 1152 into 4608.
            (512, 4608, 1152),
            (8192, 8192, 1024),
        ],
    };
    let gpu = Gpu::get(0)?;
    println!("gemm_bench on {} ({})", gpu.name()?, gpu.arch());
    println!(
        "{:>5} {:>5} {:>5} {:>5} {:>6} {:>9} {:>9} {:>6}",
        "type", "m", "n", "k", "layout", "TC TF/s", "SIMT TF/s", "ratio"
    );
    for (m, n, k) in sizes {
        for elem in [Elem::BF16, Elem::F16] {
            // Room for either orientation of A and B, and for A's SIMT rows of k + 1.
            let a_len = (m * (k + 1)).max(k * m);
            let a = gpu.upload(&random_halves(a_len, elem, 1))?;
            let b = gpu.upload(&random_halves(k * n, elem, 2))?;
            let c = gpu.alloc(m * n * 2)?;
            let s = GemmShape {
                m,
                n,
                k,
                batches: 1,
                red: 1,
            };
            let one = Dims::contiguous(1, 0);
            let op = |ptr, rs: usize, cs: usize| MatOperand {
                ptr,
                batch: one,
                rs: rs as i64,
                cs: cs as i64,
                red: 0,
            };
            let c_op = op(c.ptr(), n, 1);
            let flops = 2.0 * (m * n * k) as f64;
            let simt_a = op(a.ptr(), k + 1, 1);
            let simt_b = op(b.ptr(), n, 1);
            assert!(tensor_core_layout(gpu.arch(), elem, &s, &simt_a, &simt_b).is_none());
            let simt = time(&gpu, 5, 3, &|| {
                gemm(&gpu, elem, s, simt_a, simt_b, c_op, false)
            })?;
            for (layout, a_t, b_t) in [
                ("nn", false, false),
                ("nt", false, true),
                ("tn", true, false),
                ("tt", true, true),
            ] {
                let a_op = if a_t {
                    op(a.ptr(), 1, m)
                } else {
                    op(a.ptr(), k, 1)
                };
                let b_op = if b_t {
                    op(b.ptr(), 1, k)
                } else {
                    op(b.ptr(), n, 1)
                };
                if tensor_core_layout(gpu.arch(), elem, &s, &a_op, &b_op).is_none() {
                    println!("{m}x{n}x{k} {layout}: not a tensor-core layout on this GPU");
                    continue;
                }
                let tc = time(&gpu, 7, 10, &|| {
                    gemm(&gpu, elem, s, a_op, b_op, c_op, false)
                })?;
                println!(
                    "{:>5} {m:>5} {n:>5} {k:>5} {layout:>6} {:>9.1} {:>9.1} {:>6.2}",
                    elem.suffix(),
                    flops / tc / 1e12,
                    flops / simt / 1e12,
                    simt / tc
                );
            }
        }
    }
    Ok(())
}
