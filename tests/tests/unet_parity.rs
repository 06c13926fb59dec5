//! `UNet2DModel` against diffusers on `unet_tiny.safetensors`: forward in f32 and f64, every
//! gradient in f32; gradient checkpointing; ANL modules after the residual blocks; other configs; config
//! errors.

use autograd::Var;
use difftune_tests::fixture::{rel_err, rel_err_floor, Fixture, GRAD_FLOOR};
use models::anl::AnlOptions;
use models::unet::UNet2DModel;
use models::ParamStore;
use tensor::{DType, Device, Generator, Tensor};

const FIXTURE: &str = "unet_tiny.safetensors";

fn setup(dtype: DType) -> (Fixture, ParamStore, UNet2DModel) {
    let fx = Fixture::open(FIXTURE);
    let mut ps = Fixture::store(dtype);
    let model = UNet2DModel::from_json(&mut ps, &fx.config()).unwrap();
    fx.load_params(&mut ps);
    (fx, ps, model)
}

fn run(fx: &Fixture, ps: &ParamStore, model: &UNet2DModel, x: &Var) -> Var {
    let (t, y) = (fx.tensor("input/t"), fx.tensor("input/y"));
    model.forward(ps, x, &t, Some(&y)).unwrap()
}

fn check(dtype: DType) {
    difftune_tests::fixture::assert_parity(&difftune_tests::fixture::path(FIXTURE), dtype);
}

#[test]
fn forward_and_gradients_match_diffusers_in_f32() {
    check(DType::F32);
}

#[test]
fn forward_and_gradients_match_diffusers_in_f64() {
    check(DType::F64);
}

#[test]
fn checkpointing_gives_the_same_gradients() {
    let (fx, ps, mut model) = setup(DType::F64);
    let grads_of = |model: &UNet2DModel| {
        let x = fx.input("input/x", DType::F64);
        let out = run(&fx, &ps, model, &x);
        let grads = fx.loss(&[("forward", &out)]).backward().unwrap();
        let mut all: Vec<Tensor> = ps
            .iter()
            .map(|(_, v)| grads.get(v).unwrap().clone())
            .collect();
        all.push(grads.get(&x).unwrap().clone());
        (out.value().clone(), all)
    };
    let (out_plain, plain) = grads_of(&model);
    model.set_gradient_checkpointing(true);
    let (out_ckpt, ckpt) = grads_of(&model);
    assert!(rel_err(&out_ckpt, &out_plain) < 1e-12);
    assert_eq!(plain.len(), ckpt.len());
    for (a, b) in ckpt.iter().zip(&plain) {
        let err = rel_err_floor(a, b, GRAD_FLOOR);
        assert!(err < 1e-10, "checkpointed gradient differs: {err:.3e}");
    }
}

/// ANL modules sit after every residual block of the reference layout (one per `*.conv1`),
/// fresh ones leave diffusers' function bit for bit, and one that moves changes it.
#[test]
fn fresh_anl_modules_change_nothing_and_follow_every_residual_block() {
    let (fx, mut ps, mut model) = setup(DType::F64);
    let x = fx.input("input/x", DType::F64);
    let plain = run(&fx, &ps, &model, &x).value().clone();
    model
        .set_anl(Some(AnlOptions {
            context_dim: None,
            heads: 2,
            mlp_ratio: 2,
            nonlinear: true,
        }))
        .unwrap();
    let mut blocks: Vec<String> = model.anl_points().into_iter().map(|p| p.block).collect();
    let mut expected: Vec<String> = ps
        .names()
        .filter_map(|n| n.strip_suffix(".conv1.weight"))
        .map(str::to_string)
        .collect();
    // 2 levels × 1 (down) + 2 (mid) + 2 levels × 2 (up).
    assert_eq!(blocks.len(), 8, "{blocks:?}");
    assert_eq!(blocks[0], "down_blocks.0.resnets.0");
    assert_eq!(blocks[7], "up_blocks.1.resnets.1");
    blocks.sort();
    expected.sort();
    assert_eq!(blocks, expected);

    model.anl().unwrap().add_parameters(&mut ps).unwrap();
    let fresh = run(&fx, &ps, &model, &x).value().clone();
    assert_eq!(
        fresh.to_vec::<f64>().unwrap(),
        plain.to_vec::<f64>().unwrap()
    );
    let name = "anl.mid_block.resnets.1.proj_out.bias";
    let c = ps.tensor(name).unwrap().shape()[0];
    ps.set(
        name,
        Tensor::full(&[c], 0.5, DType::F64, Device::Cpu).unwrap(),
    )
    .unwrap();
    let changed = run(&fx, &ps, &model, &x).value().clone();
    assert!(rel_err(&changed, &plain) > 1e-3);
}

#[test]
fn other_layouts_build_and_run() {
    let config = r#"{
        "_class_name": "UNet2DModel",
        "in_channels": 2, "out_channels": 1, "layers_per_block": 2,
        "block_out_channels": [16, 32, 32],
        "down_block_types": ["AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"],
        "norm_num_groups": 4, "attention_head_dim": 8, "center_input_sample": true,
        "resnet_time_scale_shift": "scale_shift", "time_embedding_dim": 48,
        "num_class_embeds": null, "sample_size": [8, 8]
    }"#;
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 3);
    let mut model = UNet2DModel::from_json(&mut ps, config).unwrap();
    for name in [
        "down_blocks.2.attentions.1.to_q.weight",
        "up_blocks.0.resnets.2.conv1.weight",
        "up_blocks.1.upsamplers.0.conv.weight",
        "mid_block.attentions.0.to_out.0.weight",
    ] {
        assert!(ps.var(name).is_ok(), "missing {name}");
    }
    assert!(ps.var("down_blocks.2.downsamplers.0.conv.weight").is_err());
    assert!(ps.var("class_embedding.weight").is_err());
    // scale_shift: the projection gives scale and shift; its mid attention has no group norm.
    assert_eq!(
        ps.var("down_blocks.0.resnets.0.time_emb_proj.weight")
            .unwrap()
            .shape(),
        &[32, 48]
    );
    assert!(ps.var("mid_block.attentions.0.group_norm.weight").is_err());

    let mut gen = Generator::new(1);
    let x = Var::param(
        Tensor::randn(&[2, 2, 8, 8], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap(),
    );
    let t = Tensor::from_vec(vec![5i64], &[1]).unwrap();
    let out = model.forward(&ps, &x, &t, None).unwrap();
    assert_eq!(out.shape(), &[2, 1, 8, 8]);
    model.set_gradient_checkpointing(true);
    let out2 = model.forward(&ps, &x, &t, None).unwrap();
    let grads = out2
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(rel_err(out2.value(), out.value()) < 1e-6);
    assert!(grads.get(&ps.var("conv_in.weight").unwrap()).is_some());
    assert!(grads.get(&x).is_some());
    // Labels for a model without a class embedding are refused.
    let y = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    assert!(model.forward(&ps, &x, &t, Some(&y)).is_err());
}

#[test]
fn bad_config_values_are_named() {
    let fx = Fixture::open(FIXTURE);
    let config = fx.config().replace("\"DownBlock2D\"", "\"KDownBlock2D\"");
    let mut ps = Fixture::store(DType::F32);
    let err = UNet2DModel::from_json(&mut ps, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`down_block_types`") && err.contains("KDownBlock2D"),
        "{err}"
    );
    let err = UNet2DModel::from_json(&mut ps, r#"{"resnet_time_scale_shift": "spatial"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`resnet_time_scale_shift`") && err.contains("spatial"),
        "{err}"
    );
}
