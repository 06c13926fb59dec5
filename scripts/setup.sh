#!/usr/bin/env bash
# Installs what difftune's tests and runs need beyond cargo: Fashion-MNIST from the Debian package
# `dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist/), DejaVu Sans for the text
# of the plots (Debian's `fonts-dejavu-core`; the repository ships no font), and NVRTC with the CUDA
# headers from NVIDIA's CUDA 13 pip wheels (nvidia-cuda-nvrtc, nvidia-cuda-runtime), with which
# the kernel compile test builds every CUDA kernel on a machine without a GPU. Animal-MNIST ships in
# the repository (data/animal-mnist/). Safe to run again: it does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-env.sh

FASHION=/usr/share/datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

# Installs a Debian package, refreshing the package lists only when they do not know it.
apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show "$1" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -q
    fi
    "${sudo[@]}" apt-get install -y -q "$1"
}

have_fashion() {
    local f
    for f in "${files[@]}"; do
        [[ -f "$FASHION/$f" ]] || return 1
    done
}

if have_fashion; then
    echo "setup: Fashion-MNIST present in $FASHION"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: Fashion-MNIST is missing and apt-get is not available;" \
            "install the Debian package dataset-fashion-mnist (or put its four files in $FASHION)" >&2
        exit 1
    fi
    apt_install dataset-fashion-mnist
    have_fashion || { echo "setup: dataset-fashion-mnist installed but $FASHION is incomplete" >&2; exit 1; }
    echo "setup: installed Fashion-MNIST in $FASHION"
fi

for f in images-idx3-ubyte.gz labels-idx1-ubyte.gz; do
    [[ -f "data/animal-mnist/$f" ]] || { echo "setup: data/animal-mnist/$f is missing from the checkout" >&2; exit 1; }
done
echo "setup: Animal-MNIST present in data/animal-mnist"

# The plots' font (train/src/plot.rs reads it at run time; DIFFTUNE_FONT names another). Without
# one the plots are drawn without text, so a machine without apt-get only gets a note.
FONT=${DIFFTUNE_FONT:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
if [[ -f $FONT ]]; then
    echo "setup: plot font present: $FONT"
elif [[ -z ${DIFFTUNE_FONT:-} ]] && command -v apt-get >/dev/null 2>&1; then
    apt_install fonts-dejavu-core
    [[ -f $FONT ]] || { echo "setup: fonts-dejavu-core installed but $FONT is missing" >&2; exit 1; }
    echo "setup: installed the plot font $FONT"
else
    echo "setup: no font at $FONT: plots will be drawn without text (install Debian's" \
        "fonts-dejavu-core, or set DIFFTUNE_FONT to a TrueType font)" >&2
fi

# NVRTC and the CUDA headers (site-packages/nvidia/cu13/{lib,include}); scripts/cuda-env.sh puts
# them on the loader path. The version range pins CUDA 13, the version cudarc is built for.
if dir=$(cuda_wheel_dir); then
    echo "setup: NVRTC and CUDA headers present in $dir"
else
    py=$(command -v python3 || command -v python || true)
    [[ -n $py ]] || { echo "setup: python3 is needed to install NVRTC (pip wheel nvidia-cuda-nvrtc)" >&2; exit 1; }
    "$py" -m pip install --quiet --disable-pip-version-check \
        "nvidia-cuda-nvrtc>=13,<14" "nvidia-cuda-runtime>=13,<14"
    dir=$(cuda_wheel_dir) || {
        echo "setup: installed the CUDA 13 wheels but found no nvidia/cu13/lib/libnvrtc.so.13 with" \
            "include/cuda_bf16.h beside it (check: $py -m pip show -f nvidia-cuda-nvrtc)" >&2
        exit 1
    }
    echo "setup: installed NVRTC and CUDA headers in $dir"
fi
