//! Suspension at a deferred tool call, and resumption from the journal.
//!
//! A deferred tool ([`crate::SandboxBuilder::defer_tool`]) stops the run where the script
//! calls it; a journaled run's journal then ends with a `suspend` line naming the call.
//! [`Sandbox::resume`] continues that run, in any process, later: it replays the journal
//! up to the pending call (every earlier tool call and file read answered from the
//! journal, nothing called, no file opened), gives the script the host's answer there,
//! and runs on live, appending to the same journal, to the run's end or its next deferred
//! call. Replaying re-executes the prefix, so every limit but wall time holds across the
//! whole run (the instructions and memory of the prefix are spent again); the time spent
//! suspended is not counted.

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::Value as Json;

use super::{
    play, Answer, Journal, JournalError, JournalWriter, Live, Pending, Player, Recording,
    RecordingFiles, ReplayOptions,
};
use crate::engine::Host;
use crate::error::{Error, ErrorKind};
use crate::outcome::Outcome;
use crate::sandbox::RunOptions;
use crate::sandbox::Sandbox;
use crate::tools::Park;
use crate::tools::ToolError;

impl Sandbox {
    /// Resumes the run suspended in the journal at `path` (a journal that ends with a
    /// `suspend` line: see [`crate::SandboxBuilder::defer_tool`]), with `answer` as the
    /// host's answer to its pending call: the script receives `Ok(value)` as the tool's
    /// return value, `Err(ToolError)` as the tool's error. The lines of the rest of the run
    /// are appended to the journal, which ends as a run's journal does (with `end`, or
    /// with the `suspend` line of the next deferred call, to resume again).
    ///
    /// The recorded spec is used (profile, limits, determinism, and the tool names and
    /// deferred tools, so the script sees the environment it was recorded in); this
    /// sandbox provides what the recording could not: the live tools for calls after the
    /// pending one, the host files for reads the journal does not have, and where the run
    /// happens (in process or isolated). A tool this sandbox does not have fails when
    /// called, as a tool error.
    ///
    /// The outcome is the one the run would have had, had the tool answered at once: its
    /// `tool_calls` and `stats` cover the whole run, its output is the whole output.
    ///
    /// ```
    /// use moonjail::{JournalWriter, ErrorKind, Sandbox};
    /// use serde_json::json;
    ///
    /// let sandbox = Sandbox::builder().defer_tool("ask.human").build()?;
    /// let path = std::env::temp_dir().join(format!("resume-doc-{}.jsonl", std::process::id()));
    /// let script = "local ok = ask.human('pay 10?') return ok and 'paid' or 'refused'";
    /// let out = sandbox.run_journaled(script, &json!(null), &Default::default(),
    ///     JournalWriter::create(&path)?)?;
    /// let error = out.result.unwrap_err();
    /// assert_eq!(error.kind, ErrorKind::Suspended);
    /// assert_eq!(error.value.unwrap()["args"], json!(["pay 10?"]));
    /// // Later, perhaps in another process: a person said yes.
    /// let out = sandbox.resume(&path, Ok(json!(true)))?;
    /// assert_eq!(out.result.unwrap(), json!("paid"));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError::NotSuspended`] when the journal's run is not suspended (it
    /// finished, or was cut short); [`JournalError`] as for [`crate::replay`] when the
    /// journal cannot be read or its sandbox built, and as for
    /// [`Sandbox::run_journaled`] when the journal cannot be written. A resumed run whose
    /// script no longer matches the journal (it asks for something else before the
    /// pending call) is an outcome of kind `replay_divergence`, and nothing is appended
    /// past the divergence.
    pub fn resume(
        &self,
        path: impl AsRef<Path>,
        answer: Result<Json, ToolError>,
    ) -> Result<Outcome, JournalError> {
        self.resume_with(path, answer, super::DEFAULT_JOURNAL_LIMIT.into())
    }

