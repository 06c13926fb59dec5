use std::path::PathBuf;

use tensor::{Generator, Tensor};

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difftune-encoder-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tiny configs of every kind over 1x12x12 images.
fn tiny(kind: EncoderKind) -> EncoderConfig {
    let image = [1, 12, 12];
    match kind {
        EncoderKind::Clip => EncoderConfig::clip(ClipConfig {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            image_size: 12,
            patch_size: 4,
            num_channels: 1,
            layer_norm_eps: 1e-5,
            hidden_act: "quick_gelu".into(),
            projection_dim: Some(6),
        }),
        EncoderKind::Vit => EncoderConfig::vit(
            image,
            VitConfig {
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                patch_size: 4,
                layer_norm_eps: 1e-6,
                num_classes: 3,
            },
        ),
        EncoderKind::Cnn => EncoderConfig::cnn(
            image,
            CnnConfig {
                widths: vec![4, 8, 8],
                groups: 2,
                num_classes: 3,
            },
        ),
    }
}

fn images(shape: &[usize]) -> Var {
    let mut gen = Generator::new(5);
    Var::constant(Tensor::rand(shape, -1.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap())
}

#[test]
fn shapes_of_every_kind() {
    let expected = [
        (EncoderKind::Clip, (10, 8), 6),
        (EncoderKind::Vit, (10, 8), 8),
        (EncoderKind::Cnn, (9, 8), 8),
    ];
    for (kind, tokens, pooled) in expected {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 1);
        let enc = ImageEncoder::new(&mut ps, &tiny(kind)).unwrap();
        assert_eq!(
            (enc.token_shape(), enc.pooled_dim()),
            (tokens, pooled),
            "{kind}"
        );
        let x = images(&[2, 1, 12, 12]);
        assert_eq!(
            enc.tokens(&ps, &x).unwrap().shape(),
            &[2, tokens.0, tokens.1]
        );
        let p = enc.pooled(&ps, &x).unwrap();
        assert_eq!(p.shape(), &[2, pooled]);
        match kind {
            EncoderKind::Clip => {
                assert!(enc.logits(&ps, &p).is_err());
                assert_eq!(enc.logit_scale(&ps).unwrap().shape(), &[] as &[usize]);
            }
            _ => {
                assert_eq!(enc.logits(&ps, &p).unwrap().shape(), &[2, 3]);
                assert!(enc.logit_scale(&ps).is_err());
            }
        }
    }
    // The CLIP tower without projection pools to pooler_output.
    let mut config = tiny(EncoderKind::Clip);
    config.clip.as_mut().unwrap().projection_dim = None;
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 1);
    let enc = ImageEncoder::new(&mut ps, &config).unwrap();
    assert_eq!(enc.pooled_dim(), 8);
    assert!(!ps.contains("visual_projection.weight"));
    assert_eq!(
        enc.pooled(&ps, &images(&[1, 1, 12, 12])).unwrap().shape(),
        &[1, 8]
    );
}

#[test]
fn clip_has_huggingface_names() {
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 1);
    ImageEncoder::new(&mut ps, &tiny(EncoderKind::Clip)).unwrap();
    for (name, shape) in [
        (
            "vision_model.embeddings.patch_embedding.weight",
            vec![8, 1, 4, 4],
        ),
        ("vision_model.embeddings.class_embedding", vec![8]),
        (
            "vision_model.embeddings.position_embedding.weight",
            vec![10, 8],
        ),
        ("vision_model.pre_layrnorm.weight", vec![8]),
        (
            "vision_model.encoder.layers.1.self_attn.k_proj.bias",
            vec![8],
        ),
        (
            "vision_model.encoder.layers.0.self_attn.out_proj.weight",
            vec![8, 8],
        ),
        ("vision_model.encoder.layers.0.layer_norm2.bias", vec![8]),
        ("vision_model.encoder.layers.0.mlp.fc1.weight", vec![16, 8]),
        ("vision_model.post_layernorm.bias", vec![8]),
        ("visual_projection.weight", vec![6, 8]),
        ("logit_scale", vec![]),
    ] {
        assert_eq!(ps.var(name).unwrap().shape(), &shape[..], "{name}");
    }
    assert!(!ps.contains("vision_model.embeddings.patch_embedding.bias"));
}

