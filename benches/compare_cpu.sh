#!/usr/bin/env bash
# CPU matmul and conv2d in f32: difftune (criterion, benches/cpu_ops.rs) against PyTorch
# (benches/torch_cpu.py), both on the same number of threads.
#
# Usage: benches/compare_cpu.sh [threads] [rounds]     (defaults: 2 threads, 3 rounds)
#
# The machine may be shared, so the two sides are run alternately for several rounds; each round
# takes the median time per op, and the table reports each side's best round (the round least
# disturbed by other work). The load average is printed before every round.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-3}"
log=target/compare_cpu.log
results=target/compare_cpu.jsonl
mkdir -p target
: >"$results"
rm -rf target/criterion/matmul_f32 target/criterion/conv2d_f32 # no stale results

cargo bench -p difftune-benches --bench cpu_ops --no-run >"$log" 2>&1 || { cat "$log"; exit 1; }
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    RAYON_NUM_THREADS="$threads" cargo bench -p difftune-benches --bench cpu_ops -- \
        --noplot --warm-up-time 1 --measurement-time 3 >>"$log" 2>&1 || { cat "$log"; exit 1; }
    python3 - "$results" <<'PY'
import glob, json, sys
with open(sys.argv[1], "a") as out:
    for path in glob.glob("target/criterion/*/*/new/estimates.json"):
        name = "/".join(path.split("/")[2:4])
        median_s = json.load(open(path))["median"]["point_estimate"] * 1e-9
        out.write(json.dumps({"side": "difftune", "name": name, "median_s": median_s}) + "\n")
PY
    python3 benches/torch_cpu.py "$threads" |
        python3 -c 'import json, sys
for l in sys.stdin:
    d = json.loads(l); d["side"] = "torch"; print(json.dumps(d))' >>"$results"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
flops = {r["name"]: r["flops"] for r in rows if r["side"] == "torch"}
def best(side, name):
    return min(r["median_s"] for r in rows if r["side"] == side and r["name"] == name)
print(f"{'op':34} {'difftune GFLOP/s':>17} {'PyTorch GFLOP/s':>16} {'ratio':>7}")
for name, f in flops.items():
    ours, theirs = f / best("difftune", name) / 1e9, f / best("torch", name) / 1e9
    print(f"{name:34} {ours:17.1f} {theirs:16.1f} {ours / theirs:7.2f}")
PY
