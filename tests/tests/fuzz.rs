//! Fuzzing every parser of user files: no input may make difftune panic, abort or hang.
//!
//! Each target starts from valid files and mutates them, structure-aware and byte by byte:
//!
//! | target | parser | mutations |
//! | --- | --- | --- |
//! | `safetensors` | `tensor::safetensors` (open, every tensor, `load`), `models::ParamStore::load` | header JSON fields (dtype, shape, data offsets), keys removed, added or repeated, the header length prefix, bytes |
//! | `classifier` | `models::classifier::Classifier::load` (its config lives in the file's metadata) | the config JSON, the header, bytes |
//! | `checkpoint` | `train::run::checkpoint::load_state` and `train::run::load_model` on a run folder, the diffusion `difftune sample` builds, the moving average and optimizer state `--resume` reads | `state.json` values (model sizes, `diffusion.steps`, `image_shape`, classes, checksums), the weight files (checksums recomputed), the `latest` pointer, missing files |
//! | `idx` | `train::data::idx` and `Dataset::from_idx`, plain and gzip | magic, rank, dimensions, truncation, trailing data, a gzip bomb, the compressed stream |
//! | `png` | `train::data::folder::decode`, `resize_and_crop`, `Dataset::from_folder` | IHDR dimensions, depth and colour type, chunk lengths, data, order and CRCs, inserted chunks, a zlib bomb |
//! | `jpeg` | the same, for JPEG | frame dimensions, components and sampling factors, segment lengths and payloads, the entropy-coded data |
//! | `run-config` | `train::run::RunConfig::from_json_str`, `from_file`, `validate` and the configs it derives | every value swapped for huge, negative, fractional, wrong-typed ones; keys removed and added; the text itself |
//!
//! A case fails on a panic (each case runs under `catch_unwind`), an abort (this binary's global
//! allocator stops the process on any single allocation over 1 GiB, printing the case, so a
//! decompression or allocation bomb fails deterministically, whatever the machine's memory) or
//! a hang (a case running past a 10 s watchdog). A failure names the case (`target:index`) and
//! where its input files were saved (`target/tmp/fuzz-failures/`). At the end the test prints a
//! table: inputs tried per target, accepted, refused with an error, panics, hangs, and the
//! panics that a parser caught inside a third-party decoder and reported as an error.
//!
//! Cases are deterministic: case `i` of a target is seeded by (seed, target, `i`).
//!
//! - `cargo test -p difftune-tests --test fuzz`: the CI run (a few thousand cases, about 30 s on
//!   two cores in the dev profile).
//! - `DIFFTUNE_FUZZ_ITERS=100000`: that many cases per target (a longer run on demand).
//! - `DIFFTUNE_FUZZ_SEED=7`: another seed (default 0).
//! - `DIFFTUNE_FUZZ_CASE=png:123`: only that case, printing its mutations and what the parser said.
//! - `DIFFTUNE_FUZZ_TARGETS=png,jpeg`: only those targets.
//! - `DIFFTUNE_FUZZ_FROM=500`: start at case 500 (to continue past a case that aborted).
//! - `DIFFTUNE_FUZZ_SKIP=png:12,idx:7`: leave those cases out (to count what else fails once the
//!   cases that abort are known).
//! - `DIFFTUNE_FUZZ_VERBOSE=1`: also the most frequent refusals of each target (what its
//!   mutations reach).
//!
//! The limits of `tensor::limits` are lowered for the run (unless their environment variables are
//! set), as a user could: a case then stays small and quick, and a file that asks for more than
//! a limit must be refused, which is the behaviour under test. The default limits' values are
//! checked by the unit tests of the parsers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use difftune_tests::fuzz::{
    interesting, json_text, mutate_bytes, mutate_jpeg, mutate_json, mutate_png, quiet_panics,
    report_case_on_stderr, run_target, table, zlib_zeros, Case, Outcome, Stats, Target,
};
use models::classifier::{Classifier, ClassifierConfig};
use models::dit::Dit;
use models::ParamStore;
use rand::Rng;
use serde_json::Value;
use tensor::safetensors::{self, SafeTensorsFile};
use tensor::{DType, Device, Result, Tensor};
use train::data::folder::{decode, resize_and_crop};
use train::data::{idx, ColorMode, Dataset, FolderOptions};
use train::optim::{AdamW, AdamWConfig, Ema};
use train::run::checkpoint::{self, CheckpointState};
use train::run::{load_model, RunConfig, Weights};

