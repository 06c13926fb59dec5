#!/usr/bin/env bash
# .gpu/run.sh (copied there by scripts/gpu-build.sh): runs the packed GPU tests and benches on the
# GPU machine, from the repository root of the copied tree, in one call of the device tool:
#
#   run(carry: [".gpu"], command: "bash .gpu/run.sh")        # or "bash .gpu/run.sh FILTER"
#
# Prints the GPU and the CUDA libraries the loader knows, makes libnvrtc.so.13 findable, runs every
# test binary in .gpu/bin one test at a time with the GPU required (a cuda:0 that cannot be opened
# fails rather than skips), then every bench in .gpu/bench, and ends with one table: binary,
# result, passed, failed, ignored, seconds. Exits non-zero when anything failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
filter=("$@")
# Per binary, so that a hung kernel costs one row of the table, not the whole call.
per_binary_s=${DIFFTUNE_GPU_TIMEOUT:-200}

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed)"
echo "== CUDA libraries known to the loader"
ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc|libcublas' || echo "(none listed by ldconfig -p)"

# libnvrtc.so.13: the CUDA toolkit's lib folders, then wherever ldconfig has it; the driver's
# libcuda comes from the system's loader path.
dirs=()
for d in ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && dirs+=("$d")
done
while read -r lib; do
    [[ -n $lib ]] && dirs+=("$(dirname "$lib")")
done < <(ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ { print $NF }')
# Last: NVIDIA's pip wheels (PyTorch brings them), if the toolkit lacks NVRTC 13.
wheel=$(python3 -c 'import nvidia, os; print(next(os.path.join(p, "cu13", "lib") for p in nvidia.__path__ if os.path.exists(os.path.join(p, "cu13", "lib", "libnvrtc.so.13"))))' 2>/dev/null) && dirs+=("$wheel")
for d in "${dirs[@]}"; do
    case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d" ;; esac
done
export LD_LIBRARY_PATH
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvrtc=""
for d in "${dirs[@]}"; do
    if [[ -e $d/libnvrtc.so.13 ]]; then
        nvrtc=$d/libnvrtc.so.13
        break
    fi
done
echo "== libnvrtc.so.13: ${nvrtc:-NOT FOUND (the CUDA tests will fail to open cuda:0)}"
# The kernels' headers (cuda_bf16.h), in the order the kernels crate looks for them; say which.
includes=(${DIFFTUNE_CUDA_INCLUDE:+"$DIFFTUNE_CUDA_INCLUDE"} ${CUDA_HOME:+"$CUDA_HOME/include"} /usr/local/cuda/include)
for d in "${dirs[@]}"; do includes+=("$(dirname "$d")/include"); done
for d in "${includes[@]}"; do
    if [[ -f $d/cuda_bf16.h ]]; then
        echo "== CUDA headers: $d"
        break
    fi
done

export DIFFTUNE_REQUIRE_CUDA=1
export DIFFTUNE_SHARED=$here/shared
export RUST_BACKTRACE=1

rows=()
status=0
run_one() {
    local kind=$1 bin=$2 name log start secs result passed failed ignored
    name=$(basename "$bin")
    log=$(mktemp)
    echo
    echo "======== $kind $name"
    local args=(--test-threads=1)
    [[ $kind == bench ]] && args=(--bench)
    start=$(date +%s.%N)
    timeout "$per_binary_s" "$bin" "${args[@]}" "${filter[@]}" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    # libtest's last line: "test result: ok. 12 passed; 0 failed; 3 ignored; ...".
    read -r passed failed ignored < <(awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^ignored/) g += $(i - 1)
            }
        } END { print p + 0, f + 0, g + 0 }' "$log")
    if ((rc == 124)); then
        result="TIMEOUT"
    elif ((rc != 0)); then
        result="FAILED"
    else
        result="ok"
    fi
    ((rc == 0)) || status=1
    rows+=("$(printf '%-34s %-8s %7s %7s %8s %9s' "$kind $name" "$result" "$passed" "$failed" "$ignored" "$secs")")
    rm -f "$log"
}

for bin in "$here"/bin/*; do
    [[ -x $bin ]] && run_one test "$bin"
done
for bin in "$here"/bench/*; do
    [[ -x $bin ]] && run_one bench "$bin"
done

echo
echo "======== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "no GPU name"))"
printf '%-34s %-8s %7s %7s %8s %9s\n' binary result passed failed ignored seconds
for row in "${rows[@]}"; do
    echo "$row"
done
exit "$status"
