#!/usr/bin/env python3
"""Times the three passes of each convolution that `conv_passes --list` prints, in PyTorch on the
CPU (f32), for compare_conv.sh.

    conv_passes --list | python3 benches/torch_conv.py THREADS

Prints one JSON object per case and pass, like conv_passes. The passes are timed alone: the
forward under no_grad, each gradient alone by aten.convolution_backward with its output mask (the
call autograd makes; torch.nn.grad's helpers pass an expanded stand-in input, which sends
oneDNN down slower paths). Inputs are random normal; the median of at least 10 calls and 0.5 s.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F

from torch_cpu import median_seconds  # benches/ is on the path: this script's own folder


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    torch.manual_seed(0)
    with torch.no_grad():
        # A second of convolutions first: the first case otherwise pays the process's start
        # (thread pool, oneDNN's first kernels), which the Rust side pays before timing too.
        x, w = torch.randn(8, 64, 32, 32), torch.randn(64, 64, 3, 3)
        start = time.perf_counter()
        while time.perf_counter() - start < 1.0:
            F.conv2d(x, w, padding=1)
        for line in sys.stdin:
            c = json.loads(line)
            s, p, o = c["stride"], c["pad"], (c["hw"] + 2 * c["pad"] - c["k"]) // c["stride"] + 1
            x = torch.randn(c["n"], c["cin"], c["hw"], c["hw"])
            w = torch.randn(c["cout"], c["cin"], c["k"], c["k"])
            dy = torch.randn(c["n"], c["cout"], o, o)
            backward = lambda mask: torch.ops.aten.convolution_backward(
                dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
            passes = {
                "forward": lambda: F.conv2d(x, w, stride=s, padding=p),
                "backward_input": lambda: backward([True, False, False]),
                "backward_weight": lambda: backward([False, True, False]),
            }
            for name, fn in passes.items():
                t, _ = median_seconds(fn, min_runs=10, min_time=0.5, warmup=3)
                print(json.dumps({**c, "pass": name, "median_s": t}), flush=True)


if __name__ == "__main__":
    main()