// ---------------------------------------------------------------------------------------------
// The allocation guard
// ---------------------------------------------------------------------------------------------

/// The largest single allocation a case may make: far above what any valid case needs under the
/// lowered limits, far below what a bomb asks for.
const MAX_ALLOCATION: usize = 1 << 30;

/// Aborts the process, naming the case, on any single allocation over [`MAX_ALLOCATION`].
struct Guard;

static TRIPPED: AtomicUsize = AtomicUsize::new(0);

impl Guard {
    fn check(size: usize) {
        if size > MAX_ALLOCATION {
            // Only the first thread reports; the report itself must not allocate.
            if TRIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
                report_case_on_stderr(size);
            }
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the guard only reads sizes.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Guard::check(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Guard::check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Guard::check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

// ---------------------------------------------------------------------------------------------
// Seed inputs, built once
// ---------------------------------------------------------------------------------------------

fn write(case: &Case, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = case.dir.join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create a case folder");
    }
    std::fs::write(&path, bytes).expect("write a case file");
    path
}

/// A scratch folder for building the seeds.
fn seed_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("difftune-fuzz-seeds-{}/{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names and shapes of [`safetensors_seed`]'s tensors.
const SEED_SHAPES: [(&str, &[usize]); 8] = [
    ("a.weight", &[3, 4]),
    ("a.bias", &[4]),
    ("b.table", &[2, 3]),
    ("c.bytes", &[5]),
    ("d.half", &[2, 2]),
    ("e.f16", &[3]),
    ("f.f64", &[2, 1]),
    ("g.scalar", &[]),
];

/// Tensors of every dtype, as a safetensors file.
fn safetensors_seed() -> &'static Vec<u8> {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        let f = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s).unwrap();
        let tensors = [
            ("a.weight", f((0..12).map(|i| i as f32).collect(), &[3, 4])),
            ("a.bias", f(vec![0.5; 4], &[4])),
            (
                "b.table",
                Tensor::from_vec(vec![1i64, -2, 3, 4, 5, 6], &[2, 3]).unwrap(),
            ),
            (
                "c.bytes",
                Tensor::from_vec(vec![1u8, 2, 3, 4, 5], &[5]).unwrap(),
            ),
            (
                "d.half",
                f(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])
                    .to_dtype(DType::BF16)
                    .unwrap(),
            ),
            (
                "e.f16",
                f(vec![1.0, -1.0, 0.25], &[3]).to_dtype(DType::F16).unwrap(),
            ),
            ("f.f64", Tensor::from_vec(vec![1f64, 2.0], &[2, 1]).unwrap()),
            ("g.scalar", f(vec![7.0], &[])),
        ];
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let path = seed_dir("safetensors").join("seed.safetensors");
        safetensors::save(&path, &refs, Some(&meta)).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// Splits a safetensors file into its header JSON and its data.
fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Structure-aware safetensors mutations: the header JSON (dtypes, shapes, offsets, metadata,
/// keys), the length prefix, repeated keys in the text, the data; or plain byte mutations.
fn mutate_safetensors(case: &mut Case, seed: &[u8]) -> Vec<u8> {
    let (mut header, mut data) = split_safetensors(seed);
    if case.chance(0.15) {
        let mut bytes = seed.to_vec();
        mutate_bytes(case, &mut bytes);
        return bytes;
    }
    let names: Vec<String> = header.as_object().unwrap().keys().cloned().collect();
    let ops = 1 + case.below(3);
    for _ in 0..ops {
        let name = case.pick(&names).clone();
        let is_tensor = name != "__metadata__";
        match case.below(8) {
            0 if is_tensor => {
                let d = *case.pick(&[
                    "F32", "F64", "BF16", "F16", "U8", "I64", "I8", "BOOL", "F8_E4M3", "U64", "F4",
                    "C64", "Z",
                ]);
                if let Some(entry) = header.get_mut(&name).and_then(Value::as_object_mut) {
                    entry.insert("dtype".into(), Value::from(d));
                    case.note(format!("{name}.dtype = {d}"));
                }
            }
            1 if is_tensor => {
                let Some(shape) = header
                    .get_mut(&name)
                    .and_then(|e| e.get_mut("shape"))
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                match case.rng.random_range(0..3) {
                    0 if !shape.is_empty() => {
                        let i = case.rng.random_range(0..shape.len());
                        shape[i] = Value::from(*case.pick(&difftune_tests::fuzz::INTERESTING));
                    }
                    1 => shape.push(Value::from(*case.pick(&difftune_tests::fuzz::INTERESTING))),
                    _ => {
                        shape.pop();
                    }
                }
                let shown = format!("{name}.shape = {shape:?}");
                case.note(shown);
            }
            2 | 3 if is_tensor => {
                let i = case.below(2);
                let fresh = interesting(case);
                let delta = case.rng.random_range(0..16u64);
                let random = case.chance(0.5);
                let Some(offset) = header
                    .get_mut(&name)
                    .and_then(|e| e.get_mut("data_offsets"))
                    .and_then(|o| o.get_mut(i))
                else {
                    continue;
                };
                let v = if random {
                    fresh
                } else {
                    offset
                        .as_u64()
                        .unwrap_or(0)
                        .wrapping_add(delta)
                        .wrapping_sub(8)
                };
                *offset = Value::from(v);
                case.note(format!("{name}.data_offsets[{i}] = {v}"));
            }
            4 => {
                mutate_json(case, &mut header);
            }
            5 => {
                let mut text = serde_json::to_vec(&header).unwrap();
                // A repeated key, in the text (serde_json would keep only one).
                if let Some(v) = header.get(&name) {
                    let dup = format!("\"{name}\":{v},");
                    text.splice(1..1, dup.into_bytes());
                    case.note(format!("repeat key {name} in the text"));
                }
                return assemble(case, text, &data);
            }
            6 => {
                mutate_bytes(case, &mut data);
                case.note("data mutated");
            }
            _ => {
                if let Some(map) = header.as_object_mut() {
                    map.remove(&name);
                    case.note(format!("remove {name}"));
                }
            }
        }
    }
    let text = serde_json::to_vec(&header).unwrap();
    assemble(case, text, &data)
}

/// The length prefix (sometimes wrong), the header text and the data.
fn assemble(case: &mut Case, header: Vec<u8>, data: &[u8]) -> Vec<u8> {
    let len = if case.chance(0.1) {
        let v = interesting(case);
        case.note(format!("header length = {v}"));
        v
    } else {
        header.len() as u64
    };
    [len.to_le_bytes().as_slice(), &header, data].concat()
}

/// A gzip stream of `bytes`.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A zlib stream of 16 MiB of zeros (16 KiB compressed), built once.
fn zlib_bomb() -> &'static Vec<u8> {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| zlib_zeros(16 << 20))
}

/// A gzip IDX images file that declares 4 values and holds 1.1 GiB of zeros after them: a bomb
/// that the guard catches when it is decompressed whole (built once, in about a second).
fn idx_bomb() -> &'static Vec<u8> {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4])
            .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1100 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    })
}

