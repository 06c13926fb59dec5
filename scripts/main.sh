#!/usr/bin/env bash
# The main job: fine-tune the committed Fashion-MNIST DiT (data/pretrained/fashion-dit.safetensors)
# on Animal-MNIST, write its sample grids and loss curve, and score its samples with the
# Animal-MNIST classifier (class accuracy).
#
#   scripts/main.sh                  # on the CPU: about 7 minutes in all on two cores
#   scripts/main.sh --pretrain       # pretrain the DiT on Fashion-MNIST first as the committed one
#                                    # was made (14,000 steps, about an hour), then fine-tune that
#   scripts/main.sh --device cuda:0  # the larger CUDA configs (pretraining included)
#
# Runs that finished are reused, interrupted ones continue from their last checkpoint (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/main.sh [--pretrain] [--device cpu|cuda:N]" >&2
    exit 2
}
device=cpu
pretrain=no
while [[ $# -gt 0 ]]; do
    case $1 in
        --pretrain) pretrain=yes; shift ;;
        --device) [[ $# -ge 2 ]] || usage; device=$2; shift 2 ;;
        *) usage ;;
    esac
done

scripts/setup.sh
# NVRTC for the CUDA configs (the pip wheel setup.sh installs, where no CUDA toolkit is on the path).
source scripts/cuda-env.sh
cargo build --release --bin difftune
difftune() { cargo run --release --quiet --bin difftune -- "$@"; }

if [[ $device != cpu ]]; then
    # The CUDA configs train a larger DiT, which has no committed pretrained weights.
    difftune pretrain --config configs/pretrain-fashion-cuda.json --device "$device" --resume
    difftune finetune --config configs/finetune-animal-cuda.json --device "$device" --resume
    run=runs/finetune-animal-cuda
elif [[ $pretrain == yes ]]; then
    # The command that made data/pretrained/fashion-dit.safetensors (see its README).
    difftune pretrain --config configs/pretrain-fashion.json --steps 14000 --checkpoint-every 500 \
        --sample-every 2000 --resume
    run=runs/finetune-animal-own-pretrain
    difftune finetune --config configs/finetune-animal.json --init runs/pretrain-fashion \
        --out "$run" --resume
else
    run=runs/finetune-animal
    difftune finetune --config configs/finetune-animal.json --resume
fi
echo "fine-tuning: $run/{samples.png,loss.png}"
# Scores 200 samples in the Animal-MNIST classifier's features against the held-out images; the
# table's last line is the class accuracy: how often a sample shows the animal it was asked for
# (the classifier is right on 0.956 of real held-out images; chance is 0.1). JSON: $run/eval.json.
difftune eval --checkpoint "$run" --samples 200 --sampler ddim25 --reference animal-mnist-test \
    --classifier data/classifiers/animal-mnist.safetensors --kid-subsets 20 --kid-subset-size 200 \
    --json "$run/eval.json"
