//! Durable runs: the journal of a one-shot run, and its replay.
//!
//! A journal is JSON lines (the format: docs/JOURNAL.md): a `start` line with everything
//! a run is made of (the spec, the source, the input, the time and seed, the tool names
//! and quotas), then one line per thing the run got from the host and could not
//! recompute (each tool call with its arguments and answer, each module or file read
//! with its content), then an `end` line with the outcome document.
//!
//! **Recording** ([`Sandbox::run_journaled`]) runs the script with the sandbox's tools and
//! files behind taps that write each answer as it is given. The taps sit where the host
//! runs tools and reads files: in process, the calling thread; isolated, the supervisor
//! (a worker relays its requests there and never sees the journal).
//!
//! **Replay** ([`replay`]) rebuilds a sandbox from the `start` line whose tools answer
//! from the journal, in order, without calling anything, and whose files are the recorded
//! contents. A call the journal does not have next (another tool, other arguments, one
//! call too many or too few) stops the run with [`ErrorKind::ReplayDivergence`].
//!
//! The stop works through the run's interrupt check: the tap raises a flag, the check
//! (asked every [`STOP_PERIOD`]) stops the script, and the outcome's error is replaced
//! by the divergence (or, recording, the run ends in a [`JournalError`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::engine::Host;
use crate::error::{Error, ErrorKind};
use crate::host::{Determinism, FileSource, InterruptCheck};
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::sandbox::{RunOptions, Sandbox};
use crate::spec::Spec;
use crate::tools::{CallSizes, ToolContext, ToolError, ToolQuota, ToolRegistry, ToolTap};
use crate::worker::Isolation;

mod suspend;

pub use suspend::{Run, Suspension};

/// The newest journal format this moonjail writes and reads: the `v` of the first line.
///
/// Version 2 is a session journal whose requests carry their own `time` (a session whose
/// time was drawn): a reader of version 1 would ignore that field and restore those
/// requests at the session's timestamp, a silently different state, so it must refuse
/// the journal instead. Every other journal is still written as version 1, which every
/// version reads.
pub const JOURNAL_VERSION: u64 = 2;

/// The version of journals whose lines carry nothing version 1 lacks.
pub(crate) const JOURNAL_VERSION_1: u64 = 1;

/// The default size limit of a journal, written or read: 16 MiB.
pub const DEFAULT_JOURNAL_LIMIT: u64 = 16 << 20;

/// How often a journaled run looks at its stop flag (a journal that could not be
/// written, a replay that diverged).
const STOP_PERIOD: Duration = Duration::from_millis(5);

mod session;
pub use session::{
    fork_session, restore_session, JournaledSession, SessionJournal, SessionRequest,
    SessionResponse,
};

/// Why a journal could not be written or read. A replay that diverges is not one: it is
/// an outcome, error kind [`ErrorKind::ReplayDivergence`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Writing or reading the journal failed.
    #[error("journal: {0}")]
    Io(#[from] std::io::Error),
    /// The journal would have grown past its limit, and it has no `end` line. Either the
    /// run was stopped (the call that crossed it has run; none after it did), or, when
    /// `finished`, the run ended but its `end` line (the outcome, with its output and
    /// every tool call) did not fit.
    #[error(
        "journal: {} its journal would pass the journal limit of {limit} bytes (raise it \
         with --journal-limit / JournalWriter::limit)",
        if *finished {
            "the run finished, but its outcome was not recorded because"
        } else {
            "the run was stopped because"
        }
    )]
    Limit {
        /// The limit, in bytes.
        limit: u64,
        /// The run had ended: only its `end` line was refused.
        finished: bool,
    },
    /// The journal to replay is larger than the replay's limit.
    #[error("journal: the journal is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The journal to replay is not one: a line that is not JSON, a missing or unknown
    /// field, a version this moonjail does not know, no `end` line (a run that did not
    /// finish recording).
    #[error("journal: not a valid journal: line {line}: {reason}")]
    Corrupt {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal's limits allow more than the replay's ceiling
    /// ([`ReplayOptions::ceiling`]); the message names the limit.
    #[error("journal: {0}")]
    Ceiling(String),
    /// The recorded run cannot be rebuilt (its sandbox does not validate here).
    #[error("journal: the recorded sandbox cannot be built: {0}")]
    Config(#[from] crate::error::ConfigError),
    /// The journal cannot be resumed in this sandbox: it was recorded in another (its
    /// spec, tools, quota or host files differ; the message says which).
    #[error("journal: {0}")]
    Sandbox(String),
    /// [`Sandbox::resume`] of a journal whose run is not suspended: it ends with `end`
    /// (the run finished: replay it instead).
    #[error(
        "journal: the recorded run is not suspended at a deferred tool call (it finished: \
         replay it instead); only a journal that ends with a \"suspend\" line can be resumed"
    )]
    NotSuspended,
    /// The journal is of the other kind: a session journal given to [`replay`], or a run
    /// journal given to [`restore_session`].
    #[error("journal: this is a {found} journal; {hint}")]
    WrongKind {
        /// `"session"` or `"run"`.
        found: &'static str,
        /// What reads it.
        hint: &'static str,
    },
    /// A session journal cannot be restored into this sandbox (its spec, tools or files
    /// differ from the recorded session's), or a journaled session could not be opened.
    #[error("journal: {0}")]
    Session(String),
    /// Restoring a session gave another answer than the journal records: a replayed
    /// response that differs from the recorded one, or a replayed request that asked
    /// another tool call or file than the recorded one. Nothing was appended.
    #[error(
        "journal: request {request} ({op}): the restored session differs from its journal: \
         {what}"
    )]
    Mismatch {
        /// The request's number, from 1.
        request: u64,
        /// The request's op (and the function it calls): `call \`compute\``.
        op: String,
        /// What differs.
        what: String,
    },
    /// A journaled session whose journal failed (its limit, a write error) takes no more
    /// requests: its state may hold what the journal does not.
    #[error(
        "journal: the session is closed because its journal failed ({reason}); restore it \
         from its journal to go on"
    )]
    Closed {
        /// The journal's failure.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------------------

/// Where a journal goes: a file ([`JournalWriter::create`]) or any writer
/// ([`JournalWriter::new`]), with a size limit ([`DEFAULT_JOURNAL_LIMIT`] by default) and
/// a flush policy ([`Flush::Line`] by default).
///
/// Durability: every line is written whole; with [`Flush::Line`], each is flushed as it
/// is recorded (before the script gets the answer it records); a file is fsynced after
/// a `suspend` line, and after the `end` line unless [`JournalWriter::fsync_end`] says
/// not to.
pub struct JournalWriter {
    out: Box<dyn Write + Send>,
    /// The file, to fsync at the end.
    file: Option<std::fs::File>,
    /// Whether the `end` line is fsynced (a `suspend` line always is).
    sync_end: bool,
    limit: Option<u64>,
    written: u64,
    flush: Flush,
    /// Whole lines recorded but not yet written ([`Flush::Batch`]).
    pending: Vec<u8>,
    /// When `pending` was last written out.
    drained: Instant,
    /// The buffer the last tool line was built in, kept for the next.
    spare: Vec<u8>,
}

/// When a journal's lines reach its writer (for a file: the operating system, which
/// keeps them if the recording process dies). Either way the `end` and `suspend` lines
/// are written and fsynced at once, and nothing of a line is written before all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flush {
    /// Each line is written and flushed as it is recorded, before the script gets the
    /// answer it records: if the recording process dies, the journal holds every answer
    /// the script saw (a system call per tool call).
    #[default]
    Line,
    /// Lines are gathered in memory and written together once [`Flush::BATCH_BYTES`]
    /// have gathered, or with the first line recorded [`Flush::BATCH_AGE`] or more after
    /// the last write (so a line recorded before a long pause waits for the next one or
    /// the end), at a suspension and at the end. For runs that make many quick
    /// tool calls: if the recording process dies, the journal loses the lines gathered
    /// since the last write (it is still a prefix of whole lines).
    Batch,
}

