//! Times the three passes of every benchmarked convolution (forward, input gradient, weight
//! gradient) in f32 on the CPU, for `compare_conv.sh`; `benches/torch_conv.py` times the same
//! cases in PyTorch.
//!
//! ```text
//! conv_passes --list     the cases, one JSON object per line (what torch_conv.py reads)
//! conv_passes            the timings, one JSON object per case and pass
//! conv_passes 7x7        only the cases whose name contains `7x7` (with either form)
//! ```
//!
//! Threads: `RAYON_NUM_THREADS`. Each pass is warmed up, then timed at least 10 times and for at
//! least half a second; the median is printed.

use std::time::{Duration, Instant};

use difftune_benches::{ConvCase, CONV_CASES, UNET_CONV_CASES};
use tensor::{DType, Device, Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).expect("randn")
}

/// The cases with their source (`cpu`: compare_cpu.sh, `unet`: the U-Net step) and how many
/// times each runs in that source.
fn cases() -> Vec<(&'static str, ConvCase, usize)> {
    let cpu = CONV_CASES.iter().map(|&c| ("cpu", c, 1));
    let unet = UNET_CONV_CASES.iter().map(|&(c, n)| ("unet", c, n));
    cpu.chain(unet).collect()
}

/// One timed pass of a case.
type Pass<'a> = Box<dyn Fn() + 'a>;

fn median_seconds(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let (mut times, start) = (Vec::new(), Instant::now());
    while times.len() < 10 || start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let list = std::env::args().any(|a| a == "--list");
    let filter = std::env::args().skip(1).find(|a| a != "--list");
    for (source, case, count) in cases() {
        if filter
            .as_ref()
            .is_some_and(|f| !case.name().contains(f.as_str()))
        {
            continue;
        }
        let c = case;
        let head = format!(
            r#""source": "{source}", "name": "{}", "count": {count}, "n": {}, "cin": {}, "cout": {}, "hw": {}, "k": {}, "pad": {}, "stride": {}, "flops": {}"#,
            c.name(),
            c.n,
            c.cin,
            c.cout,
            c.hw,
            c.k,
            c.pad,
            c.stride,
            c.flops()
        );
        if list {
            println!("{{{head}}}");
            continue;
        }
        let p = c.params();
        let x = randn(&[c.n, c.cin, c.hw, c.hw], 1);
        let w = randn(&[c.cout, c.cin, c.k, c.k], 2);
        let dy = randn(&[c.n, c.cout, c.out_hw(), c.out_hw()], 3);
        let passes: [(&str, Pass); 3] = [
            (
                "forward",
                Box::new(|| drop(x.conv2d(&w, &p).expect("conv2d"))),
            ),
            (
                "backward_input",
                Box::new(|| drop(dy.conv2d_backward_input(&w, x.shape(), &p).expect("dx"))),
            ),
            (
                "backward_weight",
                Box::new(|| drop(dy.conv2d_backward_weight(&x, w.shape(), &p).expect("dw"))),
            ),
        ];
        for (pass, f) in passes {
            let s = median_seconds(f);
            println!(r#"{{{head}, "pass": "{pass}", "median_s": {s:e}}}"#);
        }
    }
}
