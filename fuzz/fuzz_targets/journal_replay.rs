//! Journals as untrusted input: real journals recorded in the harness (a plain run, a
//! run with tool calls, module and file reads, a run suspended at a deferred tool, the
//! same resumed once and twice, a session), mutated line by line and field by field, or
//! arbitrary bytes, go through `Journal::parse` / `SessionJournal::parse`, then replay,
//! resume or fork, in process, under small limits.
//!
//! Fails on a panic, a hang, an `internal` error kind, a replay that calls a real tool or
//! reads a real file before the journal's pending call, and a journal that allows more
//! than the harness's limits (those are skipped: a replay runs under the journal's own
//! limits, so the harness only replays journals that ask for no more than its own).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use moonjail::{
    CallOptions, Determinism, ErrorKind, HostFiles, Journal, JournalWriter, Outcome, Profile,
    ReplayOptions, RunOptions, Sandbox, SessionJournal, ToolError,
};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

/// What a real host file holds once the seeds are recorded: a replay that shows it read
/// the file, not the journal.
const MARKER: &str = "REAL-FILE-READ";

/// Real tool calls made since the harness started (the seeds' recording excluded).
static REAL_CALLS: AtomicU64 = AtomicU64::new(0);

const MEMORY: usize = 8 << 20;
const INSTRUCTIONS: u64 = 2_000_000;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

struct Harness {
    sandbox: Sandbox,
    sessions: Sandbox,
    seeds: Vec<Vec<u8>>,
}

/// The harness's sandbox: small limits, deterministic, counting tools, a module directory
/// and a readable file; for runs, a deferred tool too (a session cannot have one).
fn sandbox(dir: &std::path::Path, deferred: bool) -> Sandbox {
    let data = dir.join("data.txt");
    let builder = Sandbox::builder()
        .profile(Profile::Aos)
        .memory_limit(MEMORY)
        .timeout(Duration::from_millis(500))
        .instruction_limit(INSTRUCTIONS)
        .output_limit(64 << 10)
        .deterministic(Some(Determinism {
            timestamp: 1_764_250_000,
            seed: 42,
        }))
        .host_files(
            HostFiles::default()
                .modules_dir(dir)
                .allow_read(data.to_str().expect("a UTF-8 temp path")),
        )
        .tool("rng.next", |args| {
            let n = REAL_CALLS.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"n": n, "echo": args}))
        })
        .tool("svc.down", |_| {
            REAL_CALLS.fetch_add(1, Ordering::SeqCst);
            Err(ToolError::new("the service is down"))
        });
    match deferred {
        true => builder.defer_tool("ask.human"),
        false => builder,
    }
    .build()
    .expect("the harness's sandbox")
}

