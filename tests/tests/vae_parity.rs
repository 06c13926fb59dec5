//! `AutoencoderKL` against diffusers on `vae_tiny.safetensors`: encode (mean, logvar) and decode
//! in f32 and f64, every gradient in f32; gradient checkpointing; other configs; config errors.

use autograd::{Grads, Var};
use difftune_tests::fixture::{rel_err, rel_err_floor, Fixture, GRAD_FLOOR};
use models::vae::AutoencoderKL;
use models::ParamStore;
use tensor::{DType, Device, Generator, Tensor};

const FIXTURE: &str = "vae_tiny.safetensors";

fn setup(dtype: DType) -> (Fixture, ParamStore, AutoencoderKL) {
    let fx = Fixture::open(FIXTURE);
    let mut ps = Fixture::store(dtype);
    let model = AutoencoderKL::from_json(&mut ps, &fx.config()).unwrap();
    fx.load_params(&mut ps);
    (fx, ps, model)
}

/// (x, z, [encode_mean, encode_logvar, decode]) in `dtype`.
fn run(fx: &Fixture, ps: &ParamStore, model: &AutoencoderKL, dtype: DType) -> (Var, Var, [Var; 3]) {
    let (x, z) = (fx.input("input/x", dtype), fx.input("input/z", dtype));
    let (mean, logvar) = model.encode(ps, &x).unwrap();
    let decoded = model.decode(ps, &z).unwrap();
    (x, z, [mean, logvar, decoded])
}

const OUTS: [&str; 3] = ["encode_mean", "encode_logvar", "decode"];

fn backward(fx: &Fixture, outs: &[Var; 3]) -> Grads {
    let named: Vec<(&str, &Var)> = OUTS.iter().copied().zip(outs).collect();
    fx.loss(&named).backward().unwrap()
}

fn check(dtype: DType) {
    difftune_tests::fixture::assert_parity(&difftune_tests::fixture::path(FIXTURE), dtype);
}

#[test]
fn encode_decode_and_gradients_match_diffusers_in_f32() {
    check(DType::F32);
    let (_, _, model) = setup(DType::F32);
    assert_eq!(model.scaling_factor(), 0.18215);
}

#[test]
fn encode_decode_and_gradients_match_diffusers_in_f64() {
    check(DType::F64);
}

#[test]
fn checkpointing_gives_the_same_gradients() {
    let (fx, ps, mut model) = setup(DType::F64);
    let grads_of = |model: &AutoencoderKL| -> Vec<Tensor> {
        let (x, z, outs) = run(&fx, &ps, model, DType::F64);
        let grads = backward(&fx, &outs);
        let mut all: Vec<Tensor> = ps
            .iter()
            .map(|(_, v)| grads.get(v).unwrap().clone())
            .collect();
        all.extend([
            grads.get(&x).unwrap().clone(),
            grads.get(&z).unwrap().clone(),
        ]);
        all
    };
    let plain = grads_of(&model);
    model.set_gradient_checkpointing(true);
    let ckpt = grads_of(&model);
    assert_eq!(plain.len(), ckpt.len());
    for (a, b) in ckpt.iter().zip(&plain) {
        let err = rel_err_floor(a, b, GRAD_FLOOR);
        assert!(err < 1e-10, "checkpointed gradient differs: {err:.3e}");
    }
}

#[test]
fn other_layouts_build_and_run() {
    let config = r#"{
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1",
        "in_channels": 1, "out_channels": 2, "latent_channels": 3, "layers_per_block": 2,
        "block_out_channels": [8, 16, 16],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "norm_num_groups": 4, "mid_block_add_attention": false, "scaling_factor": 0.13025,
        "use_quant_conv": false, "latents_mean": null, "shift_factor": null
    }"#;
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 2);
    let mut model = AutoencoderKL::from_json(&mut ps, config).unwrap();
    assert_eq!(model.scaling_factor(), 0.13025);
    for name in [
        "encoder.down_blocks.1.resnets.1.conv2.weight",
        "encoder.down_blocks.1.downsamplers.0.conv.weight",
        "decoder.up_blocks.0.resnets.2.norm1.weight",
        "decoder.up_blocks.1.upsamplers.0.conv.weight",
        "post_quant_conv.weight",
    ] {
        assert!(ps.var(name).is_ok(), "missing {name}");
    }
    for name in [
        "quant_conv.weight",
        "encoder.mid_block.attentions.0.to_q.weight",
        "decoder.up_blocks.2.upsamplers.0.conv.weight",
    ] {
        assert!(ps.var(name).is_err(), "unexpected {name}");
    }
    let mut gen = Generator::new(1);
    let x = Var::param(
        Tensor::randn(&[2, 1, 12, 12], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap(),
    );
    let (mean, logvar) = model.encode(&ps, &x).unwrap();
    assert_eq!(mean.shape(), &[2, 3, 3, 3]);
    assert_eq!(logvar.shape(), &[2, 3, 3, 3]);
    let out = model.decode(&ps, &mean).unwrap();
    assert_eq!(out.shape(), &[2, 2, 12, 12]);
    model.set_gradient_checkpointing(true);
    let (mean2, _) = model.encode(&ps, &x).unwrap();
    let out2 = model.decode(&ps, &mean2).unwrap();
    assert!(rel_err(out2.value(), out.value()) < 1e-6);
    let grads = out2
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&x).is_some());
    assert!(grads
        .get(&ps.var("encoder.conv_in.weight").unwrap())
        .is_some());
}

#[test]
fn bad_config_values_are_named() {
    let fx = Fixture::open(FIXTURE);
    let mut ps = Fixture::store(DType::F32);
    let config = fx
        .config()
        .replace("\"norm_num_groups\": 8", "\"norm_num_groups\": 7");
    let err = AutoencoderKL::from_json(&mut ps, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`norm_num_groups` = 7"), "{err}");
    let config = fx
        .config()
        .replace("\"UpDecoderBlock2D\"", "\"AttnUpDecoderBlock2D\"");
    let err = AutoencoderKL::from_json(&mut ps, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`up_block_types`") && err.contains("AttnUpDecoderBlock2D"),
        "{err}"
    );
}
