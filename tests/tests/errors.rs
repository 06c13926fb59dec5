//! Wrong shapes and dtypes are errors, never panics, and their messages name the op and the shapes
//! or dtypes involved. Each test asserts on the message text. The last tests are about user files
//! and configs: what is not a regular file, and sizes over `tensor::limits`, are refused with an
//! error that names the file or key and the limit, instead of blocking, panicking or aborting.

use autograd::{Grads, Var};
use tensor::{DType, Device, Error, Result, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, Device::Cpu).unwrap()
}

fn ids(values: &[i64]) -> Tensor {
    Tensor::from_slice(values, &[values.len()]).unwrap()
}

/// The message of an error `result` must be, after checking that it contains every one of `parts`.
#[track_caller]
fn expect_err<T>(result: Result<T>, parts: &[&str]) -> Error {
    let Err(e) = result else {
        panic!("expected an error containing {parts:?}, got Ok")
    };
    let msg = e.to_string();
    for part in parts {
        assert!(msg.contains(part), "`{msg}` does not contain `{part}`");
    }
    e
}

#[test]
fn matmul_inner_dimension_mismatch() {
    let e = expect_err(
        zeros(&[2, 3]).matmul(&zeros(&[4, 5])),
        &["matmul", "[2, 3]", "[4, 5]", "3", "4"],
    );
    assert!(matches!(e, Error::Shape { op: "matmul", .. }));
    // Batch dims that do not broadcast, and too few dims.
    expect_err(
        zeros(&[2, 2, 3]).matmul(&zeros(&[3, 3, 4])),
        &["matmul", "[2, 2, 3]", "[3, 3, 4]", "batch"],
    );
    expect_err(
        zeros(&[3]).matmul(&zeros(&[3, 4])),
        &["matmul", "[3]", "2 dims"],
    );
    // Through autograd too.
    let (a, b) = (Var::param(zeros(&[2, 3])), Var::param(zeros(&[2, 3])));
    expect_err(a.matmul(&b), &["matmul", "[2, 3]"]);
}

#[test]
fn add_of_shapes_that_do_not_broadcast() {
    let e = expect_err(
        zeros(&[2, 3]).add(&zeros(&[4, 3])),
        &["add", "[2, 3]", "[4, 3]", "broadcast"],
    );
    assert!(matches!(e, Error::Shape { .. }));
    expect_err(zeros(&[3]).mul(&zeros(&[2])), &["mul", "[3]", "[2]"]);
    let (a, b) = (Var::param(zeros(&[2, 3])), Var::constant(zeros(&[3, 2])));
    expect_err(a.sub(&b), &["sub", "[2, 3]", "[3, 2]"]);
    expect_err(
        zeros(&[2, 3]).broadcast_as(&[4, 3]),
        &["broadcast_as", "[2, 3]", "[4, 3]"],
    );
}

#[test]
fn cat_of_mismatched_shapes() {
    let (a, b) = (zeros(&[2, 3]), zeros(&[2, 4]));
    expect_err(
        Tensor::cat(&[&a, &b], 0),
        &["cat", "[2, 3]", "[2, 4]", "dim 0"],
    );
    expect_err(
        Tensor::cat(&[&a, &zeros(&[2, 3, 1])], 0),
        &["cat", "[2, 3, 1]"],
    );
    expect_err(Tensor::cat(&[&a, &a], 2), &["cat", "dim 2", "[2, 3]"]);
    expect_err(Tensor::cat(&[], 0), &["cat", "no tensors"]);
    let (va, vb) = (Var::param(a), Var::param(b));
    expect_err(Var::cat(&[&va, &vb], 0), &["cat", "[2, 3]", "[2, 4]"]);
    expect_err(
        Var::stack(&[&va, &vb], 0),
        &["cat", "[1, 2, 3]", "[1, 2, 4]"],
    );
}

#[test]
fn reshape_to_a_wrong_element_count() {
    let e = expect_err(
        zeros(&[2, 3]).reshape(&[4, 2]),
        &["reshape", "[2, 3]", "[4, 2]", "6"],
    );
    assert!(matches!(e, Error::Shape { op: "reshape", .. }));
    // A non-contiguous view too, and through autograd.
    let t = zeros(&[2, 3]).transpose(0, 1).unwrap();
    expect_err(t.reshape(&[5]), &["reshape", "[3, 2]", "[5]"]);
    expect_err(Var::param(t).reshape(&[7]), &["reshape", "[3, 2]", "[7]"]);
}

