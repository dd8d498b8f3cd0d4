//! Durable runs from Python: journaled runs, replay, deferred tools and resumption
//! (the library's `journal` module, docs/JOURNAL.md).
//!
//! `Sandbox.run(journal=PATH)` records, `moonjail.replay(PATH)` re-executes,
//! `Sandbox.resume(PATH, answer)` continues a run suspended at a deferred tool
//! (`defer_tools=[...]`) from its journal, and `Sandbox.start(code)` keeps a suspended run
//! in memory as a `Suspension`. Journal failures are `moonjail.JournalError`; a replay
//! that diverges is an outcome (kind `replay_divergence`), as in the library.

use std::path::PathBuf;
use std::sync::Mutex;

use moonjail::{Isolation, JournalWriter, ProcessConfig, ReplayOptions, Run, RunOptions};
use pyo3::prelude::*;
use serde_json::Value as Json;

use crate::convert::{to_json, to_py};
use crate::outcome::{errors_module, Outcome};

/// The library's journal error as `moonjail.JournalError`.
pub fn journal_error(py: Python<'_>, err: &moonjail::JournalError) -> PyErr {
    match errors_module(py).and_then(|m| m.getattr("JournalError")) {
        Ok(class) => match class.call1((err.to_string(),)) {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The host's answer to a deferred call: `error` (a tool error with that message) when
/// given, else `answer` as JSON.
pub fn answer(
    answer: Option<&Bound<'_, PyAny>>,
    error: Option<String>,
) -> PyResult<Result<Json, moonjail::ToolError>> {
    match (error, answer) {
        (Some(_), Some(a)) if !a.is_none() => Err(pyo3::exceptions::PyTypeError::new_err(
            "give the answer or the error, not both",
        )),
        (Some(message), _) => Ok(Err(moonjail::ToolError::new(message))),
        (None, Some(a)) => Ok(Ok(to_json(a, &"answer")?)),
        (None, None) => Ok(Ok(Json::Null)),
    }
}

/// Records a run into the journal file at `path`.
pub fn run_journaled(
    py: Python<'_>,
    sandbox: &moonjail::Sandbox,
    code: &[u8],
    input: &Json,
    expression: bool,
    path: PathBuf,
) -> PyResult<moonjail::Outcome> {
    let writer = JournalWriter::create(&path)
        .map_err(|e| journal_error(py, &moonjail::JournalError::Io(e)))?;
    py.detach(|| {
        sandbox.run_journaled(
            code,
            input,
            &RunOptions::default().expression(expression),
            writer,
        )
    })
    .map_err(|e| journal_error(py, &e))
}

/// A run suspended at a deferred tool call, held in memory (`Sandbox.start`).
#[pyclass(module = "moonjail._native", name = "Suspension")]
pub struct Suspension {
    inner: Mutex<Option<moonjail::Suspension>>,
    pending: Json,
}

/// What `Sandbox.start` and `Suspension.resume` return: an `Outcome`, or a `Suspension`.
pub fn settle(py: Python<'_>, run: Run) -> PyResult<Py<PyAny>> {
    match run {
        Run::Finished(outcome) => Ok(Py::new(py, Outcome::new(outcome))?.into_any()),
        Run::Suspended(s) => {
            let p = s.pending();
            let pending = serde_json::json!({"step": p.step, "name": p.name, "args": p.args});
            Ok(Py::new(
                py,
                Suspension {
                    inner: Mutex::new(Some(s)),
                    pending,
                },
            )?
            .into_any())
        }
    }
}

#[pymethods]
impl Suspension {
    /// The deferred call the run waits at: `{"step", "name", "args"}`.
    #[getter]
    fn pending<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.pending)
    }

    /// Gives the script `answer` as the call's result (or, with `error`, the tool's
    /// error) and runs on: an `Outcome`, or the `Suspension` of the next deferred call.
    #[pyo3(signature = (answer = None, *, error = None))]
    fn resume(
        &self,
        py: Python<'_>,
        answer: Option<&Bound<'_, PyAny>>,
        error: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let answer = self::answer(answer, error)?;
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(suspension) = taken else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this suspension was resumed already",
            ));
        };
        let run = py.detach(move || suspension.resume(answer));
        settle(py, run)
    }

    /// Gives the run up where it waits: it ends there, as suspended, and this is its
    /// `Outcome` (error kind "suspended"), with its output and statistics up to the
    /// deferred call. A suspension dropped without an answer ends the same way.
    fn abandon(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(suspension) = taken else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this suspension was resumed already",
            ));
        };
        let outcome = py.detach(move || suspension.abandon());
        Ok(Py::new(py, Outcome::new(outcome))?.into_any())
    }

    fn __repr__(&self) -> String {
        format!("Suspension(pending={})", self.pending)
    }
}

/// Re-executes the journal at `journal` without calling a tool or reading a file
/// (`moonjail replay`): the recorded outcome, or one of kind `replay_divergence`.
#[pyfunction]
#[pyo3(signature = (journal, *, source = None, isolate = false, worker = None, trust_limits = false))]
pub fn replay(
    py: Python<'_>,
    journal: PathBuf,
    source: Option<&Bound<'_, PyAny>>,
    isolate: bool,
    worker: Option<Bound<'_, PyAny>>,
    trust_limits: bool,
) -> PyResult<Outcome> {
    let mut options = ReplayOptions::default();
    if trust_limits {
        options = options.ceiling(None);
    }
    if let Some(source) = source {
        options = options.source(crate::sandbox::source(source)?.into_owned());
    }
    if isolate {
        let config = ProcessConfig::builder()
            .pool_size(1)
            .worker(crate::config::worker_path(py, worker)?)
            .build()
            .map_err(|e| crate::outcome::config_error(py, &e))?;
        options = options.isolation(Isolation::Process(config));
    }
    let file = std::fs::File::open(&journal)
        .map_err(|e| journal_error(py, &moonjail::JournalError::Io(e)))?;
    let outcome = py
        .detach(|| moonjail::replay(file, &options))
        .map_err(|e| journal_error(py, &e))?;
    Ok(Outcome::new(outcome))
}