/// A small PNG of random size, colour type, depth and interlacing.
fn png_seed(case: &mut Case) -> Vec<u8> {
    use png::{BitDepth, ColorType};
    let (w, h) = (1 + case.below(9) as u32, 1 + case.below(9) as u32);
    let (color, depths): (ColorType, &[BitDepth]) = *case.pick(&[
        (
            ColorType::Grayscale,
            &[
                BitDepth::One,
                BitDepth::Two,
                BitDepth::Four,
                BitDepth::Eight,
                BitDepth::Sixteen,
            ][..],
        ),
        (
            ColorType::GrayscaleAlpha,
            &[BitDepth::Eight, BitDepth::Sixteen][..],
        ),
        (ColorType::Rgb, &[BitDepth::Eight, BitDepth::Sixteen][..]),
        (ColorType::Rgba, &[BitDepth::Eight, BitDepth::Sixteen][..]),
        (
            ColorType::Indexed,
            &[
                BitDepth::One,
                BitDepth::Two,
                BitDepth::Four,
                BitDepth::Eight,
            ][..],
        ),
    ]);
    let depth = *case.pick(depths);
    let samples = match color {
        ColorType::Grayscale | ColorType::Indexed => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
    };
    let bits = samples * depth as usize;
    let row = (w as usize * bits).div_ceil(8);
    let data: Vec<u8> = (0..row * h as usize).map(|_| case.rng.random()).collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == ColorType::Indexed {
            let entries = 1usize << (depth as usize).min(8);
            let palette: Vec<u8> = (0..3 * entries).map(|_| case.rng.random()).collect();
            enc.set_palette(palette);
            if case.chance(0.5) {
                enc.set_trns(vec![128u8; entries.min(4)]);
            }
        }
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
    }
    case.note(format!("seed: {w}x{h} {color:?} {depth:?}"));
    out
}