impl Flush {
    /// How many bytes of lines [`Flush::Batch`] gathers before writing them.
    pub const BATCH_BYTES: usize = 64 << 10;
    /// How old [`Flush::Batch`]'s oldest unwritten line may be when the next is recorded.
    pub const BATCH_AGE: Duration = Duration::from_millis(100);
}

impl fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalWriter")
            .field("file", &self.file.is_some())
            .field("limit", &self.limit)
            .field("written", &self.written)
            .field("flush", &self.flush)
            .field("sync_end", &self.sync_end)
            .finish_non_exhaustive()
    }
}

impl JournalWriter {
    /// A journal written to `out` with `written` bytes in it already; `file` is fsynced
    /// at the end.
    pub(super) fn with(
        out: Box<dyn Write + Send>,
        file: Option<std::fs::File>,
        written: u64,
    ) -> JournalWriter {
        JournalWriter {
            out,
            file,
            sync_end: true,
            limit: Some(DEFAULT_JOURNAL_LIMIT),
            written,
            flush: Flush::Line,
            pending: Vec::new(),
            drained: Instant::now(),
            spare: Vec::new(),
        }
    }

    /// Creates (or truncates) the journal file at `path`.
    ///
    /// # Errors
    /// Why the file could not be created.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<JournalWriter> {
        let file = std::fs::File::create(path)?;
        let sync = file.try_clone()?;
        Ok(JournalWriter::with(Box::new(file), Some(sync), 0))
    }

    /// A journal written to `out` (never fsynced).
    pub fn new(out: impl Write + Send + 'static) -> JournalWriter {
        JournalWriter::with(Box::new(out), None, 0)
    }

    /// A journal continued at the end of `out` (a file opened for appending, with
    /// `written` bytes already; `sync` is the same file, fsynced at the end): what
    /// [`Sandbox::resume`] writes the rest of a run with. The limit counts the bytes
    /// already there.
    pub fn appending(out: std::fs::File, sync: std::fs::File, written: u64) -> JournalWriter {
        JournalWriter::with(Box::new(out), Some(sync), written)
    }

    /// Sets when lines are written ([`Flush::Line`] by default). A session journal
    /// ([`Sandbox::session_journaled`]) always writes each line as it is recorded.
    pub fn flush(mut self, flush: Flush) -> JournalWriter {
        self.flush = flush;
        self
    }

    /// Whether the `end` line of a finished run is fsynced (the default: the journal
    /// survives a crash of the machine once the run has returned). Without it the `end`
    /// line is still written and flushed before the run returns, so the journal survives
    /// the recording process dying, and the run saves the disk flush (about 0.4 ms on ext4 here,
    /// a fifth of a run making 1000 quick tool calls: BENCHMARKS.md §8). A `suspend` line
    /// is fsynced either way: the journal is then the run's only copy, waiting for its
    /// answer.
    pub fn fsync_end(mut self, yes: bool) -> JournalWriter {
        self.sync_end = yes;
        self
    }

    /// Sets the size limit in bytes (`None`: no limit). A run whose journal would pass
    /// it is stopped, and ends in [`JournalError::Limit`].
    pub fn limit(mut self, bytes: Option<u64>) -> JournalWriter {
        self.limit = bytes;
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes `line` and a newline, whole, then flushes; refuses a line past the limit.
    fn line(&mut self, line: &Json) -> Result<(), JournalError> {
        let mut text = line_text(line)?;
        text.push(b'\n');
        self.text(&text)
    }

    /// Records one whole line, `\n` included, as the flush policy says; refuses a line
    /// past the limit.
    fn text(&mut self, text: &[u8]) -> Result<(), JournalError> {
        self.room(text.len() as u64)?;
        match self.flush {
            Flush::Line => {
                self.out.write_all(text)?;
                self.out.flush()?;
            }
            Flush::Batch => {
                self.pending.extend_from_slice(text);
                if self.pending.len() >= Flush::BATCH_BYTES
                    || self.drained.elapsed() >= Flush::BATCH_AGE
                {
                    self.drain()?;
                }
            }
        }
        self.written += text.len() as u64;
        Ok(())
    }

    /// [`JournalWriter::text`], keeping `line`'s allocation for the next
    /// [`JournalWriter::buffer`].
    fn text_reusing(&mut self, line: Vec<u8>) -> Result<(), JournalError> {
        let written = self.text(&line);
        // Not a large answer's buffer: the run would hold it to its end.
        if line.capacity() <= Flush::BATCH_BYTES {
            self.spare = line;
        }
        written
    }

    /// An empty buffer to build a line in: the last one given to
    /// [`JournalWriter::text_reusing`], cleared.
    fn buffer(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.spare);
        line.clear();
        line
    }

    /// Writes the lines gathered so far, and flushes.
    fn drain(&mut self) -> Result<(), JournalError> {
        if !self.pending.is_empty() {
            let written = self.out.write_all(&self.pending);
            // Never twice, even in part: a failed write fails the journal (the run
            // stops), and a later drain must not repeat what did reach the file.
            self.pending.clear();
            written?;
        }
        self.out.flush()?;
        self.drained = Instant::now();
        Ok(())
    }

    /// Whether a line of `len` bytes still fits: the limit error if not.
    fn room(&self, len: u64) -> Result<(), JournalError> {
        match self.limit {
            Some(limit) if self.written.saturating_add(len) > limit => Err(JournalError::Limit {
                limit,
                finished: false,
            }),
            _ => Ok(()),
        }
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        self.drain()?;
        if let Some(file) = &self.file {
            file.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for JournalWriter {
    /// A journal left without its end (the run stopped by the journal's limit or a
    /// failure) keeps the whole lines gathered so far.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.drain();
        }
    }
}

/// A line's JSON text, `v` and `type` first (a reader can tell a journal by its first
/// bytes, `{"v":1,"type":"start"`), the other keys after them, sorted.
fn line_text(line: &Json) -> Result<Vec<u8>, JournalError> {
    let Json::Object(map) = line else {
        return Ok(serde_json::to_vec(line).map_err(std::io::Error::other)?);
    };
    let first = ["v", "type"];
    let keys = first
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .chain(
            map.keys()
                .map(String::as_str)
                .filter(|k| !first.contains(k)),
        );
    let mut text = vec![b'{'];
    for (i, key) in keys.enumerate() {
        if i > 0 {
            text.push(b',');
        }
        serde_json::to_writer(&mut text, key).map_err(std::io::Error::other)?;
        text.push(b':');
        serde_json::to_writer(&mut text, &map[key]).map_err(std::io::Error::other)?;
    }
    text.push(b'}');
    Ok(text)
}

/// A journal being written by one run, shared by its taps.
struct Recording {
    writer: Mutex<JournalWriter>,
    /// The first failure; once set, nothing more is written and the run is stopped.
    failed: Mutex<Option<JournalError>>,
    stop: Arc<AtomicBool>,
    steps: AtomicU64,
    /// A deferred call was recorded (a `suspend` line): the run is over, and any later
    /// call (only a worker that ignored the stop could make one) is refused.
    suspended: AtomicBool,
}

