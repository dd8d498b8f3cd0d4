//! `Sandbox`: a configured sandbox that runs scripts, each in a fresh Lua state.
//!
//! The GIL is released for the whole run and taken back only by a Python tool (and by
//! the interrupt check); a `Sandbox` is shared freely between threads.

use std::borrow::Cow;
use std::sync::Arc;

use moonjail::RunOptions;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use pyo3::{PyTraverseError, PyVisit};
use serde_json::Value as Json;

use crate::config;
use crate::convert::{to_json, to_py};
use crate::interrupt::{self, CancelToken};
use crate::outcome::{config_error, Outcome};
use crate::session::{Session, ThreadBound};
use crate::tools::ToolSlots;

/// A sandbox: a profile, limits and host tools, ready to run scripts.
#[pyclass(frozen, subclass, module = "moonjail._native", name = "Sandbox")]
pub struct Sandbox {
    inner: Arc<moonjail::Sandbox>,
    isolated: bool,
    /// The tools' Python callables, for the garbage collector.
    slots: ToolSlots,
}

/// A script's source: `str` (UTF-8) or `bytes` (Lua source is bytes).
pub fn source<'a>(code: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(s) = code.cast::<PyString>() {
        return Ok(match s.to_cow()? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        });
    }
    if let Ok(b) = code.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    Err(PyTypeError::new_err(format!(
        "code must be str or bytes, not {}",
        code.get_type().name()?
    )))
}

/// The input as JSON (`None` is JSON null, which the script sees as nil).
pub fn input(value: Option<&Bound<'_, PyAny>>) -> PyResult<Json> {
    match value {
        None => Ok(Json::Null),
        Some(v) => to_json(v, &"input"),
    }
}

impl Sandbox {
    fn run_inner(
        &self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input_value: Option<&Bound<'_, PyAny>>,
        expression: bool,
        lint: bool,
        cancel: Option<&CancelToken>,
    ) -> PyResult<moonjail::Outcome> {
        let code = source(code)?;
        let input = input(input_value)?;
        if lint {
            let report = self.inner.lint(&code);
            if report.has_errors() {
                return Ok(moonjail::Outcome::refused_by_lint(report));
            }
            let mut outcome = self.run_now(py, &code, &input, expression, cancel)?;
            outcome.lint = Some(report);
            return Ok(outcome);
        }
        self.run_now(py, &code, &input, expression, cancel)
    }

    fn run_now(
        &self,
        py: Python<'_>,
        code: &[u8],
        input: &Json,
        expression: bool,
        cancel: Option<&CancelToken>,
    ) -> PyResult<moonjail::Outcome> {
        let sandbox = &self.inner;
        interrupt::guarded(cancel, || {
            py.detach(|| {
                sandbox.run_with(code, input, &RunOptions::default().expression(expression))
            })
        })
    }
}

#[pymethods]
impl Sandbox {
    #[new]
    #[pyo3(signature = (profile = "standard", **options))]
    fn new(py: Python<'_>, profile: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let slots = ToolSlots::default();
        let builder = interrupt::install(config::builder(py, profile, options, &slots)?);
        let inner = builder.build().map_err(|e| config_error(py, &e))?;
        let isolated = match options {
            Some(o) => o
                .get_item("isolate")?
                .is_some_and(|v| v.is_truthy().unwrap_or(false)),
            None => false,
        };
        Ok(Sandbox {
            inner: Arc::new(inner),
            isolated,
            slots,
        })
    }

    /// Runs `code` in a fresh state with `input` as its argument; never raises for the
    /// script's errors (they are in `Outcome.error`). With `journal`, the run is
    /// recorded into that file (docs/JOURNAL.md), for `moonjail.replay` and, when it is
    /// suspended at a deferred tool, `Sandbox.resume`.
    #[pyo3(signature = (code, input = None, *, lint = false, cancel = None, journal = None))]
    fn run(
        &self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        lint: bool,
        cancel: Option<&CancelToken>,
        journal: Option<std::path::PathBuf>,
    ) -> PyResult<Outcome> {
        let Some(path) = journal else {
            return self
                .run_inner(py, code, input, false, lint, cancel)
                .map(Outcome::new);
        };
        if lint || cancel.is_some() {
            return Err(PyTypeError::new_err(
                "journal= does not combine with lint= or cancel=",
            ));
        }
        let code = source(code)?;
        let input = self::input(input)?;
        crate::durable::run_journaled(py, &self.inner, &code, &input, false, path).map(Outcome::new)
    }

