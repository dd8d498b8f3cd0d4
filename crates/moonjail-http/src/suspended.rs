//! Suspended runs: a `POST /v1/run` on a sandbox with deferred tools that stopped at a
//! deferred call, held in memory (`moonjail::Suspension`: the run's own thread waits;
//! isolated, its worker waits with it, frozen and out of the pool's count) until
//! `POST /v1/runs/{id}/resume` answers it, `DELETE /v1/runs/{id}` gives it up, or it
//! expires. Every suspended run belongs to the key that started it, expires the suspend
//! timeout after it suspended, and counts against the caps per key and in all.
//!
//! Each id answers one pending call: resuming takes the run out of the registry (a second
//! resume, or a DELETE meanwhile, is a 404), and a run that suspends again at its next
//! deferred call gets a new id. Giving a run up (dropping its `Suspension`) may wait for
//! its thread to end, so suspensions are never dropped under the registry's lock, nor on
//! the async threads: see [`give_up`].

// Suspensions are boxed as the registry holds them (an entry stays small), and moved out
// in their boxes to be given up.
#![allow(clippy::vec_box)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use moonjail::Suspension;

use crate::error::ApiError;

/// What the registry holds under an id.
enum Slot {
    /// Waiting for its answer.
    Held(Box<Suspension>),
    /// Being resumed now: it still counts against the caps (its next suspension takes
    /// its place without being refused), but it cannot be resumed or deleted again.
    Resuming,
}

struct Entry {
    owner: Arc<str>,
    /// The run's profile, for metrics.
    profile: &'static str,
    expires: Instant,
    slot: Slot,
}

/// A suspended run just registered: its id and when it expires.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) id: String,
    pub(crate) expires_at: SystemTime,
}

/// The suspended runs, by id.
pub(crate) struct SuspendedRuns {
    map: Mutex<Registry>,
    max_total: usize,
    max_per_key: usize,
    timeout: Duration,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<String, Entry>,
    /// The service is stopping: nothing more is held.
    closed: bool,
}

impl Registry {
    fn owned_by(&self, owner: &str) -> usize {
        self.entries.values().filter(|e| &*e.owner == owner).count()
    }
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no suspended run {id:?} for this key (it was resumed, given up or expired, or \
         belongs to another key)"
    ))
}

fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("run id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Drops suspended runs (each ends as suspended) on a blocking thread: dropping one held
/// in process waits for its thread to end.
pub(crate) fn give_up(runs: Vec<Box<Suspension>>) {
    if runs.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(runs));
        }
        Err(_) => drop(runs),
    }
}

