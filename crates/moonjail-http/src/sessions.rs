//! Sessions: each a `moonjail::Session` on a thread of its own (a session is not `Send`:
//! it lives where it was made), driven over a channel. Every session belongs to the key
//! that opened it, closes after it sits unused for the idle timeout, and counts against
//! the caps per key and in all.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use moonjail::{CallOptions, Outcome, Sandbox};
use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::error::ApiError;

/// A request to a session's thread, with the executor it runs on: the ticket is given
/// back when the thread is done with it, even if the client went away meanwhile.
pub(crate) struct Job {
    pub(crate) command: Command,
    pub(crate) ticket: crate::admission::Ticket,
}

/// What a session's thread is asked to do.
pub(crate) enum Command {
    Exec {
        code: String,
        input: Json,
        expression: bool,
        options: CallOptions,
        reply: oneshot::Sender<Outcome>,
    },
    Call {
        function: String,
        args: Vec<Json>,
        options: CallOptions,
        reply: oneshot::Sender<Outcome>,
    },
    HasFunction {
        name: String,
        reply: oneshot::Sender<Result<bool, moonjail::Error>>,
    },
}

/// One open session, as the registry holds it.
pub(crate) struct Handle {
    owner: Arc<str>,
    /// The profile's name, for metrics.
    pub(crate) profile: &'static str,
    commands: mpsc::Sender<Job>,
    /// When a request last ended (or the session opened), and how many are in flight.
    use_: Mutex<(Instant, usize)>,
}

/// A request in flight on a session: keeps it from expiring; marks it used when done.
pub(crate) struct InUse {
    handle: Arc<Handle>,
}

impl InUse {
    /// Sends `command` to the session's thread.
    pub(crate) fn send(&self, job: Job) -> Result<(), ApiError> {
        self.handle
            .commands
            .send(job)
            .map_err(|_| ApiError::session_closed("the session's thread has ended"))
    }

    pub(crate) fn profile(&self) -> &'static str {
        self.handle.profile
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Ok(mut use_) = self.handle.use_.lock() {
            use_.0 = Instant::now();
            use_.1 = use_.1.saturating_sub(1);
        }
    }
}

/// The open sessions, by id.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Handle>>>,
    max_total: usize,
    max_per_key: usize,
    idle: Duration,
}

/// What a newly opened session is known by.
pub(crate) struct Opened {
    pub(crate) id: String,
    pub(crate) expires_at: SystemTime,
}

fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("session id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    pub(crate) fn new(max_total: usize, max_per_key: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max_total,
            max_per_key,
            idle,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<Handle>>>, ApiError> {
        self.map
            .lock()
            .map_err(|_| ApiError::internal("the session registry's lock is poisoned"))
    }

    /// Open sessions now.
    pub(crate) fn live(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// The session idle timeout.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Refuses when `owner` or the service has as many sessions as allowed.
    fn check_caps(&self, map: &HashMap<String, Arc<Handle>>, owner: &str) -> Result<(), ApiError> {
        if map.len() >= self.max_total {
            return Err(ApiError::unavailable(
                "too_many_sessions",
                format!(
                    "the service has {} open sessions, its maximum; retry later",
                    self.max_total
                ),
                Duration::from_secs(5),
            ));
        }
        let own = map.values().filter(|h| &*h.owner == owner).count();
        if own >= self.max_per_key {
            return Err(ApiError::too_many(
                "too_many_sessions",
                format!(
                    "the key {owner:?} has {own} open sessions, its maximum of {}: close one \
                     (DELETE /v1/sessions/ID) first",
                    self.max_per_key
                ),
                Duration::from_secs(5),
            ));
        }
        Ok(())
    }

    /// Opens a session of `sandbox` for `owner` on a new thread.
    pub(crate) async fn open(
        &self,
        owner: Arc<str>,
        sandbox: Sandbox,
    ) -> Result<Result<Opened, moonjail::Error>, ApiError> {
        self.check_caps(&*self.lock()?, &owner)?;
        let profile = sandbox.profile().name();
        let (commands, inbox) = mpsc::channel();
        let (opened_tx, opened_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("moonjail-session".into())
            .stack_size(16 << 20)
            .spawn(move || serve(sandbox, opened_tx, inbox))
            .map_err(|e| ApiError::internal(format!("starting a session thread: {e}")))?;
        match opened_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Ok(Err(error)),
            Err(_) => return Err(ApiError::internal("the session thread ended while opening")),
        }
        let id = new_id()?;
        let handle = Arc::new(Handle {
            owner: owner.clone(),
            profile,
            commands,
            use_: Mutex::new((Instant::now(), 0)),
        });
        let mut map = self.lock()?;
        // Checked again: others may have opened sessions meanwhile (dropping `handle`
        // ends the thread and closes the session).
        self.check_caps(&map, &owner)?;
        map.insert(id.clone(), handle);
        Ok(Ok(Opened {
            id,
            expires_at: SystemTime::now() + self.idle,
        }))
    }

    /// `owner`'s session `id`, marked in use; 404 for any other key's, or an expired one.
    pub(crate) fn get(&self, owner: &str, id: &str) -> Result<InUse, ApiError> {
        let missing = || ApiError::not_found(format!("no session {id:?} for this key"));
        let mut map = self.lock()?;
        let handle = map
            .get(id)
            .filter(|h| &*h.owner == owner)
            .cloned()
            .ok_or_else(missing)?;
        let mut use_ = handle
            .use_
            .lock()
            .map_err(|_| ApiError::internal("a session's lock is poisoned"))?;
        if use_.1 == 0 && use_.0.elapsed() >= self.idle {
            drop(use_);
            map.remove(id);
            return Err(missing());
        }
        use_.1 += 1;
        drop(use_);
        Ok(InUse { handle })
    }

    /// Closes `owner`'s session `id`; 404 for any other key's.
    pub(crate) fn remove(&self, owner: &str, id: &str) -> Result<(), ApiError> {
        let mut map = self.lock()?;
        match map.get(id) {
            Some(h) if &*h.owner == owner => {
                map.remove(id);
                Ok(())
            }
            _ => Err(ApiError::not_found(format!(
                "no session {id:?} for this key"
            ))),
        }
    }

    /// Closes the sessions unused for the idle timeout; returns how many.
    pub(crate) fn expire(&self) -> usize {
        let Ok(mut map) = self.map.lock() else {
            return 0;
        };
        let before = map.len();
        map.retain(|_, h| {
            h.use_
                .lock()
                .is_ok_and(|u| u.1 > 0 || u.0.elapsed() < self.idle)
        });
        before - map.len()
    }

    /// Closes every session (at shutdown).
    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

/// A session's thread: opens the session, answers commands until every sender is gone
/// (the session was closed, expired or the service stopped), then drops the session,
/// which kills its worker process when isolated.
fn serve(
    sandbox: Sandbox,
    opened: oneshot::Sender<Result<(), moonjail::Error>>,
    inbox: mpsc::Receiver<Job>,
) {
    let mut session = match sandbox.session() {
        Ok(session) => session,
        Err(error) => {
            let _ = opened.send(Err(error));
            return;
        }
    };
    if opened.send(Ok(())).is_err() {
        return;
    }
    while let Ok(Job { command, ticket }) = inbox.recv() {
        // The executor is given back before the answer goes out: a client that sends
        // its next request as soon as it has the answer finds it free.
        match command {
            Command::Exec {
                code,
                input,
                expression,
                options,
                reply,
            } => {
                let outcome = if expression {
                    session.eval(&code, &options)
                } else {
                    session.exec_with(&code, &input, &options)
                };
                drop(ticket);
                let _ = reply.send(outcome);
            }
            Command::Call {
                function,
                args,
                options,
                reply,
            } => {
                let outcome = session.call_with(&function, &args, &options);
                drop(ticket);
                let _ = reply.send(outcome);
            }
            Command::HasFunction { name, reply } => {
                let answer = session.has_function(&name);
                drop(ticket);
                let _ = reply.send(answer);
            }
        }
    }
}

/// A time as RFC 3339 in UTC, to the second (`2025-01-31T12:00:00Z`).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |secs| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