#[test]
fn narrow_out_of_range() {
    let x = zeros(&[2, 3]);
    expect_err(x.narrow(1, 2, 2), &["narrow", "2..4", "dim 1", "[2, 3]"]);
    expect_err(x.narrow(2, 0, 1), &["narrow", "dim 2", "[2, 3]"]);
    expect_err(Var::param(x).narrow(0, 1, 5), &["narrow", "1..6", "[2, 3]"]);
}

#[test]
fn permute_with_a_bad_permutation() {
    let x = zeros(&[2, 3, 4]);
    for bad in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[0, 1, 2, 3]] {
        expect_err(
            x.permute(bad),
            &["permute", &format!("{bad:?}"), "[2, 3, 4]", "permutation"],
        );
    }
    expect_err(
        Var::param(x.clone()).permute(&[2, 2, 0]),
        &["permute", "[2, 2, 0]"],
    );
    expect_err(x.transpose(0, 3), &["transpose", "[2, 3, 4]"]);
}

#[test]
fn index_select_with_bad_indices() {
    let table = zeros(&[4, 3]);
    // Out of range, and negative.
    expect_err(
        table.index_select(0, &ids(&[1, 4])),
        &["index_select", "index 4", "size 4"],
    );
    expect_err(table.index_select(0, &ids(&[-1])), &["index_select", "-1"]);
    // Indices of another dtype.
    let e = expect_err(
        table.index_select(0, &zeros(&[2])),
        &["index_select", "f32", "i64"],
    );
    assert!(matches!(e, Error::DType { .. }));
    let u8_index = Tensor::from_vec(vec![0u8, 1], &[2]).unwrap();
    expect_err(
        table.index_select(1, &u8_index),
        &["index_select", "u8", "i64"],
    );
    // A bad dim, and a 2-D index.
    expect_err(
        table.index_select(2, &ids(&[0])),
        &["index_select", "dim 2", "[4, 3]"],
    );
    let ids2 = Tensor::from_vec(vec![0i64, 1], &[1, 2]).unwrap();
    expect_err(
        table.index_select(0, &ids2),
        &["index_select", "1-D", "[1, 2]"],
    );
    // Through autograd: index_select and embedding.
    let w = Var::param(table);
    expect_err(w.index_select(0, &ids(&[9])), &["index_select", "index 9"]);
    expect_err(w.embedding(&ids(&[0, 7])), &["index_select", "index 7"]);
    let far = Tensor::from_vec(vec![5i64], &[1, 1]).unwrap();
    expect_err(w.gather(1, &far), &["gather", "index 5", "size 3"]);
}

#[test]
fn integer_tensors_where_floats_are_needed() {
    let bytes = Tensor::from_vec(vec![1u8, 2, 3, 4], &[2, 2]).unwrap();
    let labels = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
    for (t, name) in [(&bytes, "u8"), (&labels, "i64")] {
        let e = expect_err(t.exp(), &["exp", name, "f32 or f64"]);
        assert!(matches!(e, Error::DType { .. }));
        expect_err(t.tanh(), &["tanh", name]);
        expect_err(t.add(t), &["add", name]);
        expect_err(t.matmul(t), &["matmul", name]);
        expect_err(t.sum(&[0], false), &["sum", name]);
        expect_err(t.mul_scalar(2.0), &["mul_scalar", name]);
        expect_err(Var::constant(t.clone()).tanh(), &["tanh", name]);
    }
    // Casting first makes them work.
    assert!(bytes.to_dtype(DType::F32).unwrap().exp().is_ok());
}