/// The JPEG seeds: baseline gray and RGB, 4:2:0, progressive, restart markers, CMYK.
const JPEG_SEEDS: [&[u8]; 6] = [
    include_bytes!("../../train/src/data/testdata/red-8x8.jpg"),
    include_bytes!("../fixtures/fuzz/gray-8x8.jpg"),
    include_bytes!("../fixtures/fuzz/rgb-420-16x12.jpg"),
    include_bytes!("../fixtures/fuzz/rgb-progressive-17x9.jpg"),
    include_bytes!("../fixtures/fuzz/rgb-restart-24x16.jpg"),
    include_bytes!("../fixtures/fuzz/cmyk-9x7.jpg"),
];

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

fn fuzz_safetensors(case: &mut Case) -> Result<()> {
    let bytes = mutate_safetensors(case, safetensors_seed());
    let path = write(case, "model.safetensors", &bytes);
    let file = SafeTensorsFile::open(&path)?;
    for name in file.names() {
        file.info(name)?;
        file.tensor(name)?;
    }
    safetensors::load(&path)?;
    // A model of the seed's tensors, loaded leniently then strictly.
    let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
    for (name, shape) in SEED_SHAPES {
        ps.constant(name, shape, 0.0)?;
    }
    ps.load(&path, "", false)?;
    ps.load(&path, "", true)?;
    Ok(())
}

fn classifier_seed() -> &'static Vec<u8> {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        let config = ClassifierConfig {
            widths: [2, 3, 4],
            features: 5,
            ..ClassifierConfig::new("fz", vec!["a".into(), "b".into()], [1, 8, 8])
        };
        let path = seed_dir("classifier").join("classifier.safetensors");
        Classifier::new(config, 0).unwrap().save(&path).unwrap();
        std::fs::read(path).unwrap()
    })
}

fn fuzz_classifier(case: &mut Case) -> Result<()> {
    let seed = classifier_seed();
    let bytes = if case.chance(0.6) {
        // The config in the metadata.
        let (mut header, data) = split_safetensors(seed);
        let key = models::classifier::CONFIG_KEY;
        let mut config: Value =
            serde_json::from_str(header["__metadata__"][key].as_str().unwrap()).unwrap();
        mutate_json(case, &mut config);
        let text = String::from_utf8_lossy(&json_text(case, &config)).into_owned();
        header["__metadata__"][key] = Value::from(text);
        let text = serde_json::to_vec(&header).unwrap();
        assemble(case, text, &data)
    } else {
        mutate_safetensors(case, seed)
    };
    let path = write(case, "classifier.safetensors", &bytes);
    Classifier::load(&path)?;
    Ok(())
}

/// A tiny trained-looking checkpoint: its files by name (relative to the run folder).
fn checkpoint_seed() -> &'static Vec<(String, Vec<u8>)> {
    static SEED: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEED.get_or_init(|| {
        let run = seed_dir("checkpoint");
        let config = RunConfig::from_json_str(
            r#"{"model": {"patch_size": 2, "hidden_size": 16, "depth": 1, "num_heads": 2},
                "diffusion": {"steps": 20}, "sample": {"sampler": "ddim5", "per_class": 2},
                "image_size": 4, "color": "gray"}"#,
        )
        .unwrap();
        config.validate().unwrap();
        let cfg = config.dit_config(1, 4, 2).unwrap();
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        Dit::new(&mut ps, cfg).unwrap();
        let state = CheckpointState {
            step: 1,
            loader_epoch: 0,
            loader_position: 2,
            other_loaders: vec![],
            classes: vec!["a".into(), "b".into()],
            image_shape: [1, 4, 4],
            config,
            checksums: vec![],
        };
        let dir = checkpoint::save(&run, state, |dir| {
            ps.save(dir.join(checkpoint::MODEL_FILE), None)?;
            Ema::new(&ps, 0.999).save(dir.join(checkpoint::EMA_FILE))?;
            AdamW::new(AdamWConfig::default()).save(dir.join(checkpoint::OPTIMIZER_FILE))
        })
        .unwrap();
        let mut files = vec![(
            "checkpoints/latest".to_string(),
            std::fs::read(run.join("checkpoints/latest")).unwrap(),
        )];
        let step = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in [
            checkpoint::STATE_FILE,
            checkpoint::MODEL_FILE,
            checkpoint::EMA_FILE,
            checkpoint::OPTIMIZER_FILE,
        ] {
            files.push((
                format!("checkpoints/{step}/{f}"),
                std::fs::read(dir.join(f)).unwrap(),
            ));
        }
        files
    })
}

