#!/usr/bin/env bash
# Training steps per second of the same model on the CPU: difftune vs PyTorch, alternating rounds
# in one session, on Fashion-MNIST with the model, batch and optimiser of a pretraining config
# ($CONFIG, default configs/pretrain-fashion.json, the small DiT; PyTorch runs the reference DiT
# of DIT_REF, or diffusers' UNet2DModel for a U-Net config: see torch_train_step.py).
#
#   DIT_REF=/path/to/DiT benches/compare_train.sh [steps] [rounds] [threads]
#   CONFIG=configs/pretrain-fashion-unet.json benches/compare_train.sh ...   (benches/compare_unet.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
rounds=${2:-3}
threads=${3:-2}
config=${CONFIG:-configs/pretrain-fashion.json}
if ! grep -q '"unet"' "$config"; then
    : "${DIT_REF:?set DIT_REF to a checkout of facebookresearch/DiT}"
fi
cargo build --release --bin difftune >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The pretraining config, with a log line every 10 steps and a token final grid.
python3 - "$work" "$steps" "$config" <<'PY'
import json, sys
work, steps, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = json.load(open(config))
c.update(steps=steps + 10, log_every=10, checkpoint_every=steps + 10, sample_every=0,
         sample={"sampler": "ddim2", "per_class": 1, "cfg_scale": 1.0}, out=f"{work}/run")
json.dump(c, open(f"{work}/config.json", "w"))
PY
export RAYON_NUM_THREADS=$threads
for round in $(seq "$rounds"); do
    rm -rf "$work/run"
    target/release/difftune pretrain --config "$work/config.json" --quiet >/dev/null
    # Skip the first 10 steps (warm-up), as the PyTorch script does with its first 5.
    ours=$(python3 -c "
import json, sys
lines = [json.loads(l) for l in open('$work/run/metrics.jsonl')][1:]
print(sum(10 for _ in lines) / sum(10 / l['steps_per_sec'] for l in lines))")
    theirs=$(python3 benches/torch_train_step.py "$work/config.json" "$steps" "$threads" |
        python3 -c "import json, sys; print(json.load(sys.stdin)['steps_per_sec'])")
    python3 -c "print(f'round $round: difftune {$ours:.3f} steps/s, PyTorch {$theirs:.3f} steps/s, ratio {$ours / $theirs:.2f}x')"
done
