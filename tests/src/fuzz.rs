//! The machinery of `tests/tests/fuzz.rs`: seeded cases run on a worker thread under a watchdog
//! and `catch_unwind`, per-target counts, and the mutators (bytes, JSON values, PNG chunks, JPEG
//! segments). See that file's header for what is fuzzed and how to run it.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// One fuzz case: its random stream, the folder its input files go to, and notes on what was
/// mutated (printed when the case fails).
pub struct Case {
    /// Seeded by (seed, target, index): the same case is the same input on every run.
    pub rng: StdRng,
    /// An empty-at-start folder for the case's files.
    pub dir: PathBuf,
    /// What the mutators did.
    pub notes: Vec<String>,
}

impl Case {
    /// Records a mutation.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a case's parser did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The input was read.
    Accepted,
    /// The input was refused with an error (the message).
    Refused(String),
    /// The parser panicked (the message and where).
    Panicked(String),
    /// The case ran past the watchdog.
    Hung,
}

/// A failed case, with what is needed to reproduce it.
#[derive(Debug)]
pub struct Failure {
    /// The target.
    pub target: &'static str,
    /// The case index (`DIFFTUNE_FUZZ_CASE=target:index` reruns it).
    pub index: usize,
    /// The mutations.
    pub notes: Vec<String>,
    /// Where its input files were saved.
    pub saved: PathBuf,
    /// Panic or hang.
    pub outcome: Outcome,
}

/// Per-target counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Cases run.
    pub tried: usize,
    /// Inputs read without error.
    pub accepted: usize,
    /// Inputs refused with an error.
    pub refused: usize,
    /// Panics that escaped the parser.
    pub panics: usize,
    /// Cases that ran past the watchdog.
    pub hangs: usize,
    /// Panics inside a third-party decoder that the parser caught and reported as an error.
    pub contained: usize,
    /// Wall time of the target.
    pub time: Duration,
    /// How often each refusal was given (the message with its digits and paths dropped).
    pub reasons: std::collections::BTreeMap<String, usize>,
}

/// A refusal's message with what varies between cases dropped: the folder of the case, digits.
fn reason(msg: &str, dir: &Path) -> String {
    let msg = msg.replace(&dir.display().to_string(), "");
    let mut out: String = msg.chars().filter(|c| !c.is_ascii_digit()).collect();
    out.truncate(out.char_indices().nth(90).map_or(out.len(), |(i, _)| i));
    out
}

/// A parser under test: `run` builds case `case`'s input under `case.dir` and parses it.
pub struct Target {
    /// Short name (`png`), used in reports and `DIFFTUNE_FUZZ_CASE`.
    pub name: &'static str,
    /// Cases per run when `DIFFTUNE_FUZZ_ITERS` is unset (sized for CI).
    pub default_iters: usize,
    /// Builds and parses one case; `Err` is a refusal.
    pub run: fn(&mut Case) -> tensor::Result<()>,
}

/// How long one case may run.
pub const WATCHDOG: Duration = Duration::from_secs(10);

thread_local! {
    /// The case this thread runs, for the allocation guard's report (fixed size: read while
    /// allocating, so it must not allocate).
    static LABEL: Cell<([u8; 400], usize)> = const { Cell::new(([0; 400], 0)) };
    /// The last panic's message on this thread, set by the hook of [`quiet_panics`].
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Panics seen on this thread (caught or not).
    static PANICS: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is a fuzz worker.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Names the case this thread runs, for [`report_case_on_stderr`].
pub fn set_label(text: &str) {
    let mut buf = [0u8; 400];
    let n = text.len().min(buf.len());
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    LABEL.with(|l| l.set((buf, n)));
}

/// Writes the current thread's case to stderr without allocating (for an allocation guard that
/// is about to abort the process).
pub fn report_case_on_stderr(bytes: usize) {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\nfuzz: FAILED: a single allocation of {bytes} bytes (an abort without the guard) in "
    );
    let _ = LABEL.try_with(|l| match l.get() {
        (_, 0) => {
            let _ = err.write_all(b"a test outside the fuzz cases");
        }
        (buf, n) => {
            let _ = err.write_all(&buf[..n]);
        }
    });
    let _ = err.write_all(b"\n");
}

