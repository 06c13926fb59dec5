#!/usr/bin/env bash
# The main job: pretrain a small DiT on Fashion-MNIST (or reuse the run a previous call left in
# runs/pretrain-fashion), fine-tune it on Animal-MNIST, and write sample grids and loss curves.
#
#   scripts/main.sh                  # the CPU configs (minutes on two cores)
#   scripts/main.sh --device cuda:0  # the larger CUDA configs
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu
if [[ $# -gt 0 ]]; then
    if [[ $1 == --device && $# -eq 2 ]]; then
        device=$2
    else
        echo "usage: scripts/main.sh [--device cpu|cuda:N]" >&2
        exit 2
    fi
fi
suffix=""
[[ $device == cpu ]] || suffix="-cuda"

scripts/setup.sh
# NVRTC for the CUDA configs (the pip wheel setup.sh installs, where no CUDA toolkit is on the path).
source scripts/cuda-env.sh
cargo build --release --bin difftune
difftune() { cargo run --release --quiet --bin difftune -- "$@"; }
# --resume: a finished run is reused as it is; an interrupted one continues where it stopped.
difftune pretrain --config "configs/pretrain-fashion$suffix.json" --device "$device" --resume
difftune finetune --config "configs/finetune-animal$suffix.json" --device "$device" --resume
echo "pretraining: runs/pretrain-fashion$suffix/{samples.png,loss.png}"
echo "fine-tuning: runs/finetune-animal$suffix/{samples.png,loss.png}"
