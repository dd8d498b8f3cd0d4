//! The warm pool: locked-down workers waiting for runs.
//!
//! A keeper thread spawns workers in the background, so that building a sandbox does not
//! wait for them and a retired worker is replaced off the run's path; it also kills and
//! reaps retired workers. A run takes an idle worker, or spawns one itself when none is
//! idle and the pool is below its size, or waits for one to come back. A worker goes back
//! to the pool only after a clean run and before its `max_runs`; after a limit violation,
//! a crash or anything odd it is retired.
//!
//! Dropping the pool (the last clone of its `Sandbox`) stops the keeper and kills and
//! reaps every worker: no process, zombie or descriptor outlives it.
//!
//! After a `fork`, the child's copy of the pool leaves the parent's workers alone and
//! spawns its own on demand (see `Pool::after_fork`). A fork while another thread is
//! inside the pool (holding its lock) is not survivable, as with any lock and `fork`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::supervisor::{Fate, Settings, Stopper, Worker};
use super::{Job, WorkerPids};
use crate::error::{Error, ErrorKind};
use crate::outcome::Outcome;
use crate::tools::OnPark;

/// The pool of one sandbox.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// The fork generation of the process the pool serves: its maker's, or that of the
    /// forked child that took it over (see [`Pool::after_fork`]).
    owner: AtomicU64,
}

struct Shared {
    settings: Settings,
    pool_size: usize,
    prespawn: usize,
    max_runs: Option<u64>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Worker>,
    /// Workers that exist or are being spawned: idle, busy, or in the keeper's hands;
    /// not those whose run waits at a deferred call (`Sandbox::start`).
    live: usize,
    /// Workers whose run waits at a deferred call. The keeper does not prespawn in
    /// their place (a run that wants a worker meanwhile spawns one): a run that waits
    /// and goes on many times would otherwise cost a spawn and a retirement each time.
    parked: usize,
    /// Workers the keeper is spawning right now.
    prespawning: usize,
    /// Workers to kill and reap, off the runs' path.
    retired: Vec<Worker>,
    /// Set by a failed background spawn: the keeper stops prespawning until a run's own
    /// spawn succeeds, instead of respawning a worker that cannot start in a loop.
    paused: bool,
    shutdown: bool,
    /// How to end each worker running a run now ([`Pool::stop_busy`]).
    busy: Vec<Arc<Stopper>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Pool")
            .field("worker", &self.shared.settings.exe)
            .field("pool_size", &self.shared.pool_size)
            .field("prespawn", &self.shared.prespawn)
            .field("idle", &state.idle.len())
            .field("live", &state.live)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the keeper should spawn one more idle worker.
    fn wants_prespawn(&self, state: &State) -> bool {
        !state.paused
            && state.idle.len() + state.prespawning < self.prespawn
            && state.live + state.parked < self.pool_size
    }

    /// The keeper thread: spawn up to `prespawn` idle workers, reap retired ones.
    fn keep(&self) {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return;
            }
            let retired = std::mem::take(&mut state.retired);
            let spawn = self.wants_prespawn(&state);
            if retired.is_empty() && !spawn {
                state = self.wait(state);
                continue;
            }
            if spawn {
                state.live += 1;
                state.prespawning += 1;
            }
            drop(state);
            // Dropping a worker kills and reaps it.
            drop(retired);
            let spawned = spawn.then(|| Worker::spawn(&self.settings));
            state = self.lock();
            match spawned {
                None => {}
                Some(Ok(worker)) => {
                    state.prespawning -= 1;
                    if state.shutdown {
                        state.live -= 1;
                        drop(state);
                        drop(worker);
                        return;
                    }
                    state.idle.push(worker);
                    self.changed.notify_all();
                }
                Some(Err(message)) => {
                    tracing::warn!("moonjail: prespawning a worker failed: {message}");
                    state.prespawning -= 1;
                    state.live -= 1;
                    state.paused = true;
                    self.changed.notify_all();
                }
            }
        }
    }

    /// Takes an idle worker, or spawns one, or waits for one.
    fn acquire(&self) -> Result<Worker, String> {
        let mut state = self.lock();
        loop {
            while let Some(worker) = state.idle.pop() {
                if worker.is_idle_and_alive() {
                    return Ok(worker);
                }
                // It died while idle (or sent something unasked): replace it.
                state.live -= 1;
                state.retired.push(worker);
                self.changed.notify_all();
            }
            if state.shutdown {
                return Err("the sandbox is being dropped".into());
            }
            // A worker being prespawned will be ready sooner than a new one.
            if state.live < self.pool_size && state.prespawning == 0 {
                state.live += 1;
                drop(state);
                let spawned = Worker::spawn(&self.settings);
                let mut state = self.lock();
                match spawned {
                    Ok(worker) => {
                        state.paused = false;
                        self.changed.notify_all();
                        return Ok(worker);
                    }
                    Err(message) => {
                        state.live -= 1;
                        self.changed.notify_all();
                        return Err(message);
                    }
                }
            }
            state = self.wait(state);
        }
    }

    /// Gives a worker back after a run (`busy`: its stopper, registered for the run).
    fn release(&self, worker: Worker, fate: Fate, busy: Option<&Arc<Stopper>>) {
        let mut state = self.lock();
        if let Some(mine) = busy {
            state.busy.retain(|s| !Arc::ptr_eq(s, mine));
        }
        let worn_out = self.max_runs.is_some_and(|max| worker.runs() >= max);
        if fate == Fate::Reuse && !worn_out && !state.shutdown {
            state.idle.push(worker);
        } else {
            state.live -= 1;
            state.retired.push(worker);
        }
        self.changed.notify_all();
    }
}

