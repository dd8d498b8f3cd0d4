//! The one harness of the CLI tests: run the built binary in a temporary directory, with
//! bytes on its stdin, and look at what it did.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde_json::{json, Value as Json};

/// The binary under test.
pub const MOONJAIL: &str = env!("CARGO_BIN_EXE_moonjail");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "moonjail-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write a test file");
        p
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one invocation did.
#[derive(Debug)]
pub struct Out {
    /// The exit status; None when the process died of a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout as exactly one JSON document.
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Stdout as JSON lines (a session's responses).
    pub fn json_lines(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a line is not JSON ({e}): {l:?} in {self:?}"))
            })
            .collect()
    }
}

/// Held while a child is started, and by a test that must close a pipe end for sure.
///
/// A child forked by another test thread holds a copy of every fd of this process until
/// it execs; a pipe's read end closed here may so stay open there for a moment, and a
/// write meant to find no reader would succeed. Every spawn in these tests takes the lock.
static SPAWN: Mutex<()> = Mutex::new(());

/// The spawn lock (see [`SPAWN`]).
pub fn spawn_lock() -> MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts `cmd` under the spawn lock.
pub fn spawn(cmd: &mut Command) -> Child {
    let _lock = spawn_lock();
    cmd.spawn().expect("start a child")
}

/// Runs `cmd` to its end, stdout and stderr captured (`Command::output`, under the spawn
/// lock).
pub fn output(cmd: &mut Command) -> Output {
    spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .wait_with_output()
        .expect("wait for a child")
}

/// A `moonjail` command in `dir`, stdin closed. With `--isolate` the binary serves as its
/// own worker.
pub fn command(dir: &(impl AsRef<Path> + ?Sized), args: &[&str]) -> Command {
    let mut cmd = Command::new(MOONJAIL);
    cmd.args(args)
        .current_dir(dir.as_ref())
        .env("MOONJAIL_WORKER", MOONJAIL)
        .stdin(Stdio::null());
    cmd
}

/// Runs `moonjail ARGS` in `dir`, with `stdin` written from a thread (so a large input
/// cannot deadlock against the output; a child that stops reading early is fine) or
/// with stdin closed.
pub fn moonjail(dir: &(impl AsRef<Path> + ?Sized), args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut cmd = command(dir, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("wait for moonjail");
    if let Some(w) = writer {
        w.join().expect("the stdin writer");
    }
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The address space `capped` gives moonjail: plenty for any command here, far less than
/// an unbounded read of `/dev/zero` wants.
pub const ADDRESS_SPACE_KIB: u64 = 256 * 1024;

/// Runs `moonjail ARGS` in `dir` under an address-space limit (`ulimit -v`), with `stdin`:
/// a read that does not stop at its limit ends in an allocation failure, not in a machine
/// out of memory.
pub fn capped(dir: &(impl AsRef<Path> + ?Sized), args: &[&str], stdin: Stdio) -> Out {
    let out = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"ulimit -v {ADDRESS_SPACE_KIB} && exec "$0" "$@""#
            ))
            .arg(MOONJAIL)
            .args(args)
            .current_dir(dir.as_ref())
            .stdin(stdin),
    );
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `moonjail ARGS` in a fresh directory, stdin closed.
pub fn mj(args: &[&str]) -> Out {
    let dir = TempDir::new();
    moonjail(&dir, args, None)
}

/// `moonjail run -e CODE EXTRA... --json`: the exit status and the document.
pub fn json_eval(code: &str, extra: &[&str]) -> (Option<i32>, Json) {
    let mut args = vec!["run", "-e", code];
    args.extend_from_slice(extra);
    args.push("--json");
    let out = mj(&args);
    let doc = out.json();
    (out.code, doc)
}

/// `moonjail session ARGS` with `lines` as requests: the responses and the exit status.
pub fn session(args: &[&str], lines: &[&str]) -> (Vec<Json>, Option<i32>) {
    let mut all = vec!["session"];
    all.extend_from_slice(args);
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let dir = TempDir::new();
    let out = moonjail(&dir, &all, Some(input.as_bytes()));
    (out.json_lines(), out.code)
}

/// A misused command: exit 2, nothing on stdout, the reason on stderr.
pub fn assert_misuse(out: &Out, fragment: &str) {
    assert_eq!(out.code, Some(2), "misuse must exit 2: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    assert!(
        out.stderr.contains(fragment),
        "stderr lacks {fragment:?}: {out:?}"
    );
}

