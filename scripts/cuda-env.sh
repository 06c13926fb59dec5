# Sourced by scripts/setup.sh, test.sh and main.sh; prints nothing. Where NVIDIA's CUDA 13 pip
# wheels are installed (nvidia-cuda-nvrtc, nvidia-cuda-runtime: site-packages/nvidia/cu13/{lib,
# include}), puts their lib folder on LD_LIBRARY_PATH, so that libnvrtc.so.13 loads, and names
# their headers in DIFFTUNE_CUDA_INCLUDE (unless it is set), so that NVRTC compiles with the
# headers of its own version. Without the wheels it changes nothing: a CUDA toolkit on the loader
# path serves as well, and scripts/setup.sh installs the wheels.

# The wheels' nvidia/cu13 folder (holding lib/libnvrtc.so.13 and include/cuda_bf16.h), or a
# failure status where they are not installed.
cuda_wheel_dir() {
    local py dir
    for py in python3 python; do
        command -v "$py" >/dev/null 2>&1 || continue
        # nvidia is a namespace package: look in each folder of its path.
        dir=$("$py" - 2>/dev/null <<'PY'
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(1)
for base in getattr(nvidia, "__path__", []):
    d = os.path.join(base, "cu13")
    if os.path.exists(os.path.join(d, "lib", "libnvrtc.so.13")) and os.path.exists(
        os.path.join(d, "include", "cuda_bf16.h")
    ):
        print(d)
        raise SystemExit(0)
raise SystemExit(1)
PY
        ) && [[ -n $dir ]] && { printf '%s\n' "$dir"; return 0; }
        # No importable package (another interpreter, an odd install): ask pip where the files are.
        dir=$("$py" -m pip show -f nvidia-cuda-nvrtc 2>/dev/null | awk '
            /^Location:/ { loc = $2 }
            /nvidia\/cu13\/lib\/libnvrtc\.so\.13$/ { print loc "/nvidia/cu13"; exit }')
        if [[ -n $dir && -f $dir/include/cuda_bf16.h ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

if _cuda_dir=$(cuda_wheel_dir); then
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$_cuda_dir/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$_cuda_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    if [[ -z ${DIFFTUNE_CUDA_INCLUDE:-} ]]; then
        export DIFFTUNE_CUDA_INCLUDE="$_cuda_dir/include"
    fi
fi
unset _cuda_dir
