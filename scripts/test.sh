#!/usr/bin/env bash
# The test suite: unit, integration and doc tests of every crate, on the CPU.
# Extra arguments go to cargo test (e.g. `scripts/test.sh -p tensor`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace "$@"