/// Replaces the panic hook with one that, on the fuzz workers, records the message for the runner
/// instead of printing it (parsers that catch a decoder's panic would otherwise fill the log);
/// other threads keep the default hook.
pub fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_WORKER.with(Cell::get) {
            return default(info);
        }
        PANICS.with(|p| p.set(p.get() + 1));
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
    }));
}

/// splitmix64: mixes the seed, target and index into one case seed.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of case `index` of `target`.
pub fn case_seed(seed: u64, target: &str, index: usize) -> u64 {
    let name = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    mix(mix(seed ^ name).wrapping_add(index as u64))
}

/// Runs cases `indices` of `target` on a worker thread, each under `catch_unwind` and the
/// watchdog; failing inputs are copied under `failures`. Returns the counts and the failures.
pub fn run_target(
    target: &Target,
    seed: u64,
    indices: impl IntoIterator<Item = usize>,
    work: &Path,
    failures: &Path,
) -> (Stats, Vec<Failure>) {
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failed = Vec::new();
    // A worker that hangs is abandoned (it holds its folder); the next one gets a fresh folder.
    let mut generation = 0;
    let mut worker = Worker::spawn(
        target.run,
        work.join(format!("{}-{generation}", target.name)),
    );
    for index in indices {
        worker.send(target.name, seed, index);
        let (outcome, notes, contained, input) = match worker.results.recv_timeout(WATCHDOG) {
            Ok((outcome, notes, contained)) => (outcome, notes, contained, worker.dir.clone()),
            Err(_) => {
                let input = worker.dir.clone();
                generation += 1;
                worker = Worker::spawn(
                    target.run,
                    work.join(format!("{}-{generation}", target.name)),
                );
                (Outcome::Hung, vec![], 0, input)
            }
        };
        stats.tried += 1;
        stats.contained += contained;
        match outcome {
            Outcome::Accepted => stats.accepted += 1,
            Outcome::Refused(msg) => {
                stats.refused += 1;
                *stats.reasons.entry(reason(&msg, &input)).or_default() += 1;
            }
            Outcome::Panicked(_) | Outcome::Hung => {
                if outcome == Outcome::Hung {
                    stats.hangs += 1;
                } else {
                    stats.panics += 1;
                }
                let saved = failures.join(format!("{}-{index}", target.name));
                let _ = std::fs::remove_dir_all(&saved);
                let _ = copy_dir(&input, &saved);
                failed.push(Failure {
                    target: target.name,
                    index,
                    notes,
                    saved,
                    outcome,
                });
            }
        }
    }
    stats.time = start.elapsed();
    (stats, failed)
}

type Done = (Outcome, Vec<String>, usize);

