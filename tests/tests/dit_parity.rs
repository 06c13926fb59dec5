//! DiT against facebookresearch/DiT `models.py`: the forward output and every gradient of the
//! fixture `dit_tiny.safetensors` (float64 reference from float32 weights), in f32 and f64; and
//! the model's own promises: checkpointing changes no gradient, classifier-free guidance at
//! scale 1 is the conditional forward, labels drop only in training, `learn_sigma` sets the
//! output channels, the named configs have the reference's parameter counts.

use std::collections::HashMap;

use autograd::Var;
use difftune_tests::fixture::rel_err;
use models::dit::{drop_labels, sincos_pos_embed_2d, Dit, DitConfig, GuidanceChannels};
use models::parity::{check_fixture, reference_model};
use models::ParamStore;
use tensor::safetensors::SafeTensorsFile;
use tensor::{DType, Device, Generator, Tensor};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/dit_tiny.safetensors"
);

fn fixture() -> SafeTensorsFile {
    SafeTensorsFile::open(FIXTURE).expect("the DiT fixture opens")
}

fn fixture_config(file: &SafeTensorsFile) -> DitConfig {
    DitConfig::from_json(&file.metadata()["config"]).expect("the fixture config parses")
}

/// The fixture's model with its weights, in `dtype`.
fn load_model(cfg: DitConfig, dtype: DType) -> (Dit, ParamStore) {
    let mut ps = ParamStore::new(dtype, Device::Cpu, 0);
    let model = Dit::new(&mut ps, cfg).unwrap();
    let report = ps.load(FIXTURE, "param/", true).unwrap();
    assert_eq!(report.loaded, ps.len());
    (model, ps)
}

fn tensor(file: &SafeTensorsFile, name: &str) -> Tensor {
    file.tensor(name).unwrap()
}

/// Output, gradients of every trainable parameter by name, and the gradient of x, for the
/// fixture's loss `sum(out · cot)`.
struct Run {
    out: Tensor,
    grads: HashMap<String, Tensor>,
    grad_x: Tensor,
}

fn run(dtype: DType, checkpointing: bool) -> Run {
    let file = fixture();
    let (mut model, ps) = load_model(fixture_config(&file), dtype);
    model.set_checkpointing(checkpointing);
    let x = Var::param(tensor(&file, "input/x").to_dtype(dtype).unwrap());
    let (t, y) = (tensor(&file, "input/t"), tensor(&file, "input/y"));
    let out = model.forward(&ps, &x, &t, &y, None).unwrap();
    let cot = Var::constant(tensor(&file, "cot/forward").to_dtype(dtype).unwrap());
    let grads = out
        .mul(&cot)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        grads.get(&ps.var("pos_embed").unwrap()).is_none(),
        "pos_embed is fixed: it must get no gradient"
    );
    Run {
        out: out.value().clone(),
        grads: ps
            .iter()
            .filter_map(|(name, var)| grads.get(var).map(|g| (name.to_string(), g.clone())))
            .collect(),
        grad_x: grads.get(&x).unwrap().clone(),
    }
}

/// The shared fixture runner (also behind `difftune parity`): every output and every gradient of
/// the fixture, and no gradient missing.
fn check_parity(dtype: DType, forward_tol: f64, grad_tol: f64) {
    let report = check_fixture(FIXTURE, dtype, reference_model).unwrap();
    println!("{report}");
    let grads = report
        .rows
        .iter()
        .filter(|r| r.name.starts_with("grad/"))
        .count();
    assert_eq!(
        grads,
        fixture()
            .names()
            .iter()
            .filter(|n| n.starts_with("grad/"))
            .count()
    );
    assert!(report.worst("out/") < forward_tol, "{report}");
    assert!(report.worst("grad/") < grad_tol, "{report}");
}

#[test]
fn forward_and_gradients_match_the_reference_in_f32() {
    check_parity(DType::F32, 1e-4, 1e-3);
}

/// In f64 the fixture cannot be met to 1e-9: the reference computes its timestep features in
/// float32 (`t.float() * freqs`, as our model does too), and PyTorch's vectorised float32 `exp`
/// rounds 2 of the 128 frequencies one ulp away from the correctly rounded value that ours gives.
/// At t ≈ 900 one ulp of a frequency moves a sin-cos argument by ~5e-5, which leaves 1.2e-7 in
/// the output and 2.7e-6 in the gradient of `t_embedder.mlp.0.weight` (the features' direct
/// consumer). A float64 PyTorch run of this graph fed our timestep features agrees with ours to
/// 4e-16 (output) and 8e-16 (every gradient); the bounds below are the measured gaps with margin.
#[test]
fn forward_and_gradients_match_the_reference_in_f64() {
    check_parity(DType::F64, 3e-7, 1e-5);
}