/// FNV-1a 64, the checksum `state.json` records of each weight file.
fn fnv1a(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// `state.json` bytes holding the state JSON `text`, sealed by its checksum.
fn seal(text: &[u8]) -> Vec<u8> {
    checkpoint::seal_text(&String::from_utf8_lossy(text)).into_bytes()
}

fn fuzz_checkpoint(case: &mut Case) -> Result<()> {
    let mut files = checkpoint_seed().clone();
    let state_at = files
        .iter()
        .position(|(n, _)| n.ends_with("state.json"))
        .unwrap();
    let sealed: Value = serde_json::from_slice(&files[state_at].1).unwrap();
    let mut state = sealed["state"].clone();
    let mut state_text = None;
    match case.below(10) {
        0..=5 => {
            mutate_json(case, &mut state);
            let text = json_text(case, &state);
            // Mostly sealed again (what a hostile file would do), so the values reach the
            // parser; otherwise the checksum refuses them first.
            state_text = Some(if case.chance(0.9) { seal(&text) } else { text });
        }
        6..=7 => {
            // A weight file, with its checksum recomputed (else the checksum refuses it first).
            let i = 2 + case.below(3);
            let bytes = mutate_safetensors(case, &files[i].1);
            let file = files[i].0.rsplit('/').next().unwrap().to_string();
            case.note(format!("{file} mutated"));
            if case.chance(0.8) {
                for entry in state["checksums"].as_array_mut().unwrap() {
                    if entry[0] == file.as_str() {
                        entry[1] = Value::from(fnv1a(&bytes));
                    }
                }
                state_text = Some(seal(&serde_json::to_vec(&state).unwrap()));
            }
            files[i].1 = bytes;
        }
        8 => {
            let mut bytes = files[0].1.clone();
            mutate_bytes(case, &mut bytes);
            case.note("latest mutated");
            files[0].1 = bytes;
        }
        _ => {
            let i = case.below(files.len());
            case.note(format!("{} removed", files[i].0));
            files.remove(i);
        }
    }
    for (name, bytes) in &files {
        let bytes = match (&state_text, name.ends_with("state.json")) {
            (Some(text), true) => text,
            _ => bytes,
        };
        write(case, &format!("run/{name}"), bytes);
    }
    let run = case.dir.join("run");
    let weights = if case.chance(0.5) {
        Weights::Ema
    } else {
        Weights::Raw
    };
    let model = load_model(&run, weights)?;
    // What `difftune sample` builds next from the checkpoint.
    let process = model.state.config.diffusion_config()?;
    train::diffusion::create_diffusion(&model.state.config.sample.sampler, &process)?;
    // What `--resume` reads besides: the moving average and the optimizer state.
    Ema::new(&model.params, 0.999).load(model.dir.join(checkpoint::EMA_FILE))?;
    AdamW::new(AdamWConfig::default())
        .load(model.dir.join(checkpoint::OPTIMIZER_FILE), &model.params)?;
    Ok(())
}

/// `[n, h, w]` images and `[n]` labels as IDX bytes.
fn idx_bytes(case: &mut Case) -> (Vec<u8>, Vec<u8>) {
    let (n, h, w) = (1 + case.below(4), 1 + case.below(5), 1 + case.below(5));
    let mut images = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    images.extend((0..n * h * w).map(|_| case.rng.random::<u8>()));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    labels.extend((0..n).map(|_| case.below(3) as u8));
    (images, labels)
}

fn fuzz_idx(case: &mut Case) -> Result<()> {
    let (mut images, mut labels) = idx_bytes(case);
    let gz = case.chance(0.5);
    let target = if case.chance(0.7) {
        &mut images
    } else {
        &mut labels
    };
    match case.below(6) {
        0 => {
            let at = case.below(4);
            target[at] = case.rng.random();
            case.note(format!("magic byte {at} = {}", target[at]));
        }
        1 | 2 => {
            let dims = (target.len().min(16) - 4) / 4;
            let d = case.below(dims.max(1));
            let v = interesting(case) as u32;
            target[4 + 4 * d..8 + 4 * d].copy_from_slice(&v.to_be_bytes());
            case.note(format!("dimension {d} = {v}"));
        }
        3 => {
            let at = case.below(target.len());
            target.truncate(at);
            case.note(format!("truncated to {at} bytes"));
        }
        4 => {
            let n = 1 + case.below(32);
            target.extend(std::iter::repeat_n(0u8, n));
            case.note(format!("{n} trailing bytes"));
        }
        _ => mutate_bytes(case, target),
    }
    let (mut images, mut labels) = if gz {
        (gzip(&images), gzip(&labels))
    } else {
        (images, labels)
    };
    if gz {
        match case.below(5) {
            0 => {
                images = idx_bomb().clone();
                case.note("images: a gzip bomb");
            }
            1 => {
                mutate_bytes(case, &mut images);
                case.note("compressed images mutated");
            }
            2 => {
                mutate_bytes(case, &mut labels);
                case.note("compressed labels mutated");
            }
            _ => {}
        }
    }
    let ext = if gz { "gz" } else { "idx" };
    let images = write(case, &format!("images.{ext}"), &images);
    let labels = write(case, &format!("labels.{ext}"), &labels);
    let classes = vec!["a".to_string(), "b".into(), "c".into()];
    idx::read_images(&images)?;
    idx::read_labels(&labels)?;
    Dataset::from_idx(&images, &labels, classes)?;
    Ok(())
}

/// A valid 2 x 3 gray PNG, for the other class of the folders.
fn valid_png() -> &'static Vec<u8> {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| {
        let path = seed_dir("png").join("valid.png");
        train::data::folder::save_png(&path, 2, 3, 1, &[9; 6]).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// Decodes `path` as the folder loader would, in both colour modes, and loads the folder it is in
/// beside a valid image.
fn read_image(case: &mut Case, name: &str, bytes: &[u8]) -> Result<()> {
    let path = write(case, &format!("root/b/{name}"), bytes);
    write(case, "root/a/valid.png", valid_png());
    let size = 1 + case.below(12);
    let color = if case.chance(0.5) {
        ColorMode::Gray
    } else {
        ColorMode::Rgb
    };
    let image = decode(&path, color)?;
    let cropped = resize_and_crop(&image, size);
    assert_eq!(cropped.pixels.len(), size * size * color.channels());
    Dataset::from_folder(
        case.dir.join("root"),
        FolderOptions {
            size,
            color,
            exact: false,
        },
    )?;
    Ok(())
}

fn fuzz_png(case: &mut Case) -> Result<()> {
    let seed = png_seed(case);
    let bytes = if case.chance(0.85) {
        mutate_png(case, &seed, zlib_bomb())
    } else {
        let mut bytes = seed;
        mutate_bytes(case, &mut bytes);
        bytes
    };
    read_image(case, "image.png", &bytes)
}

fn fuzz_jpeg(case: &mut Case) -> Result<()> {
    let seed = JPEG_SEEDS[case.below(JPEG_SEEDS.len())];
    let bytes = if case.chance(0.85) {
        mutate_jpeg(case, seed)
    } else {
        let mut bytes = seed.to_vec();
        mutate_bytes(case, &mut bytes);
        bytes
    };
    read_image(case, "image.jpg", &bytes)
}

/// The configs of the repository, and the defaults.
fn config_seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seeds: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    seeds.push(RunConfig::default().to_json());
    // On the CPU, so that a valid config validates on a machine without CUDA too.
    for seed in &mut seeds {
        if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(seed) {
            map.insert("device".into(), Value::from("cpu"));
            map.insert("precision".into(), Value::from("f32"));
            *seed = Value::Object(map).to_string();
        }
    }
    seeds
}