struct Worker {
    cases: mpsc::Sender<(&'static str, u64, usize)>,
    results: mpsc::Receiver<Done>,
    dir: PathBuf,
}

impl Worker {
    fn spawn(run: fn(&mut Case) -> tensor::Result<()>, dir: PathBuf) -> Worker {
        let (cases, case_rx) = mpsc::channel::<(&'static str, u64, usize)>();
        let (done_tx, results) = mpsc::channel();
        let worker_dir = dir.clone();
        std::thread::Builder::new()
            .name(format!("fuzz {}", dir.display()))
            .spawn(move || {
                IN_WORKER.with(|w| w.set(true));
                for (name, seed, index) in case_rx {
                    let _ = std::fs::remove_dir_all(&worker_dir);
                    let _ = std::fs::create_dir_all(&worker_dir);
                    set_label(&format!(
                        "case {name}:{index} (seed {seed}; rerun it with \
                         DIFFTUNE_FUZZ_CASE={name}:{index}); its input is under {}",
                        worker_dir.display()
                    ));
                    let mut case = Case {
                        rng: StdRng::seed_from_u64(case_seed(seed, name, index)),
                        dir: worker_dir.clone(),
                        notes: Vec::new(),
                    };
                    let before = PANICS.with(Cell::get);
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut case)));
                    let panics = PANICS.with(Cell::get) - before;
                    let outcome = match result {
                        Ok(Ok(())) => Outcome::Accepted,
                        Ok(Err(e)) => Outcome::Refused(e.to_string()),
                        Err(_) => Outcome::Panicked(
                            LAST_PANIC
                                .with(|p| p.borrow_mut().take())
                                .unwrap_or_default(),
                        ),
                    };
                    let contained = if matches!(outcome, Outcome::Panicked(_)) {
                        panics - 1
                    } else {
                        panics
                    };
                    if done_tx.send((outcome, case.notes, contained)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a fuzz worker");
        Worker {
            cases,
            results,
            dir,
        }
    }

    fn send(&self, name: &'static str, seed: u64, index: usize) {
        self.cases
            .send((name, seed, index))
            .expect("the fuzz worker is alive");
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// The table of counts, one row per target.
pub fn table(rows: &[(&str, Stats)]) -> String {
    let mut out = String::from(
        "| parser | inputs | accepted | refused | panics | aborts | hangs | contained decoder panics | time |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | 0 | {} | {} | {:.1} s |",
            s.tried,
            s.accepted,
            s.refused,
            s.panics,
            s.hangs,
            s.contained,
            s.time.as_secs_f64()
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mutators
// ---------------------------------------------------------------------------------------------

/// Integers that find overflows and off-by-ones.
pub const INTERESTING: [u64; 18] = [
    0,
    1,
    2,
    3,
    7,
    255,
    256,
    65_535,
    65_536,
    200_000,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 53) + 1,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// An interesting integer, or a random one.
pub fn interesting(case: &mut Case) -> u64 {
    if case.chance(0.75) {
        *case.pick(&INTERESTING)
    } else {
        case.rng.random()
    }
}

/// 1 to 3 byte-level mutations: bit flips, interesting bytes and words, insertions, deletions,
/// duplications, truncation.
pub fn mutate_bytes(case: &mut Case, bytes: &mut Vec<u8>) {
    let ops = 1 + case.below(3);
    for _ in 0..ops {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { case.below(len) };
        match case.below(8) {
            0 if len > 0 => {
                let bit = case.below(8);
                bytes[at] ^= 1 << bit;
                case.note(format!("flip bit {bit} of byte {at}"));
            }
            1 if len > 0 => {
                let v = *case.pick(&[0u8, 1, 0x7f, 0x80, 0xfe, 0xff]);
                bytes[at] = v;
                case.note(format!("byte {at} = {v:#04x}"));
            }
            2 if len >= 4 => {
                let at = case.below(len - 3);
                let v = interesting(case) as u32;
                let word = if case.chance(0.5) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                bytes[at..at + 4].copy_from_slice(&word);
                case.note(format!("u32 at {at} = {v}"));
            }
            3 => {
                let n = 1 + case.below(16);
                let new: Vec<u8> = (0..n).map(|_| case.rng.random()).collect();
                bytes.splice(at..at, new);
                case.note(format!("insert {n} random bytes at {at}"));
            }
            4 if len > 0 => {
                let n = 1 + case.below((len - at).min(64));
                bytes.drain(at..at + n);
                case.note(format!("delete {n} bytes at {at}"));
            }
            5 if len > 0 => {
                let n = 1 + case.below((len - at).min(64));
                let chunk = bytes[at..at + n].to_vec();
                let to = case.below(len);
                bytes.splice(to..to, chunk);
                case.note(format!("copy {n} bytes from {at} to {to}"));
            }
            6 => {
                bytes.truncate(at);
                case.note(format!("truncate to {at} bytes"));
            }
            _ => {
                let n = 1 + case.below(64);
                let fill = *case.pick(&[0u8, 0xff]);
                bytes.extend(std::iter::repeat_n(fill, n));
                case.note(format!("append {n} bytes {fill:#04x}"));
            }
        }
    }
}

/// A JSON value meant to break a parser that trusts its input: huge, negative, fractional,
/// wrong-typed.
pub fn weird_json(case: &mut Case) -> Value {
    match case.below(14) {
        0..=3 => Value::from(interesting(case)),
        4 => Value::from(-((interesting(case) >> 1) as i64).max(1)),
        5 => Value::from(*case.pick(&[1e300, -1e300, 1.5, -0.0, 1e-320, 0.5, 2.5e9])),
        6 => Value::from(*case.pick(&["NaN", "inf", "-inf", "", "x", "1e999"])),
        7 => Value::from("é".repeat(1 + case.below(2000))),
        8 => Value::Null,
        9 => Value::Bool(case.chance(0.5)),
        10 => Value::Array(vec![]),
        11 => Value::Array(
            (0..1 + case.below(5))
                .map(|_| Value::from(interesting(case)))
                .collect(),
        ),
        12 => serde_json::json!({}),
        _ => serde_json::json!({"a": [1, {"b": null}]}),
    }
}

/// Every path (keys and indices) to a node of `v`, the root excluded.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// One step of a path into a JSON value.
#[derive(Clone, Debug)]
pub enum PathStep {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

fn node<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        PathStep::Key(k) => v.get_mut(k.as_str()),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

fn show(path: &[PathStep]) -> String {
    path.iter()
        .map(|s| match s {
            PathStep::Key(k) => k.clone(),
            PathStep::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// 1 to 3 structure-aware mutations of a JSON value: a node replaced by a weird value, a key
/// removed, an unknown key added, an array element removed or repeated.
pub fn mutate_json(case: &mut Case, v: &mut Value) {
    let ops = 1 + case.below(3);
    for _ in 0..ops {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        if all.is_empty() {
            *v = weird_json(case);
            case.note("root replaced");
            continue;
        }
        // Numbers most often: a size swapped for a huge, negative or fractional one keeps the
        // file well-typed, so it reaches the checks behind the parser.
        let numbers: Vec<&Vec<PathStep>> = all
            .iter()
            .filter(|p| node(v, p).is_some_and(|n| n.is_number()))
            .collect();
        if !numbers.is_empty() && case.chance(0.5) {
            let path = numbers[case.below(numbers.len())].clone();
            let new = match case.below(6) {
                0..=3 => Value::from(interesting(case)),
                4 => Value::from(-((interesting(case) >> 1) as i64).max(1)),
                _ => Value::from(*case.pick(&[1e300, -1.0, 0.5, 1e-320, 1e19, -0.0])),
            };
            case.note(format!("{} = {new}", show(&path)));
            if let Some(n) = node(v, &path) {
                *n = new;
            }
            continue;
        }
        let path = all[case.below(all.len())].clone();
        let (parent_path, last) = path.split_at(path.len() - 1);
        match case.below(10) {
            0..=5 => {
                let new = weird_json(case);
                case.note(format!("{} = {}", show(&path), short(&new)));
                if let Some(n) = node(v, &path) {
                    *n = new;
                }
            }
            6 => {
                case.note(format!("remove {}", show(&path)));
                match (node(v, parent_path), &last[0]) {
                    (Some(Value::Object(m)), PathStep::Key(k)) => {
                        m.remove(k);
                    }
                    (Some(Value::Array(a)), PathStep::Index(i)) => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
            7 => {
                let new = weird_json(case);
                case.note(format!("add unknown key under {}", show(parent_path)));
                if let Some(Value::Object(m)) = node(v, parent_path) {
                    m.insert("unknown_key".into(), new);
                } else if let Value::Object(m) = v {
                    m.insert("unknown_key".into(), new);
                }
            }
            8 => {
                case.note(format!("repeat {}", show(&path)));
                if let (Some(Value::Array(a)), PathStep::Index(i)) =
                    (node(v, parent_path), &last[0])
                {
                    let item = a[*i].clone();
                    a.insert(*i, item);
                }
            }
            _ => {
                // A number nudged by one: off-by-one sizes.
                if let Some(n) = node(v, &path) {
                    if let Some(x) = n.as_u64() {
                        let new = if case.chance(0.5) {
                            x.wrapping_add(1)
                        } else {
                            x.wrapping_sub(1)
                        };
                        case.note(format!("{} = {new}", show(&path)));
                        *n = Value::from(new);
                    }
                }
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head}... ({} chars)", s.len())
    } else {
        s
    }
}

/// Serialises a JSON value, then sometimes damages the text itself (a byte-level mutation).
pub fn json_text(case: &mut Case, v: &Value) -> Vec<u8> {
    let mut text = if case.chance(0.5) {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    }
    .expect("a JSON value serialises");
    if case.chance(0.15) {
        mutate_bytes(case, &mut text);
    }
    text
}

/// The CRC-32 of a PNG chunk (over its type and data).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// A PNG's chunks: (type, data). The signature is not included.
pub fn png_chunks(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
        let end = (at + 8 + len).min(bytes.len());
        chunks.push((kind, bytes[at + 8..end].to_vec()));
        at = end + 4;
    }
    chunks
}

/// A deflate (zlib) stream of `n` zero bytes: a decompression bomb's payload.
pub fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 16];
    for _ in 0..n / zeros.len() {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap()
}

/// Structure-aware PNG mutations: header dimensions, depth and colour type, chunk lengths, chunk
/// data, chunk order, inserted chunks (including a decompression bomb in IDAT), CRCs (fixed up
/// after a mutation most of the time, so that it reaches past the CRC check).
pub fn mutate_png(case: &mut Case, png: &[u8], bomb: &[u8]) -> Vec<u8> {
    let mut chunks = png_chunks(png);
    let mut bad_len: Option<(usize, u32)> = None;
    let ops = 1 + case.below(3);
    for _ in 0..ops {
        let i = case.below(chunks.len());
        match case.below(10) {
            0..=2 => {
                // IHDR: width, height, depth, colour type, compression, filter, interlace.
                let v = interesting(case) as u32;
                let (field, at, len) = *case.pick(&[
                    ("width", 0, 4),
                    ("height", 4, 4),
                    ("depth", 8, 1),
                    ("colour type", 9, 1),
                    ("interlace", 12, 1),
                ]);
                let bytes = v.to_be_bytes();
                if let Some(ihdr) = chunks[0].1.get_mut(at..at + len) {
                    ihdr.copy_from_slice(&bytes[4 - len..]);
                    case.note(format!("IHDR {field} = {:?}", &bytes[4 - len..]));
                }
            }
            3 => {
                let v = interesting(case) as u32;
                bad_len = Some((i, v));
                case.note(format!("length of chunk {i} = {v}"));
            }
            4 => {
                let kind = String::from_utf8_lossy(&chunks[i].0).into_owned();
                let mut data = std::mem::take(&mut chunks[i].1);
                mutate_bytes(case, &mut data);
                chunks[i].1 = data;
                case.note(format!("data of {kind} chunk {i} mutated"));
            }
            5 => {
                let j = case.below(chunks.len());
                chunks.swap(i, j);
                case.note(format!("swap chunks {i} and {j}"));
            }
            6 => {
                let c = chunks[i].clone();
                chunks.insert(i, c);
                case.note(format!("repeat chunk {i}"));
            }
            7 => {
                chunks.remove(i);
                case.note(format!("remove chunk {i}"));
                if chunks.is_empty() {
                    chunks.push((*b"IEND", vec![]));
                }
            }
            8 => {
                // The image data replaced by megabytes of zeros (a bomb for a small header).
                if let Some(idat) = chunks.iter_mut().find(|c| &c.0 == b"IDAT") {
                    idat.1 = bomb.to_vec();
                    case.note("IDAT = zlib bomb");
                }
            }
            _ => {
                let kind = *case.pick(&[
                    *b"PLTE", *b"tRNS", *b"iCCP", *b"zTXt", *b"acTL", *b"fcTL", *b"IEND", *b"sBIT",
                ]);
                let n = *case.pick(&[0usize, 1, 3, 12, 26, 769]);
                let mut data: Vec<u8> = (0..n).map(|_| case.rng.random()).collect();
                if kind == *b"zTXt" || kind == *b"iCCP" {
                    data = [b"k\0\0".as_slice(), bomb].concat();
                }
                chunks.insert(i.max(1), (kind, data));
                case.note(format!(
                    "insert {} chunk of {n} bytes",
                    String::from_utf8_lossy(&kind)
                ));
            }
        }
    }
    let fix_crc = case.chance(0.85);
    if !fix_crc {
        case.note("CRCs left as they fall");
    }
    let mut out = png[..8].to_vec();
    for (i, (kind, data)) in chunks.iter().enumerate() {
        let len = match bad_len {
            Some((j, v)) if j == i => v,
            _ => data.len() as u32,
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = if fix_crc {
            crc32(&[kind.as_slice(), data].concat())
        } else {
            case.rng.random()
        };
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// A JPEG's segments up to the scan: (marker, payload without the length); the rest (the
/// entropy-coded data and what follows) is returned apart.
pub fn jpeg_segments(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, Vec<u8>) {
    let mut segments = Vec::new();
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xff {
        let marker = bytes[at + 1];
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let end = (at + 2 + len).min(bytes.len());
        segments.push((marker, bytes[(at + 4).min(end)..end].to_vec()));
        at = end;
        if marker == 0xda {
            break;
        }
    }
    (segments, bytes[at.min(bytes.len())..].to_vec())
}

/// Structure-aware JPEG mutations: frame dimensions, component counts and sampling factors,
/// segment lengths and payloads (tables, scan headers), segment order, and the entropy-coded data.
pub fn mutate_jpeg(case: &mut Case, jpeg: &[u8]) -> Vec<u8> {
    let (mut segments, mut scan) = jpeg_segments(jpeg);
    let mut bad_len: Option<(usize, u16)> = None;
    let ops = 1 + case.below(3);
    for _ in 0..ops {
        let i = case.below(segments.len());
        let sof = segments
            .iter()
            .position(|(m, _)| matches!(m, 0xc0..=0xc2))
            .unwrap_or(0);
        match case.below(9) {
            0..=2 if segments[sof].1.len() >= 6 => {
                // SOF: precision, height, width, components.
                let v = interesting(case) as u16;
                let (field, at) = *case.pick(&[
                    ("height", 1),
                    ("width", 3),
                    ("components", 5),
                    ("precision", 0),
                ]);
                let seg = &mut segments[sof].1;
                if at == 1 || at == 3 {
                    seg[at..at + 2].copy_from_slice(&v.to_be_bytes());
                } else {
                    seg[at] = v as u8;
                }
                case.note(format!("SOF {field} = {v}"));
            }
            3 if segments[sof].1.len() >= 8 => {
                // A component's sampling factors or quantisation table.
                let comp = case.below(((segments[sof].1.len() - 6) / 3).max(1));
                let at = 6 + 3 * comp + case.below(2) + 1;
                let v: u8 = *case.pick(&[0x00, 0x11, 0x44, 0x41, 0x14, 0xff, 0x03, 0x22]);
                if at < segments[sof].1.len() {
                    segments[sof].1[at] = v;
                    case.note(format!("SOF component {comp} byte {at} = {v:#04x}"));
                }
            }
            4 => {
                let v = interesting(case) as u16;
                bad_len = Some((i, v));
                case.note(format!("length of segment {i} = {v}"));
            }
            5 => {
                let marker = segments[i].0;
                let mut data = std::mem::take(&mut segments[i].1);
                mutate_bytes(case, &mut data);
                segments[i].1 = data;
                case.note(format!("payload of segment {i} (FF{marker:02X}) mutated"));
            }
            6 => {
                let j = case.below(segments.len());
                segments.swap(i, j);
                case.note(format!("swap segments {i} and {j}"));
            }
            7 => {
                let s = segments[i].clone();
                segments.insert(i, s);
                case.note(format!("repeat segment {i}"));
            }
            _ => {
                mutate_bytes(case, &mut scan);
                case.note("entropy-coded data mutated");
            }
        }
    }
    let mut out = vec![0xff, 0xd8];
    for (i, (marker, data)) in segments.iter().enumerate() {
        let len = match bad_len {
            Some((j, v)) if j == i => v,
            _ => (data.len() + 2).min(u16::MAX as usize) as u16,
        };
        out.extend_from_slice(&[0xff, *marker]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&scan);
    out
}
