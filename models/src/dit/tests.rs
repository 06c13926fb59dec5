//! The DiT's unit tests.

use serde_json::Value;
use tensor::Device;

use super::*;

#[test]
fn folding_difffit_scales_into_the_gates_keeps_the_function() {
    let cfg = DitConfig {
        in_channels: 2,
        ..small(Conditioning::AdaLn, 0)
    };
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let dit = Dit::new(&mut ps, cfg).unwrap();
    crate::peft::difffit(&mut ps, &dit.difffit_scales()).unwrap();
    let mut gen = Generator::new(3);
    // adaLN-Zero starts with closed gates, where a scale changes nothing: open them.
    let ada: Vec<String> = ps
        .names()
        .filter(|n| n.contains("adaLN"))
        .map(String::from)
        .collect();
    for name in ada {
        let shape = ps.tensor(&name).unwrap().shape().to_vec();
        let t = Tensor::randn(&shape, 0.0, 0.3, DType::F64, Device::Cpu, &mut gen).unwrap();
        ps.set(&name, t).unwrap();
    }
    for (i, name) in dit.difffit_scales().iter().enumerate() {
        ps.set(
            name,
            Tensor::full(&[1], 0.5 + i as f64, DType::F64, Device::Cpu).unwrap(),
        )
        .unwrap();
    }
    let x = Var::constant(
        Tensor::randn(&[2, 2, 8, 8], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap(),
    );
    let (t, y) = (
        Tensor::from_vec(vec![10i64, 900], &[2]).unwrap(),
        Tensor::from_vec(vec![0i64, 2], &[2]).unwrap(),
    );
    let before = dit.forward(&ps, &x, &t, &y, None).unwrap().value().clone();
    dit.fold_difffit(&mut ps).unwrap();
    let after = dit.forward(&ps, &x, &t, &y, None).unwrap().value().clone();
    let scale = before.max_abs_diff(&before.zeros_like().unwrap()).unwrap();
    let diff = after.max_abs_diff(&before).unwrap();
    assert!(diff <= 1e-12 * scale, "the function changed by {diff}");
    for name in dit.difffit_scales() {
        assert_eq!(ps.tensor(&name).unwrap().to_scalar().unwrap(), 1.0);
    }
}

/// Mixed precision's plumbing, checked on the CPU with f64 standing in for bf16: f32 master
/// weights, compute in the other dtype, an f32 answer and f32 gradients equal to the plain
/// f32 run's within f32 rounding.
#[test]
fn compute_dtype_casts_weights_and_returns_master_dtype_gradients() {
    let cfg = DitConfig {
        input_size: 8,
        in_channels: 2,
        hidden_size: 16,
        depth: 1,
        num_heads: 2,
        num_classes: 3,
        ..DitConfig::named("DiT-S/4").unwrap()
    };
    let mut ps = ParamStore::new(DType::F32, tensor::Device::Cpu, 0);
    let model = Dit::new(&mut ps, cfg).unwrap();
    // Reference init zeroes the adaLN and final layers; randomise so every weight matters.
    let mut gen = Generator::new(1);
    let names: Vec<String> = ps.names().map(String::from).collect();
    for name in &names {
        let shape = ps.tensor(name).unwrap().shape().to_vec();
        let t = Tensor::randn(&shape, 0.0, 0.2, DType::F32, tensor::Device::Cpu, &mut gen);
        ps.set(name, t.unwrap()).unwrap();
    }
    let x = Tensor::randn(
        &[2, 2, 8, 8],
        0.0,
        1.0,
        DType::F32,
        tensor::Device::Cpu,
        &mut gen,
    );
    let x = Var::constant(x.unwrap());
    let t = Tensor::from_vec(vec![3i64, 700], &[2]).unwrap();
    let y = Tensor::from_vec(vec![0i64, 2], &[2]).unwrap();
    let run = |ps: &ParamStore| {
        let out = model.forward(ps, &x, &t, &y, None).unwrap();
        let grads = out.square().unwrap().sum_all().unwrap().backward().unwrap();
        let w = ps.var("blocks.0.mlp.fc1.weight").unwrap();
        (out.value().clone(), grads.get(&w).unwrap().clone())
    };
    let (out32, grad32) = run(&ps);
    ps.set_compute_dtype(Some(DType::F64));
    assert_eq!(ps.compute_dtype(), DType::F64);
    assert_eq!(ps.weight("pos_embed").unwrap().value().dtype(), DType::F64);
    let (out_mixed, grad_mixed) = run(&ps);
    assert_eq!(
        (out_mixed.dtype(), grad_mixed.dtype()),
        (DType::F32, DType::F32)
    );
    let rel = |a: &Tensor, b: &Tensor| {
        let d = a
            .sub(b)
            .unwrap()
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let n = b.square().unwrap().sum_all().unwrap().to_scalar().unwrap();
        (d / n).sqrt()
    };
    assert!(
        rel(&out_mixed, &out32) < 1e-5,
        "{}",
        rel(&out_mixed, &out32)
    );
    assert!(
        rel(&grad_mixed, &grad32) < 1e-4,
        "{}",
        rel(&grad_mixed, &grad32)
    );
    assert!(
        rel(&out_mixed, &out32) > 0.0,
        "the compute dtype was not used"
    );
}

#[test]
fn named_configs_follow_the_paper() {
    let xl = DitConfig::named("DiT-XL/2").unwrap();
    assert_eq!(xl, DitConfig::default());
    let b4 = DitConfig::named("DiT-B/4").unwrap();
    assert_eq!(
        (b4.depth, b4.hidden_size, b4.num_heads, b4.patch_size),
        (12, 768, 12, 4)
    );
    let err = DitConfig::named("DiT-M/2").unwrap_err().to_string();
    assert!(err.contains("DiT-M/2") && err.contains("DiT-S/8"), "{err}");
    assert!(DitConfig::named("DiT-S/3").is_err());
}

#[test]
fn json_errors_name_the_field() {
    let good = DitConfig::named("DiT-S/2").unwrap();
    assert_eq!(DitConfig::from_json(&good.to_json()).unwrap(), good);
    let with = |field: &str, value: Value| {
        let mut v: Value = serde_json::from_str(&good.to_json()).unwrap();
        v[field] = value;
        DitConfig::from_json(&v.to_string())
            .unwrap_err()
            .to_string()
    };
    let e = with("hidden_size", Value::from("384"));
    assert!(e.contains("`hidden_size`") && e.contains("integer"), "{e}");
    let e = with("learn_sigma", Value::from(1));
    assert!(e.contains("`learn_sigma`"), "{e}");
    let e = with("num_heads", Value::from(5));
    assert!(
        e.contains("`hidden_size` 384") && e.contains("`num_heads` 5"),
        "{e}"
    );
    let e = with("patch_size", Value::from(3));
    assert!(
        e.contains("`input_size` 32") && e.contains("`patch_size` 3"),
        "{e}"
    );
    let e = with("class_dropout_prob", Value::from(1.5));
    assert!(e.contains("`class_dropout_prob`"), "{e}");
    let e = with("hidden_sise", Value::from(4));
    assert!(e.contains("unknown key `hidden_sise`"), "{e}");
    // Absent keys take the reference constructor's defaults.
    let mut v: Value = serde_json::from_str(&good.to_json()).unwrap();
    v.as_object_mut().unwrap().remove("depth");
    assert_eq!(DitConfig::from_json(&v.to_string()).unwrap().depth, 28);
    let e = DitConfig::from_json("[1]").unwrap_err().to_string();
    assert!(e.contains("JSON object"), "{e}");
}

#[test]
fn timestep_features_are_the_float32_ones() {
    let t = Tensor::from_vec(vec![0i64, 500], &[2]).unwrap();
    let ours = timestep_embedding_f32(&t, 256, 10000.0).unwrap();
    assert_eq!(ours.dtype(), DType::F32);
    let ours = ours.to_f64_vec().unwrap();
    // t = 0: cos = 1 then sin = 0, exactly.
    assert!(ours[..128].iter().all(|&v| v == 1.0) && ours[128..256].iter().all(|&v| v == 0.0));
    // Within float32 argument rounding (500 · 2⁻²⁴ · 2) of the float64 features, not equal.
    let exact = crate::nn::sinusoidal_embedding(&t, 256, true, 0.0, 10000.0, DType::F64)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let worst = ours
        .iter()
        .zip(&exact)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4 && worst > 1e-7, "{worst}");
}

