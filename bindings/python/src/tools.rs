//! Python callables as host tools, and the per-thread state a run shares with them.
//!
//! A tool runs on the thread that runs the script (in process) or that supervises the
//! worker (isolated): the thread that called `run`, whose GIL was released for the run.
//! The tool takes the GIL back for the duration of the call only.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use moonjail::{ToolContext, ToolError};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use serde_json::Value as Json;

use crate::convert::{to_json, to_py};

thread_local! {
    /// A `BaseException` that is not an `Exception` (KeyboardInterrupt, SystemExit) that a
    /// tool raised, or that a signal handler raised while this thread ran a script: the
    /// run stops, and the exception is raised again once it has.
    static PENDING: RefCell<Option<PyErr>> = const { RefCell::new(None) };
    /// The deadline of the tool call in progress on this thread (`moonjail.time_left`).
    static TOOL_DEADLINE: Cell<Option<Option<Instant>>> = const { Cell::new(None) };
}

/// Keeps `err` to raise after the run, unless one is kept already.
pub fn set_pending(err: PyErr) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Some(err);
        }
    });
}

/// True when an exception waits to be raised after the run.
pub fn has_pending() -> bool {
    PENDING.with(|p| p.borrow().is_some())
}

/// The exception that waits to be raised after the run, if any (taken).
pub fn take_pending() -> Option<PyErr> {
    PENDING.with(|p| p.borrow_mut().take())
}

/// Seconds left before the deadline of the tool call running on this thread: None when
/// the run has no deadline; 0.0 when it has passed.
///
/// Raises RuntimeError outside a tool call.
#[pyfunction]
pub fn time_left() -> PyResult<Option<f64>> {
    match TOOL_DEADLINE.with(Cell::get) {
        None => Err(pyo3::exceptions::PyRuntimeError::new_err(
            "moonjail.time_left() is only meaningful inside a tool call",
        )),
        Some(None) => Ok(None),
        Some(Some(at)) => Ok(Some(
            at.saturating_duration_since(Instant::now()).as_secs_f64(),
        )),
    }
}

/// Sets the thread's tool deadline for one call, and restores the previous one after.
struct DeadlineScope(Option<Option<Instant>>);

impl DeadlineScope {
    fn enter(deadline: Option<Instant>) -> DeadlineScope {
        DeadlineScope(TOOL_DEADLINE.with(|d| d.replace(Some(deadline))))
    }
}

impl Drop for DeadlineScope {
    fn drop(&mut self) {
        TOOL_DEADLINE.with(|d| d.set(self.0));
    }
}

/// The class `moonjail.ToolError` (raised by a tool to fail with exactly its message).
fn tool_error_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = CLASS.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            PyModule::import(py, "moonjail._errors")?
                .getattr("ToolError")?
                .unbind(),
        )
    })?;
    Ok(class.bind(py))
}

/// What the script sees of an exception a tool raised: the message of a
/// `moonjail.ToolError`, `"Type: message"` of any other `Exception`. A `BaseException`
/// beyond those (KeyboardInterrupt, SystemExit) is kept to raise after the run, which
/// stops at once.
fn tool_failure(py: Python<'_>, err: PyErr) -> ToolError {
    let value = err.value(py);
    let message = value
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| String::from("<unprintable exception>"));
    let deliberate = tool_error_class(py)
        .map(|c| value.is_instance(c).unwrap_or(false))
        .unwrap_or(false);
    if deliberate {
        return ToolError::new(message);
    }
    if !err.is_instance_of::<PyException>(py) {
        let type_name = type_name(value.as_any());
        set_pending(err);
        return ToolError::new(format!("interrupted by {type_name} in the host"));
    }
    let type_name = type_name(value.as_any());
    if message.is_empty() {
        ToolError::new(type_name)
    } else {
        ToolError::new(format!("{type_name}: {message}"))
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| String::from("Exception"))
}

/// The Python callables of one sandbox's tools. The sandbox's closures reach them by
/// index, and the sandbox object shows them to Python's garbage collector and clears
/// them when it is collected: a tool that refers back to its sandbox (a bound method of
/// the object that owns the sandbox) is a reference cycle the collector can break.
#[derive(Default, Clone)]
pub struct ToolSlots(Arc<Mutex<Vec<Option<Py<PyAny>>>>>);

impl ToolSlots {
    /// Keeps `func`; returns its index.
    pub fn add(&self, func: Py<PyAny>) -> usize {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slots.push(Some(func));
        slots.len() - 1
    }

    /// The callable at `index`, unless the sandbox was cleared.
    fn get(&self, py: Python<'_>, index: usize) -> Option<Py<PyAny>> {
        let slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(index)
            .and_then(|f| f.as_ref().map(|f| f.clone_ref(py)))
    }

    /// Shows every callable to the collector (`__traverse__`).
    pub fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never wait in a traversal: a holder of the lock holds the GIL, which the
        // collector holds now, so the lock is free; `try_lock` only makes that certain.
        if let Ok(slots) = self.0.try_lock() {
            for f in slots.iter().flatten() {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    /// Drops every callable (`__clear__`); later calls fail as tool errors.
    pub fn clear(&self) {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        drop(taken);
    }
}

/// Calls the tool in `slots[index]` with the script's arguments, under the GIL, and
/// turns what it returns (or raises) into the tool's answer.
pub fn call_python(
    slots: &ToolSlots,
    index: usize,
    ctx: &ToolContext,
    args: Vec<Json>,
) -> Result<Json, ToolError> {
    Python::attach(|py| {
        let Some(func) = slots.get(py, index) else {
            return Err(ToolError::new("the sandbox was garbage-collected"));
        };
        if has_pending() {
            return Err(ToolError::new("not called: the run is being interrupted"));
        }
        let _scope = DeadlineScope::enter(ctx.deadline());
        let mut py_args = Vec::with_capacity(args.len());
        for arg in &args {
            py_args.push(to_py(py, arg).map_err(|e| tool_failure(py, e))?);
        }
        let tuple = PyTuple::new(py, py_args).map_err(|e| tool_failure(py, e))?;
        let returned = func
            .bind(py)
            .call1(tuple)
            .map_err(|e| tool_failure(py, e))?;
        if returned.get_type().name().is_ok_and(|n| n == "coroutine") {
            let _ = returned.call_method0("close");
            return Err(ToolError::new(
                "the host tool is an async function; moonjail calls tools synchronously \
                 (wrap it in a plain function)",
            ));
        }
        to_json(&returned, &"the value the tool returned").map_err(|e| {
            ToolError::new(e.value(py).str().map(|s| s.to_string()).unwrap_or_default())
        })
    })
}
