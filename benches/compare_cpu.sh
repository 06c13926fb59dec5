#!/usr/bin/env bash
# CPU matmul and conv2d, difftune (criterion medians) against PyTorch (torch_cpu.py medians), f32.
# Usage: benches/compare_cpu.sh [threads]   (default 2: difftune's rayon pool and torch's threads)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"

echo "load before: $(uptime)"
RAYON_NUM_THREADS="$threads" cargo bench -p difftune-benches --bench cpu_ops -- --noplot >/tmp/difftune_cpu_ops.txt
torch_json="$(python3 benches/torch_cpu.py "$threads")"
echo "load after:  $(uptime)"

TORCH_JSON="$torch_json" python3 - <<'PY'
import json, os
torch = [json.loads(l) for l in os.environ["TORCH_JSON"].splitlines() if l.strip()]
print(f"{'op':34} {'difftune GFLOP/s':>17} {'PyTorch GFLOP/s':>16} {'ratio':>7}")
for t in torch:
    with open(f"target/criterion/{t['name']}/new/estimates.json") as f:
        ours_s = json.load(f)["median"]["point_estimate"] * 1e-9
    ours, theirs = t["flops"] / ours_s / 1e9, t["flops"] / t["median_s"] / 1e9
    print(f"{t['name']:34} {ours:17.1f} {theirs:16.1f} {ours / theirs:7.2f}")
PY