#[test]
fn pos_embed_matches_the_reference_layout() {
    // grid 2, dim 8: each axis has 4 dims = [sin(pos), sin(pos/100), cos(pos), cos(pos/100)].
    let e = sincos_pos_embed_2d(8, 2, 1.0);
    let axis = |p: f64| [p.sin(), (p / 100.0).sin(), p.cos(), (p / 100.0).cos()];
    // token 1 is row 0, column 1: the column comes first.
    let expected: Vec<f64> = axis(1.0).into_iter().chain(axis(0.0)).collect();
    let got = &e[8..16];
    assert!(
        got.iter()
            .zip(&expected)
            .all(|(a, b)| (a - b).abs() < 1e-15),
        "{got:?}"
    );
}

#[test]
fn forced_label_drop_follows_the_mask() {
    let labels = Tensor::from_vec(vec![0i64, 2, 1, 2], &[4]).unwrap();
    let out = force_drop_labels(&labels, &[false, true, true, false], 3).unwrap();
    assert_eq!(out.to_vec::<i64>().unwrap(), vec![0, 3, 3, 2]);
    let err = force_drop_labels(&labels, &[true], 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("labels [4] and a mask of 1 flags"), "{err}");
}

/// A small config of `conditioning` with `control_dim` kinds of control metadata.
fn small(conditioning: Conditioning, control_dim: usize) -> DitConfig {
    DitConfig {
        input_size: 8,
        patch_size: 4,
        in_channels: 1,
        hidden_size: 16,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: 3,
        learn_sigma: false,
        conditioning,
        class_tokens: 2,
        control_dim,
        ..DitConfig::default()
    }
}

