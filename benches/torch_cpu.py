#!/usr/bin/env python3
"""Times the ops of benches/cpu_ops.rs in PyTorch on the CPU (f32), for compare_cpu.sh.

Prints one JSON object per op: {"name": <criterion id>, "median_s": ..., "flops": ...}.
Inputs are random normal (never zeros); each op is warmed up, then the median of many runs is taken.
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

MATMUL_SIZES = [256, 1024]
# (n, cin, cout, hw, k, pad): keep in step with CONV_CASES in benches/src/lib.rs.
CONV_CASES = [(8, 64, 64, 32, 3, 1), (8, 128, 128, 16, 3, 1)]


def median_seconds(fn, min_runs=20, min_time=1.5, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    results = []
    with torch.no_grad():
        for n in MATMUL_SIZES:
            a, b = torch.randn(n, n), torch.randn(n, n)
            t, runs = median_seconds(lambda: torch.matmul(a, b))
            results.append((f"matmul_f32/{n}x{n}x{n}", t, 2 * n**3, runs))
        for n, cin, cout, hw, k, pad in CONV_CASES:
            x = torch.randn(n, cin, hw, hw)
            w = torch.randn(cout, cin, k, k)
            o = hw + 2 * pad - k + 1
            flops = 2 * n * cout * o * o * cin * k * k
            t, runs = median_seconds(lambda: F.conv2d(x, w, padding=pad))
            results.append((f"conv2d_f32/n{n}_{cin}x{cout}_{hw}x{hw}_k{k}", t, flops, runs))
    for name, t, flops, runs in results:
        print(json.dumps({"name": name, "median_s": t, "flops": flops, "runs": runs}))


if __name__ == "__main__":
    main()