impl Recording {
    fn writer(&self) -> MutexGuard<'_, JournalWriter> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_failed(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn fail(&self, error: JournalError) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Writes `line`; on failure stops the run.
    fn record(&self, line: &Json) -> bool {
        if self.has_failed() {
            return false;
        }
        match self.writer().line(line) {
            Ok(()) => true,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }
}

const JOURNAL_FAILED: &str = "the run's journal cannot record this call (see the run's \
                              journal error): the run is stopped";

impl ToolTap for Recording {
    fn call(
        &self,
        name: &str,
        args: Vec<Json>,
        real: &mut dyn FnMut(Vec<Json>) -> Result<Json, ToolError>,
    ) -> Result<Json, ToolError> {
        self.call_sized(name, args, real, &mut CallSizes::default())
    }

    /// The call, its line written; the sizes of its arguments and answer are those of
    /// their text in the line (the same compact JSON the audit measures), so the run's
    /// audit does not serialise them again.
    fn call_sized(
        &self,
        name: &str,
        args: Vec<Json>,
        real: &mut dyn FnMut(Vec<Json>) -> Result<Json, ToolError>,
        sizes: &mut CallSizes,
    ) -> Result<Json, ToolError> {
        let mut refused = |args: &[Json], error: ToolError| {
            *sizes = CallSizes::of_args(args);
            Err(error)
        };
        if self.has_failed() {
            return refused(&args, ToolError::new(JOURNAL_FAILED));
        }
        if self.suspended.load(Ordering::SeqCst) {
            return refused(&args, ToolError::suspended());
        }
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        // The line is written as text, in one pass over the arguments and one over the
        // answer (no copy of either): `{"type":"tool","step":N,"name":…,"args":[…]`, then
        // `,"ok":true,"result":…}` or `,"ok":false,"error":…}`; a deferred call's
        // `{"type":"suspend",…,"args":[…]}` is the same head. The head is built in the
        // buffer of the line before (no allocation per call) under the writer's lock,
        // which the room check takes anyway; it is never held across the tool call.
        let mut writer = self.writer();
        let mut line = writer.buffer();
        line.extend_from_slice(b"{\"type\":\"tool\",\"step\":");
        let mut args_at = 0;
        let head = serde_json::to_writer(&mut line, &step)
            .and_then(|()| {
                line.extend_from_slice(b",\"name\":");
                serde_json::to_writer(&mut line, name)
            })
            .and_then(|()| {
                line.extend_from_slice(b",\"args\":");
                args_at = line.len();
                serde_json::to_writer(&mut line, &args)
            })
            .map_err(std::io::Error::other);
        // A call whose arguments alone would pass the limit is not made.
        let room = head
            .map_err(JournalError::from)
            .and_then(|()| writer.room(line.len() as u64 + 2));
        drop(writer);
        if let Err(e) = room {
            self.fail(e);
            return refused(&args, ToolError::new(JOURNAL_FAILED));
        }
        *sizes = CallSizes {
            args: (line.len() - args_at) as u64,
            result: None,
        };
        let result = real(args);
        if matches!(&result, Err(e) if e.suspend) {
            return self.suspend(line, result);
        }
        let tail = match &result {
            Ok(value) => {
                line.extend_from_slice(b",\"ok\":true,\"result\":");
                let at = line.len();
                serde_json::to_writer(&mut line, value).map(|()| {
                    sizes.result = Some((line.len() - at) as u64);
                })
            }
            Err(e) => {
                line.extend_from_slice(b",\"ok\":false,\"error\":");
                serde_json::to_writer(&mut line, e.message())
            }
        };
        line.extend_from_slice(b"}\n");
        let written = match tail {
            Err(e) => Err(std::io::Error::other(e).into()),
            Ok(()) => self.writer().text_reusing(line),
        };
        if let Err(e) = written {
            self.fail(e);
            return Err(ToolError::new(JOURNAL_FAILED));
        }
        result
    }
}

impl Recording {
    /// Writes the `suspend` line of a deferred call (`head` is its `tool` line up to the
    /// arguments) and makes it durable: the journal is what the run resumes from.
    fn suspend(&self, head: Vec<u8>, result: Result<Json, ToolError>) -> Result<Json, ToolError> {
        self.suspended.store(true, Ordering::SeqCst);
        let mut line = b"{\"type\":\"suspend\"".to_vec();
        line.extend_from_slice(&head[b"{\"type\":\"tool\"".len()..]);
        line.extend_from_slice(b"}\n");
        let written = {
            let mut writer = self.writer();
            writer.text(&line).and_then(|()| writer.sync())
        };
        if let Err(e) = written {
            self.fail(e);
            return Err(ToolError::new(JOURNAL_FAILED));
        }
        result
    }

    /// Writes the host's answer to the pending call `p` (a `tool` line of its step) and
    /// gives it to the script; the calls after it are numbered on from there.
    fn answer(&self, p: &Pending, answer: Result<Json, ToolError>) -> Result<Json, ToolError> {
        self.steps.store(p.step, Ordering::SeqCst);
        let line = match &answer {
            Ok(value) => json!({"type": "tool", "step": p.step, "name": p.name, "args": p.args,
                                "ok": true, "result": value}),
            Err(e) => json!({"type": "tool", "step": p.step, "name": p.name, "args": p.args,
                             "ok": false, "error": e.message()}),
        };
        if !self.record(&line) {
            return Err(ToolError::new(JOURNAL_FAILED));
        }
        answer
    }

    fn has_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }
}

/// Bytes in a journal: `{"sha256", "text"}` when they are UTF-8, `{"sha256", "hex"}`
/// otherwise.
fn blob(bytes: &[u8]) -> Json {
    let sha = hex(&Sha256::digest(bytes));
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({"sha256": sha, "text": text}),
        Err(_) => json!({"sha256": sha, "hex": hex(bytes)}),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The bytes of a [`blob`], checked against their hash.
fn unblob(v: &Json) -> Result<Vec<u8>, String> {
    let bytes = match (v.get("text"), v.get("hex")) {
        (Some(Json::String(t)), None) => t.as_bytes().to_vec(),
        (None, Some(Json::String(h))) => unhex(h).ok_or("\"hex\" is not hexadecimal")?,
        _ => return Err("expected {\"sha256\", \"text\" or \"hex\"}".into()),
    };
    let sha = v.get("sha256").and_then(Json::as_str).unwrap_or_default();
    if hex(&Sha256::digest(&bytes)) != sha {
        return Err("the content does not match its sha256".into());
    }
    Ok(bytes)
}

/// The host files of a journaled run: read through, each answer recorded.
struct RecordingFiles {
    inner: Arc<dyn FileSource>,
    recording: Arc<Recording>,
}

impl fmt::Debug for RecordingFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingFiles")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FileSource for RecordingFiles {
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        let answer = self.inner.module(name);
        let line = match &answer {
            Ok((source, path)) => json!({"type": "module", "name": name, "found": true,
                                         "path": path, "content": blob(source)}),
            Err(why) => json!({"type": "module", "name": name, "found": false, "error": why}),
        };
        if !self.recording.record(&line) {
            return Err(format!("\n\t{JOURNAL_FAILED}"));
        }
        answer
    }

    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        let answer = self.inner.read(path);
        let line = match &answer {
            None => json!({"type": "file", "path": path, "listed": false}),
            Some(Ok(bytes)) => json!({"type": "file", "path": path, "listed": true,
                                      "ok": true, "content": blob(bytes)}),
            Some(Err(why)) => json!({"type": "file", "path": path, "listed": true,
                                     "ok": false, "error": why}),
        };
        if !self.recording.record(&line) {
            return Some(Err(JOURNAL_FAILED.to_string()));
        }
        answer
    }

    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn has_modules(&self) -> bool {
        self.inner.has_modules()
    }

    fn has_readable(&self) -> bool {
        self.inner.has_readable()
    }
}