/// Every parameter of `ps` but `pos_embed` drawn from N(0, 0.3²): the reference init zeroes the
/// adaLN and output layers, where nothing would show.
fn randomise(ps: &mut ParamStore, seed: u64) {
    let mut gen = Generator::new(seed);
    let names: Vec<String> = ps
        .names()
        .filter(|n| *n != "pos_embed")
        .map(String::from)
        .collect();
    for name in names {
        let shape = ps.tensor(&name).unwrap().shape().to_vec();
        let t = Tensor::randn(&shape, 0.0, 0.3, DType::F64, Device::Cpu, &mut gen).unwrap();
        ps.set(&name, t).unwrap();
    }
}

fn inputs(n: usize) -> (Var, Tensor, Tensor) {
    let mut gen = Generator::new(11);
    let x = Tensor::randn(&[n, 1, 8, 8], 0.0, 1.0, DType::F64, Device::Cpu, &mut gen).unwrap();
    let t = Tensor::from_vec((0..n).map(|i| (i * 97 % 1000) as i64).collect(), &[n]).unwrap();
    let y = Tensor::from_vec((0..n).map(|i| (i % 3) as i64).collect(), &[n]).unwrap();
    (Var::constant(x), t, y)
}

fn value(v: Var) -> Tensor {
    v.value().clone()
}