impl Pool {
    /// Creates the pool and starts its keeper, which prespawns in the background.
    pub(crate) fn new(
        settings: Settings,
        pool_size: usize,
        prespawn: usize,
        max_runs: Option<u64>,
    ) -> Result<Pool, String> {
        let shared = Arc::new(Shared {
            settings,
            pool_size,
            prespawn,
            max_runs,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let keeper = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("moonjail-pool".into())
                .spawn(move || shared.keep())
                .map_err(|e| format!("cannot start the worker pool's thread: {e}"))?
        };
        Ok(Pool {
            shared,
            keeper: Mutex::new(Some(keeper)),
            owner: AtomicU64::new(crate::vm::watchdog::fork_generation()),
        })
    }

    /// In a process forked off the pool's maker (Python's `multiprocessing`, a
    /// pre-forking server): the workers are the parent's and the keeper thread did not
    /// survive the fork. Forgets both, once, so that this process spawns workers of its
    /// own on demand (without prespawning) and never touches the parent's.
    fn after_fork(&self) {
        let here = crate::vm::watchdog::fork_generation();
        if self.owner.swap(here, Ordering::Relaxed) == here {
            return;
        }
        let mut state = self.shared.lock();
        // Dropping the parent's workers here only closes this process's descriptors
        // (`Worker`'s drop knows whose they are).
        state.idle.clear();
        state.retired.clear();
        state.busy.clear();
        state.live = 0;
        state.parked = 0;
        state.prespawning = 0;
        state.paused = true;
        // Never joined: the thread is not in this process.
        if let Some(keeper) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            std::mem::forget(keeper);
        }
        self.shared.changed.notify_all();
    }

    /// Runs a job on a worker of the pool.
    pub(crate) fn run(&self, job: &Job) -> Outcome {
        let start = Instant::now();
        self.after_fork();
        let mut worker = match self.shared.acquire() {
            Ok(worker) => worker,
            Err(message) => {
                return Outcome::failed(Error::new(ErrorKind::Internal, message), start.elapsed())
            }
        };
        // A run that may wait for a person at a deferred call (`Sandbox::start`) leaves
        // the pool's count while it waits, so the pool may spawn another worker for the
        // runs that do not wait; it counts again once it goes on, after waiting for room
        // (so the workers running at once stay within the pool's size).
        let on_park = job.host.tools.as_ref().filter(|t| t.parks()).map(|_| {
            let (leaving, coming) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
            OnPark {
                parking: Box::new(move || {
                    let mut state = leaving.lock();
                    state.live -= 1;
                    state.parked += 1;
                    leaving.changed.notify_all();
                }),
                going_on: Box::new(move || {
                    let mut state = coming.lock();
                    while state.live >= coming.pool_size && !state.shutdown {
                        // An idle worker is the one too many: it makes room.
                        if let Some(idle) = state.idle.pop() {
                            state.live -= 1;
                            state.retired.push(idle);
                            coming.changed.notify_all();
                            continue;
                        }
                        state = coming.wait(state);
                    }
                    state.parked -= 1;
                    state.live += 1;
                }),
            }
        });
        let busy = worker.stopper();
        if let Some(stopper) = &busy {
            let mut state = self.shared.lock();
            state.busy.push(Arc::clone(stopper));
            if state.shutdown {
                // Stopped between this run's acquire and here.
                stopper.stop();
            }
        }
        let (outcome, fate) = worker.run(job, &self.shared.settings, on_park);
        self.shared.release(worker, fate, busy.as_ref());
        outcome
    }

