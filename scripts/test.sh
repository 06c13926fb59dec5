#!/usr/bin/env bash
# The test suite: unit, integration and doc tests of every crate, on the CPU.
# Extra arguments go to cargo test (e.g. `scripts/test.sh -p tensor`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The data sets some tests read (installs only what is missing).
scripts/setup.sh
exec cargo test --workspace "$@"