#[test]
fn every_mode_counts_its_parameters_and_reads_the_class() {
    for mode in [
        Conditioning::AdaLn,
        Conditioning::CrossAttention,
        Conditioning::JointAttention,
    ] {
        let cfg = small(mode, 4);
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let dit = Dit::new(&mut ps, cfg.clone()).unwrap();
        assert_eq!(ps.param_count(), cfg.param_count(), "{mode:?}");
        assert!(ps.contains(&dit.label_table()), "{mode:?}");
        randomise(&mut ps, 1);
        let (x, t, y) = inputs(3);
        let out = value(dit.forward(&ps, &x, &t, &y, None).unwrap());
        let other = Tensor::from_vec(vec![1i64, 2, 0], &[3]).unwrap();
        let moved = value(dit.forward(&ps, &x, &t, &other, None).unwrap());
        assert!(
            out.max_abs_diff(&moved).unwrap() > 1e-3,
            "{mode:?}: the class is ignored"
        );
        // The JSON form round-trips the project's keys.
        assert_eq!(DitConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    }
}

#[test]
fn a_checkpoint_without_control_loads_and_computes_what_it_did() {
    let mut plain = ParamStore::new(DType::F64, Device::Cpu, 0);
    let reference = Dit::new(&mut plain, small(Conditioning::AdaLn, 0)).unwrap();
    randomise(&mut plain, 2);
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 5);
    let dit = Dit::new(&mut ps, small(Conditioning::AdaLn, 4)).unwrap();
    let new = dit.new_parameters(ps.names());
    assert_eq!(new.len(), 4 * 4, "{new:?}");
    for name in plain.names() {
        ps.set(name, plain.tensor(name).unwrap().clone()).unwrap();
    }
    let (x, t, y) = inputs(3);
    let control = Control::repeat(&[0.5, 0.1, 0.2, 1.0], 3).unwrap();
    let before = value(reference.forward(&plain, &x, &t, &y, None).unwrap());
    let after = value(dit.forward_with(&ps, &x, &t, &y, Some(&control)).unwrap());
    assert_eq!(before.max_abs_diff(&after).unwrap(), 0.0);
    // Trained control embedders move the output, but not that of a dropped control.
    randomise(&mut ps, 3);
    let on = value(dit.forward_with(&ps, &x, &t, &y, Some(&control)).unwrap());
    let off = value(dit.forward_with(&ps, &x, &t, &y, None).unwrap());
    let dropped = control.with_keep(vec![false; 3]).unwrap();
    let off2 = value(dit.forward_with(&ps, &x, &t, &y, Some(&dropped)).unwrap());
    assert!(on.max_abs_diff(&off).unwrap() > 1e-3);
    assert_eq!(off.max_abs_diff(&off2).unwrap(), 0.0);
}

#[test]
fn scheduled_control_fades_out_toward_pure_noise() {
    for mode in [Conditioning::CrossAttention, Conditioning::JointAttention] {
        let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
        let dit = Dit::new(&mut ps, small(mode, 4)).unwrap();
        randomise(&mut ps, 4);
        let (x, _, y) = inputs(2);
        let a = Control::repeat(&[1.0, 0.0, 0.0, 0.0], 2).unwrap();
        let b = Control::repeat(&[0.5, 0.25, 0.25, 1.0], 2).unwrap();
        let run = |t: f64, c: &Control| {
            let t = Tensor::from_vec(vec![t; 2], &[2]).unwrap();
            value(dit.forward_with(&ps, &x, &t, &y, Some(c)).unwrap())
        };
        // gamma(T) = 0: the control does nothing at pure noise; near the data it acts.
        assert_eq!(run(1000.0, &a).max_abs_diff(&run(1000.0, &b)).unwrap(), 0.0);
        assert!(run(0.0, &a).max_abs_diff(&run(0.0, &b)).unwrap() > 1e-3);
    }
    // In the adaLN baseline the control acts at every timestep.
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let dit = Dit::new(&mut ps, small(Conditioning::AdaLn, 4)).unwrap();
    randomise(&mut ps, 4);
    let (x, _, y) = inputs(2);
    let t = Tensor::from_vec(vec![1000.0f64; 2], &[2]).unwrap();
    let on = Control::repeat(&[0.5, 0.25, 0.25, 1.0], 2).unwrap();
    let a = value(dit.forward_with(&ps, &x, &t, &y, Some(&on)).unwrap());
    let b = value(dit.forward_with(&ps, &x, &t, &y, None).unwrap());
    assert!(a.max_abs_diff(&b).unwrap() > 1e-3);
}