#[test]
fn checkpointing_changes_no_gradient() {
    let (plain, ckpt) = (run(DType::F64, false), run(DType::F64, true));
    assert!(rel_err(&ckpt.out, &plain.out) < 1e-14);
    assert_eq!(ckpt.grads.len(), plain.grads.len());
    for (name, g) in &plain.grads {
        let err = rel_err(&ckpt.grads[name], g);
        assert!(
            err < 1e-12,
            "grad {name}: checkpointed differs by {err:.3e}"
        );
    }
    assert!(rel_err(&ckpt.grad_x, &plain.grad_x) < 1e-12);
}

#[test]
fn the_fixture_pos_embed_is_the_fixed_sincos_table() {
    let file = fixture();
    let cfg = fixture_config(&file);
    let ours = Tensor::from_vec(
        sincos_pos_embed_2d(cfg.hidden_size, cfg.grid_size(), 1.0),
        &[1, cfg.num_patches(), cfg.hidden_size],
    )
    .unwrap();
    let err = rel_err(&ours, &tensor(&file, "param/pos_embed"));
    assert!(err < 1e-7, "pos_embed: relative error {err:.3e}");
    // And the model's own, before any load, is that table and not trainable.
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    Dit::new(&mut ps, cfg).unwrap();
    assert_eq!(rel_err(&ps.tensor("pos_embed").unwrap(), &ours), 0.0);
    assert!(!ps.var("pos_embed").unwrap().requires_grad());
}

/// x, t, y of the first `n` fixture samples, in f64.
fn first(file: &SafeTensorsFile, n: usize) -> (Tensor, Tensor, Tensor) {
    let x = tensor(file, "input/x").to_dtype(DType::F64).unwrap();
    (
        x.narrow(0, 0, n).unwrap().contiguous().unwrap(),
        tensor(file, "input/t")
            .narrow(0, 0, n)
            .unwrap()
            .contiguous()
            .unwrap(),
        tensor(file, "input/y")
            .narrow(0, 0, n)
            .unwrap()
            .contiguous()
            .unwrap(),
    )
}

fn cat(a: &Tensor, b: &Tensor) -> Tensor {
    Tensor::cat(&[a, b], 0).unwrap()
}

#[test]
fn guidance_at_scale_one_is_the_conditional_forward() {
    let file = fixture();
    let cfg = fixture_config(&file);
    let null = Tensor::from_vec(vec![cfg.num_classes as i64; 2], &[2]).unwrap();
    let (mut model, ps) = load_model(cfg, DType::F64);
    let (x, t, y) = first(&file, 2);
    let forward = |x: &Tensor, t: &Tensor, y: &Tensor| {
        model
            .forward(&ps, &Var::constant(x.clone()), t, y, None)
            .unwrap()
            .value()
            .clone()
    };
    let cond = forward(&x, &t, &y);
    let uncond = forward(&x, &t, &null);
    // The second half of x is ignored (the reference reruns the first half).
    let x2 = Var::constant(cat(&x, &x.mul_scalar(-3.0).unwrap()));
    let (t2, y2) = (cat(&t, &t), cat(&y, &null));
    let half = |v: &Tensor, i: usize| v.narrow(0, 2 * i, 2).unwrap();

    let out = model.forward_with_cfg(&ps, &x2, &t2, &y2, 1.0).unwrap();
    let out = out.value();
    assert!(rel_err(&half(out, 0), &cond) < 1e-12);
    assert!(rel_err(&half(out, 1), &cond) < 1e-12);

    // Scale 4 on all channels: uncond + 4 (cond - uncond).
    let out = model.forward_with_cfg(&ps, &x2, &t2, &y2, 4.0).unwrap();
    let guided = uncond
        .add(&cond.sub(&uncond).unwrap().mul_scalar(4.0).unwrap())
        .unwrap();
    assert!(rel_err(&half(out.value(), 0), &guided) < 1e-12);
    assert!(rel_err(&half(out.value(), 1), &guided) < 1e-12);

    // The reference's behaviour: only the first 3 channels are guided; the rest are each half's.
    model.set_guidance_channels(GuidanceChannels::First(3));
    let out = model.forward_with_cfg(&ps, &x2, &t2, &y2, 4.0).unwrap();
    let out = out.value();
    let ch = |v: &Tensor, from: usize, len: usize| v.narrow(1, from, len).unwrap();
    let rest = out.shape()[1] - 3;
    for i in 0..2 {
        assert!(rel_err(&ch(&half(out, i), 0, 3), &ch(&guided, 0, 3)) < 1e-12);
    }
    assert!(rel_err(&ch(&half(out, 0), 3, rest), &ch(&cond, 3, rest)) < 1e-12);
    assert!(rel_err(&ch(&half(out, 1), 3, rest), &ch(&uncond, 3, rest)) < 1e-12);
    assert!(rel_err(&ch(&cond, 3, rest), &ch(&uncond, 3, rest)) > 1e-3);

    let odd = Var::constant(x.narrow(0, 0, 1).unwrap());
    let err = model
        .forward_with_cfg(&ps, &odd, &t, &y, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("even"), "{err}");
}

