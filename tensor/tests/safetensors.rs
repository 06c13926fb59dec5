//! safetensors I/O: round trips of every dtype (views included), atomic replacement, and errors
//! that name the file and the tensor for every kind of bad input; the DiT fixture opens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tensor::safetensors::{load, save, SafeTensorsFile};
use tensor::{bf16, f16, DType, Error, Tensor};

/// The DiT fixture in `$DIFFTUNE_SHARED/fixtures` (set where the test binary runs away from the
/// checkout, as `.gpu/run.sh` does), else in `../shared/fixtures` beside the repository.
fn fixture() -> PathBuf {
    let shared = std::env::var_os("DIFFTUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    shared.join("fixtures/dit_tiny.safetensors")
}

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("safetensors-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file made of a hand-written header and data section.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The error's message, after checking that it is a format error naming `path`.
fn format_error(e: Error, path: &Path) -> String {
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Format { .. }),
        "not a format error: {msg}"
    );
    assert!(
        msg.contains(&path.display().to_string()),
        "`{msg}` does not name {}",
        path.display()
    );
    msg
}

#[test]
fn round_trip_of_every_dtype_views_and_metadata() {
    let dir = scratch("round_trip");
    let path = dir.join("all.safetensors");

    let f32s = Tensor::from_vec(vec![1.5f32, -2.25, 3e-8, f32::MAX, -0.0, 7.0], &[2, 3]).unwrap();
    let transposed = f32s.transpose(0, 1).unwrap();
    assert!(!transposed.is_contiguous());
    let f64s = Tensor::from_vec(vec![std::f64::consts::PI, -1e300, 1e-300], &[3]).unwrap();
    let bf16s = Tensor::from_vec(
        [1.0, -0.5, 3.0e5, 0.0078125].map(bf16::from_f64).to_vec(),
        &[2, 2],
    )
    .unwrap();
    let f16s =
        Tensor::from_vec([65504.0, -1.0, 6.1e-5].map(f16::from_f64).to_vec(), &[1, 3]).unwrap();
    let u8s = Tensor::from_vec(vec![0u8, 1, 128, 255], &[4]).unwrap();
    let i64s = Tensor::from_vec(vec![i64::MIN, -1, 0, i64::MAX, 42, 7], &[3, 1, 2]).unwrap();
    let scalar = Tensor::scalar(0.25, DType::F64);
    let empty = Tensor::zeros(&[0, 5], DType::F32, tensor::Device::Cpu).unwrap();

    let tensors: Vec<(&str, &Tensor)> = vec![
        ("f32", &f32s),
        ("f32/transposed", &transposed),
        ("f64", &f64s),
        ("bf16", &bf16s),
        ("f16", &f16s),
        ("u8", &u8s),
        ("i64", &i64s),
        ("scalar", &scalar),
        ("empty", &empty),
    ];
    let meta = HashMap::from([
        ("model".to_string(), "tiny".to_string()),
        ("config".to_string(), r#"{"depth": 2}"#.to_string()),
    ]);
    save(&path, &tensors, Some(&meta)).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    let mut expected_names: Vec<&str> = tensors.iter().map(|(n, _)| *n).collect();
    expected_names.sort();
    assert_eq!(file.names(), expected_names);
    assert_eq!(file.metadata(), &meta);
    assert!(file.contains("u8") && !file.contains("u16"));
    for (name, t) in &tensors {
        assert_eq!(
            file.info(name).unwrap(),
            (t.dtype(), t.shape().to_vec()),
            "{name}"
        );
        let back = file.tensor(name).unwrap();
        assert_eq!(back.dtype(), t.dtype(), "{name}");
        assert_eq!(back.shape(), t.shape(), "{name}");
        assert!(back.is_contiguous());
        // Bitwise equality per dtype (f64 holds every value of the others exactly except i64).
        match t.dtype() {
            DType::I64 => assert_eq!(back.to_vec::<i64>().unwrap(), t.to_vec::<i64>().unwrap()),
            _ => {
                let (a, b) = (back.to_f64_vec().unwrap(), t.to_f64_vec().unwrap());
                let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "{name}");
            }
        }
    }
    // The view was saved in its logical order.
    assert_eq!(
        file.tensor("f32/transposed")
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.5, f32::MAX, -2.25, -0.0, 3e-8, 7.0]
    );

    // load() returns the same tensors, sorted by name.
    let all = load(&path).unwrap();
    assert_eq!(
        all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        expected_names
    );

    // No metadata at all is an empty map; the write left no temporary file behind.
    let plain = dir.join("plain.safetensors");
    save(&plain, &[("x", &u8s)], None).unwrap();
    assert!(SafeTensorsFile::open(&plain).unwrap().metadata().is_empty());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec!["all.safetensors", "plain.safetensors"]);
}