impl SuspendedRuns {
    pub(crate) fn new(max_total: usize, max_per_key: usize, timeout: Duration) -> SuspendedRuns {
        SuspendedRuns {
            map: Mutex::new(Registry::default()),
            max_total,
            max_per_key,
            timeout,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Registry>, ApiError> {
        self.map
            .lock()
            .map_err(|_| ApiError::internal("the suspended runs' lock is poisoned"))
    }

    /// Suspended runs held now (those being resumed included).
    pub(crate) fn live(&self) -> usize {
        self.map.lock().map_or(0, |m| m.entries.len())
    }

    /// How long a suspended run waits for its answer.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Holds `suspension` for `owner` under a new id. Refused (the suspension handed
    /// back, to be given up) when `owner` or the service holds as many as allowed (429,
    /// 503), or the service is stopping (503).
    pub(crate) fn insert(
        &self,
        owner: &Arc<str>,
        profile: &'static str,
        suspension: Box<Suspension>,
    ) -> Result<Registered, (ApiError, Box<Suspension>)> {
        let mut map = match self.lock() {
            Ok(map) => map,
            Err(e) => return Err((e, suspension)),
        };
        if let Err(e) = self.check_caps(&map, owner) {
            return Err((e, suspension));
        }
        self.hold(&mut map, owner, profile, suspension)
    }

    fn hold(
        &self,
        map: &mut Registry,
        owner: &Arc<str>,
        profile: &'static str,
        suspension: Box<Suspension>,
    ) -> Result<Registered, (ApiError, Box<Suspension>)> {
        if map.closed {
            return Err((
                ApiError::unavailable(
                    "shutting_down",
                    "the service is stopping: the run is not held (it ends as suspended)",
                    Duration::from_secs(1),
                ),
                suspension,
            ));
        }
        let id = match new_id() {
            Ok(id) => id,
            Err(e) => return Err((e, suspension)),
        };
        let expires_at = SystemTime::now() + self.timeout;
        map.entries.insert(
            id.clone(),
            Entry {
                owner: owner.clone(),
                profile,
                expires: Instant::now() + self.timeout,
                slot: Slot::Held(suspension),
            },
        );
        Ok(Registered { id, expires_at })
    }

    fn check_caps(&self, map: &Registry, owner: &str) -> Result<(), ApiError> {
        if map.entries.len() >= self.max_total {
            return Err(ApiError::unavailable(
                "too_many_suspended",
                format!(
                    "the run suspended, but the service holds {} suspended runs, its maximum: \
                     the run was given up (it ended as suspended); retry later",
                    self.max_total
                ),
                Duration::from_secs(5),
            ));
        }
        let own = map.owned_by(owner);
        if own >= self.max_per_key {
            return Err(ApiError::too_many(
                "too_many_suspended",
                format!(
                    "the run suspended, but the key {owner:?} holds {own} suspended runs, its \
                     maximum of {}: the run was given up (it ended as suspended); resume or \
                     give up one (DELETE /v1/runs/ID) first",
                    self.max_per_key
                ),
                Duration::from_secs(5),
            ));
        }
        Ok(())
    }

    /// Takes `owner`'s suspended run `id` out to be resumed; 404 for another key's, an
    /// unknown, expired, or already resumed one. The returned claim puts it back if it is
    /// dropped before the run is resumed (the request went away while it waited for an
    /// executor).
    pub(crate) fn claim(self: &Arc<Self>, owner: &str, id: &str) -> Result<Claim, ApiError> {
        let mut map = self.lock()?;
        let Some(entry) = map
            .entries
            .get_mut(id)
            .filter(|e| &*e.owner == owner && matches!(e.slot, Slot::Held(_)))
        else {
            return Err(missing(id));
        };
        if entry.expires <= Instant::now() {
            let expired = map.entries.remove(id);
            drop(map);
            if let Some(Entry {
                slot: Slot::Held(s),
                ..
            }) = expired
            {
                give_up(vec![s]);
            }
            return Err(missing(id));
        }
        let Slot::Held(suspension) = std::mem::replace(&mut entry.slot, Slot::Resuming) else {
            return Err(missing(id));
        };
        Ok(Claim {
            runs: Arc::clone(self),
            id: id.to_string(),
            owner: entry.owner.clone(),
            profile: entry.profile,
            suspension: Some(suspension),
            settled: false,
        })
    }

    /// Gives up `owner`'s suspended run `id`: returns it, to be dropped off the async
    /// threads; 404 for another key's, an unknown, expired or resuming one.
    pub(crate) fn remove(&self, owner: &str, id: &str) -> Result<Box<Suspension>, ApiError> {
        let mut map = self.lock()?;
        match map.entries.get(id) {
            Some(e) if &*e.owner == owner && matches!(e.slot, Slot::Held(_)) => {
                let expired = e.expires <= Instant::now();
                match map.entries.remove(id) {
                    Some(Entry {
                        slot: Slot::Held(s),
                        ..
                    }) if !expired => Ok(s),
                    Some(Entry {
                        slot: Slot::Held(s),
                        ..
                    }) => {
                        drop(map);
                        give_up(vec![s]);
                        Err(missing(id))
                    }
                    _ => Err(missing(id)),
                }
            }
            _ => Err(missing(id)),
        }
    }

    /// Takes suspended run `id` out whoever owns it (its request went away before it
    /// learnt the id), to be given up.
    pub(crate) fn forget(&self, id: &str) -> Option<Box<Suspension>> {
        let mut map = self.map.lock().ok()?;
        match map.entries.remove(id)?.slot {
            Slot::Held(s) => Some(s),
            Slot::Resuming => None,
        }
    }

    /// Takes out the suspended runs past their timeout (to be given up).
    pub(crate) fn expire(&self) -> Vec<Box<Suspension>> {
        let Ok(mut map) = self.map.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let expired: Vec<String> = map
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.slot, Slot::Held(_)) && e.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| match map.entries.remove(id) {
                Some(Entry {
                    slot: Slot::Held(s),
                    ..
                }) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Takes out every suspended run and holds no more (at shutdown).
    pub(crate) fn close(&self) -> Vec<Box<Suspension>> {
        let Ok(mut map) = self.map.lock() else {
            return Vec::new();
        };
        map.closed = true;
        map.entries
            .drain()
            .filter_map(|(_, e)| match e.slot {
                Slot::Held(s) => Some(s),
                Slot::Resuming => None,
            })
            .collect()
    }
}

/// A suspended run taken out to be resumed. Dropped unresumed, it is put back under its
/// id (its expiry unchanged); resumed, its id is gone for good.
pub(crate) struct Claim {
    runs: Arc<SuspendedRuns>,
    id: String,
    owner: Arc<str>,
    profile: &'static str,
    suspension: Option<Box<Suspension>>,
    settled: bool,
}

impl Claim {
    /// The run's profile, for metrics.
    pub(crate) fn profile(&self) -> &'static str {
        self.profile
    }

    /// The suspension, to resume; from now on the id is spent.
    pub(crate) fn take(&mut self) -> Option<Box<Suspension>> {
        self.suspension.take()
    }

    /// The resumed run finished (or failed): its id is removed.
    pub(crate) fn finish(mut self) {
        self.settled = true;
        if let Ok(mut map) = self.runs.map.lock() {
            map.entries.remove(&self.id);
        }
    }

    /// The resumed run suspended again: it is held under a new id, in its old one's
    /// place (so not refused by the caps), unless the service is stopping.
    pub(crate) fn suspend_again(
        mut self,
        suspension: Box<Suspension>,
    ) -> Result<Registered, (ApiError, Box<Suspension>)> {
        self.settled = true;
        let mut map = match self.runs.lock() {
            Ok(map) => map,
            Err(e) => return Err((e, suspension)),
        };
        map.entries.remove(&self.id);
        let owner = self.owner.clone();
        self.runs.hold(&mut map, &owner, self.profile, suspension)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(mut map) = self.runs.map.lock() else {
            return;
        };
        match (self.suspension.take(), map.closed) {
            (Some(suspension), false) => match map.entries.get_mut(&self.id) {
                Some(entry) => entry.slot = Slot::Held(suspension),
                None => {
                    drop(map);
                    give_up(vec![suspension]);
                }
            },
            (Some(suspension), true) => {
                drop(map);
                give_up(vec![suspension]);
            }
            (None, _) => {
                map.entries.remove(&self.id);
            }
        }
    }
}

/// `expires_at` and the id, added to a suspended outcome's `error.value` (the pending
/// call `{"name", "args"}`).
pub(crate) fn annotate(outcome: &mut moonjail::Outcome, registered: &Registered) {
    if let Err(error) = &mut outcome.result {
        let value = error
            .value
            .get_or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(fields) = value {
            fields.insert("run".into(), registered.id.clone().into());
            fields.insert(
                "expires_at".into(),
                crate::sessions::rfc3339(registered.expires_at).into(),
            );
        }
    }
}
