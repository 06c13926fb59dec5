//! `difftune parity`'s runner on fixtures whose configs differ from the shared ones (other block
//! layouts, channel counts, norm groups, class counts, timestep-embedding options, three levels;
//! DiT depths, patch sizes, learn_sigma off, no null class), made from the references by
//! `tools/make_fixture.py` (see tests/fixtures/README.md).

use difftune_tests::fixture::assert_parity;
use tensor::DType;

fn check(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let report = assert_parity(&path, DType::F32);
    assert!(report
        .rows
        .iter()
        .any(|r| r.name.starts_with("grad/input/")));
}

#[test]
fn unet_with_classes_and_other_layout_matches_diffusers() {
    check("unet_classes_flip.safetensors");
}

#[test]
fn dit_with_patch_4_and_no_learned_sigma_matches_the_reference() {
    check("dit_patch4_no_sigma.safetensors");
}

#[test]
fn dit_with_patch_1_and_no_null_class_matches_the_reference() {
    check("dit_patch1_no_null_class.safetensors");
}

#[test]
fn vae_with_three_levels_matches_diffusers() {
    check("vae_three_levels.safetensors");
}
