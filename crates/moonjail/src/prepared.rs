//! Prepared states: fresh, never-used states whose environment is already built, made
//! ahead of demand on a helper thread, and used states closed there too. A run then only
//! compiles and runs its chunk; its state is still its own, made for it and touched by no
//! other run.
//!
//! The helper thread starts on a sandbox's first run and ends when the last clone of the
//! sandbox is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::vm::Vm;

/// A `Vm` moved between threads as a whole.
struct Moved(Vm);

// SAFETY: mlua (without its `send` feature) is `!Send` only because its handles share
// non-atomic reference counts. A `Vm` owns every handle to its state (the `Lua` and the
// entry shim) and none escapes it between runs, so moving the whole `Vm` moves every
// count together; it is handed over under a mutex and used by one thread at a time.
unsafe impl Send for Moved {}

type Builder = dyn Fn() -> Option<Vm> + Send + Sync;

struct State {
    spares: Vec<Moved>,
    retired: Vec<Moved>,
    started: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    spares: usize,
    build: Box<Builder>,
}

/// The per-sandbox pool of prepared states.
pub(crate) struct Prepared {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("spares", &self.shared.spares)
            .finish()
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Prepared {
    /// A pool keeping `spares` states made by `build` ready.
    pub(crate) fn new(spares: usize, build: Box<Builder>) -> Prepared {
        Prepared {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    spares: Vec::new(),
                    retired: Vec::new(),
                    started: false,
                    closed: false,
                }),
                cv: Condvar::new(),
                spares,
                build,
            }),
        }
    }

    /// A prepared state, if one is ready (starting the helper on first use).
    pub(crate) fn take(&self) -> Option<Vm> {
        let mut st = lock(&self.shared);
        if !st.started {
            st.started = true;
            let weak = Arc::downgrade(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("mj-prepare".into())
                .spawn(move || helper(weak));
            if let Err(e) = spawned {
                tracing::warn!("cannot start the state-preparing thread: {e}");
            }
        }
        let vm = st.spares.pop().map(|m| m.0);
        self.shared.cv.notify_one();
        vm
    }

    /// Hands a used state to the helper to close.
    pub(crate) fn retire(&self, vm: Vm) {
        let mut st = lock(&self.shared);
        if st.started && !st.closed {
            st.retired.push(Moved(vm));
            self.shared.cv.notify_one();
        } else {
            drop(st);
            drop(vm);
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.cv.notify_all();
    }
}

fn helper(shared: Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut st = lock(&shared);
        if st.closed {
            return;
        }
        if !st.retired.is_empty() {
            let retired = std::mem::take(&mut st.retired);
            drop(st);
            drop(retired);
            continue;
        }
        if st.spares.len() < shared.spares {
            drop(st);
            let vm = (shared.build)();
            let mut st = lock(&shared);
            match vm {
                Some(vm) if !st.closed => st.spares.push(Moved(vm)),
                Some(vm) => {
                    drop(st);
                    drop(vm);
                }
                // Building failed (e.g. a memory limit too small for the environment):
                // stop preparing; runs build inline and report the error themselves.
                None => st.closed = true,
            }
            continue;
        }
        // Wait with a timeout so a dropped sandbox is noticed even without a notify.
        let _ = shared
            .cv
            .wait_timeout(st, std::time::Duration::from_millis(200));
    }
}
