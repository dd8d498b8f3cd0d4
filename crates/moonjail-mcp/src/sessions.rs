//! The sessions of one MCP connection. A [`moonjail::Session`] is not `Send`, so each
//! lives on a thread of its own, made for it, and takes its requests over a channel, one
//! at a time, in order. Dropping the table (the connection ended) drops every sender:
//! each thread finishes the request it is on, and its session closes (an isolated
//! session's worker process is killed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, PoisonError};

use moonjail::{Error, ErrorKind, Outcome, Sandbox, Session};
use tokio::sync::oneshot;

/// One request, run on the session's thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The live sessions of a connection, by id.
#[derive(Debug)]
pub(crate) struct Sessions {
    max: usize,
    next: AtomicU64,
    live: Mutex<HashMap<String, mpsc::Sender<Job>>>,
}

/// Why a session request was not run.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// `max` sessions are open already.
    Full { max: usize },
    /// No open session has this id.
    Unknown(String),
    /// The session could not be opened (its state, or its worker process).
    Open(Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full { max } => write!(
                f,
                "too many sessions: {max} are open on this connection, the most allowed; \
                 close one with session_close first"
            ),
            Refusal::Unknown(id) => write!(
                f,
                "no open session {id:?} on this connection (session_open gives an id; a \
                 closed session's id is gone)"
            ),
            Refusal::Open(e) => write!(f, "the session could not be opened: {}", e.message),
        }
    }
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions {
            max,
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session on a new thread and gives its id.
    pub async fn open(&self, sandbox: &Sandbox) -> Result<String, Refusal> {
        // The slot is taken first, so that concurrent opens cannot pass the cap.
        let id = format!("s{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (jobs, receiver) = mpsc::channel::<Job>();
        {
            let mut live = self.live();
            if live.len() >= self.max {
                return Err(Refusal::Full { max: self.max });
            }
            live.insert(id.clone(), jobs);
        }
        let (ready, opened) = oneshot::channel::<Result<(), Error>>();
        let sandbox = sandbox.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("moonjail-session-{id}"))
            .spawn(move || serve(&sandbox, receiver, ready));
        let result = match spawned {
            Ok(_) => opened.await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Internal,
                    "the session's thread ended before the session opened",
                ))
            }),
            Err(e) => Err(Error::new(
                ErrorKind::Internal,
                format!("starting the session's thread: {e}"),
            )),
        };
        match result {
            Ok(()) => Ok(id),
            Err(e) => {
                self.live().remove(&id);
                Err(Refusal::Open(e))
            }
        }
    }

    /// Runs `op` on the session `id`'s thread and gives its outcome.
    pub async fn request(
        &self,
        id: &str,
        op: impl FnOnce(&mut Session) -> Outcome + Send + 'static,
    ) -> Result<Outcome, Refusal> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |session| {
            let _ = reply.send(op(session));
        });
        let sent = match self.live().get(id) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => return Err(Refusal::Unknown(id.to_string())),
        };
        let lost = || {
            Outcome::from_error(Error::new(
                ErrorKind::Internal,
                "the session's thread ended without answering",
            ))
        };
        if !sent {
            return Ok(lost());
        }
        Ok(answer.await.unwrap_or_else(|_| lost()))
    }

    /// Closes the session `id`: requests already sent are still answered, then its
    /// state is dropped.
    pub fn close(&self, id: &str) -> Result<(), Refusal> {
        match self.live().remove(id) {
            Some(_) => Ok(()),
            None => Err(Refusal::Unknown(id.to_string())),
        }
    }

    /// How many sessions are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live().len()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Job>>> {
        // A panic while the map was held cannot leave it half-changed (each change is
        // one insert or remove): go on with it.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The session's thread: open it, say so, then run requests until every sender is gone.
fn serve(sandbox: &Sandbox, jobs: mpsc::Receiver<Job>, ready: oneshot::Sender<Result<(), Error>>) {
    let mut session = match sandbox.session() {
        Ok(session) => session,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    while let Ok(job) = jobs.recv() {
        job(&mut session);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_session_keeps_its_state_until_closed() {
        block_on(async {
            let sandbox = Sandbox::default();
            let sessions = Sessions::new(2);
            let id = sessions.open(&sandbox).await.unwrap();
            let out = sessions
                .request(&id, |s| {
                    s.exec("n = 41 function bump() n = n + 1 return n end")
                })
                .await
                .unwrap();
            assert!(out.is_ok(), "{:?}", out.error());
            let out = sessions
                .request(&id, |s| s.call("bump", &[]))
                .await
                .unwrap();
            assert_eq!(out.result.unwrap(), json!(42));
            sessions.close(&id).unwrap();
            assert!(matches!(
                sessions.request(&id, |s| s.exec("return 1")).await,
                Err(Refusal::Unknown(_))
            ));
            assert!(matches!(sessions.close(&id), Err(Refusal::Unknown(_))));
        });
    }

    #[test]
    fn the_cap_holds_and_a_closed_session_frees_its_slot() {
        block_on(async {
            let sandbox = Sandbox::default();
            let sessions = Sessions::new(2);
            let a = sessions.open(&sandbox).await.unwrap();
            let _b = sessions.open(&sandbox).await.unwrap();
            let full = sessions.open(&sandbox).await.unwrap_err();
            assert!(matches!(full, Refusal::Full { max: 2 }));
            assert!(full.to_string().contains("too many sessions"), "{full}");
            assert_eq!(sessions.len(), 2);
            sessions.close(&a).unwrap();
            let c = sessions.open(&sandbox).await.unwrap();
            assert_ne!(c, a, "ids are not reused");
        });
    }
}