    /// [`Sandbox::resume`] with a journal size limit (`None`: none), for reading the
    /// journal and for the whole journal once appended to.
    ///
    /// # Errors
    /// As [`Sandbox::resume`].
    pub fn resume_with(
        &self,
        path: impl AsRef<Path>,
        answer: Result<Json, ToolError>,
        limit: Option<u64>,
    ) -> Result<Outcome, JournalError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path.as_ref())?;
        // One resume at a time: two approvers answering at once would each run the rest
        // of the run (its live tools twice) and interleave their lines. Held until the
        // file is closed, after the run.
        super::session::lock_file(&file)?;
        let journal = Journal::read(&mut file, limit)?;
        let written = file.seek(SeekFrom::End(0))?;
        let sync = file.try_clone()?;
        let writer = JournalWriter::appending(file, sync, written).limit(limit);
        self.resume_journal(&journal, answer, writer)
    }

    /// [`Sandbox::resume`] of a journal already read, the rest of the run written to
    /// `writer` (which continues the journal: its limit counts what it was created with
    /// as written, see [`JournalWriter::appending`]).
    ///
    /// # Errors
    /// As [`Sandbox::resume`].
    pub fn resume_journal(
        &self,
        journal: &Journal,
        answer: Result<Json, ToolError>,
        writer: JournalWriter,
    ) -> Result<Outcome, JournalError> {
        let Some(pending) = journal.pending() else {
            return Err(JournalError::NotSuspended);
        };
        // What runs live after the pending call runs under this sandbox's own spec, tools
        // and quota: a journal is a file anyone may have edited.
        journal.recorded.check(self).map_err(|what| {
            JournalError::Sandbox(format!(
                "the run cannot be resumed in this sandbox: {what} (resume it with the \
                 sandbox it was run with: the same flags)"
            ))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(Recording {
            writer: Mutex::new(writer),
            failed: Mutex::new(None),
            stop: Arc::clone(&stop),
            steps: AtomicU64::new(pending.step),
            suspended: AtomicBool::new(false),
        });
        let host = self.host();
        let live = Live {
            tools: host.tools.clone(),
            files: Arc::new(RecordingFiles {
                inner: Arc::clone(&host.files),
                recording: Arc::clone(&recording),
            }),
            recording: Arc::clone(&recording),
        };
        let mut player = Player::new(journal, Some(answer), Some(live));
        // One flag stops the run for both: a divergence and a journal that failed.
        player.stop = stop;
        let player = Arc::new(player);
        let outcome = play(
            journal,
            Arc::clone(&player),
            &ReplayOptions::default(),
            Some(self),
        )?;
        if !player.reached_pending() {
            // Diverged or stopped (the host's interrupt check, a deadline) before the
            // pending call: nothing was appended, and the journal stays resumable.
            return Ok(outcome);
        }
        recording.finish(outcome)
    }
}

/// A run started with [`Sandbox::start`]: finished, or waiting for the host's answer to a
/// deferred tool call.
#[derive(Debug)]
#[must_use = "a suspended run waits for its answer"]
// Made once per run and matched at once: boxing the outcome would only cost the callers.
#[allow(clippy::large_enum_variant)]
pub enum Run {
    /// The run ended: its outcome.
    Finished(Outcome),
    /// The script called a deferred tool; [`Suspension::resume`] answers it.
    Suspended(Suspension),
}

impl Run {
    /// The outcome of a finished run (`None` while it is suspended).
    pub fn finished(self) -> Option<Outcome> {
        match self {
            Run::Finished(outcome) => Some(outcome),
            Run::Suspended(_) => None,
        }
    }
}

/// A run waiting at a deferred tool call, held in memory: [`Suspension::resume`] gives
/// the script the answer and runs on. Dropped without an answer, the run ends there, as
/// suspended.
#[derive(Debug)]
pub struct Suspension {
    pending: Pending,
    inner: Held,
}

/// How a suspended run is held (one per suspension, never in a collection): the thread
/// that runs it, parked in the deferred call with its deadline's clock stopped. In
/// process that thread runs the VM; isolated it is the supervisor's, serving the worker's
/// call, and the worker (out of its pool's count while it waits) waits for the reply.
enum Held {
    Parked {
        answers: SyncSender<Option<Answer>>,
        events: Receiver<Event>,
        thread: Option<JoinHandle<()>>,
        /// The fork generation of the process whose thread waits (see [`in_a_fork`]).
        generation: u64,
    },
    /// Resumed or given up.
    Done,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::Parked { .. } => "Parked",
            Held::Done => "Done",
        })
    }
}

/// What the run's thread tells the host.
enum Event {
    Pending(Pending),
    Done(Box<Outcome>),
}

/// The deferred calls of a run started in process: each waits here for its answer.
struct Parker {
    events: Mutex<Sender<Event>>,
    answers: Mutex<Receiver<Option<Answer>>>,
}