/// The stable shape of the `--json` document.
pub fn assert_document_shape(doc: &Json) {
    let obj = doc.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "error",
            "ok",
            "output",
            "output_truncated",
            "result",
            "results",
            "stats"
        ],
        "{doc}"
    );
    assert!(doc["results"].is_array(), "{doc}");
    assert!(doc["ok"].is_boolean());
    assert!(doc["output"].is_string());
    let stats = doc["stats"].as_object().expect("stats is an object");
    let mut skeys: Vec<&str> = stats.keys().map(String::as_str).collect();
    skeys.sort();
    assert_eq!(
        skeys,
        [
            "instructions",
            "limits",
            "memory_bytes",
            "output_bytes",
            "peak_memory_bytes",
            "tool_calls",
            "wall_ms"
        ],
        "{doc}"
    );
    let limits = doc["stats"]["limits"]
        .as_object()
        .expect("stats.limits is an object");
    let mut lkeys: Vec<&str> = limits.keys().map(String::as_str).collect();
    lkeys.sort();
    assert_eq!(
        lkeys,
        [
            "instructions",
            "memory_bytes",
            "output_bytes",
            "tool_calls",
            "wall_ms"
        ],
        "{doc}"
    );
    assert!(
        doc["stats"]["wall_ms"].as_f64().is_some_and(|w| w >= 0.0),
        "{doc}"
    );
    assert!(doc["stats"]["memory_bytes"].is_u64(), "{doc}");
    assert!(
        doc["stats"]["instructions"].is_null() || doc["stats"]["instructions"].is_u64(),
        "{doc}"
    );
    if doc["ok"] == json!(true) {
        assert!(doc["error"].is_null(), "{doc}");
        assert_eq!(doc["results"][0], doc["result"], "{doc}");
    } else {
        assert!(doc["result"].is_null(), "{doc}");
        let err = doc["error"]
            .as_object()
            .expect("error is an object on failure");
        let mut ekeys: Vec<&str> = err.keys().map(String::as_str).collect();
        ekeys.sort();
        assert_eq!(
            ekeys,
            ["hint", "kind", "line", "message", "traceback", "value"],
            "{doc}"
        );
        assert!(err["traceback"].is_array(), "{doc}");
        let kinds = [
            "syntax",
            "runtime",
            "memory_limit",
            "instruction_limit",
            "timeout",
            "output_limit",
            "input",
            "result",
            "forbidden",
            "interrupted",
            "killed",
            "internal",
            "lint",
            "replay_divergence",
        ];
        assert!(
            kinds.contains(&doc["error"]["kind"].as_str().unwrap()),
            "{doc}"
        );
        assert!(doc["error"]["message"].is_string());
        assert!(
            doc["error"]["line"].is_null() || doc["error"]["line"].is_u64(),
            "{doc}"
        );
    }
}

/// The error kind of a document, or "(none)".
pub fn kind(doc: &Json) -> &str {
    doc["error"]["kind"].as_str().unwrap_or("(none)")
}

/// `doctor --json`, parsed, and its exit status.
pub fn doctor() -> (Option<i32>, Json) {
    let out = moonjail(".", &["doctor", "--json"], None);
    (out.code, out.json())
}

/// The flags that run a command in a worker process on this machine: `--isolate`, and
/// `--allow-missing` for the layers `moonjail doctor` finds unusable here.
pub fn isolate_flags() -> Vec<String> {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    FLAGS
        .get_or_init(|| {
            let (_, doc) = doctor();
            let missing: Vec<&str> = doc["layers"]
                .as_array()
                .expect("a layer list")
                .iter()
                .filter(|l| l["usable"] == Json::Bool(false))
                .map(|l| l["layer"].as_str().unwrap())
                .collect();
            let mut flags = vec!["--isolate".to_string()];
            if !missing.is_empty() {
                flags.extend(["--allow-missing".to_string(), missing.join(",")]);
            }
            flags
        })
        .clone()
}

/// `args` with the isolation flags appended when `isolate`.
pub fn with_isolation<'a>(args: &[&'a str], isolate: bool, flags: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    if isolate {
        all.extend(flags.iter().map(String::as_str));
    }
    all
}

/// A `--json` document without what varies between runs (timings, memory).
pub fn essence(mut doc: Json) -> Json {
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("stats");
    }
    if let Some(calls) = doc.get_mut("tool_calls").and_then(Json::as_array_mut) {
        for call in calls {
            if let Some(obj) = call.as_object_mut() {
                obj.remove("ms");
            }
        }
    }
    doc
}

/// The repository root (the README's commands run from there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