/// The host's own interrupt check, if any, or `stop`.
fn stop_check(host: &Host, stop: Arc<AtomicBool>) -> InterruptCheck {
    let own = host.interrupt.clone();
    let every = own
        .as_ref()
        .and_then(|c| c.every)
        .map_or(STOP_PERIOD, |e| e.min(STOP_PERIOD));
    InterruptCheck {
        every: Some(every),
        check: Arc::new(move || {
            stop.load(Ordering::SeqCst) || own.as_ref().is_some_and(|c| c.ask())
        }),
    }
}

/// A seed no earlier run is likely to have had.
fn drawn_seed() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as i64
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Sandbox {
    /// [`Sandbox::run_with`], recording the run into `journal` (see docs/JOURNAL.md), so
    /// that [`replay`] can re-execute it without calling a tool or reading a file.
    ///
    /// A sandbox that is not deterministic runs deterministically here, with the current
    /// time as `os.time()` and a fresh random seed, both written into the journal: the
    /// clock does not advance during the run, and `os.clock()` is 0 (see
    /// [`crate::SandboxBuilder::deterministic`]).
    ///
    /// ```
    /// use moonjail::{JournalWriter, ReplayOptions, Sandbox};
    /// use serde_json::json;
    ///
    /// let sandbox = Sandbox::builder().tool("dice.roll", |_| Ok(json!(4))).build()?;
    /// let journal = std::env::temp_dir().join(format!("doc-{}.jsonl", std::process::id()));
    /// let out = sandbox.run_journaled("return dice.roll() * 10", &json!(null),
    ///     &Default::default(), JournalWriter::create(&journal)?)?;
    /// assert_eq!(out.result.as_ref().unwrap(), &json!(40));
    /// // The replay answers dice.roll from the journal.
    /// let again = moonjail::replay(std::fs::File::open(&journal)?, &ReplayOptions::default())?;
    /// assert_eq!(again.result.unwrap(), json!(40));
    /// # std::fs::remove_file(&journal)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError`] when the journal could not be written or would pass its limit:
    /// the run is stopped at that point (the outcome is then not returned).
    pub fn run_journaled(
        &self,
        source: impl AsRef<[u8]>,
        input: &Json,
        opts: &RunOptions,
        journal: JournalWriter,
    ) -> Result<Outcome, JournalError> {
        let source = source.as_ref();
        let mut spec = self.spec().clone();
        let drawn = spec.deterministic.is_none();
        let determinism = *spec.deterministic.get_or_insert(Determinism {
            timestamp: now_unix(),
            seed: drawn_seed(),
        });
        let host = self.host();
        let tools = host.tools.as_deref();
        let start = json!({
            "v": JOURNAL_VERSION_1,
            "type": "start",
            "moonjail": env!("CARGO_PKG_VERSION"),
            "spec": serde_json::to_value(&spec).map_err(std::io::Error::other)?,
            "chunk_name": opts.chunk_name,
            "expression": opts.expression,
            "source": blob(source),
            "input": input,
            "determinism": {"timestamp": determinism.timestamp, "seed": determinism.seed,
                            "drawn": drawn},
            "tools": tools.map_or(Vec::new(), |t| t.names().collect::<Vec<_>>()),
            "deferred": tools.map_or(Vec::new(), |t| t.deferred().collect::<Vec<_>>()),
            "quota": tools.map(|t| t.quota().clone()),
            "files": {"modules": host.files.has_modules(), "readable": host.files.has_readable()},
        });
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(Recording {
            writer: Mutex::new(journal),
            failed: Mutex::new(None),
            stop: Arc::clone(&stop),
            steps: AtomicU64::new(0),
            suspended: AtomicBool::new(false),
        });
        recording.writer().line(&start)?;
        let journaled = Host {
            files: Arc::new(RecordingFiles {
                inner: Arc::clone(&host.files),
                recording: Arc::clone(&recording),
            }),
            tools: host
                .tools
                .as_ref()
                .map(|t| Arc::new(t.tapped(recording.clone()))),
            interrupt: Some(stop_check(host, stop)),
        };
        let outcome = self.variant(spec, journaled).run_with(source, input, opts);
        recording.finish(outcome)
    }
}

impl Recording {
    /// Ends the journal of a run that gave `outcome`: its `end` line, fsynced (unless the
    /// writer says otherwise: [`JournalWriter::fsync_end`]); nothing
    /// more for a run suspended at a deferred call (its `suspend` line is the last, and
    /// durable already).
    fn finish(&self, outcome: Outcome) -> Result<Outcome, JournalError> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = failed {
            return Err(e);
        }
        if self.has_suspended() {
            // Its `suspend` line is the last, and durable already. (An outcome that is not
            // `suspended` came from a worker that went on; the run's record says so.)
            return Ok(outcome);
        }
        let mut writer = self.writer();
        // Written straight from the outcome (no JSON value built), without the audit of
        // the tool calls: the `tool` lines before it are that record, whole (a run may
        // make a thousand calls; writing them twice was most of what journaling cost).
        let mut end = b"{\"type\":\"end\",\"outcome\":".to_vec();
        serde_json::to_writer(&mut end, &outcome.doc().without_tool_calls())
            .map_err(std::io::Error::other)?;
        end.extend_from_slice(b"}\n");
        writer.text(&end).map_err(|e| match e {
            JournalError::Limit { limit, .. } => JournalError::Limit {
                limit,
                finished: true,
            },
            e => e,
        })?;
        if writer.sync_end {
            writer.sync()?;
        } else {
            writer.drain()?;
        }
        Ok(outcome)
    }
}

// ---------------------------------------------------------------------------------------
// Reading and replaying.
// ---------------------------------------------------------------------------------------

/// How [`replay`] re-executes a journal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// Replay this source instead of the recorded one (another version of the script,
    /// to check it against a recorded run up to the first divergence). By default, the
    /// recorded source.
    pub source: Option<Vec<u8>>,
    /// Where the replay runs. By default, in process.
    pub isolation: Isolation,
    /// The largest journal read. By default, [`DEFAULT_JOURNAL_LIMIT`].
    pub limit: Option<u64>,
    /// The most a journal's limits may allow: a journal is replayed under the limits it
    /// records (so that it ends as it did), and those are the journal's claim, which may
    /// be anything (no timeout, no memory limit); one over the ceiling is refused
    /// ([`JournalError::Ceiling`]). `None` replays under whatever the journal records,
    /// for journals from a trusted source. By default, [`REPLAY_CEILING`].
    pub ceiling: Option<Limits>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            source: None,
            isolation: Isolation::InProcess,
            limit: Some(DEFAULT_JOURNAL_LIMIT),
            ceiling: Some(REPLAY_CEILING),
        }
    }
}