impl Park for Parker {
    fn park(&self, step: u64, name: &str, args: &[Json]) -> Option<Result<Json, ToolError>> {
        let pending = Pending {
            step,
            name: name.to_string(),
            args: args.to_vec(),
        };
        let sent = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Event::Pending(pending));
        sent.ok()?;
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.recv().ok().flatten()
    }
}

impl Sandbox {
    /// Runs `source` as [`Sandbox::run_with`] does, but a call to a deferred tool
    /// ([`crate::SandboxBuilder::defer_tool`]) does not end the run: it returns
    /// [`Run::Suspended`], and [`Suspension::resume`] gives the script the host's answer
    /// and runs on, in memory, to the end or the next deferred call. Without a deferred
    /// call, it is [`Run::Finished`] with `run_with`'s outcome.
    ///
    /// The run waits on a thread of its own, its deadline's clock stopped (time spent
    /// suspended is not the run's: neither its deadline nor its `stats.wall`); resuming
    /// costs a thread handoff. Isolated, its worker process waits with it, frozen
    /// (`SIGSTOP`: nothing watches it meanwhile) and out of the pool's count (the pool may
    /// spawn another for other runs); resumed, it counts again once the pool has room. A
    /// suspension holds a thread, and isolated a process, until it is resumed or dropped.
    /// It cannot be resumed in a process forked off the one that started it.
    ///
    /// ```
    /// use moonjail::{Run, Sandbox};
    /// use serde_json::json;
    ///
    /// let sandbox = Sandbox::builder().defer_tool("ask").build()?;
    /// let mut run = sandbox.start("return ask('2 + 2?') + 1", &json!(null), &Default::default());
    /// let outcome = loop {
    ///     match run {
    ///         Run::Finished(outcome) => break outcome,
    ///         Run::Suspended(s) => {
    ///             assert_eq!(s.pending().args, [json!("2 + 2?")]);
    ///             run = s.resume(Ok(json!(4)));
    ///         }
    ///     }
    /// };
    /// assert_eq!(outcome.result.unwrap(), json!(5));
    /// # Ok::<(), moonjail::ConfigError>(())
    /// ```
    pub fn start(&self, source: impl AsRef<[u8]>, input: &Json, opts: &RunOptions) -> Run {
        let source = source.as_ref();
        let Some(tools) = self.host().tools.as_ref() else {
            return Run::Finished(self.run_with(source, input, opts));
        };
        let (events_tx, events) = mpsc::channel();
        let (answers, answers_rx) = mpsc::sync_channel(1);
        let parker = Arc::new(Parker {
            events: Mutex::new(events_tx.clone()),
            answers: Mutex::new(answers_rx),
        });
        let host = Host {
            tools: Some(Arc::new(tools.parked(parker))),
            ..self.host().clone()
        };
        let sandbox = self.variant(self.spec().clone(), host);
        let source = source.to_vec();
        let input = input.clone();
        let chunk = opts.chunk_name.to_string();
        let expression = opts.expression;
        let thread = std::thread::Builder::new()
            .name("moonjail-run".into())
            .spawn(move || {
                let opts = RunOptions::default()
                    .chunk_name(&chunk)
                    .expression(expression);
                let outcome = sandbox.run_with(&source, &input, &opts);
                let _ = events_tx.send(Event::Done(Box::new(outcome)));
            });
        match thread {
            Ok(thread) => next(answers, events, Some(thread)),
            Err(e) => Run::Finished(Outcome::failed(
                Error::new(
                    ErrorKind::Internal,
                    format!("could not start the run's thread: {e}"),
                ),
                std::time::Duration::ZERO,
            )),
        }
    }
}

/// Gives the parked run its answer (`None`: it is given up there) and waits for its next
/// event. A run that ended meanwhile (it cannot: it waits) says so in `next`.
fn reply(
    answers: SyncSender<Option<Answer>>,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
    answer: Option<Answer>,
) -> Run {
    let _ = answers.send(answer);
    next(answers, events, thread)
}

/// Waits for the parked run's next event.
fn next(
    answers: SyncSender<Option<Answer>>,
    events: Receiver<Event>,
    mut thread: Option<JoinHandle<()>>,
) -> Run {
    let outcome = match events.recv() {
        Ok(Event::Pending(pending)) => {
            return Run::Suspended(Suspension {
                pending,
                inner: Held::Parked {
                    answers,
                    events,
                    thread,
                    generation: crate::vm::watchdog::fork_generation(),
                },
            })
        }
        Ok(Event::Done(outcome)) => *outcome,
        Err(_) => Outcome::failed(
            Error::new(
                ErrorKind::Internal,
                "the run's thread ended without an outcome",
            ),
            std::time::Duration::ZERO,
        ),
    };
    // The run's thread has ended, or is ending.
    if let Some(thread) = thread.take() {
        let _ = thread.join();
    }
    Run::Finished(outcome)
}