const PLAIN: &str = r#"
local t = {}
for i = 1, 10 do t[i] = i * i end
print("time", os.time(), "random", math.random(1, 1000))
return {sum = #t, s = string.rep("x", 3), r = math.random(), d = os.date("%Y")}
"#;

fn with_files(data: &str) -> String {
    format!(
        r#"
local a = rng.next("first")
local b = rng.next({{k = 2, list = {{1, 2.5, "x"}}}})
local ok, err = pcall(svc.down)
local g = require("greet")
local f = io.open({data:?})
local text = f and f:read("a")
if f then f:close() end
local m, merr = pcall(require, "missing")
print(a.n, b.n, err)
return {{a = a, b = b, err = err, g = g.word, text = text, m = m}}
"#
    )
}

const DEFERRED: &str = r#"
local a = rng.next(1)
local yes = ask.human({amount = 10, to = "alice"})
local b = rng.next(2)
local again = ask.human({amount = 20})
return {a = a, yes = yes, b = b, again = again}
"#;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("moonjail-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let data = dir.join("data.txt");
        std::fs::write(dir.join("greet.lua"), "return {word = 'hello'}").expect("a module");
        std::fs::write(&data, "line one\n").expect("a file");
        let sessions = sandbox(&dir, false);
        let sandbox = sandbox(&dir, true);
        let input = json!({"who": "me", "n": [1, 2, 3]});
        let record = |source: &str| {
            let buffer = Buffer::default();
            let out = sandbox
                .run_journaled(
                    source,
                    &input,
                    &RunOptions::default(),
                    JournalWriter::new(buffer.clone()),
                )
                .expect("a journal");
            let kind = out.error().map(|e| e.kind);
            assert!(
                kind.is_none() || kind == Some(ErrorKind::Suspended),
                "{:?}",
                out.result
            );
            buffer.bytes()
        };
        let resume = |journal: &[u8], answer| {
            let parsed = Journal::parse(journal).expect("a suspended journal");
            let buffer = Buffer(Arc::new(Mutex::new(journal.to_vec())));
            let writer = JournalWriter::new(buffer.clone());
            let out = sandbox
                .resume_journal(&parsed, answer, writer)
                .expect("a resume");
            assert_ne!(
                out.error().map(|e| e.kind),
                Some(ErrorKind::ReplayDivergence)
            );
            buffer.bytes()
        };
        let plain = record(PLAIN);
        let tools = record(&with_files(data.to_str().expect("UTF-8")));
        let suspended = record(DEFERRED);
        let resumed = resume(&suspended, Ok(json!(true)));
        let finished = resume(&resumed, Err(ToolError::new("refused")));
        let session = {
            let buffer = Buffer::default();
            let mut s = sessions
                .session_journaled(JournalWriter::new(buffer.clone()))
                .expect("a session");
            let none = CallOptions::default();
            let requests = [
                s.exec_with(
                    "n = 0 function bump(k) n = n + k return {n = n, r = rng.next(n)} end",
                    &json!(null),
                    &none,
                ),
                s.call_with("bump", &[json!(2)], &none),
                s.exec_with(
                    "word = require('greet').word return ...",
                    &json!({"x": 1}),
                    &none,
                ),
                s.eval("n * 10 + #word", &none),
            ];
            for out in requests {
                let out = out.expect("a request");
                assert!(out.is_ok(), "{:?}", out.result);
            }
            assert!(s
                .has_function("bump")
                .expect("has_function")
                .expect("a name"));
            // A request that fails, recorded as such.
            let failed = s
                .call_with("bump", &[json!("not a number")], &none)
                .expect("call");
            assert!(failed.error().is_some());
            drop(s);
            buffer.bytes()
        };
        let seeds = vec![plain, tools, suspended, resumed, finished, session];
        // The seeds as recorded replay without a divergence (else the harness tests
        // nothing past the first difference).
        for seed in &seeds[..5] {
            let journal = Journal::parse(seed).expect("a seed parses");
            let out = moonjail::replay_journal(&journal, &ReplayOptions::default())
                .expect("a seed replays");
            let kind = out.error().map(|e| e.kind);
            assert!(
                !matches!(
                    kind,
                    Some(ErrorKind::ReplayDivergence | ErrorKind::Internal)
                ),
                "{:?}",
                out.result
            );
        }
        let session = SessionJournal::parse(seeds[5].clone()).expect("a session seed");
        moonjail::fork_session(&sessions, &session, None, None).expect("a session restores");
        if let Some(out) = std::env::var_os("JOURNAL_SEEDS_OUT") {
            let out = std::path::PathBuf::from(out);
            let names = [
                "plain",
                "tools",
                "suspended",
                "resumed",
                "finished",
                "session",
            ];
            for (name, seed) in names.iter().zip(&seeds) {
                // Mode byte 0: the rest is a journal, as it is.
                let mut file = vec![0u8];
                file.extend_from_slice(seed);
                std::fs::write(out.join(name), file).expect("a seed file");
            }
        }
        // From now on a real read shows.
        std::fs::write(
            dir.join("greet.lua"),
            format!("return {{word = '{MARKER}'}}"),
        )
        .expect("a module");
        std::fs::write(&data, MARKER).expect("a file");
        REAL_CALLS.store(0, Ordering::SeqCst);
        Harness {
            sandbox,
            sessions,
            seeds,
        }
    })
}

/// A JSON value a field may be set to.
#[derive(Arbitrary, Debug)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Str(String),
    Extreme(u8),
    EmptyArray,
    EmptyObject,
    /// The field's value, wrapped in an array (a type change that keeps the content).
    Wrapped,
}