impl ReplayOptions {
    /// Replays `source` instead of the recorded source.
    pub fn source(mut self, source: impl Into<Vec<u8>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Replays in `isolation`.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Reads journals up to `bytes` (`None`: no limit).
    pub fn limit(mut self, bytes: Option<u64>) -> Self {
        self.limit = bytes;
        self
    }

    /// Refuses journals whose limits allow more than `ceiling` (`None`: replays under
    /// whatever limits the journal records).
    pub fn ceiling(mut self, ceiling: Option<Limits>) -> Self {
        self.ceiling = ceiling;
        self
    }
}

/// The default [`ReplayOptions::ceiling`]: well above the default limits (what most
/// journals record), so that a recorded production run replays as it is; bounded, so
/// that a crafted journal (no timeout, no memory limit, `while true do end`) cannot hold
/// the replaying machine for more than a minute or a gigabyte.
pub const REPLAY_CEILING: Limits = Limits {
    memory_bytes: Some(1 << 30),
    timeout: Some(Duration::from_secs(60)),
    instructions: None,
    output_bytes: Some(DEFAULT_JOURNAL_LIMIT as usize),
    output_overflow: crate::OutputOverflow::Fail,
    source_bytes: Some(DEFAULT_JOURNAL_LIMIT as usize),
    result_depth: Limits::MAX_RESULT_DEPTH,
    result_bytes: Some(DEFAULT_JOURNAL_LIMIT as usize),
};

/// The first limit of `recorded` that allows more than `ceiling`: its name (as the CLI
/// spells the flag) and both values. `None` (no limit) is more than any value.
fn over_ceiling(recorded: &Limits, ceiling: &Limits) -> Option<String> {
    fn over<T: PartialOrd>(recorded: Option<T>, ceiling: Option<T>) -> bool {
        match (recorded, ceiling) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(r), Some(c)) => r > c,
        }
    }
    let size = |v: Option<usize>| v.map_or("none".to_string(), |b| format!("{b} bytes"));
    let time = |v: Option<Duration>| v.map_or("none".to_string(), |t| format!("{t:?}"));
    let count = |v: Option<u64>| v.map_or("none".to_string(), |n| n.to_string());
    let sizes = [
        ("memory", recorded.memory_bytes, ceiling.memory_bytes),
        ("output-limit", recorded.output_bytes, ceiling.output_bytes),
        ("source-limit", recorded.source_bytes, ceiling.source_bytes),
        ("result-limit", recorded.result_bytes, ceiling.result_bytes),
    ];
    let depth = |l: &Limits| Some(l.result_depth as u64);
    let counts = [
        ("instructions", recorded.instructions, ceiling.instructions),
        ("result-depth", depth(recorded), depth(ceiling)),
    ];
    let found = if over(recorded.timeout, ceiling.timeout) {
        ("timeout", time(recorded.timeout), time(ceiling.timeout))
    } else if let Some((name, r, c)) = sizes.into_iter().find(|&(_, r, c)| over(r, c)) {
        (name, size(r), size(c))
    } else if let Some((name, r, c)) = counts.into_iter().find(|&(_, r, c)| over(r, c)) {
        (name, count(r), count(c))
    } else {
        return None;
    };
    let (name, recorded, ceiling) = found;
    Some(format!(
        "the journal's {name} limit ({recorded}) is over the replay's ceiling ({ceiling}); \
         if you trust where the journal comes from, replay it under its own limits \
         (--trust-limits; ReplayOptions::ceiling)"
    ))
}

/// One recorded tool call.
#[derive(Debug, Clone)]
struct ToolEvent {
    name: String,
    args: Vec<Json>,
    result: Result<Json, String>,
}

/// A recorded module or file read's answer.
#[derive(Debug, Clone)]
enum FileEvent {
    Module(Result<(Vec<u8>, String), String>),
    File(Option<Result<Vec<u8>, String>>),
}

/// A journal, read and checked.
#[derive(Debug)]
pub struct Journal {
    /// The recorded sandbox: spec, tools (deferred ones among them), quota, host files.
    recorded: Header,
    chunk_name: String,
    expression: bool,
    source: Vec<u8>,
    input: Json,
    calls: Vec<ToolEvent>,
    /// Keyed by `module:NAME` and `file:PATH`; the first answer of each.
    files: BTreeMap<String, FileEvent>,
    /// The deferred call the run is suspended at: the journal's last line, unanswered.
    pending: Option<Pending>,
    /// `null` for a suspended run.
    end: Json,
}

/// The host's answer to a deferred call: the tool's result, or its error.
pub(crate) type Answer = Result<Json, ToolError>;

/// The deferred call a suspended run stopped at (a journal's last `suspend` line).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Pending {
    /// The step (tool call number) of the call, counting from 1.
    pub step: u64,
    /// The tool's name.
    pub name: String,
    /// The arguments the script gave.
    pub args: Vec<Json>,
}

fn corrupt(line: usize, reason: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        line,
        reason: reason.into(),
    }
}

fn field<'a>(v: &'a Json, key: &str, line: usize) -> Result<&'a Json, JournalError> {
    v.get(key)
        .ok_or_else(|| corrupt(line, format!("no \"{key}\" field")))
}

fn string(v: &Json, key: &str, line: usize) -> Result<String, JournalError> {
    field(v, key, line)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| corrupt(line, format!("\"{key}\" is not a string")))
}

fn boolean(v: &Json, key: &str, line: usize) -> Result<bool, JournalError> {
    field(v, key, line)?
        .as_bool()
        .ok_or_else(|| corrupt(line, format!("\"{key}\" is not a boolean")))
}

/// What the first line of a run journal (`start`) and of a session journal (`session`)
/// both hold: the version, the spec with its determinism, the tools and the files.
/// What a journal recorded of the sandbox it ran in: what its replay builds, and what
/// [`Header::check`] holds a resume or a restore to.
#[derive(Debug)]
pub(super) struct Header {
    /// The spec, with the recorded determinism.
    pub(super) spec: Spec,
    /// The time and seed were drawn for the journal (the sandbox was not deterministic).
    pub(super) drawn: bool,
    pub(super) tools: Vec<String>,
    pub(super) deferred: Vec<String>,
    pub(super) quota: Option<ToolQuota>,
    pub(super) has_modules: bool,
    pub(super) has_readable: bool,
}

/// A list of names under `key` (absent: none, when `optional`).
fn names(v: &Json, key: &str, n: usize, optional: bool) -> Result<Vec<String>, JournalError> {
    let not_names = || corrupt(n, format!("\"{key}\" is not a list of names"));
    match v.get(key) {
        None if optional => Ok(Vec::new()),
        None => Err(corrupt(n, format!("no \"{key}\" field"))),
        Some(Json::Array(names)) => names
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_names),
        Some(_) => Err(not_names()),
    }
}

impl Header {
    /// Reads the header of first line `start` (line `n`), its `type` already checked.
    pub(super) fn read(start: &Json, n: usize) -> Result<Header, JournalError> {
        match start.get("v").and_then(Json::as_u64) {
            Some(JOURNAL_VERSION_1..=JOURNAL_VERSION) => {}
            Some(v) => {
                return Err(corrupt(
                    n,
                    format!(
                        "journal version {v}; this moonjail reads versions \
                         {JOURNAL_VERSION_1} to {JOURNAL_VERSION}"
                    ),
                ))
            }
            None => return Err(corrupt(n, "no journal version \"v\"")),
        }
        let mut spec: Spec = serde_json::from_value(field(start, "spec", n)?.clone())
            .map_err(|e| corrupt(n, format!("\"spec\": {e}")))?;
        let det = field(start, "determinism", n)?;
        let number = |k: &str| {
            det.get(k)
                .and_then(Json::as_i64)
                .ok_or_else(|| corrupt(n, format!("\"determinism\" has no integer \"{k}\"")))
        };
        spec.deterministic = Some(Determinism {
            timestamp: number("timestamp")?,
            seed: number("seed")?,
        });
        let quota = match start.get("quota") {
            None | Some(Json::Null) => None,
            Some(q) => Some(
                serde_json::from_value(q.clone())
                    .map_err(|e| corrupt(n, format!("\"quota\": {e}")))?,
            ),
        };
        let files = field(start, "files", n)?;
        Ok(Header {
            spec,
            drawn: boolean(det, "drawn", n)?,
            tools: names(start, "tools", n, false)?,
            deferred: names(start, "deferred", n, true)?,
            quota,
            has_modules: boolean(files, "modules", n)?,
            has_readable: boolean(files, "readable", n)?,
        })
    }
}