impl Suspension {
    /// The deferred call the run waits at: its tool call number, name and arguments.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// The run's outcome as it stands: error kind [`ErrorKind::Suspended`] with the
    /// pending call `{"name", "args"}` as its value (what [`Sandbox::run`] gives for
    /// the same script), for a host that reports the suspension as an outcome. Held in
    /// process, the run is still live, so the output and statistics are not in it.
    pub fn outcome(&self) -> Outcome {
        let mut error = Error::new(ErrorKind::Suspended, crate::vm::Stop::Suspended.message());
        error.value = Some(crate::tools::pending_value(
            &self.pending.name,
            &self.pending.args,
        ));
        Outcome::failed(error, std::time::Duration::ZERO)
    }

    /// Gives the script `answer` as the deferred call's result (`Err`: the tool's error,
    /// which the script may catch) and runs on, to the end or the next deferred call.
    pub fn resume(mut self, answer: Result<Json, ToolError>) -> Run {
        match std::mem::replace(&mut self.inner, Held::Done) {
            Held::Parked {
                answers,
                events,
                thread,
                generation,
            } => match in_a_fork(generation, (answers, events, thread)) {
                Ok((answers, events, thread)) => reply(answers, events, thread, Some(answer)),
                Err(outcome) => Run::Finished(*outcome),
            },
            Held::Done => Run::Finished(resumed_already()),
        }
    }
}

impl Suspension {
    /// Gives the run up where it waits: it ends there, as suspended, and this is its
    /// outcome — what [`Sandbox::run`] gives for the same script, with the output and
    /// statistics up to the deferred call (unlike [`Suspension::outcome`], which a run
    /// held in process cannot fill in yet). Waits for the run's thread to end.
    pub fn abandon(mut self) -> Outcome {
        self.give_up()
    }

    /// Ends the run where it waits (its thread told and joined): `abandon`, and a
    /// suspension dropped without an answer.
    fn give_up(&mut self) -> Outcome {
        match std::mem::replace(&mut self.inner, Held::Done) {
            Held::Parked {
                answers,
                events,
                thread,
                generation,
            } => {
                let (answers, events, thread) =
                    match in_a_fork(generation, (answers, events, thread)) {
                        Ok(parts) => parts,
                        Err(outcome) => return *outcome,
                    };
                match reply(answers, events, thread, None) {
                    Run::Finished(outcome) => outcome,
                    // A run given up cannot park again (calls after a deferred one are
                    // refused); were it to, it is given up there too, as it drops.
                    Run::Suspended(again) => again.outcome(),
                }
            }
            Held::Done => resumed_already(),
        }
    }
}

/// What a parked run is held by: the channels to its thread, and the thread.
type Parts = (
    SyncSender<Option<Answer>>,
    Receiver<Event>,
    Option<JoinHandle<()>>,
);

/// `parts`, unless this is a process forked off the one whose thread waits (Python's
/// `multiprocessing`): there that thread does not exist, and waiting for it would never
/// end, so the suspension fails and its parts are forgotten (a copied thread handle must
/// not be joined or detached).
fn in_a_fork(generation: u64, parts: Parts) -> Result<Parts, Box<Outcome>> {
    if generation == crate::vm::watchdog::fork_generation() {
        return Ok(parts);
    }
    std::mem::forget(parts);
    Err(Box::new(Outcome::failed(
        Error::new(
            ErrorKind::Internal,
            "a suspended run waits in the process that started it: it cannot be resumed or \
             given up in a forked process (resume it in its own, or journal it and use \
             Sandbox::resume)",
        ),
        std::time::Duration::ZERO,
    )))
}

/// The outcome of a suspension used twice (its methods take it by value: only through a
/// state it cannot reach).
fn resumed_already() -> Outcome {
    Outcome::failed(
        Error::new(ErrorKind::Internal, "the suspension was resumed already"),
        std::time::Duration::ZERO,
    )
}

impl Drop for Suspension {
    /// A run given up ends where it waits: its thread is told, and joined.
    fn drop(&mut self) {
        if !matches!(self.inner, Held::Done) {
            let _ = self.give_up();
        }
    }
}
