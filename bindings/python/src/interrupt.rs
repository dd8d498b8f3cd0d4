//! Stopping a run from Python: Ctrl-C, a cancelled `run_async`, an exception a tool let
//! through.
//!
//! Python's SIGINT handler only sets a flag that the interpreter reads when it runs
//! Python code, which it does not do while Lua runs with the GIL released. So every
//! sandbox registers an interrupt check that the library calls on the run's own thread
//! every [`PERIOD`] while a script runs: on the main thread it takes the GIL and runs
//! Python's pending signal handlers (`PyErr_CheckSignals`); everywhere it looks at the
//! run's cancel token. A handler that raises (KeyboardInterrupt) stops the run, and the
//! exception is raised from `run` once it has stopped.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use crate::tools::{has_pending, set_pending, take_pending};

/// How often a running script lets the host look for Ctrl-C and cancellation: the
/// longest a Ctrl-C waits, at the cost of one timer signal per period.
pub const PERIOD: Duration = Duration::from_millis(50);

thread_local! {
    /// The cancel token of the run on this thread.
    static TOKEN: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    /// Set while the library's first ask of a call is still to come: the caller held
    /// the GIL a moment ago, so Python's handlers are as current as they can be, and
    /// taking the GIL back to run them would cost a session call a sixteenth of its time.
    static FRESH: Cell<bool> = const { Cell::new(false) };
}

/// A flag that stops the runs it is passed to (`run(..., cancel=token)`) once set, from
/// any thread: what `run_async` sets when its task is cancelled.
#[pyclass(frozen, module = "moonjail._native")]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        CancelToken {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops the runs using this token (within about 50 ms; a tool call in progress
    /// finishes first).
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// True once `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn __repr__(&self) -> String {
        format!("<moonjail.CancelToken cancelled={}>", self.cancelled())
    }
}

/// Runs `f` (a run, with the GIL released inside) with `cancel` as this thread's token,
/// then raises any exception that stopped it (KeyboardInterrupt).
pub fn guarded<T>(cancel: Option<&CancelToken>, f: impl FnOnce() -> T) -> PyResult<T> {
    let previous = TOKEN.with(|t| t.replace(cancel.map(|c| Arc::clone(&c.flag))));
    FRESH.with(|f| f.set(true));
    let value = f();
    FRESH.with(|f| f.set(false));
    TOKEN.with(|t| *t.borrow_mut() = previous);
    match take_pending() {
        Some(err) => Err(err),
        None => Ok(value),
    }
}

/// The builder with the interrupt check registered.
pub fn install(builder: moonjail::SandboxBuilder) -> moonjail::SandboxBuilder {
    builder.interrupt_check(PERIOD, check)
}

/// True when the run on this thread must stop.
fn check() -> bool {
    if has_pending() {
        return true;
    }
    if TOKEN.with(|t| {
        t.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }) {
        return true;
    }
    if FRESH.with(|f| f.replace(false)) || !is_main_thread() {
        return false;
    }
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(err) => {
            set_pending(err);
            true
        }
    })
}

/// Python runs signal handlers on the main thread only: elsewhere, checking them would
/// take the GIL for nothing.
fn is_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}