impl Header {
    /// `Err(what differs)` unless `sandbox` has the recorded spec, tools (deferred ones
    /// included), quota and host-file settings: a journal is untrusted input, and what
    /// runs live after it must run under the host's own sandbox, not limits, tools or a
    /// quota the file names.
    pub(super) fn check(&self, sandbox: &Sandbox) -> Result<(), String> {
        let mut recorded = self.spec.clone();
        if self.drawn {
            recorded.deterministic = None;
        }
        if sandbox.spec() != &recorded {
            let a = serde_json::to_value(&recorded).unwrap_or_default();
            let b = serde_json::to_value(sandbox.spec()).unwrap_or_default();
            return Err(match session::difference(&a, &b, String::new()) {
                Some((path, a, b)) => {
                    format!("its spec differs at {path}: recorded {a}, this sandbox {b}")
                }
                None => "its spec differs".into(),
            });
        }
        let host = sandbox.host();
        let registry = host.tools.as_deref();
        let tools: Vec<String> =
            registry.map_or(Vec::new(), |t| t.names().map(str::to_string).collect());
        let deferred: Vec<String> =
            registry.map_or(Vec::new(), |t| t.deferred().map(str::to_string).collect());
        let differ = |what: &str, recorded: String, given: String| {
            Err(format!("{what}: recorded {recorded}, this sandbox {given}"))
        };
        if tools != self.tools {
            return differ("tools", format!("{:?}", self.tools), format!("{tools:?}"));
        }
        if deferred != self.deferred {
            return differ(
                "deferred tools",
                format!("{:?}", self.deferred),
                format!("{deferred:?}"),
            );
        }
        let quota = registry.map(|t| t.quota());
        // No tools: the quota is the registry's default or none, either way unused.
        if !tools.is_empty() && quota != self.quota.as_ref() {
            return differ(
                "tool quota",
                format!("{:?}", self.quota),
                format!("{quota:?}"),
            );
        }
        let files = (host.files.has_modules(), host.files.has_readable());
        if files != (self.has_modules, self.has_readable) {
            return differ(
                "host files (modules, readable)",
                format!("({}, {})", self.has_modules, self.has_readable),
                format!("({}, {})", files.0, files.1),
            );
        }
        Ok(())
    }
}

/// The bytes of a journal from `reader`, refused past `limit` (read no further).
pub(super) fn read_bounded(reader: impl Read, limit: Option<u64>) -> Result<Vec<u8>, JournalError> {
    let mut bytes = Vec::new();
    let max = limit.map_or(u64::MAX, |l| l.saturating_add(1));
    reader.take(max).read_to_end(&mut bytes)?;
    match limit {
        Some(limit) if bytes.len() as u64 > limit => Err(JournalError::TooLarge { limit }),
        _ => Ok(bytes),
    }
}

impl Journal {
    /// Reads a journal from `reader`, at most `limit` bytes (`None`: no limit).
    ///
    /// # Errors
    /// [`JournalError::Io`], [`JournalError::TooLarge`], and [`JournalError::Corrupt`]
    /// naming the line for anything that is not a complete journal of this version.
    pub fn read(reader: impl Read, limit: Option<u64>) -> Result<Journal, JournalError> {
        Journal::parse(&read_bounded(reader, limit)?)
    }

    /// Parses the bytes of a journal.
    ///
    /// # Errors
    /// As [`Journal::read`].
    pub fn parse(bytes: &[u8]) -> Result<Journal, JournalError> {
        let mut lines = bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.is_empty());
        let (n, first) = lines
            .next()
            .ok_or_else(|| corrupt(1, "the journal is empty"))?;
        let start: Json =
            serde_json::from_slice(first).map_err(|e| corrupt(n, format!("not JSON: {e}")))?;
        if start.get("type").and_then(Json::as_str) == Some("session") {
            return Err(session::SESSION_KIND);
        }
        if start.get("type").and_then(Json::as_str) != Some("start") {
            return Err(corrupt(n, "the first line is not a \"start\" line"));
        }
        let header = Header::read(&start, n)?;
        let source = unblob(field(&start, "source", n)?)
            .map_err(|e| corrupt(n, format!("\"source\": {e}")))?;
        let mut journal = Journal {
            recorded: header,
            chunk_name: string(&start, "chunk_name", n)?,
            expression: boolean(&start, "expression", n)?,
            source,
            input: field(&start, "input", n)?.clone(),
            calls: Vec::new(),
            files: BTreeMap::new(),
            pending: None,
            end: Json::Null,
        };
        let mut ended = false;
        for (n, text) in lines {
            if ended {
                return Err(corrupt(n, "a line after the \"end\" line"));
            }
            let v: Json =
                serde_json::from_slice(text).map_err(|e| corrupt(n, format!("not JSON: {e}")))?;
            let kind = v.get("type").and_then(Json::as_str);
            // A `suspend` line is answered by the next line: the `tool` line of its step.
            if let Some(p) = journal.pending.take() {
                let step = v.get("step").and_then(Json::as_u64);
                if kind != Some("tool") || step != Some(p.step) {
                    return Err(corrupt(
                        n,
                        format!(
                            "the \"suspend\" line of step {} is followed by something else \
                             than its answer (a \"tool\" line of that step)",
                            p.step
                        ),
                    ));
                }
                let answer = tool_event(&v, n)?;
                if answer.name != p.name || answer.args != p.args {
                    return Err(corrupt(
                        n,
                        format!("the answer of step {} names another call", p.step),
                    ));
                }
                journal.calls.push(answer);
                continue;
            }
            match kind {
                Some("suspend") => {
                    let args = match field(&v, "args", n)? {
                        Json::Array(a) => a.clone(),
                        _ => return Err(corrupt(n, "\"args\" is not a list")),
                    };
                    let step = field(&v, "step", n)?
                        .as_u64()
                        .ok_or_else(|| corrupt(n, "\"step\" is not a number"))?;
                    let next = journal.calls.len() as u64 + 1;
                    if step != next {
                        return Err(corrupt(
                            n,
                            format!(
                                "a \"suspend\" line of step {step} after {} tool calls",
                                next - 1
                            ),
                        ));
                    }
                    let name = string(&v, "name", n)?;
                    // Only a deferred tool suspends a run: a replay that stopped at
                    // another would end in a suspension its host did not see.
                    if !journal.recorded.deferred.contains(&name) {
                        return Err(corrupt(
                            n,
                            format!(
                                "a \"suspend\" line of `{name}`, a tool the \"start\" line \
                                 does not list as deferred"
                            ),
                        ));
                    }
                    journal.pending = Some(Pending { step, name, args });
                }
                Some("tool") => journal.calls.push(tool_event(&v, n)?),
                Some(kind @ ("module" | "file")) => {
                    let (key, event) = file_event(&v, kind, n)?;
                    journal.files.entry(key).or_insert(event);
                }
                Some("end") => {
                    journal.end = field(&v, "outcome", n)?.clone();
                    ended = true;
                }
                Some(other) => return Err(corrupt(n, format!("unknown line type {other:?}"))),
                None => return Err(corrupt(n, "no \"type\" field")),
            }
        }
        if !ended && journal.pending.is_none() {
            return Err(corrupt(
                bytes.split(|b| *b == b'\n').count(),
                "the journal has no \"end\" line (truncated, or the recording run did not finish)",
            ));
        }
        Ok(journal)
    }

    /// The recorded spec (with the determinism the run had).
    pub fn spec(&self) -> &Spec {
        &self.recorded.spec
    }

    /// The recorded source.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// The recorded input.
    pub fn input(&self) -> &Json {
        &self.input
    }

    /// How many tool calls were recorded.
    pub fn tool_calls(&self) -> usize {
        self.calls.len()
    }

    /// The outcome document the recorded run ended with (`run --json`'s, without its
    /// `tool_calls` audit, which the `tool` lines hold; journals written before that
    /// change have it); `null` for a suspended run.
    pub fn recorded_outcome(&self) -> &Json {
        &self.end
    }

    /// The deferred call the recorded run is suspended at, when the journal ends with
    /// one (it is then resumed with [`crate::Sandbox::resume`], not only replayed).
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// The deferred tools of the recorded sandbox.
    pub fn deferred(&self) -> &[String] {
        &self.recorded.deferred
    }
}

