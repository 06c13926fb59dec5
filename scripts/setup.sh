#!/usr/bin/env bash
# Installs the data sets difftune's tests and runs read: Fashion-MNIST from the Debian package
# `dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist/). Animal-MNIST ships in
# the repository (data/animal-mnist/). Safe to run again: it does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

FASHION=/usr/share/datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

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
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when the package is unknown to them.
    if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
        "${SUDO[@]}" apt-get update -q
    fi
    "${SUDO[@]}" apt-get install -y -q dataset-fashion-mnist
    have_fashion || { echo "setup: dataset-fashion-mnist installed but $FASHION is incomplete" >&2; exit 1; }
    echo "setup: installed Fashion-MNIST in $FASHION"
fi

for f in images-idx3-ubyte.gz labels-idx1-ubyte.gz; do
    [[ -f "data/animal-mnist/$f" ]] || { echo "setup: data/animal-mnist/$f is missing from the checkout" >&2; exit 1; }
done
echo "setup: Animal-MNIST present in data/animal-mnist"