#[test]
fn mixing_f32_and_f64() {
    let a = zeros(&[2, 2]);
    let b = Tensor::zeros(&[2, 2], DType::F64, Device::Cpu).unwrap();
    for (result, op) in [
        (a.add(&b), "add"),
        (a.mul(&b), "mul"),
        (a.matmul(&b), "matmul"),
        (Tensor::cat(&[&a, &b], 0), "cat"),
    ] {
        let e = expect_err(result, &[op, "f32", "f64"]);
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    let (va, vb) = (Var::param(a), Var::param(b));
    expect_err(va.add(&vb), &["add", "f32", "f64"]);
    expect_err(va.matmul(&vb), &["matmul", "f32", "f64"]);
}

#[test]
fn backward_of_a_non_scalar() {
    let x = Var::param(zeros(&[2, 3]));
    let y = x.tanh().unwrap();
    let e = expect_err(y.backward(), &["backward", "one element", "[2, 3]"]);
    assert!(matches!(e, Error::Shape { op: "backward", .. }));
    // The failed call did not consume the graph: the scalar of it still differentiates.
    assert!(y.sum_all().unwrap().backward().is_ok());
    // A loss that depends on no trainable Var.
    let c = Var::constant(zeros(&[1]));
    expect_err(
        c.sum_all().unwrap().backward(),
        &["backward", "requires a gradient"],
    );
}

#[test]
fn second_backward_through_a_freed_graph() {
    let w = Var::param(Tensor::from_vec(vec![1f64, 2., 3.], &[3]).unwrap());
    let h = w.square().unwrap();
    let loss = h.sum_all().unwrap();
    loss.backward().unwrap();
    expect_err(
        loss.backward(),
        &["backward", "freed", "Sum", "forward again"],
    );
    let mut grads = Grads::default();
    expect_err(loss.backward_into(&mut grads), &["backward", "freed"]);
    // A new loss built on a freed intermediate is refused as well, naming the freed op.
    let again = h.mul_scalar(2.0).unwrap().sum_all().unwrap();
    expect_err(again.backward(), &["backward", "freed", "Square"]);
    // A fresh forward from the parameter works.
    let fresh = w.square().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(
        fresh.get(&w).unwrap().to_vec::<f64>().unwrap(),
        vec![2., 4., 6.]
    );
}

// ---------------------------------------------------------------------------------------------
// User files and configs
// ---------------------------------------------------------------------------------------------

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("difftune-errors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `read` on a thread and returns its error message, or fails when it does not return
/// within 10 s (a reader blocked on a named pipe never does).
fn error_within_seconds<T: Send + 'static>(
    what: &str,
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read().err().map(|e| e.to_string()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(Some(msg)) => msg,
        Ok(None) => panic!("{what}: read without an error"),
        Err(_) => panic!("{what}: still blocked after 10 s"),
    }
}

#[cfg(unix)]
#[test]
fn paths_that_are_not_regular_files_are_refused_before_opening() {
    use train::data::folder::decode;
    use train::data::{idx, ColorMode};
    use train::run::RunConfig;
    let dir = temp_dir("fifo");
    let pipe = dir.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&pipe).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", pipe.display());
    // A checkpoint folder whose state.json is a pipe.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::process::Command::new("mkfifo")
        .arg(ckpt.join("state.json"))
        .status()
        .unwrap();
    let refused = |what: &str, path: &std::path::Path, e: String| {
        assert!(
            e.contains("not a regular file") && e.contains(&path.display().to_string()),
            "{what}: {e}"
        );
    };
    let p = pipe.clone();
    let e = error_within_seconds("safetensors", move || {
        tensor::safetensors::SafeTensorsFile::open(&p).map(drop)
    });
    refused("safetensors", &pipe, e);
    let p = pipe.clone();
    refused(
        "idx",
        &pipe,
        error_within_seconds("idx", move || idx::read_images(&p)),
    );
    let p = pipe.clone();
    let e = error_within_seconds("image", move || decode(&p, ColorMode::Gray));
    refused("image", &pipe, e);
    let p = pipe.clone();
    let e = error_within_seconds("run config", move || RunConfig::from_file(&p));
    refused("run config", &pipe, e);
    let p = pipe.clone();
    let e = error_within_seconds("metrics", move || train::run::metrics::read(&p));
    refused("metrics", &pipe, e);
    let c = ckpt.clone();
    let e = error_within_seconds("state.json", move || train::run::checkpoint::load_state(&c));
    refused("state.json", &ckpt.join("state.json"), e);
    let e = error_within_seconds("device", || idx::read_labels("/dev/zero"));
    refused("device", std::path::Path::new("/dev/zero"), e);
    let d = dir.clone();
    let e = error_within_seconds("folder", move || {
        models::ParamStore::new(DType::F32, Device::Cpu, 0).load(&d, "", false)
    });
    refused("folder", &dir, e);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A run folder with a checkpoint of a tiny DiT; returns the run folder and its `state.json`.
fn tiny_checkpoint(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use train::run::checkpoint::{self, CheckpointState};
    let run = temp_dir(name);
    let config = train::run::RunConfig::from_json_str(
        r#"{"model": {"patch_size": 2, "hidden_size": 16, "depth": 1, "num_heads": 2},
            "diffusion": {"steps": 20}, "sample": {"sampler": "ddim5"},
            "image_size": 4, "color": "gray"}"#,
    )
    .unwrap();
    let mut ps = models::ParamStore::new(DType::F32, Device::Cpu, 0);
    models::dit::Dit::new(&mut ps, config.dit_config(1, 4, 2).unwrap()).unwrap();
    let state = CheckpointState {
        step: 1,
        loader_epoch: 0,
        loader_position: 0,
        other_loaders: vec![],
        classes: vec!["a".into(), "b".into()],
        image_shape: [1, 4, 4],
        config,
        checksums: vec![],
    };
    let dir = checkpoint::save(&run, state, |dir| {
        ps.save(dir.join(checkpoint::MODEL_FILE), None)?;
        ps.save(dir.join(checkpoint::EMA_FILE), None)?;
        ps.save(dir.join(checkpoint::OPTIMIZER_FILE), None)
    })
    .unwrap();
    (run, dir.join(checkpoint::STATE_FILE))
}