/// A `module` or `file` line (`kind`): its key (`module:NAME`, `file:PATH`) and answer.
fn file_event(v: &Json, kind: &str, n: usize) -> Result<(String, FileEvent), JournalError> {
    let content =
        || unblob(field(v, "content", n)?).map_err(|e| corrupt(n, format!("\"content\": {e}")));
    if kind == "module" {
        let name = string(v, "name", n)?;
        let answer = if boolean(v, "found", n)? {
            Ok((content()?, string(v, "path", n)?))
        } else {
            Err(string(v, "error", n)?)
        };
        return Ok((format!("module:{name}"), FileEvent::Module(answer)));
    }
    let path = string(v, "path", n)?;
    let answer = if !boolean(v, "listed", n)? {
        None
    } else if boolean(v, "ok", n)? {
        Some(Ok(content()?))
    } else {
        Some(Err(string(v, "error", n)?))
    };
    Ok((format!("file:{path}"), FileEvent::File(answer)))
}

fn tool_event(v: &Json, n: usize) -> Result<ToolEvent, JournalError> {
    let args = match field(v, "args", n)? {
        Json::Array(a) => a.clone(),
        _ => return Err(corrupt(n, "\"args\" is not a list")),
    };
    let result = if boolean(v, "ok", n)? {
        Ok(field(v, "result", n)?.clone())
    } else {
        Err(string(v, "error", n)?)
    };
    Ok(ToolEvent {
        name: string(v, "name", n)?,
        args,
        result,
    })
}

/// Answers a replay's tool calls and file reads from the journal; resuming, the pending
/// call with the host's answer, and the calls after it with the live tools.
struct Player {
    calls: Mutex<VecDeque<ToolEvent>>,
    files: BTreeMap<String, FileEvent>,
    steps: AtomicU64,
    divergence: Mutex<Option<String>>,
    stop: Arc<AtomicBool>,
    /// The deferred call the journal ends with, and the host's answer to it (`None`: a
    /// replay, which suspends there again). Taken when the script reaches it.
    pending: Mutex<Option<(Pending, Option<Answer>)>>,
    /// Resuming: the tools and files of the rest of the run, recorded.
    live: Option<Live>,
}

/// What a resumed run calls after its pending call, and the journal it goes on writing.
struct Live {
    tools: Option<Arc<ToolRegistry>>,
    files: Arc<RecordingFiles>,
    recording: Arc<Recording>,
}

impl fmt::Debug for Player {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Player")
            .field("steps", &self.steps)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

const DIVERGED: &str = "the replay diverged from the journal: the run is stopped";

impl Player {
    fn new(
        journal: &Journal,
        answer: Option<Result<Json, ToolError>>,
        live: Option<Live>,
    ) -> Player {
        Player {
            calls: Mutex::new(journal.calls.iter().cloned().collect()),
            files: journal.files.clone(),
            steps: AtomicU64::new(0),
            divergence: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            pending: Mutex::new(journal.pending.clone().map(|p| (p, answer))),
            live,
        }
    }

    fn diverge(&self, message: String) -> ToolError {
        let mut d = self.divergence.lock().unwrap_or_else(|e| e.into_inner());
        d.get_or_insert(message);
        self.stop.store(true, Ordering::SeqCst);
        ToolError::new(DIVERGED)
    }

    fn diverged(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn answer(&self, ctx: &ToolContext, name: &str, args: Vec<Json>) -> Result<Json, ToolError> {
        if self.diverged() {
            return Err(ToolError::new(DIVERGED));
        }
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        let next = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(ev) = next {
            if ev.name != name || ev.args != args {
                return Err(self.diverge(format!(
                    "step {step} (tool call {step}): the journal records {}, the script asked \
                     {}",
                    call_text(&ev.name, &ev.args),
                    call_text(name, &args)
                )));
            }
            return ev.result.map_err(ToolError::new);
        }
        let pending = {
            let mut slot = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                // Taken only when the script makes the recorded call: a script that asks
                // something else has not reached it, and the journal stays resumable.
                Some((p, _)) if p.name == name && p.args == args => slot.take(),
                _ => slot.clone(),
            }
        };
        if let Some((p, answer)) = pending {
            if p.name != name || p.args != args {
                return Err(self.diverge(format!(
                    "step {step} (tool call {step}): the journal records the suspended call \
                     {}, the script asked {}",
                    call_text(&p.name, &p.args),
                    call_text(name, &args)
                )));
            }
            return match (answer, &self.live) {
                (Some(answer), Some(live)) => live.recording.answer(&p, answer),
                // A replay stops where the recorded run did.
                _ => Err(ToolError::suspended()),
            };
        }
        if let Some(live) = &self.live {
            // The resuming sandbox has the recorded tools (checked before the run): a
            // deferred one checks its arguments, then suspends the run again.
            return match &live.tools {
                Some(tools) => live
                    .recording
                    .call(name, args, &mut |args| tools.call(ctx, name, args)),
                None => Err(ToolError::new(format!(
                    "`{name}` cannot be called: the resuming sandbox has no tools"
                ))),
            };
        }
        let recorded = step - 1;
        Err(self.diverge(format!(
            "step {step} (tool call {step}): the script asked {}, but the journal records \
             only {recorded} tool calls",
            call_text(name, &args)
        )))
    }

    fn file(&self, key: &str, what: &str) -> Option<&FileEvent> {
        if self.diverged() {
            return None;
        }
        let found = self.files.get(key);
        if found.is_none() && !self.is_live() {
            let _ = self.diverge(format!(
                "{what}: the script read it, but the recorded run did not (the journal has \
                 no content for it)"
            ));
        }
        found
    }

