//! Every kernel family compiles with NVRTC for the architectures difftune targets. Needs no GPU:
//! `scripts/setup.sh` installs NVRTC and the CUDA headers from NVIDIA's pip wheels, and
//! `scripts/test.sh` puts them on the loader path, so a kernel that does not compile fails CI.

use kernels::nvrtc::compile_cubin;
use kernels::source::SOURCES;

/// Ampere (A100) and Hopper (H100/H200, with the `a` features).
const ARCHS: &[&str] = &["sm_80", "sm_90a"];

#[test]
fn every_kernel_family_compiles_to_a_cubin() {
    let mut failures = Vec::new();
    for source in SOURCES {
        for arch in ARCHS {
            match compile_cubin(source, arch) {
                Ok(cubin) => {
                    assert!(
                        cubin.starts_with(b"\x7fELF"),
                        "{}.cu {arch}: not an ELF",
                        source.name
                    );
                    println!("{}.cu {arch}: {} bytes", source.name, cubin.len());
                }
                Err(e) => failures.push(format!("{}.cu {arch}: {e}", source.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Asserts that the CUBIN of `family` for each of `archs` holds every kernel in `names`, the
/// names its Rust wrapper launches.
fn assert_holds(family: &str, archs: &[&str], names: impl Iterator<Item = String> + Clone) {
    let source = kernels::source::Source::named(family).expect("the family is listed");
    for arch in archs {
        let cubin = compile_cubin(&source, arch).unwrap();
        for name in names.clone() {
            assert!(
                cubin.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} is missing from {family}.cu's CUBIN for {arch}"
            );
        }
    }
}

#[test]
fn the_tensor_core_gemm_holds_every_kernel_the_wrapper_launches() {
    // kernels::matmul names them gemm_tc_<type>_<a layout><b layout>.
    let names = ["bf16", "f16"].into_iter().flat_map(|elem| {
        ["nn", "nt", "tn", "tt"]
            .into_iter()
            .map(move |layout| format!("gemm_tc_{elem}_{layout}"))
    });
    assert_holds("gemm_tc", &["sm_90a"], names);
}

#[test]
fn the_optimizer_family_holds_the_adamw_kernel_of_every_float_type() {
    // kernels::optim::adamw launches adamw_<type>.
    let names = ["f32", "f64", "bf16", "f16"]
        .into_iter()
        .map(|elem| format!("adamw_{elem}"));
    assert_holds("optim", ARCHS, names);
}

#[test]
fn a_broken_kernel_is_reported_with_the_compiler_log() {
    let broken = kernels::source::Source {
        name: "broken",
        code: "extern \"C\" __global__ void k(float* x) { x[0] = undeclared; }",
    };
    let err = compile_cubin(&broken, "sm_80").unwrap_err().to_string();
    assert!(
        err.contains("broken.cu") && err.contains("undeclared"),
        "{err}"
    );
}
