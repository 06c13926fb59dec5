//! `difftune parity`'s runner on fixtures whose configs differ from the shared ones (other block
//! layouts, channel counts, norm groups, class counts, timestep-embedding options, three levels),
//! made from diffusers by `tools/make_fixture.py` (see tests/fixtures/README.md).

use models::parity::{check_fixture, reference_model};
use tensor::DType;

fn check(name: &str) {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let report = check_fixture(&path, DType::F32, reference_model).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.rows.iter().any(|r| r.name.starts_with("grad/input/")));
}

#[test]
fn unet_with_classes_and_other_layout_matches_diffusers() {
    check("unet_classes_flip.safetensors");
}

#[test]
fn vae_with_three_levels_matches_diffusers() {
    check("vae_three_levels.safetensors");
}
