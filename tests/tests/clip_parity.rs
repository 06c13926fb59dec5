//! The `clip` image encoder against transformers' `CLIPVisionModelWithProjection` on
//! `tests/fixtures/clip_vision_tiny.safetensors` (made by `tools/make_fixture.py clip`):
//! `last_hidden_state`, `pooler_output`, `image_embeds` and every gradient, in f32 and f64,
//! through the `difftune parity` runner; then the same weights through `ImageEncoder::load_with_config`.

use std::collections::HashMap;

use autograd::Var;
use difftune_tests::fixture::{assert_parity, rel_err};
use models::encoder::{ClipConfig, EncoderConfig, ImageEncoder};
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device};

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("clip_vision_tiny.safetensors")
}

#[test]
fn clip_vision_tower_matches_transformers_in_f32() {
    let report = assert_parity(&fixture(), DType::F32);
    assert!(report.rows.iter().any(|r| r.name == "out/image_embeds"));
    assert!(report
        .rows
        .iter()
        .any(|r| r.name == "grad/input/pixel_values"));
}

#[test]
fn clip_vision_tower_matches_transformers_in_f64() {
    assert_parity(&fixture(), DType::F64);
}

/// A HuggingFace checkpoint (the fixture's `param/*` under their own names, plus the
/// `position_ids` buffer and a text tower) loads with its config through `load_with_config`;
/// tokens and pooled are `last_hidden_state` and `image_embeds`.
#[test]
fn a_huggingface_checkpoint_loads_with_its_config() {
    let file = SafeTensorsFile::open(fixture()).unwrap();
    let config = ClipConfig::from_hf_json(&file.metadata()["config"], true).unwrap();
    let mut tensors: Vec<(String, tensor::Tensor)> = file
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("param/"))
        .map(|n| (n.to_string(), file.tensor(&format!("param/{n}")).unwrap()))
        .collect();
    let ids = tensor::Tensor::from_vec((0..10i64).collect::<Vec<_>>(), &[1, 10]).unwrap();
    tensors.push(("vision_model.embeddings.position_ids".into(), ids));
    let text = tensor::Tensor::zeros(&[4, 4], DType::F32, Device::Cpu).unwrap();
    tensors.push(("text_model.embeddings.token_embedding.weight".into(), text));
    let dir = std::env::temp_dir().join(format!("difftune-clip-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let refs: Vec<(&str, &tensor::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tensor::safetensors::save(&path, &refs, Some(&HashMap::new())).unwrap();

    let config = EncoderConfig::clip(config);
    let err = ImageEncoder::load(&path, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("load_with_config"), "{err}");
    let (encoder, ps) = ImageEncoder::load_with_config(&path, &config, Device::Cpu).unwrap();
    let x = Var::constant(file.tensor("input/pixel_values").unwrap());
    let (tokens, pooled) = encoder.encode(&ps, &x).unwrap();
    let reference = |name: &str| file.tensor(name).unwrap().to_dtype(DType::F32).unwrap();
    assert!(rel_err(tokens.value(), &reference("out/last_hidden_state")) < 1e-4);
    assert!(rel_err(pooled.value(), &reference("out/image_embeds")) < 1e-4);

    // Without the projection in the config, visual_projection is an unexpected tensor.
    let mut bare = config.clone();
    bare.clip.as_mut().unwrap().projection_dim = None;
    let err = ImageEncoder::load_with_config(&path, &bare, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("visual_projection.weight") && err.contains("model.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
