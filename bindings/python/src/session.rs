//! `Session`: one persistent Lua state (exec, call, has_function), LuaWard's and
//! moonjail's names side by side.
//!
//! A session's Lua state belongs to the thread that opened it (the library's
//! `Session` is not `Send`): using it from another thread raises a clear error, as
//! `sqlite3` connections do, instead of moving the state.

use std::mem::ManuallyDrop;
use std::thread::ThreadId;

use moonjail::CallOptions;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::to_json;
use crate::interrupt::{self, CancelToken};
use crate::outcome::{exception, Outcome};
use crate::sandbox::{input, source};

/// A value that only the thread that made it may touch.
pub(crate) struct ThreadBound<T> {
    owner: ThreadId,
    value: ManuallyDrop<T>,
}

// SAFETY: the value is reached only through `get`, which checks that the calling thread
// is the one that made it, and dropped only on that thread (elsewhere it is leaked), so
// it is never used from two threads; the wrapper itself moving between threads (as
// Python objects do) touches nothing inside it.
unsafe impl<T> Send for ThreadBound<T> {}
// SAFETY: as for `Send`: a shared reference from another thread reaches nothing inside.
unsafe impl<T> Sync for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    pub(crate) fn new(value: T) -> ThreadBound<T> {
        ThreadBound {
            owner: std::thread::current().id(),
            value: ManuallyDrop::new(value),
        }
    }

    fn get(&mut self) -> PyResult<&mut T> {
        if std::thread::current().id() != self.owner {
            return Err(PyRuntimeError::new_err(
                "a moonjail Session is used on the thread that opened it (its Lua state \
                 belongs to that thread); open one session per thread",
            ));
        }
        Ok(&mut self.value)
    }

    /// The value, for a caller that has checked the thread with `get` and stays on it.
    fn on_owner_thread(&mut self) -> &mut T {
        &mut self.value
    }

    fn get_ref(&self) -> PyResult<&T> {
        if std::thread::current().id() != self.owner {
            return Err(PyRuntimeError::new_err(
                "a moonjail Session is used on the thread that opened it",
            ));
        }
        Ok(&self.value)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            // SAFETY: dropped once, here, on the owning thread; never touched again.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
    }
}

/// A persistent Lua state: globals survive from one request to the next.
#[pyclass(module = "moonjail._native", name = "Session")]
pub struct Session {
    inner: Option<ThreadBound<moonjail::Session>>,
}

impl Session {
    pub(crate) fn new(session: ThreadBound<moonjail::Session>) -> Session {
        Session {
            inner: Some(session),
        }
    }

    /// Runs `op` on the session with the GIL released, under `cancel`.
    fn request<T: Send>(
        &mut self,
        py: Python<'_>,
        cancel: Option<&CancelToken>,
        op: impl FnOnce(&mut moonjail::Session) -> T + Send,
    ) -> PyResult<T> {
        let bound = match self.inner.as_mut() {
            Some(s) => s,
            None => return Err(PyRuntimeError::new_err("the session is closed")),
        };
        bound.get()?;
        // The closure runs on this thread (the GIL is released, not the thread
        // changed), which `get` just checked is the session's.
        interrupt::guarded(cancel, || py.detach(move || op(bound.on_owner_thread())))
    }

    fn exec_outcome(
        &mut self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input_value: Option<&Bound<'_, PyAny>>,
        options: CallOptions,
        cancel: Option<&CancelToken>,
    ) -> PyResult<Outcome> {
        let code = source(code)?;
        let input = input(input_value)?;
        self.request(py, cancel, |s| s.exec_with(&code, &input, &options))
            .map(Outcome::new)
    }

    fn call_outcome_inner(
        &mut self,
        py: Python<'_>,
        name: &str,
        args: &Bound<'_, PyTuple>,
        options: CallOptions,
        cancel: Option<&CancelToken>,
    ) -> PyResult<Outcome> {
        let mut json = Vec::with_capacity(args.len());
        for (i, arg) in args.iter().enumerate() {
            json.push(to_json(&arg, &format_args!("argument {}", i + 1))?);
        }
        self.request(py, cancel, |s| s.call_with(name, &json, &options))
            .map(Outcome::new)
    }
}

