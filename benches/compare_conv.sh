#!/usr/bin/env bash
# The three passes of conv2d in f32 on the CPU (forward, input gradient, weight gradient):
# difftune (benches/src/bin/conv_passes.rs) against PyTorch (benches/torch_conv.py), on the
# shapes of compare_cpu.sh and on every convolution of the Fashion-MNIST U-Net's training step,
# both on the same threads, alternating rounds; each side's best round is reported.
#
#   benches/compare_conv.sh [threads] [rounds]     (defaults: 2 threads, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-3}"
results=target/compare_conv.jsonl
mkdir -p target
: >"$results"
cargo build --release -p difftune-benches --bin conv_passes >/dev/null 2>&1
bin=target/release/conv_passes
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "AVX-512: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
export RAYON_NUM_THREADS="$threads"
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" | sed 's/^{/{"side": "difftune", /' >>"$results"
    "$bin" --list | python3 benches/torch_conv.py "$threads" | sed 's/^{/{"side": "torch", /' >>"$results"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in rows:
    key = (r["side"], r["source"], r["name"], r["pass"])
    best[key] = min(best.get(key, float("inf")), r["median_s"])
cases = {(r["source"], r["name"], r["pass"]): r for r in rows if r["side"] == "difftune"}
print(f"{'source':6} {'conv':24} {'pass':16} {'difftune GFLOP/s':>16} {'PyTorch GFLOP/s':>15} {'ratio':>6}")
totals = {}
for (source, name, p), r in cases.items():
    ours, theirs = best["difftune", source, name, p], best["torch", source, name, p]
    print(f"{source:6} {name:24} {p:16} {r['flops'] / ours / 1e9:16.1f} "
          f"{r['flops'] / theirs / 1e9:15.1f} {theirs / ours:6.2f}")
    t = totals.setdefault((source, p), [0.0, 0.0])
    t[0] += r["count"] * ours
    t[1] += r["count"] * theirs
print("\nAll convolutions of one U-Net step (each case times its count), ms:")
for (source, p), (ours, theirs) in totals.items():
    if source == "unet":
        print(f"  {p:16} difftune {ours * 1e3:7.1f}  PyTorch {theirs * 1e3:7.1f}  ratio {theirs / ours:.2f}")
ours = sum(t[0] for (s, _), t in totals.items() if s == "unet")
theirs = sum(t[1] for (s, _), t in totals.items() if s == "unet")
print(f"  {'all passes':16} difftune {ours * 1e3:7.1f}  PyTorch {theirs * 1e3:7.1f}  ratio {theirs / ours:.2f}")
PY
