#!/usr/bin/env bash
# One U-Net training step (forward, loss, backward, clipping, AdamW, EMA) per second on the CPU:
# difftune against diffusers' UNet2DModel on PyTorch, with the config of the committed
# Fashion-MNIST U-Net (configs/pretrain-fashion-unet.json), the same batch and threads,
# alternating rounds in one session. Needs torch and diffusers for python3.
#
#   benches/compare_unet.sh [steps] [rounds] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/pretrain-fashion-unet.json exec benches/compare_train.sh "$@"
