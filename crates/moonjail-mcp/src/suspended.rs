//! Runs of one MCP connection that wait at a deferred tool call for a client that cannot
//! ask its user (no form elicitation): held in memory (`moonjail::Suspension`: in
//! process, the run's own thread waits with its deadline stopped; isolated, its worker
//! waits with it, frozen and out of the pool's count) until `resume_lua` answers them or the
//! connection ends.
//!
//! Each id answers one pending call: resuming takes the run out (a second resume of the
//! same id is refused), and a run that stops again at its next deferred call gets a new
//! id. Giving a run up may wait for its thread to end, so suspensions are never dropped
//! under the table's lock.

// Suspensions are boxed as the table holds them: an entry stays small.
#![allow(clippy::vec_box)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use moonjail::Suspension;

/// How many runs one connection may keep suspended at once, by default.
pub const DEFAULT_MAX_SUSPENDED: usize = 16;

/// The suspended runs of a connection, by id, and how many more wait while the user is
/// asked: together at most `max` (each holds a live state, and in process a thread).
#[derive(Debug)]
pub(crate) struct Suspended {
    max: usize,
    next: AtomicU64,
    held: Mutex<HashMap<String, Box<Suspension>>>,
    asking: Arc<AtomicUsize>,
}

/// A run's turn to wait for the user's answer; the count goes down as it drops.
#[derive(Debug)]
pub(crate) struct Asking(Arc<AtomicUsize>);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Suspended {
    pub fn new(max: usize) -> Suspended {
        Suspended {
            max,
            next: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
            asking: Arc::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Box<Suspension>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn to ask the user, unless `max` runs wait already (held or asking).
    pub fn begin_asking(&self) -> Option<Asking> {
        // Under the table's lock, so that holding and asking count against one bound.
        let held = self.held();
        if held.len() + self.asking.load(Ordering::SeqCst) >= self.max {
            return None;
        }
        self.asking.fetch_add(1, Ordering::SeqCst);
        Some(Asking(Arc::clone(&self.asking)))
    }

    /// Holds `run` under a new id; with `max` runs waiting already (held or asking),
    /// gives it back.
    pub fn hold(&self, run: Box<Suspension>) -> Result<String, Box<Suspension>> {
        let mut held = self.held();
        if held.len() + self.asking.load(Ordering::SeqCst) >= self.max {
            return Err(run);
        }
        let id = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
        held.insert(id.clone(), run);
        Ok(id)
    }

    /// Takes the run held under `id` out, to resume it.
    pub fn take(&self, id: &str) -> Option<Box<Suspension>> {
        self.held().remove(id)
    }

    /// The most runs held at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Every run held, taken out (the connection ends: they are given up).
    pub fn drain(&self) -> Vec<Box<Suspension>> {
        self.held().drain().map(|(_, run)| run).collect()
    }
}

impl Drop for Suspended {
    /// The runs still waiting end where they wait (the table drops with the connection,
    /// on an async thread).
    fn drop(&mut self) {
        give_up(self.drain());
    }
}

/// Gives `runs` up on a thread of their own: giving a run up joins its thread, which
/// must not happen on an async thread (a plain thread, since a runtime shutting down may
/// not run blocking tasks).
pub(crate) fn give_up(runs: Vec<Box<Suspension>>) {
    if runs.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("moonjail-mcp-give-up".into())
        .spawn(move || drop(runs));
    if let Err(e) = spawned {
        tracing::warn!("giving up suspended runs: no thread ({e})");
    }
}