    /// Whether the script reached the journal's pending call (or there is none).
    fn reached_pending(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Resuming, past the pending call: what the script asks now goes to the live host.
    fn is_live(&self) -> bool {
        self.live.is_some()
            && self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
    }

    /// What the replay's outcome error is instead, if it diverged: its message.
    ///
    /// A run that `stopped` (a deadline, the host, the memory limit, a dead worker) may
    /// end before the calls the journal has: that is its outcome, not a divergence.
    /// `failed`: the script's own error, when it ended with one (what made it end early).
    fn divergence(&self, journal: &Journal, stopped: bool, failed: Option<&str>) -> Option<String> {
        let divergence = self
            .divergence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if divergence.is_some() || stopped {
            return divergence;
        }
        let left = self.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
        let made = self.steps.load(Ordering::SeqCst);
        let ended = ended_after(made, failed);
        if left > 0 {
            let next = &journal.calls[made as usize];
            return Some(format!(
                "step {} (tool call {}): the journal records {}, but the script ended {ended}",
                made + 1,
                made + 1,
                call_text(&next.name, &next.args)
            ));
        }
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.as_ref().map(|(p, _)| {
            format!(
                "step {} (tool call {}): the journal records the suspended call {}, but the \
                 script ended {ended}",
                p.step,
                p.step,
                call_text(&p.name, &p.args)
            )
        })
    }
}

/// "after N tool calls", and the error that ended the script there, if one did: what a
/// reader of a divergence needs to see why the script stopped short of the journal.
pub(crate) fn ended_after(made: u64, failed: Option<&str>) -> String {
    let calls = if made == 1 { "call" } else { "calls" };
    match failed {
        Some(error) => {
            // The error may be long (up to the message limit): the divergence must fit too.
            let error = crate::error::cut_message(error.to_string(), 1024);
            format!("after {made} tool {calls}, with the error: {error}")
        }
        None => format!("after {made} tool {calls}"),
    }
}

/// `name(args…)` for a divergence message, cut to a readable length.
fn call_text(name: &str, args: &[Json]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let text = format!("`{name}({})`", args.join(", "));
    crate::error::cut_message(text, 512)
}

/// The host files of a replay: the recorded answers.
#[derive(Debug)]
struct ReplayFiles {
    player: Arc<Player>,
    has_modules: bool,
    has_readable: bool,
}

impl FileSource for ReplayFiles {
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        match self
            .player
            .file(&format!("module:{name}"), &format!("module `{name}`"))
        {
            Some(FileEvent::Module(answer)) => answer.clone(),
            _ => match &self.player.live {
                Some(live) if self.player.is_live() && !self.player.diverged() => {
                    live.files.module(name)
                }
                _ => Err(format!("\n\t{DIVERGED}")),
            },
        }
    }

    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        match self
            .player
            .file(&format!("file:{path}"), &format!("file `{path}`"))
        {
            Some(FileEvent::File(answer)) => answer.clone(),
            _ => match &self.player.live {
                Some(live) if self.player.is_live() && !self.player.diverged() => {
                    live.files.read(path)
                }
                _ => Some(Err(DIVERGED.to_string())),
            },
        }
    }

    fn has_modules(&self) -> bool {
        self.has_modules
    }

    fn has_readable(&self) -> bool {
        self.has_readable
    }
}

/// Re-executes a journal ([`Sandbox::run_journaled`]'s): the recorded source (or
/// [`ReplayOptions::source`]) with the recorded spec, input, time and seed; every tool
/// call is answered from the journal, in order, and no tool is called; every module and
/// file read is answered with the recorded content, and no file is opened.
///
/// The outcome is the recorded run's (but for wall times). When the script asks for
/// something the journal does not have next (another tool, other arguments, a call past
/// the last recorded one, a file the recorded run did not read) or makes fewer tool calls
/// than were recorded, the run is stopped and its error is
/// [`ErrorKind::ReplayDivergence`], whose message names the step, what was recorded and
/// what was asked.
///
/// # Errors
/// [`JournalError`] for a journal that cannot be read, is not a complete journal of this
/// version, or whose sandbox cannot be built here.
pub fn replay(reader: impl Read, options: &ReplayOptions) -> Result<Outcome, JournalError> {
    let journal = Journal::read(reader, options.limit)?;
    replay_journal(&journal, options)
}

/// [`replay`] of a journal already read.
///
/// # Errors
/// [`JournalError::Config`] when the recorded sandbox cannot be built here.
pub fn replay_journal(journal: &Journal, options: &ReplayOptions) -> Result<Outcome, JournalError> {
    if let Some(why) = options
        .ceiling
        .as_ref()
        .and_then(|c| over_ceiling(&journal.recorded.spec.limits, c))
    {
        return Err(JournalError::Ceiling(why));
    }
    let player = Arc::new(Player::new(journal, None, None));
    play(journal, player, options, None)
}

/// Whether an outcome of error `kind` was stopped from outside the script: by the
/// clock, the memory limit (memory figures may differ slightly), the host (an interrupt
/// check), a dead worker or moonjail itself; those are compared by nothing but the calls
/// the script made.
fn stopped(kind: Option<ErrorKind>) -> bool {
    matches!(
        kind,
        Some(
            ErrorKind::Timeout
                | ErrorKind::MemoryLimit
                | ErrorKind::Interrupted
                | ErrorKind::Killed
                | ErrorKind::Internal
        )
    )
}

/// Runs the journal's script with `player` answering its tool calls and file reads.
/// The run happens where `on` runs its scripts (sharing its workers), else where
/// `options` say.
fn play(
    journal: &Journal,
    player: Arc<Player>,
    options: &ReplayOptions,
    on: Option<&Sandbox>,
) -> Result<Outcome, JournalError> {
    let mut registry = ToolRegistry::new();
    for name in &journal.recorded.tools {
        let player = Arc::clone(&player);
        let label = name.clone();
        let answer = move |ctx: &ToolContext, args| player.answer(ctx, &label, args);
        if journal.recorded.deferred.contains(name) {
            registry.register_deferred_with(name, answer)?;
        } else {
            registry.register_with_context(name, answer)?;
        }
    }
    if let Some(quota) = &journal.recorded.quota {
        registry.set_quota(quota.clone());
    }
    let sandbox = Sandbox::builder()
        .spec(journal.recorded.spec.clone())
        .tools(registry)
        .isolation(match on {
            Some(_) => Isolation::InProcess,
            None => options.isolation.clone(),
        })
        .prepared_states(0)
        .build()?;
    let host = Host {
        files: Arc::new(ReplayFiles {
            player: Arc::clone(&player),
            has_modules: journal.recorded.has_modules,
            has_readable: journal.recorded.has_readable,
        }),
        tools: sandbox.host().tools.clone(),
        // The resuming sandbox's own interrupt check too: its host may stop the run.
        interrupt: Some(stop_check(
            on.map_or(sandbox.host(), |s| s.host()),
            Arc::clone(&player.stop),
        )),
    };
    let spec = sandbox.spec().clone();
    let sandbox = on.unwrap_or(&sandbox).variant(spec, host);
    let source = options.source.as_deref().unwrap_or(&journal.source);
    let opts = RunOptions::default()
        .chunk_name(&journal.chunk_name)
        .expression(journal.expression);
    let mut outcome = sandbox.run_with(source, &journal.input, &opts);
    // The recorded script, asked nothing else: the outcome must be the recorded one too
    // (wall times and memory figures aside). A resumed run's differs by construction.
    let stopped = stopped(outcome.error().map(|e| e.kind));
    let recorded_kind = ErrorKind::deserialize(&journal.end["error"]["kind"]).ok();
    let compare = options.source.is_none()
        && player.live.is_none()
        && !journal.end.is_null()
        && !stopped
        && !self::stopped(recorded_kind);
    let differs = || {
        let mut replayed = session::essence(outcome.to_json());
        let recorded = session::essence(journal.end.clone());
        // An `end` line leaves the audit of the calls out: the `tool` lines are that
        // record, and the replay checked each call against them already.
        if recorded.get("tool_calls").is_none() {
            if let Some(doc) = replayed.as_object_mut() {
                doc.remove("tool_calls");
            }
        }
        session::difference(&recorded, &replayed, String::new()).map(|(at, a, b)| {
            format!(
                "the replayed outcome differs from the recorded one at {at}: recorded {a}, \
                 replayed {b} (the run did not depend only on what the journal holds)"
            )
        })
    };
    let failed = outcome.error().map(|e| e.message.as_str());
    let message = match player.divergence(journal, stopped, failed) {
        Some(message) => Some(message),
        None if compare => differs(),
        None => None,
    };
    if let Some(message) = message {
        // Where the script was stopped (the call that diverged, or where the stop
        // check caught it after a `pcall`), when it was.
        let mut error = Error::new(ErrorKind::ReplayDivergence, message);
        if let Err(stopped) = &outcome.result {
            error.line = stopped.line;
            error.traceback = stopped.traceback.clone();
        }
        outcome.result = Err(error);
        outcome.more_results.clear();
        outcome.result_count = 0;
    }
    Ok(outcome)
}
