#!/usr/bin/env bash
# The test suite: unit, integration and doc tests of every crate, on the CPU (GPU tests print that
# they were skipped; scripts/gpu-build.sh packs them for a GPU machine).
# Extra arguments go to cargo test (e.g. `scripts/test.sh -p tensor`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The data sets some tests read and NVRTC for the kernel compile test (installs only what is
# missing), then NVRTC's lib folder on LD_LIBRARY_PATH.
scripts/setup.sh
source scripts/cuda-env.sh
exec cargo test --workspace "$@"
