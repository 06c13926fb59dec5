#!/usr/bin/env bash
# Builds the GPU test binaries (and the GPU benches, once there are any) here, where there is no
# GPU, and packs them into .gpu/ with the fixtures they read and .gpu/run.sh, which runs them all
# on the GPU machine and prints a summary table. Two steps:
#
#   scripts/gpu-build.sh                                  # here: release build, strip, pack
#   device tool: run(carry: [".gpu"], command: "bash .gpu/run.sh")   # there, one call
#
# `bash .gpu/run.sh FILTER` runs only the tests whose names contain FILTER. .gpu/ is git-ignored
# and must stay under 64 MiB (what the device tool carries); the size is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.gpu
LIMIT_MIB=64
SHARED=${DIFFTUNE_SHARED:-../shared}
# Every test target of these packages (unit tests included) ...
PACKAGES=(kernels tensor)
# ... and these integration tests of difftune-tests (tests/tests/*.rs).
TESTS=(cuda_parity cuda_device cuda_train gradcheck)

command -v python3 >/dev/null || { echo "gpu-build: python3 is needed to read cargo's JSON" >&2; exit 1; }

# "name path" for each test executable in cargo's JSON messages on stdin; names are
# <package folder>-<target> (-lib for unit tests), unique across the workspace.
executables() {
    python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m.get("profile", {}).get("test") and "bench" not in m["target"]["kind"]:
        continue  # build scripts and the like
    t = m["target"]
    package = os.path.basename(os.path.dirname(m["manifest_path"]))
    target = "lib" if "lib" in t["kind"] else t["name"]
    print(package + "-" + target, m["executable"])
'
}

echo "gpu-build: cargo test --release --no-run (${PACKAGES[*]}; difftune-tests: ${TESTS[*]})"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
pkg_args=()
for p in "${PACKAGES[@]}"; do pkg_args+=(-p "$p"); done
cargo test --release --no-run --message-format=json "${pkg_args[@]}" | executables >>"$list"
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
cargo test --release --no-run --message-format=json -p difftune-tests "${test_args[@]}" | executables >>"$list"

# GPU benches: bench targets whose names say cuda or gpu (none yet: the fast kernels' issue adds them).
benches=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bench" in t["kind"] and ("cuda" in t["name"] or "gpu" in t["name"]):
            print(p["name"], t["name"])
')
bench_list=$(mktemp)
trap 'rm -f "$list" "$bench_list"' EXIT
while read -r package bench; do
    [[ -n $package ]] || continue
    echo "gpu-build: cargo bench --no-run -p $package --bench $bench"
    cargo bench --no-run --message-format=json -p "$package" --bench "$bench" | executables >>"$bench_list"
done <<<"$benches"

# GPU timings written as examples of these packages (they ignore run.sh's --bench).
EXAMPLES=("kernels gemm_bench")
for e in "${EXAMPLES[@]}"; do
    read -r package example <<<"$e"
    echo "gpu-build: cargo build --release -p $package --example $example"
    cargo build --release -p "$package" --example "$example"
    echo "$package-$example ${CARGO_TARGET_DIR:-target}/release/examples/$example" >>"$bench_list"
done

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/bench" "$OUT/shared/fixtures"
pack() {
    local dir=$1 name path
    while read -r name path; do
        cp "$path" "$dir/$name"
        # Symbols and line tables go: the panic messages stay, and the folder fits the carry limit.
        strip --strip-all "$dir/$name"
    done
}
sort -u "$list" | pack "$OUT/bin"
sort -u "$bench_list" | pack "$OUT/bench"

# The fixtures of ../shared/fixtures that the packed tests name (e.g. tensor's safetensors test
# opens dit_tiny.safetensors); run.sh points DIFFTUNE_SHARED at the copy.
sources=(kernels tensor)
for t in "${TESTS[@]}"; do
    sources+=("tests/tests/$t.rs")
    [[ -d tests/tests/$t ]] && sources+=("tests/tests/$t")
done
for f in $(grep -rhoE '[A-Za-z0-9_]+\.safetensors' "${sources[@]}" | sort -u); do
    if [[ -f $SHARED/fixtures/$f ]]; then
        cp "$SHARED/fixtures/$f" "$OUT/shared/fixtures/"
    fi
done

cp scripts/gpu-run.sh "$OUT/run.sh"
chmod +x "$OUT/run.sh" "$OUT"/bin/* 2>/dev/null || true

echo "gpu-build: packed in $OUT/"
for f in "$OUT"/bin/* "$OUT"/bench/* "$OUT"/shared/fixtures/*; do
    [[ -e $f ]] && printf '  %-40s %6.1f MiB\n' "${f#"$OUT"/}" "$(du -b "$f" | awk '{print $1 / 1048576}')"
done
bytes=$(du -sb "$OUT" | awk '{print $1}')
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu-build: $OUT is $mib MiB (limit $LIMIT_MIB MiB)"
if ((bytes > LIMIT_MIB * 1048576)); then
    echo "gpu-build: $OUT is over the $LIMIT_MIB MiB the device tool carries" >&2
    exit 1
fi
echo 'gpu-build: on the GPU machine: run(carry: [".gpu"], command: "bash .gpu/run.sh")'