#[test]
fn labels_drop_to_the_null_class_only_in_training() {
    let file = fixture();
    let cfg = DitConfig {
        class_dropout_prob: 0.5,
        ..fixture_config(&file)
    };
    let null = cfg.num_classes as i64;
    let (model, ps) = load_model(cfg, DType::F64);
    // One image under 8 labels.
    let n = 8;
    let x = tensor(&file, "input/x").to_dtype(DType::F64).unwrap();
    let x = Var::constant(Tensor::cat(&vec![&x.narrow(0, 0, 1).unwrap(); n], 0).unwrap());
    let t = Tensor::from_vec(vec![250i64; n], &[n]).unwrap();
    let y = Tensor::from_vec((0..n as i64).collect::<Vec<_>>(), &[n]).unwrap();
    let nulls = Tensor::from_vec(vec![null; n], &[n]).unwrap();
    let eval = |y: &Tensor| model.forward(&ps, &x, &t, y, None).unwrap().value().clone();
    let (cond, uncond) = (eval(&y), eval(&nulls));
    // Evaluation never drops.
    assert_eq!(rel_err(&eval(&y), &cond), 0.0);

    let mut gen = Generator::new(7);
    let train = model.forward(&ps, &x, &t, &y, Some(&mut gen)).unwrap();
    let (mut kept, mut dropped) = (0, 0);
    for i in 0..n {
        let row = |v: &Tensor| v.narrow(0, i, 1).unwrap();
        if rel_err(&row(train.value()), &row(&cond)) < 1e-14 {
            kept += 1;
        } else {
            assert!(
                rel_err(&row(train.value()), &row(&uncond)) < 1e-14,
                "sample {i}"
            );
            dropped += 1;
        }
    }
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");

    // The drop rate is p.
    let labels = Tensor::from_vec(vec![3i64; 20000], &[20000]).unwrap();
    let out = drop_labels(&labels, 0.1, 10, &mut gen)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    let rate = out.iter().filter(|&&l| l == 10).count() as f64 / out.len() as f64;
    assert!((rate - 0.1).abs() < 0.01, "drop rate {rate}");
    assert!(out.iter().all(|&l| l == 3 || l == 10));

    // Without label dropout there is no null class, and training drops nothing.
    let cfg = DitConfig {
        class_dropout_prob: 0.0,
        ..fixture_config(&file)
    };
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let model = Dit::new(&mut ps, cfg).unwrap();
    assert_eq!(
        ps.var("y_embedder.embedding_table.weight").unwrap().shape(),
        &[10, 64]
    );
    let err = model
        .forward(&ps, &x, &t, &nulls, Some(&mut gen))
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 10 is out of range"), "{err}");
}

#[test]
fn learn_sigma_false_predicts_c_channels() {
    let cfg = DitConfig {
        input_size: 8,
        in_channels: 3,
        hidden_size: 32,
        depth: 1,
        num_heads: 4,
        num_classes: 5,
        learn_sigma: false,
        ..DitConfig::named("DiT-S/4").unwrap()
    };
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 1);
    let model = Dit::new(&mut ps, cfg.clone()).unwrap();
    assert_eq!(ps.param_count(), cfg.param_count());
    assert_eq!(
        ps.var("final_layer.linear.weight").unwrap().shape(),
        &[48, 32]
    );
    let x = Var::constant(
        Tensor::randn(
            &[2, 3, 8, 8],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut Generator::new(2),
        )
        .unwrap(),
    );
    let t = Tensor::from_vec(vec![1.5f32, 999.0], &[2]).unwrap();
    let y = Tensor::from_vec(vec![4i64, 5], &[2]).unwrap();
    let out = model.forward(&ps, &x, &t, &y, None).unwrap();
    assert_eq!(out.shape(), &[2, 3, 8, 8]);
    // adaLN-Zero: the freshly initialised model predicts exactly zero.
    assert!(out
        .value()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));

    let bad = Var::constant(Tensor::zeros(&[2, 3, 8, 4], DType::F32, Device::Cpu).unwrap());
    let err = model
        .forward(&ps, &bad, &t, &y, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, 3, 8, 8]"), "{err}");
}