#[test]
fn save_replaces_a_file_that_is_open() {
    let dir = scratch("replace");
    let path = dir.join("ckpt.safetensors");
    let old = Tensor::from_vec(vec![1f32, 2., 3.], &[3]).unwrap();
    let new = Tensor::from_vec(vec![9f64; 5], &[5]).unwrap();
    save(&path, &[("w", &old)], None).unwrap();
    let opened = SafeTensorsFile::open(&path).unwrap();
    save(&path, &[("w", &new), ("extra", &old)], None).unwrap();
    // The open map still sees the old file; a fresh open sees the new one.
    assert_eq!(
        opened.tensor("w").unwrap().to_vec::<f32>().unwrap(),
        vec![1., 2., 3.]
    );
    let reopened = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(reopened.info("w").unwrap(), (DType::F64, vec![5]));
    assert_eq!(reopened.names(), vec!["extra", "w"]);
}

#[test]
fn truncated_and_garbage_files_are_errors_naming_the_file() {
    let dir = scratch("corrupt");
    let good = dir.join("good.safetensors");
    let t = Tensor::from_vec(vec![1f32; 16], &[4, 4]).unwrap();
    save(&good, &[("weight", &t)], None).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Cut inside the data: the tensor that runs past the end is named.
    let cut_data = dir.join("cut_data.safetensors");
    std::fs::write(&cut_data, &bytes[..bytes.len() - 5]).unwrap();
    let msg = format_error(SafeTensorsFile::open(&cut_data).unwrap_err(), &cut_data);
    assert!(
        msg.contains("`weight`") && msg.contains("truncated"),
        "{msg}"
    );

    // Cut inside the header.
    let cut_header = dir.join("cut_header.safetensors");
    std::fs::write(&cut_header, &bytes[..20]).unwrap();
    let msg = format_error(SafeTensorsFile::open(&cut_header).unwrap_err(), &cut_header);
    assert!(msg.contains("truncated"), "{msg}");

    // Shorter than the length prefix, and empty.
    for (name, content) in [
        ("tiny.safetensors", &b"abc"[..]),
        ("empty.safetensors", &b""[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let msg = format_error(SafeTensorsFile::open(&p).unwrap_err(), &p);
        assert!(msg.contains("too short"), "{msg}");
    }

    // Text that is no safetensors file: its first 8 bytes read as a huge header length.
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"hello, this is certainly not a safetensors file").unwrap();
    format_error(SafeTensorsFile::open(&garbage).unwrap_err(), &garbage);
    assert!(load(&garbage).is_err());

    // A plausible length followed by a header that is not JSON.
    let not_json = dir.join("not_json.safetensors");
    std::fs::write(&not_json, raw_file("{\"a\": nope}     ", &[])).unwrap();
    let msg = format_error(SafeTensorsFile::open(&not_json).unwrap_err(), &not_json);
    assert!(msg.contains("JSON"), "{msg}");

    // A missing file is an I/O error naming the path.
    let missing = dir.join("missing.safetensors");
    let e = SafeTensorsFile::open(&missing).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
}

#[test]
fn bad_headers_name_the_tensor() {
    let dir = scratch("headers");
    let write = |name: &str, header: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, raw_file(header, data)).unwrap();
        p
    };

    // Byte length that does not match the shape.
    let p = write(
        "length.safetensors",
        r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
        &[0; 20],
    );
    let msg = format_error(SafeTensorsFile::open(&p).unwrap_err(), &p);
    assert!(
        msg.contains("`w`") && msg.contains("24") && msg.contains("20"),
        "{msg}"
    );

    // The same name twice.
    let p = write(
        "dup.safetensors",
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
        &[0; 4],
    );
    let msg = format_error(SafeTensorsFile::open(&p).unwrap_err(), &p);
    assert!(
        msg.contains("`a`") && msg.contains("more than once"),
        "{msg}"
    );

    // Overlapping offsets: left to the safetensors crate, which names the tensor.
    let p = write(
        "overlap.safetensors",
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
        &[0; 3],
    );
    let msg = format_error(SafeTensorsFile::open(&p).unwrap_err(), &p);
    assert!(msg.contains("`b`"), "{msg}");

    // A malformed entry.
    let p = write(
        "entry.safetensors",
        r#"{"w":{"dtype":"F32","shape":"big"}}"#,
        &[],
    );
    let msg = format_error(SafeTensorsFile::open(&p).unwrap_err(), &p);
    assert!(msg.contains("`w`"), "{msg}");

    // A dtype we do not support: the file opens, reading that tensor is an error naming it.
    let p = write(
        "dtype.safetensors",
        r#"{"__metadata__":{"k":"v"},"ok":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"q":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}"#,
        &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0],
    );
    let file = SafeTensorsFile::open(&p).unwrap();
    assert_eq!(file.tensor("ok").unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert_eq!(file.metadata()["k"], "v");
    for e in [file.tensor("q").unwrap_err(), file.info("q").unwrap_err()] {
        let msg = format_error(e, &p);
        assert!(msg.contains("`q`") && msg.contains("I32"), "{msg}");
    }
    assert!(load(&p).is_err());

    // An unknown name.
    let msg = format_error(file.tensor("nope").unwrap_err(), &p);
    assert!(msg.contains("`nope`"), "{msg}");
    format_error(file.info("nope").unwrap_err(), &p);
}