fn fuzz_run_config(case: &mut Case) -> Result<()> {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(config_seeds);
    let seed: &String = case.pick(seeds);
    let mut value: Value = serde_json::from_str(seed).unwrap();
    mutate_json(case, &mut value);
    let text = json_text(case, &value);
    let config = if case.chance(0.3) {
        RunConfig::from_file(&write(case, "config.json", &text))?
    } else {
        RunConfig::from_json_str(&String::from_utf8_lossy(&text))?
    };
    config.validate()?;
    // What a run derives from a valid config before it reads any data.
    let process = config.diffusion_config()?;
    train::diffusion::create_diffusion(&config.sample.sampler, &process)?;
    config.lr_schedule()?;
    config.compute_dtype()?;
    let channels = if config.color == "gray" { 1 } else { 3 };
    let dit = config.dit_config(channels, config.image_size, 1 + case.below(20))?;
    dit.param_count();
    Ok(())
}

const TARGETS: [Target; 7] = [
    Target {
        name: "safetensors",
        default_iters: 1500,
        run: fuzz_safetensors,
    },
    Target {
        name: "classifier",
        default_iters: 400,
        run: fuzz_classifier,
    },
    Target {
        name: "checkpoint",
        default_iters: 400,
        run: fuzz_checkpoint,
    },
    Target {
        name: "idx",
        default_iters: 1500,
        run: fuzz_idx,
    },
    Target {
        name: "png",
        default_iters: 1500,
        run: fuzz_png,
    },
    Target {
        name: "jpeg",
        default_iters: 1500,
        run: fuzz_jpeg,
    },
    Target {
        name: "run-config",
        default_iters: 2000,
        run: fuzz_run_config,
    },
];