#[test]
fn dit_s2_has_the_reference_parameter_count() {
    let cfg = DitConfig::named("DiT-S/2").unwrap();
    assert_eq!(
        (cfg.input_size, cfg.in_channels, cfg.num_classes),
        (32, 4, 1000)
    );
    // The reference formula, D = 384, 12 blocks, 256 tokens, mlp 1536, out 8 channels:
    let (d, m, tokens) = (384, 1536, 256);
    let lin = |i: usize, o: usize| i * o + o;
    let block = lin(d, 3 * d) + lin(d, d) + lin(d, m) + lin(m, d) + lin(d, 6 * d);
    let expected = lin(4 * 2 * 2, d)
        + tokens * d
        + lin(256, d)
        + lin(d, d)
        + 1001 * d
        + 12 * block
        + lin(d, 2 * 2 * 8)
        + lin(d, 2 * d);
    assert_eq!(expected, 32_963_360);
    assert_eq!(cfg.param_count(), expected);

    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
    Dit::new(&mut ps, cfg).unwrap();
    assert_eq!(ps.param_count(), expected);
    assert_eq!(ps.trainable_count(), expected - tokens * d);
    // 2 patch-embed, pos_embed, 4 timestep-MLP, the label table, 10 per block, 4 final.
    assert_eq!(ps.len(), 2 + 1 + 4 + 1 + 12 * 10 + 4);
}

#[test]
fn lora_reaches_the_block_linears_with_and_without_checkpointing() {
    let cfg = DitConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 2,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        num_classes: 3,
        ..DitConfig::default()
    };
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let mut model = Dit::new(&mut ps, cfg).unwrap();
    // Give the zero-initialised adaLN and output layers values, so the blocks matter.
    for name in ps.names().map(String::from).collect::<Vec<_>>() {
        let shape = ps.tensor(&name).unwrap().shape().to_vec();
        if name != "pos_embed" {
            let v = Tensor::randn(
                &shape,
                0.0,
                0.1,
                DType::F64,
                Device::Cpu,
                &mut Generator::new(name.len() as u64),
            )
            .unwrap();
            ps.set(&name, v).unwrap();
        }
    }
    let mut gen = Generator::new(7);
    let x = Var::constant(
        Tensor::randn(&[2, 2, 8, 8], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap(),
    );
    let (t, y) = (
        Tensor::from_vec(vec![3i64, 700], &[2]).unwrap(),
        Tensor::from_vec(vec![0i64, 3], &[2]).unwrap(),
    );
    let base = model
        .forward(&ps, &x, &t, &y, None)
        .unwrap()
        .value()
        .clone();

    // Every Linear in the blocks gets an adapter (qkv, proj, fc1, fc2, adaLN: 5 per block).
    assert_eq!(
        models::peft::add_lora(&mut ps, "blocks.*", 2, 4.0).unwrap(),
        10
    );
    assert_eq!(
        model
            .forward(&ps, &x, &t, &y, None)
            .unwrap()
            .value()
            .max_abs_diff(&base)
            .unwrap(),
        0.0
    );
    let b = Tensor::randn(&[96, 2], 0.0, 0.5, DType::F64, Device::Cpu, &mut gen).unwrap();
    ps.set("blocks.1.attn.qkv.weight.lora_B", b).unwrap();
    let run = |model: &Dit| {
        let out = model.forward(&ps, &x, &t, &y, None).unwrap();
        let grads = out.square().unwrap().sum_all().unwrap().backward().unwrap();
        let g = |n: &str| grads.get(&ps.var(n).unwrap()).cloned();
        (
            out.value().clone(),
            g("blocks.1.attn.qkv.weight.lora_A").unwrap(),
            g("blocks.0.mlp.fc1.weight.lora_B").unwrap(),
            g("blocks.0.mlp.fc1.weight"),
        )
    };
    let plain = run(&model);
    assert!(
        plain.0.max_abs_diff(&base).unwrap() > 1e-6,
        "the adapter changes the output"
    );
    assert!(plain.3.is_none(), "the adapted weights are frozen");
    model.set_checkpointing(true);
    let ckpt = run(&model);
    assert!(ckpt.0.max_abs_diff(&plain.0).unwrap() < 1e-12);
    assert!(rel_err(&ckpt.1, &plain.1) < 1e-12 && rel_err(&ckpt.2, &plain.2) < 1e-12);
}
