//! `models::inception::InceptionV3` against pytorch-fid's FID Inception-v3 on the portable random
//! weights of `tests/fixtures/inception_fid.safetensors` (made by
//! `tools/make_inception_fixture.py`): the weight generator alone, the intermediate blocks, the
//! 2048-d features of a grayscale, an RGB batch and an image larger than 299, the loader's errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use models::inception::{portable_weight, InceptionV3, FEATURE_DIM};
use tensor::safetensors::{save, SafeTensorsFile};
use tensor::{DType, Device, Tensor};

/// Relative L2 error allowed between our f32 features (or block means) and pytorch-fid's f64
/// ones. We measure about 2e-7 (PyTorch's own f32 run: 3e-7 to 2e-6); the margin absorbs other
/// summation orders (SIMD widths, thread counts).
const TOLERANCE: f64 = 1e-5;

const INPUTS: [&str; 3] = ["gray28", "rgb64x48", "gray310"];

fn fixture() -> SafeTensorsFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/inception_fid.safetensors");
    SafeTensorsFile::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// The network on the portable weights, built once for all tests.
fn network() -> &'static InceptionV3 {
    static NET: OnceLock<InceptionV3> = OnceLock::new();
    NET.get_or_init(|| InceptionV3::portable_random().unwrap())
}

/// The fixture's u8 image `name` as f32 in [0, 1], computed as the generator did (u8 / 255 in f32).
fn image(fx: &SafeTensorsFile, name: &str) -> Tensor {
    let u8s = fx.tensor(&format!("input/{name}")).unwrap();
    let scaled: Vec<f32> = u8s
        .to_vec::<u8>()
        .unwrap()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    Tensor::from_vec(scaled, u8s.shape()).unwrap()
}

/// ‖ours − reference‖ / ‖reference‖.
fn rel_l2(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.shape(), reference.shape());
    let (a, b) = (ours.to_f64_vec().unwrap(), reference.to_f64_vec().unwrap());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

#[test]
fn rust_generator_reproduces_the_python_weights_bit_for_bit() {
    let fx = fixture();
    let shapes: HashMap<String, Vec<usize>> = InceptionV3::param_shapes().into_iter().collect();
    let mut checked = 0;
    for name in fx.names() {
        let Some(param) = name.strip_prefix("generator/") else {
            continue;
        };
        let want = fx.tensor(name).unwrap().to_vec::<f32>().unwrap();
        let shape = &shapes[param];
        let got = portable_weight(param, shape)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "generator mismatch: {param} value {i}: Rust {g}, Python {w} (a generator bug, not a network one)"
            );
        }
        checked += want.len();
    }
    assert!(
        checked > 1000,
        "the fixture holds only {checked} generator values"
    );
}

#[test]
fn features_match_pytorch_fid() {
    let fx = fixture();
    let net = network();
    let mut report = Vec::new();
    let mut features = Vec::new();
    for name in INPUTS {
        let x = image(&fx, name);
        let blocks = net.forward_blocks(&x, 3).unwrap();
        // The intermediate blocks first: a failure there says where the network goes wrong.
        for (b, out) in blocks[..3].iter().enumerate() {
            let mean = out.mean(&[2, 3], false).unwrap();
            let want = fx.tensor(&format!("debug/{name}/block{b}_mean")).unwrap();
            let err = rel_l2(&mean, &want);
            report.push(format!("{name} block{b} mean: {err:.2e}"));
            assert!(
                err <= TOLERANCE,
                "{name}: block {b} channel means off by {err:.2e}"
            );
        }
        let n = x.shape()[0];
        let ours = blocks[3].reshape(&[n, FEATURE_DIM]).unwrap();
        let want = fx.tensor(&format!("features/{name}")).unwrap();
        let torch32 = fx.tensor(&format!("features_f32/{name}")).unwrap();
        let err = rel_l2(&ours, &want);
        report.push(format!(
            "{name} features: {err:.2e} (PyTorch f32: {:.2e})",
            rel_l2(&torch32, &want)
        ));
        assert!(err <= TOLERANCE, "{name}: features off by {err:.2e}");
        // `features` is the same computation, reshaped.
        let direct = net.features(&x).unwrap();
        assert_eq!(direct.shape(), &[n, FEATURE_DIM]);
        assert_eq!(
            direct.to_vec::<f32>().unwrap(),
            ours.to_vec::<f32>().unwrap()
        );
        features.push(want);
    }
    println!(
        "relative L2 against pytorch-fid (f64):\n  {}",
        report.join("\n  ")
    );
    // The tolerance separates images: two different inputs are far further apart than it.
    let apart = rel_l2(&features[0], &features[2]);
    assert!(
        apart > 100.0 * TOLERANCE,
        "gray28 and gray310 only {apart:.2e} apart"
    );
}

