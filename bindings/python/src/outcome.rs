//! `Outcome`: what a run produced, the `--json` contract as a Python object, and the
//! exceptions that stand for its errors.
//!
//! The Rust outcome is kept as is and each field is converted on first access (then
//! cached): a caller that only looks at `ok` and `result` never pays for the rest.

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyModule};

use crate::convert::to_py;

/// What a run produced: `ok`, `result`, `results`, `output`, `error`, `stats`,
/// `tool_calls` (the fields of `moonjail run --json`).
#[pyclass(frozen, module = "moonjail._native")]
pub struct Outcome {
    inner: moonjail::Outcome,
    result: OnceLock<Py<PyAny>>,
    error: OnceLock<Py<PyAny>>,
    document: OnceLock<Py<PyAny>>,
}

impl Outcome {
    pub fn new(inner: moonjail::Outcome) -> Outcome {
        Outcome {
            inner,
            result: OnceLock::new(),
            error: OnceLock::new(),
            document: OnceLock::new(),
        }
    }

    pub fn inner(&self) -> &moonjail::Outcome {
        &self.inner
    }

    /// The whole document as a dict, converted once.
    fn document<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyDict>> {
        if self.document.get().is_none() {
            let doc = serde_json::to_value(&self.inner)
                .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
            let _ = self.document.set(to_py(py, &doc)?.unbind());
        }
        let doc = self
            .document
            .get()
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("outcome not converted"))?;
        Ok(doc.bind(py).cast::<PyDict>()?)
    }

    /// A key of the document (a fresh reference to the cached value).
    fn field<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.document(py)?.get_item(key)? {
            Some(v) => Ok(v),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// The run's result, or the exception standing for its error.
    pub fn value_or_raise(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.inner.result {
            Ok(_) => self.result(py),
            Err(_) => Err(PyErr::from_value(self.error(py)?.into_bound(py))),
        }
    }
}

#[pymethods]
impl Outcome {
    /// True when the run succeeded.
    #[getter]
    fn ok(&self) -> bool {
        self.inner.is_ok()
    }

    /// The first value the script returned (None when it returned none, or failed).
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(v) = self.result.get() {
            return Ok(v.clone_ref(py));
        }
        let value = match &self.inner.result {
            Ok(v) => to_py(py, v)?.unbind(),
            Err(_) => py.None(),
        };
        Ok(self.result.get_or_init(|| value).clone_ref(py))
    }

    /// Every value the script returned, in order (`return nil, "x"` gives `[None, "x"]`).
    #[getter]
    fn results<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "results")
    }

    /// Everything the script printed (up to the output limit).
    #[getter]
    fn output(&self) -> &str {
        &self.inner.output
    }

    /// `{"kept_bytes", "dropped_bytes"}` when `output_overflow="truncate"` cut the
    /// output, else None.
    #[getter]
    fn output_truncated<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "output_truncated")
    }

    /// The exception standing for the run's error (a `SandboxError` subclass), or None.
    #[getter]
    fn error(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(e) = self.error.get() {
            return Ok(e.clone_ref(py));
        }
        let value = match &self.inner.result {
            Ok(_) => py.None(),
            Err(e) => exception(py, e, self.inner.lint.as_ref())?,
        };
        Ok(self.error.get_or_init(|| value).clone_ref(py))
    }

    /// Measurements and limits: `wall_ms`, `memory_bytes`, `peak_memory_bytes`,
    /// `instructions`, `output_bytes`, `tool_calls`, `limits`.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "stats")
    }

    /// Every host tool call the script made, in order: `{"tool", "args", "ok", ...}`.
    #[getter]
    fn tool_calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.document(py)?.get_item("tool_calls")? {
            Some(v) => Ok(v),
            None => Ok(PyList::empty(py).into_any()),
        }
    }

    /// The linter's report when the run was linted first (`lint=True`), else None.
    #[getter]
    fn lint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "lint")
    }

    /// What the script touched, in diagnostic mode, else None.
    #[getter]
    fn diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "diagnostics")
    }

    /// Raises the run's error, if any; returns the outcome itself otherwise, so
    /// `sb.run(code).raise_for_error().result` reads as it means.
    fn raise_for_error(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        if slf.get().inner.is_ok() {
            return Ok(slf);
        }
        let err = slf.get().error(py)?;
        Err(PyErr::from_value(err.into_bound(py)))
    }

    /// The outcome as the `moonjail run --json` document (a new dict each call).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = serde_json::to_value(&self.inner)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        to_py(py, &doc)
    }

    /// The outcome as one line of JSON, exactly as `moonjail run --json` prints it.
    fn to_json(&self) -> String {
        moonjail::to_json_line(&self.inner)
    }

    fn __repr__(&self) -> String {
        match &self.inner.result {
            Ok(v) => format!("<Outcome ok result={}>", clip(v.to_string())),
            Err(e) => format!(
                "<Outcome error kind={:?} message={:?}>",
                e.kind.as_str(),
                clip(e.message.clone())
            ),
        }
    }
}

/// `text`, cut to about 80 bytes for a repr.
fn clip(mut text: String) -> String {
    if text.len() > 80 {
        let mut cut = 77;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The Python module that defines the exception classes (`moonjail/_errors.py`).
pub fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("moonjail._errors")?.unbind())
    })?;
    Ok(module.bind(py))
}

/// The exception instance for `err`: the class of its kind (`SandboxError` for a kind
/// this build of the Python layer does not know), with every field of the contract.
pub fn exception(
    py: Python<'_>,
    err: &moonjail::Error,
    lint: Option<&moonjail::LintReport>,
) -> PyResult<Py<PyAny>> {
    let module = errors_module(py)?;
    let class = module
        .getattr("exception_class")?
        .call1((err.kind.as_str(),))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("kind", err.kind.as_str())?;
    kwargs.set_item("line", err.line)?;
    let frames = PyList::empty(py);
    for f in &err.traceback {
        let frame = PyDict::new(py);
        frame.set_item("function", f.function.as_deref())?;
        frame.set_item("source", &f.source)?;
        frame.set_item("line", f.line)?;
        frames.append(frame)?;
    }
    kwargs.set_item("traceback", frames)?;
    match &err.value {
        Some(v) => kwargs.set_item("value", to_py(py, v)?)?,
        None => kwargs.set_item("value", py.None())?,
    }
    kwargs.set_item("hint", err.hint.as_deref())?;
    if let Some(report) = lint {
        let doc = serde_json::to_value(report)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        kwargs.set_item("findings", to_py(py, &doc)?.get_item("findings")?)?;
    }
    Ok(class.call((&err.message,), Some(&kwargs))?.unbind())
}

/// A configuration the library refused, as `moonjail.ConfigError` (a `ValueError`).
pub fn config_error(py: Python<'_>, err: &moonjail::ConfigError) -> PyErr {
    config_error_text(py, &err.to_string())
}

/// `moonjail.ConfigError` with `message`.
pub fn config_error_text(py: Python<'_>, message: &str) -> PyErr {
    match errors_module(py).and_then(|m| m.getattr("ConfigError")) {
        Ok(class) => match class.call1((message,)) {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        },
        Err(e) => e,
    }
}