    /// Stops the pool for good: kills every worker running a run now (synchronously,
    /// so a process exiting next leaves none behind), and refuses runs from then on. A
    /// run whose supervisor is waiting for the worker ends as `killed` once it reads the
    /// end of the channel; one inside a host tool call or waiting at a deferred call,
    /// when that returns. For a service's stop after its grace period. Sessions' workers
    /// are not the pool's. Returns how many workers were killed.
    pub(crate) fn stop_busy(&self) -> usize {
        self.after_fork();
        let mut state = self.shared.lock();
        state.shutdown = true;
        self.shared.changed.notify_all();
        for stopper in &state.busy {
            stopper.stop();
        }
        state.busy.len()
    }

    /// Takes a worker out of the pool for good, for a session: an idle one if there is
    /// one (the keeper then prespawns its replacement), else a new one. Either way the
    /// worker no longer counts against the pool's size; give it back with
    /// [`Pool::retire`].
    pub(crate) fn take(&self) -> Result<Worker, String> {
        self.after_fork();
        let mut state = self.shared.lock();
        while let Some(worker) = state.idle.pop() {
            state.live -= 1;
            self.shared.changed.notify_all();
            if worker.is_idle_and_alive() {
                return Ok(worker);
            }
            state.retired.push(worker);
        }
        if state.shutdown {
            return Err("the sandbox is being dropped".into());
        }
        drop(state);
        Worker::spawn(&self.shared.settings)
    }

    /// Kills and reaps a worker taken with [`Pool::take`], off the caller's path.
    pub(crate) fn retire(&self, worker: Worker) {
        let mut state = self.shared.lock();
        if state.shutdown {
            drop(state);
            drop(worker);
            return;
        }
        state.retired.push(worker);
        self.shared.changed.notify_all();
    }

    /// The settings every worker of this pool shares.
    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Sends a test-hook probe to a worker of the pool.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn probe(&self, probe: &str, timeout: Option<Duration>) -> Result<Json, Error> {
        let mut worker = self
            .shared
            .acquire()
            .map_err(|message| Error::new(ErrorKind::Internal, message))?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let (result, fate) = worker.probe(probe, deadline, &self.shared.settings);
        self.shared.release(worker, fate, None);
        result
    }

    /// Starts one worker outside the pool, waits until it is locked down, and kills it:
    /// how long a cold start takes.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn cold_start(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let worker = Worker::spawn(&self.shared.settings)?;
        let took = started.elapsed();
        drop(worker);
        Ok(took)
    }

    /// The pids of the idle workers.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn worker_pids(&self) -> Vec<WorkerPids> {
        let state = self.shared.lock();
        state
            .idle
            .iter()
            .map(|worker| {
                let (relay, pid) = worker.pids();
                WorkerPids {
                    relay,
                    pid,
                    runs: worker.runs(),
                    layers: worker
                        .layers()
                        .iter()
                        .map(|l| (l.layer.clone(), l.status.clone()))
                        .collect(),
                }
            })
            .collect()
    }

    /// Waits until at least `count` workers are idle, or `timeout` passes.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn wait_for_idle(&self, count: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.idle.len() >= count {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.after_fork();
        let (idle, retired) = {
            let mut state = self.shared.lock();
            state.shutdown = true;
            self.shared.changed.notify_all();
            (
                std::mem::take(&mut state.idle),
                std::mem::take(&mut state.retired),
            )
        };
        // Dropping a worker kills and reaps it.
        drop(idle);
        drop(retired);
        let keeper = self
            .keeper
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(keeper) = keeper {
            let _ = keeper.join();
        }
        // The keeper may have retired more before it saw the shutdown.
        let mut state = self.shared.lock();
        let idle = std::mem::take(&mut state.idle);
        let retired = std::mem::take(&mut state.retired);
        drop(state);
        drop(idle);
        drop(retired);
    }
}