#[test]
fn gamma_is_a_cosine_from_one_to_zero_shaped_by_alpha() {
    use super::control::gamma;
    for alpha in [0.5, 1.0, 3.0] {
        assert_eq!(gamma(0.0, 1000, alpha), 1.0);
        let mut last = 1.0;
        for t in (0..=1000).step_by(50) {
            let g = gamma(t as f64, 1000, alpha);
            assert!(g <= last && (0.0..=1.0).contains(&g), "{alpha} {t} {g}");
            last = g;
        }
        assert!(last < 1e-12);
    }
    // A larger alpha switches control off earlier.
    assert!(gamma(300.0, 1000, 3.0) < gamma(300.0, 1000, 1.0));
}

#[test]
fn interpolated_positions_are_the_coarse_grid_s() {
    // A 4x4 grid at scale 1/2: token (2i, 2j) sits where token (i, j) of the 2x2 grid does.
    let (fine, coarse) = (
        sincos_pos_embed_2d(8, 4, 0.5),
        sincos_pos_embed_2d(8, 2, 1.0),
    );
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let f = &fine[((2 * i) * 4 + 2 * j) * 8..][..8];
        let c = &coarse[(i * 2 + j) * 8..][..8];
        assert!(
            f.iter().zip(c).all(|(a, b)| (a - b).abs() < 1e-15),
            "{i} {j}"
        );
    }
    // The model uses its scale.
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let cfg = DitConfig {
        position_scale: 0.5,
        ..small(Conditioning::AdaLn, 0)
    };
    Dit::new(&mut ps, cfg).unwrap();
    let table = ps.tensor("pos_embed").unwrap().to_vec::<f64>().unwrap();
    assert_eq!(table, sincos_pos_embed_2d(16, 2, 0.5));
}

#[test]
fn bad_conditioning_input_is_refused_naming_it() {
    let mut ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let dit = Dit::new(&mut ps, small(Conditioning::CrossAttention, 4)).unwrap();
    let (x, t, y) = inputs(2);
    let short = Control::repeat(&[1.0, 0.0, 0.0], 2).unwrap();
    let err = dit
        .forward_with(&ps, &x, &t, &y, Some(&short))
        .unwrap_err()
        .to_string();
    assert!(err.contains("control is [2, 3], expected [2, 4]"), "{err}");
    let mut plain_ps = ParamStore::new(DType::F64, Device::Cpu, 0);
    let plain = Dit::new(&mut plain_ps, small(Conditioning::AdaLn, 0)).unwrap();
    let control = Control::repeat(&[1.0, 0.0, 0.0, 0.0], 2).unwrap();
    let err = plain
        .forward_with(&plain_ps, &x, &t, &y, Some(&control))
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes no control metadata"), "{err}");
    let mut v: Value = serde_json::from_str(&small(Conditioning::AdaLn, 4).to_json()).unwrap();
    v["conditioning"] = Value::from("film");
    let err = DitConfig::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`conditioning`") && err.contains("film"),
        "{err}"
    );
    v["conditioning"] = Value::from("adaln");
    v["control_alpha"] = serde_json::json!([1.0, 2.0]);
    let err = DitConfig::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`control_alpha` has 2 values"), "{err}");
    v["control_alpha"] = serde_json::json!([1.0]);
    v["patch_size"] = Value::from(3);
    let err = DitConfig::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`patch_size` 3"), "{err}");
}