#[test]
fn save_refuses_duplicate_and_reserved_names_and_reports_io_errors() {
    let dir = scratch("save_errors");
    let t = Tensor::from_vec(vec![1u8, 2], &[2]).unwrap();
    let p = dir.join("dup.safetensors");
    let msg = format_error(save(&p, &[("x", &t), ("x", &t)], None).unwrap_err(), &p);
    assert!(msg.contains("`x`"), "{msg}");
    format_error(save(&p, &[("__metadata__", &t)], None).unwrap_err(), &p);
    assert!(!p.exists());

    let nowhere = dir.join("no/such/dir/out.safetensors");
    let e = save(&nowhere, &[("x", &t)], None).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("out.safetensors"), "{e}");
}

#[test]
fn dit_fixture_opens() {
    let fixture = fixture();
    assert!(
        fixture.exists(),
        "fixture {} missing: clone the shared/ folder beside the repository",
        fixture.display()
    );
    let file = SafeTensorsFile::open(&fixture).unwrap();
    let names = file.names();
    assert!(names.iter().any(|n| n.starts_with("param/")), "{names:?}");
    for input in ["input/x", "input/t", "input/y"] {
        assert!(file.contains(input), "{input} missing from {names:?}");
    }
    assert!(file.metadata()["model"].contains("DiT"));
    let config: serde_json::Value = serde_json::from_str(&file.metadata()["config"]).unwrap();
    assert!(config["hidden_size"].is_u64(), "{config}");

    let (dtype, shape) = file.info("input/x").unwrap();
    let x = file.tensor("input/x").unwrap();
    assert_eq!((x.dtype(), x.shape()), (dtype, &shape[..]));
    assert_eq!((dtype, shape.len()), (DType::F32, 4));
    assert!(x.to_f64_vec().unwrap().iter().all(|v| v.is_finite()));
    assert_eq!(file.info("input/y").unwrap().0, DType::I64);
    // Every parameter reads back with its header's dtype and shape.
    for name in names.iter().filter(|n| n.starts_with("param/")) {
        let t = file.tensor(name).unwrap();
        assert_eq!(
            file.info(name).unwrap(),
            (t.dtype(), t.shape().to_vec()),
            "{name}"
        );
    }
}
