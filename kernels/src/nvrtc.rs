//! Run-time compilation with NVRTC: CUDA C to a CUBIN for one GPU architecture.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::sys;

use crate::source::Source;
use crate::{Error, Result};

/// Whether `libnvrtc` can be loaded (it is found through the loader path, e.g. `LD_LIBRARY_PATH`).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library; no symbol is called.
    unsafe { sys::is_culib_present() }
}

/// The folder holding `cuda_fp16.h` and `cuda_bf16.h`, which the kernels include: the
/// `DIFFTUNE_CUDA_INCLUDE` variable, else `$CUDA_HOME/include` or `/usr/local/cuda/include`, else the
/// `include/` beside a `lib/` folder on `LD_LIBRARY_PATH` (the layout of NVIDIA's pip wheels).
pub fn include_dir() -> Result<PathBuf> {
    let has_headers = |d: &Path| d.join("cuda_bf16.h").is_file() && d.join("cuda_fp16.h").is_file();
    if let Some(dir) = std::env::var_os("DIFFTUNE_CUDA_INCLUDE") {
        let dir = PathBuf::from(dir);
        return if has_headers(&dir) {
            Ok(dir)
        } else {
            Err(Error::msg(format!(
                "DIFFTUNE_CUDA_INCLUDE={}: expected a folder with cuda_bf16.h and cuda_fp16.h",
                dir.display()
            )))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push("/usr/local/cuda/include".into());
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        for lib in std::env::split_paths(&paths) {
            if let Some(parent) = lib.parent() {
                candidates.push(parent.join("include"));
            }
        }
    }
    candidates
        .into_iter()
        .find(|d| has_headers(d))
        .ok_or_else(|| {
            Error::msg(
                "CUDA headers not found: set DIFFTUNE_CUDA_INCLUDE to a folder with cuda_bf16.h \
             (scripts/setup.sh installs them with the nvidia-cuda-runtime wheel)",
            )
        })
}

/// Compiles `source` for `arch` (e.g. `sm_90a`) to a CUBIN, with the program log in the error.
pub fn compile_cubin(source: &Source, arch: &str) -> Result<Vec<u8>> {
    Ok(compile(source, arch, &[])?.0)
}

/// ptxas' resource usage of every kernel of `source` for `arch` (registers, shared memory,
/// spill stores and loads), as NVRTC logs it: what a kernel costs, readable with no GPU.
///
/// ```no_run
/// use kernels::{nvrtc::resource_report, source::Source};
/// println!("{}", resource_report(&Source::named("matmul").unwrap(), "sm_90a").unwrap());
/// ```
pub fn resource_report(source: &Source, arch: &str) -> Result<String> {
    Ok(compile(source, arch, &["--ptxas-options=-v"])?.1)
}

/// The CUBIN and the program log of `source` compiled for `arch` with `extra` options.
fn compile(source: &Source, arch: &str, extra: &[&str]) -> Result<(Vec<u8>, String)> {
    if !nvrtc_available() {
        return Err(Error::msg(
            "libnvrtc not found on the loader path: install the nvidia-cuda-nvrtc wheel \
             (scripts/setup.sh) and add its lib folder to LD_LIBRARY_PATH",
        ));
    }
    let include = include_dir()?;
    let text = CString::new(source.full_text()).expect("sources hold no NUL byte");
    let name = CString::new(format!("{}.cu", source.name)).expect("no NUL in names");
    let options: Vec<CString> = [
        format!("--gpu-architecture={arch}"),
        format!("--include-path={}", include.display()),
        "--std=c++17".into(),
        "-default-device".into(),
    ]
    .into_iter()
    .chain(extra.iter().map(|o| o.to_string()))
    .map(|o| CString::new(o).expect("no NUL in options"))
    .collect();
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    let fail = |what: &str, r: sys::nvrtcResult| {
        Error::msg(format!(
            "NVRTC {what} of {}.cu for {arch}: {r:?}",
            source.name
        ))
    };
    // SAFETY: every pointer handed to NVRTC outlives the program; the program is destroyed on
    // every path out of this block.
    unsafe {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        let r = sys::nvrtcCreateProgram(
            &mut prog,
            text.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        );
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail("create", r));
        }
        let result = (|| {
            let r = sys::nvrtcCompileProgram(prog, option_ptrs.len() as i32, option_ptrs.as_ptr());
            let mut size = 0usize;
            sys::nvrtcGetProgramLogSize(prog, &mut size);
            let mut log = vec![0 as c_char; size.max(1)];
            sys::nvrtcGetProgramLog(prog, log.as_mut_ptr());
            let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(Error::msg(format!(
                    "NVRTC could not compile {}.cu for {arch}:\n{log}",
                    source.name
                )));
            }
            let mut size = 0usize;
            let r = sys::nvrtcGetCUBINSize(prog, &mut size);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(fail("CUBIN size", r));
            }
            let mut cubin = vec![0u8; size];
            let r = sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(fail("CUBIN", r));
            }
            Ok((cubin, log))
        })();
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}