impl Value {
    fn json(&self, old: &Json) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::Big(u) => json!(u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Str(s) => json!(s),
            Value::Extreme(k) => match k % 10 {
                0 => json!(u64::MAX),
                1 => json!(i64::MIN),
                2 => json!(i64::MAX),
                3 => json!(-1),
                4 => json!(0),
                5 => json!(1),
                6 => json!(1e308),
                7 => json!(-0.0),
                8 => json!(u64::MAX as f64 * 10.0),
                _ => json!("x".repeat(300)),
            },
            Value::EmptyArray => json!([]),
            Value::EmptyObject => json!({}),
            Value::Wrapped => json!([old]),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Drop(u8),
    Duplicate(u8),
    Swap(u8, u8),
    /// Cut the journal at this fraction of its length (out of 65536).
    Truncate(u16),
    /// Set the field picked among every field of the line (any depth).
    Set {
        line: u8,
        field: u16,
        value: Value,
    },
    Remove {
        line: u8,
        field: u16,
    },
    /// An unknown field, at the top of a line or deeper.
    Add {
        line: u8,
        field: u16,
        name: String,
        value: Value,
    },
    /// The version of the first line.
    Version(Value),
    /// A line of another seed.
    Splice {
        line: u8,
        seed: u8,
        from: u8,
    },
    /// One byte of the journal.
    Byte {
        at: u32,
        byte: u8,
    },
}

/// The paths (keys and indexes) of every value in `v`, up to a few hundred.
fn paths(v: &Json, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if out.len() >= 400 {
        return;
    }
    let children: Vec<(String, &Json)> = match v {
        Json::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (k, child) in children {
        at.push(k);
        out.push(at.clone());
        paths(child, at, out);
        at.pop();
    }
}

fn get_mut<'a>(v: &'a mut Json, path: &[String]) -> Option<&'a mut Json> {
    path.iter().try_fold(v, |v, k| match v {
        Json::Object(m) => m.get_mut(k),
        Json::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn pick<T>(items: &[T], k: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[k % items.len()])
}

/// Edits one line's JSON (a line that is not JSON is left as it is).
fn edit(lines: &mut [Vec<u8>], line: u8, f: impl FnOnce(&mut Json)) {
    if lines.is_empty() {
        return;
    }
    let i = usize::from(line) % lines.len();
    if let Ok(mut v) = serde_json::from_slice::<Json>(&lines[i]) {
        f(&mut v);
        lines[i] = serde_json::to_vec(&v).expect("JSON");
    }
}

fn field_path(v: &Json, k: u16) -> Option<Vec<String>> {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    pick(&all, usize::from(k)).cloned()
}

fn apply(journal: &[u8], ops: &[Op], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = journal.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut cut: Option<u16> = None;
    let mut bytes: Vec<(u32, u8)> = Vec::new();
    for op in ops.iter().take(8) {
        let n = lines.len().max(1);
        match op {
            Op::Drop(i) if !lines.is_empty() => {
                lines.remove(usize::from(*i) % n);
            }
            Op::Duplicate(i) if !lines.is_empty() => {
                let i = usize::from(*i) % n;
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            Op::Swap(a, b) if !lines.is_empty() => {
                lines.swap(usize::from(*a) % n, usize::from(*b) % n)
            }
            Op::Truncate(at) => cut = Some(*at),
            Op::Set { line, field, value } => edit(&mut lines, *line, |v| {
                if let Some(path) = field_path(v, *field) {
                    if let Some(slot) = get_mut(v, &path) {
                        *slot = value.json(slot);
                    }
                }
            }),
            Op::Remove { line, field } => edit(&mut lines, *line, |v| {
                if let Some(path) = field_path(v, *field) {
                    let (last, parent) = path.split_last().expect("a path has a last key");
                    match get_mut(v, parent) {
                        Some(Json::Object(m)) => {
                            m.remove(last);
                        }
                        Some(Json::Array(a)) => {
                            if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                                a.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }),
            Op::Add {
                line,
                field,
                name,
                value,
            } => edit(&mut lines, *line, |v| {
                let target = match field_path(v, *field) {
                    Some(path) if *field % 2 == 1 => get_mut(v, &path),
                    _ => Some(v),
                };
                if let Some(Json::Object(m)) = target {
                    m.insert(name.clone(), value.json(&Json::Null));
                }
            }),
            Op::Version(value) => edit(&mut lines, 0, |v| {
                if let Some(m) = v.as_object_mut() {
                    let old = m.get("v").cloned().unwrap_or_default();
                    m.insert("v".into(), value.json(&old));
                }
            }),
            Op::Splice { line, seed, from } => {
                if let Some(other) = pick(seeds, usize::from(*seed)) {
                    let others: Vec<&[u8]> = other
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .collect();
                    if let Some(l) = pick(&others, usize::from(*from)) {
                        lines.insert(usize::from(*line) % (lines.len() + 1), l.to_vec());
                    }
                }
            }
            Op::Byte { at, byte } => bytes.push((*at, *byte)),
            _ => {}
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    for (at, byte) in bytes {
        if !out.is_empty() {
            let i = at as usize % out.len();
            out[i] = byte;
        }
    }
    if let Some(at) = cut {
        let len = out.len() * usize::from(at) / 65536;
        out.truncate(len);
    }
    out
}

/// Recomputes the `sha256` of every blob (`{"sha256", "text"}`) in lines that are JSON,
/// so that edited sources and contents get past the hash check.
fn fix_hashes(journal: &[u8]) -> Vec<u8> {
    fn fix(v: &mut Json) {
        match v {
            Json::Object(m) => {
                if let (Some(Json::String(text)), true) = (m.get("text"), m.contains_key("sha256"))
                {
                    let digest = Sha256::digest(text.as_bytes());
                    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    m.insert("sha256".into(), json!(hex));
                }
                m.values_mut().for_each(fix);
            }
            Json::Array(a) => a.iter_mut().for_each(fix),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(journal.len());
    for (i, line) in journal.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match serde_json::from_slice::<Json>(line) {
            Ok(mut v) => {
                fix(&mut v);
                out.extend(serde_json::to_vec(&v).expect("JSON"));
            }
            Err(_) => out.extend_from_slice(line),
        }
    }
    out
}

/// Whether a journal's limits are within the harness's (a replay runs under them).
fn bounded(limits: &moonjail::Limits) -> bool {
    limits.memory_bytes.is_some_and(|m| m <= MEMORY)
        && limits.instructions.is_some_and(|i| i <= INSTRUCTIONS)
}

fn check(what: &str, out: &Outcome) {
    if let Some(e) = out.error() {
        assert_ne!(
            e.kind,
            ErrorKind::Internal,
            "{what}: internal error: {}",
            e.message
        );
    }
    let doc = out.to_json().to_string();
    assert!(
        !doc.contains(MARKER),
        "{what}: the replay read a real file: {doc}"
    );
}

fn run_journal(h: &Harness, bytes: &[u8], answer: u8) {
    let before = REAL_CALLS.load(Ordering::SeqCst);
    if let Ok(journal) = Journal::parse(bytes) {
        if !bounded(&journal.spec().limits) {
            return;
        }
        if let Ok(out) = moonjail::replay_journal(&journal, &ReplayOptions::default()) {
            check("replay", &out);
        }
        assert_eq!(
            REAL_CALLS.load(Ordering::SeqCst),
            before,
            "a replay called a real tool"
        );
        if journal.pending().is_some() {
            let answer = match answer % 3 {
                0 => Ok(json!(true)),
                1 => Ok(json!({"nested": [1, {"a": null}]})),
                _ => Err(ToolError::new("refused")),
            };
            let writer = JournalWriter::new(std::io::sink()).limit(Some(1 << 20));
            if let Ok(out) = h.sandbox.resume_journal(&journal, answer, writer) {
                check("resume", &out);
                // Every live call comes after the pending one: at most the calls the
                // outcome audits beyond the journal's and the pending call.
                let live = REAL_CALLS.load(Ordering::SeqCst) - before;
                let after =
                    (out.tool_calls.len() as u64).saturating_sub(journal.tool_calls() as u64 + 1);
                assert!(
                    live <= after,
                    "a resume called {live} real tools, with {after} calls after the pending one"
                );
            }
        }
    }
    if let Ok(session) = SessionJournal::parse(bytes.to_vec()) {
        if !bounded(&session.spec().limits) {
            return;
        }
        let writer = JournalWriter::new(std::io::sink()).limit(Some(1 << 20));
        let record = (answer % 2 == 0).then_some(writer);
        let upto = (answer % 4 == 1).then_some(u64::from(answer) % (session.requests() + 1));
        match moonjail::fork_session(&h.sessions, &session, upto, record) {
            Ok(forked) => drop(forked),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains(MARKER), "a restore read a real file: {text}");
            }
        }
        assert_eq!(
            REAL_CALLS.load(Ordering::SeqCst),
            before,
            "a restore called a real tool"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let Ok(answer) = u.arbitrary::<u8>() else {
        return;
    };
    let journal = match mode % 4 {
        // The rest is a journal (what the seed files hold), its hashes fixed or not.
        0 | 1 => {
            let rest = u.take_rest();
            if mode % 4 == 1 {
                fix_hashes(rest)
            } else {
                rest.to_vec()
            }
        }
        // A seed, mutated.
        _ => {
            let Ok(seed) = u.arbitrary::<u8>() else {
                return;
            };
            let Ok(ops) = u.arbitrary::<Vec<Op>>() else {
                return;
            };
            let seed = &h.seeds[usize::from(seed) % h.seeds.len()];
            let mutated = apply(seed, &ops, &h.seeds);
            if mode % 4 == 3 {
                fix_hashes(&mutated)
            } else {
                mutated
            }
        }
    };
    run_journal(h, &journal, answer);
});