#[test]
fn save_load_round_trip_of_every_kind() {
    let dir = temp_dir("round-trip");
    for kind in EncoderKind::ALL {
        let path = dir.join(format!("{kind}.safetensors"));
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 3);
        let enc = ImageEncoder::new(&mut ps, &tiny(kind)).unwrap();
        enc.save(&ps, &path).unwrap();
        let (back, back_ps) = ImageEncoder::load(&path, Device::Cpu).unwrap();
        assert_eq!(back.config(), enc.config());
        let x = images(&[2, 1, 12, 12]);
        let (a, b) = (
            enc.encode(&ps, &x).unwrap(),
            back.encode(&back_ps, &x).unwrap(),
        );
        assert_eq!(a.0.value().max_abs_diff(b.0.value()).unwrap(), 0.0);
        assert_eq!(a.1.value().max_abs_diff(b.1.value()).unwrap(), 0.0);
        let text = enc.config().to_json();
        assert_eq!(&EncoderConfig::from_json(&text, "x").unwrap(), enc.config());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_are_refused_naming_file_and_problem() {
    let dir = temp_dir("bad-files");
    let path = dir.join("cnn.safetensors");
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 3);
    let enc = ImageEncoder::new(&mut ps, &tiny(EncoderKind::Cnn)).unwrap();
    enc.save(&ps, &path).unwrap();
    let err = |p: &Path| {
        ImageEncoder::load(p, Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };

    // No metadata: not an encoder file; a classifier file says so.
    ps.save(&path, None).unwrap();
    let e = err(&path);
    assert!(
        e.contains("cnn.safetensors") && e.contains(CONFIG_KEY),
        "{e}"
    );
    let meta = HashMap::from([(crate::classifier::CONFIG_KEY.to_string(), "{}".to_string())]);
    ps.save(&path, Some(&meta)).unwrap();
    assert!(err(&path).contains("classifier"), "{}", err(&path));

    // An unknown kind, an unknown key, a bad value.
    let with = |json: String| {
        ps.save(
            &path,
            Some(&HashMap::from([(CONFIG_KEY.to_string(), json)])),
        )
        .unwrap();
        err(&path)
    };
    let good = enc.config().to_json();
    let e = with(good.replace("\"kind\":\"cnn\"", "\"kind\":\"resnet\""));
    assert!(e.contains("resnet") && e.contains("cnn.safetensors"), "{e}");
    let e = with(good.replace("\"groups\"", "\"group\""));
    assert!(e.contains("group"), "{e}");
    let e = with(good.replace("\"groups\":2", "\"groups\":3"));
    assert!(
        e.contains("cnn.widths") && e.contains("cnn.groups = 3"),
        "{e}"
    );

    // Another kind's config over these weights: the tensors do not fit.
    let e = with(tiny(EncoderKind::Vit).to_json());
    assert!(
        e.contains("missing") && e.contains("embeddings.class_embedding"),
        "{e}"
    );
    // A tensor of the wrong shape.
    let mut wide = tiny(EncoderKind::Cnn);
    wide.cnn.as_mut().unwrap().widths = vec![4, 8, 16];
    let e = with(wide.to_json());
    assert!(
        e.contains("stages.2.conv.weight") && e.contains("[16, 8, 3, 3]"),
        "{e}"
    );
    // A truncated file.
    enc.save(&ps, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = err(&path);
    assert!(e.contains("cnn.safetensors"), "{e}");

    // Non-finite weights are not saved.
    let w = ps.tensor("head.bias").unwrap();
    ps.set("head.bias", w.mul_scalar(f64::NAN).unwrap())
        .unwrap();
    let e = enc
        .save(&ps, &dir.join("nan.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("head.bias"), "{e}");
    assert!(!dir.join("nan.safetensors").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn images_of_the_wrong_shape_are_refused() {
    for kind in EncoderKind::ALL {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 1);
        let enc = ImageEncoder::new(&mut ps, &tiny(kind)).unwrap();
        for shape in [&[2, 3, 12, 12][..], &[2, 1, 14, 14], &[1, 12, 12]] {
            let e = enc.tokens(&ps, &images(shape)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{shape:?}")) && e.contains("[N >= 1, 1, 12, 12]"),
                "{e}"
            );
            assert!(enc.pooled(&ps, &images(shape)).is_err());
        }
    }
}

#[test]
fn configs_are_validated_naming_the_key() {
    assert_eq!("vit".parse::<EncoderKind>().unwrap(), EncoderKind::Vit);
    let e = "resnet".parse::<EncoderKind>().unwrap_err().to_string();
    assert!(
        e.contains("resnet") && e.contains("clip, vit or cnn"),
        "{e}"
    );
    let check = |c: EncoderConfig, key: &str| {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    };
    let mut c = tiny(EncoderKind::Clip);
    c.clip.as_mut().unwrap().patch_size = 5;
    check(c, "clip.patch_size");
    let mut c = tiny(EncoderKind::Clip);
    c.clip.as_mut().unwrap().hidden_act = "relu".into();
    check(c, "clip.hidden_act");
    let mut c = tiny(EncoderKind::Clip);
    c.image = [3, 12, 12];
    check(c, "image");
    let mut c = tiny(EncoderKind::Vit);
    c.vit.as_mut().unwrap().num_attention_heads = 3;
    check(c, "vit.num_attention_heads");
    let mut c = tiny(EncoderKind::Vit);
    c.cnn = tiny(EncoderKind::Cnn).cnn;
    check(c, "section `cnn`");
    let mut c = tiny(EncoderKind::Cnn);
    c.cnn.as_mut().unwrap().widths = vec![];
    check(c, "cnn.widths");
    let mut c = tiny(EncoderKind::Cnn);
    c.cnn.as_mut().unwrap().num_classes = 1;
    check(c, "cnn.num_classes");
    for kind in EncoderKind::ALL {
        let c = EncoderConfig::small(kind, [1, 28, 28], 10);
        c.validate().unwrap();
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        ImageEncoder::new(&mut ps, &c).unwrap();
        assert!(
            ps.param_count() * 4 <= 2_000_000,
            "{kind}: {}",
            ps.param_count()
        );
    }
}
