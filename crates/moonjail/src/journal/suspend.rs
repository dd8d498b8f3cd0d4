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
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;

use super::{
    play, Journal, JournalError, JournalWriter, Live, Player, Recording, RecordingFiles,
    ReplayOptions,
};
use crate::error::ErrorKind;
use crate::outcome::Outcome;
use crate::sandbox::Sandbox;
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
        let outcome = play(
            journal,
            Arc::new(player),
            &ReplayOptions::default(),
            Some(self),
        )?;
        if matches!(&outcome.result, Err(e) if e.kind == ErrorKind::ReplayDivergence) {
            // A script that diverges does so before its pending call (the calls after it
            // are live): nothing was appended, and the journal stays resumable.
            return Ok(outcome);
        }
        recording.finish(outcome)
    }
}