#[test]
fn f64_input_and_grayscale_broadcast_agree_with_f32_rgb() {
    let fx = fixture();
    let net = network();
    let gray = image(&fx, "gray28");
    let rgb = Tensor::cat(&[&gray, &gray, &gray], 1).unwrap();
    let a = net.features(&gray).unwrap();
    let b = net.features(&rgb.to_dtype(DType::F64).unwrap()).unwrap();
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let empty = Tensor::zeros(&[0, 3, 8, 8], DType::F32, Device::Cpu).unwrap();
    assert_eq!(net.features(&empty).unwrap().shape(), &[0, FEATURE_DIM]);
}

#[test]
fn bad_images_are_refused_with_their_shape() {
    let net = network();
    let cases = [
        (
            Tensor::zeros(&[1, 2, 8, 8], DType::F32, Device::Cpu),
            "got 2",
        ),
        (
            Tensor::zeros(&[3, 8, 8], DType::F32, Device::Cpu),
            "[3, 8, 8]",
        ),
        (
            Tensor::zeros(&[1, 3, 0, 8], DType::F32, Device::Cpu),
            "empty",
        ),
        (
            Tensor::zeros(&[1, 3, 8, 8], DType::U8, Device::Cpu),
            "divide by 255",
        ),
    ];
    for (x, needle) in cases {
        let e = net.features(&x.unwrap()).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    let e = net.forward_blocks(
        &Tensor::zeros(&[1, 3, 8, 8], DType::F32, Device::Cpu).unwrap(),
        4,
    );
    assert!(e.unwrap_err().to_string().contains("block 4"));
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("difftune-inception-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error of loading a file holding `tensors`.
fn load_error(dir: &TempDir, file: &str, tensors: &[(&str, Tensor)]) -> String {
    let path = dir.0.join(file);
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    save(&path, &named, None).unwrap();
    let e = InceptionV3::load(&path).unwrap_err().to_string();
    assert!(e.contains(file), "the error names the file: {e}");
    e
}

#[test]
fn loading_names_the_missing_or_misshaped_tensor() {
    let dir = TempDir::new("errors");
    let zeros = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, Device::Cpu).unwrap();
    let e = load_error(
        &dir,
        "empty.safetensors",
        &[("other", zeros(&[1], DType::F32))],
    );
    assert!(
        e.contains("missing tensor `Conv2d_1a_3x3.conv.weight`") && e.contains("[32, 3, 3, 3]"),
        "{e}"
    );
    let e = load_error(
        &dir,
        "shape.safetensors",
        &[(
            "Conv2d_1a_3x3.conv.weight",
            zeros(&[32, 3, 5, 5], DType::F32),
        )],
    );
    assert!(
        e.contains("`Conv2d_1a_3x3.conv.weight` has shape [32, 3, 5, 5], expected [32, 3, 3, 3]"),
        "{e}"
    );
    let e = load_error(
        &dir,
        "dtype.safetensors",
        &[(
            "Conv2d_1a_3x3.conv.weight",
            zeros(&[32, 3, 3, 3], DType::I64),
        )],
    );
    assert!(e.contains("dtype i64") || e.contains("dtype I64"), "{e}");
    let e = load_error(
        &dir,
        "imagenet.safetensors",
        &[("fc.weight", zeros(&[1000, 2048], DType::U8))],
    );
    assert!(
        e.contains("not the FID weights") && e.contains("[1000, 2048]"),
        "{e}"
    );
    assert!(InceptionV3::load(dir.0.join("absent.safetensors")).is_err());
}

#[test]
fn a_converted_state_dict_loads_and_gives_the_same_features() {
    // What tools/convert_pt.py writes: every state-dict tensor (fc and the BatchNorm counters
    // too) under its own name. Here the portable weights, in f16 to keep the file small: the
    // loader casts any float dtype to f32.
    let dir = TempDir::new("load");
    let mut tensors: Vec<(String, Tensor)> = InceptionV3::param_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let t = portable_weight(&name, &shape)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            (name, t)
        })
        .collect();
    tensors.push((
        "fc.bias".into(),
        Tensor::zeros(&[1008], DType::F32, Device::Cpu).unwrap(),
    ));
    tensors.push((
        "Mixed_5b.branch1x1.bn.num_batches_tracked".into(),
        Tensor::zeros(&[], DType::I64, Device::Cpu).unwrap(),
    ));
    let path = dir.0.join("fid.safetensors");
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save(&path, &named, None).unwrap();
    let loaded = InceptionV3::load(&path).unwrap();
    let from_f16 =
        InceptionV3::from_fn(|name, shape| portable_weight(name, shape)?.to_dtype(DType::F16))
            .unwrap();
    let x = image(&fixture(), "gray28");
    let (a, b) = (loaded.features(&x).unwrap(), from_f16.features(&x).unwrap());
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    // f16 weights are not the fixture's: the features move, but stay close.
    let err = rel_l2(&a, &fixture().tensor("features/gray28").unwrap());
    assert!(err > 0.0 && err < 0.05, "{err}");
}