    /// Continues the run suspended in the journal at `journal` with `answer` as the
    /// pending deferred call's result (or, with `error`, the tool's error), appending to
    /// the journal: the `Outcome` (kind `suspended` again at the next deferred call).
    #[pyo3(signature = (journal, answer = None, *, error = None))]
    fn resume(
        &self,
        py: Python<'_>,
        journal: std::path::PathBuf,
        answer: Option<&Bound<'_, PyAny>>,
        error: Option<String>,
    ) -> PyResult<Outcome> {
        let answer = crate::durable::answer(answer, error)?;
        let sandbox = &self.inner;
        let outcome = py
            .detach(|| sandbox.resume(&journal, answer))
            .map_err(|e| crate::durable::journal_error(py, &e))?;
        Ok(Outcome::new(outcome))
    }

    /// Runs `code`, keeping the run in memory when it calls a deferred tool: the
    /// `Outcome` when it finishes, else a `Suspension` whose `resume(answer)` goes on.
    #[pyo3(signature = (code, input = None))]
    fn start(
        &self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let code = source(code)?;
        let input = self::input(input)?;
        let sandbox = &self.inner;
        let run = py.detach(|| sandbox.start(&code, &input, &RunOptions::default()));
        crate::durable::settle(py, run)
    }

    /// The value of `code`, read as Lua's REPL reads a line (an expression, else
    /// statements); raises the `SandboxError` subclass of its error.
    #[pyo3(signature = (code, input = None, *, cancel = None))]
    fn eval(
        &self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        cancel: Option<&CancelToken>,
    ) -> PyResult<Py<PyAny>> {
        let outcome = self.run_inner(py, code, input, true, false, cancel)?;
        Outcome::new(outcome).value_or_raise(py)
    }

    /// A persistent Lua state under this sandbox's profile, limits and tools.
    fn session(&self, py: Python<'_>) -> PyResult<Session> {
        let sandbox = &self.inner;
        // Made with the GIL released (an isolated session waits for its worker), and
        // bound at once to this thread, which owns the state from now on.
        let session = interrupt::guarded(None, || {
            py.detach(|| sandbox.session().map(ThreadBound::new))
        })?;
        match session {
            Ok(s) => Ok(Session::new(s)),
            Err(e) => Err(PyErr::from_value(
                crate::outcome::exception(py, &e, None)?.into_bound(py),
            )),
        }
    }

    /// The script checked against this sandbox without running it: `{"findings",
    /// "manifest", ...}` as `moonjail lint --json` gives it.
    fn lint<'py>(&self, py: Python<'py>, code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let code = source(code)?;
        let sandbox = &self.inner;
        let report = py.detach(|| sandbox.lint(&code));
        json_to_py(py, &report)
    }

    /// The tools a script in this sandbox can call, with descriptions and schemas (as
    /// `moonjail tools --json` gives them).
    fn tool_catalogue<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.tool_catalogue())
    }

    /// The tools as Lua language-server stubs, for a model's prompt or an editor.
    fn lua_stubs(&self) -> String {
        self.inner.tool_catalogue().lua_stubs()
    }

    /// The profile's name.
    #[getter]
    fn profile(&self) -> &'static str {
        self.inner.profile().name()
    }

    /// The limits every run gets, as in `Outcome.stats["limits"]`.
    #[getter]
    fn limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let l = self.inner.limits();
        let d = PyDict::new(py);
        d.set_item("wall_ms", l.timeout.map(|t| t.as_secs_f64() * 1000.0))?;
        d.set_item("memory_bytes", l.memory_bytes)?;
        d.set_item("instructions", l.instructions)?;
        d.set_item("output_bytes", l.output_bytes)?;
        d.set_item("source_bytes", l.source_bytes)?;
        d.set_item("result_bytes", l.result_bytes)?;
        d.set_item("result_depth", l.result_depth)?;
        Ok(d)
    }

    /// True when runs go to isolated worker processes.
    #[getter]
    fn isolated(&self) -> bool {
        self.isolated
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.slots.visit(&visit)
    }

    fn __clear__(&self) {
        self.slots.clear();
    }

    fn __repr__(&self) -> String {
        format!(
            "<moonjail.Sandbox profile={:?}>",
            self.inner.profile().name()
        )
    }
}

/// Any serialisable value of the library as Python objects.
fn json_to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    to_py(py, &json)
}