/// Lowers the limits for the run, unless the caller set them (see the header).
fn lower_limits() {
    for (var, value) in [
        ("DIFFTUNE_MAX_IMAGE_PIXELS", "1000000"),
        ("DIFFTUNE_MAX_MODEL_PARAMS", "2000000"),
        ("DIFFTUNE_MAX_DECOMPRESSED_BYTES", "16000000"),
        ("DIFFTUNE_MAX_DIFFUSION_STEPS", "20000"),
        ("DIFFTUNE_MAX_SAMPLES", "10000"),
    ] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().map(|v| {
        v.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a number"))
    })
}

#[test]
fn no_user_file_panics_aborts_or_hangs() {
    // Before any thread starts: the environment is then only read.
    lower_limits();
    quiet_panics();
    let seed = env_usize("DIFFTUNE_FUZZ_SEED").unwrap_or(0) as u64;
    let iters = env_usize("DIFFTUNE_FUZZ_ITERS");
    let from = env_usize("DIFFTUNE_FUZZ_FROM").unwrap_or(0);
    let skip: Vec<String> = std::env::var("DIFFTUNE_FUZZ_SKIP")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let only: Option<Vec<String>> = std::env::var("DIFFTUNE_FUZZ_TARGETS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let single = std::env::var("DIFFTUNE_FUZZ_CASE").ok();
    let work = std::env::temp_dir().join(format!("difftune-fuzz-{}", std::process::id()));
    let failures = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");

    if let Some(single) = single {
        let (name, index) = single
            .split_once(':')
            .expect("DIFFTUNE_FUZZ_CASE=target:index");
        let target = TARGETS
            .iter()
            .find(|t| t.name == name)
            .expect("a target name");
        let index: usize = index.parse().expect("a case index");
        // Run it here, not on a worker, to print its mutations.
        let dir = work.join("single");
        std::fs::create_dir_all(&dir).unwrap();
        let mut case = Case {
            rng: rand::SeedableRng::seed_from_u64(difftune_tests::fuzz::case_seed(
                seed, name, index,
            )),
            dir: dir.clone(),
            notes: vec![],
        };
        let result = (target.run)(&mut case);
        println!(
            "case {single}: {:?}\n  input under {}",
            case.notes,
            dir.display()
        );
        println!("  result: {result:?}");
        return;
    }

    let results: Vec<(&str, Stats, Vec<_>)> = std::thread::scope(|s| {
        let handles: Vec<_> = TARGETS
            .iter()
            .filter(|t| only.as_ref().is_none_or(|o| o.iter().any(|n| n == t.name)))
            .map(|t| {
                let (work, failures, skip) = (&work, &failures, &skip);
                s.spawn(move || {
                    let n = iters.unwrap_or(t.default_iters);
                    let cases = (from..n).filter(|i| !skip.contains(&format!("{}:{i}", t.name)));
                    let (stats, failed) = run_target(t, seed, cases, work, failures);
                    (t.name, stats, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("difftune-fuzz-seeds-{}", std::process::id())),
    );

    let mut report = String::new();
    let mut failed = 0;
    for (_, _, failures) in &results {
        for f in failures {
            failed += 1;
            let what = match &f.outcome {
                Outcome::Panicked(msg) => format!("panicked: {msg}"),
                Outcome::Hung => "hung (watchdog)".to_string(),
                other => format!("{other:?}"),
            };
            report.push_str(&format!(
                "{}:{} {what}\n  mutations: {:?}\n  input saved in {}\n",
                f.target,
                f.index,
                f.notes,
                f.saved.display()
            ));
        }
    }
    let rows: Vec<(&str, Stats)> = results.into_iter().map(|(n, s, _)| (n, s)).collect();
    println!("fuzz (seed {seed}):\n{}", table(&rows));
    if std::env::var_os("DIFFTUNE_FUZZ_VERBOSE").is_some() {
        for (name, s) in &rows {
            let mut reasons: Vec<_> = s.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            println!("{name}: the most frequent refusals");
            for (msg, n) in reasons.iter().take(12) {
                println!("  {n:5}  {msg}");
            }
        }
    }
    assert!(failed == 0, "{failed} fuzz cases failed:\n{report}");
    // Every target must both accept some inputs and refuse some: otherwise its mutations miss.
    for (name, s) in &rows {
        assert!(
            s.accepted > 0 && s.refused > 0,
            "{name}: {} accepted and {} refused of {}: the mutations do not reach the parser",
            s.accepted,
            s.refused,
            s.tried
        );
    }
}

/// A 1 x 900,000 image made 28 x 28: resized whole ("shorter side = 28") it was 28 x 25,200,000
/// pixels, 2.1 GB in RGB, before the crop; now only the crop is computed. Under the guard, the
/// old way aborts.
#[test]
fn a_thin_image_is_cropped_without_resizing_all_of_it() {
    let dir = seed_dir("thin");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let (w, h) = (1, 900_000);
    train::data::folder::save_png(&dir.join("a/thin.png"), w, h, 1, &vec![100; w * h]).unwrap();
    let options = FolderOptions {
        size: 28,
        color: ColorMode::Rgb,
        exact: false,
    };
    let data = Dataset::from_folder(&dir, options).unwrap();
    assert_eq!(data.shape(), [1, 3, 28, 28]);
    assert!(data.image(0).iter().all(|&v| v == 100));
    std::fs::remove_dir_all(dir).unwrap();
}

/// [`idx_bomb`] was decompressed whole before its size was checked (under the guard, that
/// aborts); now reading stops at the first byte past the declared values.
#[test]
fn a_gzip_bomb_is_read_no_further_than_its_header_says() {
    let dir = seed_dir("idx-bomb");
    let path = dir.join("bomb-images.gz");
    std::fs::write(&path, idx_bomb()).unwrap();
    let e = idx::read_images(&path).unwrap_err().to_string();
    assert!(
        e.contains("bomb-images.gz") && e.contains("trailing bytes"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The guard itself: a child process (this test, rerun with `DIFFTUNE_FUZZ_GUARD_CHILD`) makes
/// one allocation over the bound and must die, naming its case.
#[test]
fn the_guard_aborts_on_a_bomb_and_names_the_case() {
    if std::env::var_os("DIFFTUNE_FUZZ_GUARD_CHILD").is_some() {
        difftune_tests::fuzz::set_label("the guard's own test");
        let bomb: Vec<u8> = Vec::with_capacity(MAX_ALLOCATION + 1);
        std::hint::black_box(bomb);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_guard_aborts_on_a_bomb_and_names_the_case",
            "--nocapture",
        ])
        .env("DIFFTUNE_FUZZ_GUARD_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the child survived the bomb: {stderr}"
    );
    assert!(
        stderr.contains("a single allocation of 1073741825 bytes")
            && stderr.contains("the guard's own test"),
        "{stderr}"
    );
}