#[test]
fn oversized_checkpoint_states_are_refused_before_allocating() {
    use train::run::{load_model, Weights};
    let (run, state_file) = tiny_checkpoint("oversized");
    let original = std::fs::read_to_string(&state_file).unwrap();
    // Edited and sealed again, as a hostile file would be: its checksum holds, its sizes must not.
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let sealed: serde_json::Value = serde_json::from_str(&original).unwrap();
        let mut v = sealed["state"].clone();
        f(&mut v);
        let text = train::run::checkpoint::seal_text(&v.to_string());
        std::fs::write(&state_file, text).unwrap();
    };
    assert!(load_model(&run, Weights::Ema).is_ok());
    // A model of 2^40 channels: its parameters would need terabytes.
    edit(&|v| v["config"]["model"]["hidden_size"] = (1u64 << 40).into());
    expect_err(
        load_model(&run, Weights::Ema).map(drop),
        &[
            "hidden_size 1099511627776",
            "model parameters",
            "DIFFTUNE_MAX_MODEL_PARAMS=N",
        ],
    );
    // Images of 2^20 x 2^20 pixels.
    edit(&|v| v["image_shape"] = serde_json::json!([1, 1 << 20, 1 << 20]));
    expect_err(
        load_model(&run, Weights::Ema).map(drop),
        &["1048576x1048576", "DIFFTUNE_MAX_IMAGE_PIXELS=N"],
    );
    // A diffusion process of 2^40 steps: the state's config is validated when it is loaded.
    edit(&|v| v["config"]["diffusion"]["steps"] = (1u64 << 40).into());
    expect_err(
        load_model(&run, Weights::Ema).map(drop),
        &[
            "diffusion.steps",
            "1099511627776",
            "DIFFTUNE_MAX_DIFFUSION_STEPS=N",
        ],
    );
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn sample_counts_are_bounded() {
    use train::run::{grid_labels, repeat_labels, RunConfig};
    assert_eq!(grid_labels(2, 3).unwrap(), vec![0, 0, 0, 1, 1, 1]);
    // `difftune sample --per-class 9223372036854775808` panicked on the labels' capacity.
    expect_err(
        grid_labels(10, 1 << 63).map(drop),
        &[
            "10 classes",
            "9223372036854775808",
            "samples",
            "DIFFTUNE_MAX_SAMPLES=N",
        ],
    );
    expect_err(
        repeat_labels(&[0, 1], usize::MAX).map(drop),
        &["DIFFTUNE_MAX_SAMPLES"],
    );
    let config = RunConfig::from_json_str(r#"{"sample": {"per_class": 1000000000}}"#).unwrap();
    expect_err(
        config.validate(),
        &["sample.per_class", "DIFFTUNE_MAX_SAMPLES"],
    );
    let config = RunConfig::from_json_str(r#"{"image_size": 100000000}"#).unwrap();
    expect_err(
        config.validate(),
        &["image_size", "DIFFTUNE_MAX_IMAGE_PIXELS"],
    );
}

#[test]
fn model_configs_refuse_zero_and_oversized_sizes() {
    use models::dit::DitConfig;
    use models::unet::UNet2DConfig;
    use models::vae::AutoencoderKL;
    // The largest real model, DiT-XL/2 (675 M parameters; 512x512 images as 64x64 latents),
    // is within the default limit.
    let xl = DitConfig {
        input_size: 64,
        ..DitConfig::named("DiT-XL/2").unwrap()
    };
    assert!(xl.param_count() > 675_000_000);
    xl.validate().unwrap();
    // Zero latent channels: the layers' init bound 1/sqrt(0) made Tensor::rand panic.
    let mut ps = models::ParamStore::new(DType::F32, Device::Cpu, 0);
    let vae = r#"{"latent_channels": 0, "block_out_channels": [8], "norm_num_groups": 4}"#;
    expect_err(
        AutoencoderKL::from_json(&mut ps, vae).map(drop),
        &["AutoencoderKL", "latent_channels", "at least 1"],
    );
    expect_err(
        DitConfig::from_json(r#"{"hidden_size": 1099511627776, "num_heads": 1}"#).map(drop),
        &[
            "DiT config",
            "model parameters",
            "DIFFTUNE_MAX_MODEL_PARAMS",
        ],
    );
    let unet = r#"{"block_out_channels": [1099511627776], "down_block_types": ["DownBlock2D"],
                   "up_block_types": ["UpBlock2D"], "norm_num_groups": 1}"#;
    expect_err(
        UNet2DConfig::from_json(unet).map(drop),
        &[
            "UNet2DModel",
            "block_out_channels",
            "DIFFTUNE_MAX_MODEL_PARAMS",
        ],
    );
    expect_err(
        UNet2DConfig::from_json(r#"{"in_channels": 0}"#).map(drop),
        &["UNet2DModel", "in_channels", "at least 1"],
    );
}

#[test]
fn tensor_constructors_refuse_shapes_too_large_to_address() {
    let mut gen = tensor::Generator::new(0);
    let huge = [0, 1 << 40, 1 << 40];
    expect_err(
        Tensor::zeros(&huge, DType::F32, Device::Cpu),
        &[
            "full",
            "too many elements",
            "[0, 1099511627776, 1099511627776]",
        ],
    );
    expect_err(
        Tensor::from_vec(Vec::<f32>::new(), &[1 << 40, 1 << 40, 0]),
        &["from_storage", "too many elements"],
    );
    expect_err(
        Tensor::randn(
            &[usize::MAX, 2],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut gen,
        ),
        &["randn", "too many elements"],
    );
    expect_err(
        Tensor::rand(
            &[2],
            f64::NEG_INFINITY,
            f64::INFINITY,
            DType::F32,
            Device::Cpu,
            &mut gen,
        ),
        &["rand", "-inf", "range"],
    );
    expect_err(
        Tensor::rand(&[2], 1.0, 1.0, DType::F32, Device::Cpu, &mut gen),
        &["rand", "non-empty"],
    );
    // A safetensors tensor of such a shape holds no byte, so its header is valid; reading it
    // is the error.
    let dir = temp_dir("shape");
    let path = dir.join("t.safetensors");
    let header =
        r#"{"t":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}"#;
    let bytes = [&(header.len() as u64).to_le_bytes()[..], header.as_bytes()].concat();
    std::fs::write(&path, bytes).unwrap();
    let file = tensor::safetensors::SafeTensorsFile::open(&path).unwrap();
    expect_err(
        file.tensor("t"),
        &["t.safetensors", "tensor `t`", "too many elements"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}