/// The per-request limits a call may lower: a timeout as `Sandbox` takes one (seconds,
/// a `timedelta` or text), checked as every front end checks a request's.
fn options(
    timeout: Option<&Bound<'_, PyAny>>,
    instruction_limit: Option<u64>,
) -> PyResult<CallOptions> {
    let timeout = match timeout {
        Some(t) => crate::config::duration(t, "timeout")?,
        None => None,
    };
    CallOptions::checked(timeout, instruction_limit)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl Session {
    /// Runs `code` in the session's state (its globals persist); never raises for the
    /// script's errors. `timeout` and `instruction_limit` lower this request's limits.
    #[pyo3(signature = (code, input = None, *, timeout = None, instruction_limit = None, cancel = None))]
    fn exec(
        &mut self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        instruction_limit: Option<u64>,
        cancel: Option<&CancelToken>,
    ) -> PyResult<Outcome> {
        let o = options(timeout, instruction_limit)?;
        self.exec_outcome(py, code, input, o, cancel)
    }

    /// Runs `code` and returns its result, raising its error (LuaWard's `execute`).
    #[pyo3(signature = (code, input = None, *, timeout = None, instruction_limit = None))]
    fn execute(
        &mut self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        instruction_limit: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let o = options(timeout, instruction_limit)?;
        self.exec_outcome(py, code, input, o, None)?
            .value_or_raise(py)
    }

    /// The value of an expression in the session's state (`state.count`), as Lua's
    /// REPL reads a line; raises its error.
    #[pyo3(signature = (code, *, timeout = None, instruction_limit = None))]
    fn eval(
        &mut self,
        py: Python<'_>,
        code: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        instruction_limit: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let o = options(timeout, instruction_limit)?;
        let code = source(code)?;
        self.request(py, None, |s| s.eval(&code, &o))
            .map(Outcome::new)?
            .value_or_raise(py)
    }

    /// Calls the global function `name` (dotted names reach into tables) with `args`
    /// and returns its first result, raising its error (LuaWard's `call`).
    #[pyo3(signature = (name, *args, timeout = None, instruction_limit = None))]
    fn call(
        &mut self,
        py: Python<'_>,
        name: &str,
        args: &Bound<'_, PyTuple>,
        timeout: Option<&Bound<'_, PyAny>>,
        instruction_limit: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let o = options(timeout, instruction_limit)?;
        self.call_outcome_inner(py, name, args, o, None)?
            .value_or_raise(py)
    }

    /// `call` that returns the whole `Outcome` (every result, output, stats, tool
    /// calls) and never raises for the script's errors.
    #[pyo3(signature = (name, *args, timeout = None, instruction_limit = None, cancel = None))]
    fn call_outcome(
        &mut self,
        py: Python<'_>,
        name: &str,
        args: &Bound<'_, PyTuple>,
        timeout: Option<&Bound<'_, PyAny>>,
        instruction_limit: Option<u64>,
        cancel: Option<&CancelToken>,
    ) -> PyResult<Outcome> {
        let o = options(timeout, instruction_limit)?;
        self.call_outcome_inner(py, name, args, o, cancel)
    }

    /// Whether `name` names a function (or a callable table) in the session.
    fn has_function(&mut self, py: Python<'_>, name: &str) -> PyResult<bool> {
        match self.request(py, None, |s| s.has_function(name))? {
            Ok(b) => Ok(b),
            Err(e) => Err(PyErr::from_value(exception(py, &e, None)?.into_bound(py))),
        }
    }

    /// LuaWard's name for `has_function`.
    fn function_exists(&mut self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.has_function(py, name)
    }

    /// True while the session accepts requests.
    #[getter]
    fn is_open(&self) -> PyResult<bool> {
        match self.inner.as_ref() {
            Some(s) => Ok(s.get_ref()?.is_open()),
            None => Ok(false),
        }
    }

    /// Why the session closed on its own (its worker died, say), as an exception; None
    /// while it is open or after `close()`.
    #[getter]
    fn closed_reason(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let reason = match self.inner.as_ref() {
            Some(s) => s.get_ref()?.closed_reason(),
            None => None,
        };
        match reason {
            Some(e) => exception(py, e, None),
            None => Ok(py.None()),
        }
    }

    /// Frees the state now (an isolated session's worker is stopped). Idempotent.
    fn close(&mut self) -> PyResult<()> {
        if let Some(bound) = self.inner.as_mut() {
            bound.get()?;
        }
        self.inner = None;
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close()
    }

    fn __repr__(&self) -> String {
        format!(
            "<moonjail.Session {}>",
            if self.is_open().unwrap_or(false) {
                "open"
            } else {
                "closed"
            }
        )
    }
}
