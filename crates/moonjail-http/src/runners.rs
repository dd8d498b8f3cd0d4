//! The threads that run one-off scripts: as many as executors, fed by a queue. A thread
//! that finishes a run takes the next queued one itself, so a busy service neither wakes
//! a thread nor puts one to sleep per request, as a blocking task per run (handed over
//! by the async side once an executor frees up) would: at 2 cores that handover was one
//! of the larger costs of a trivial run outside the Lua state itself.
//!
//! Admission is unchanged: a job is queued only with a [`crate::admission::Place`] (503
//! when the queue is full), and it runs only once it holds an executor, which session
//! calls compete for too.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Work for a runner thread; it must not unwind past itself (a panic is caught and ends
/// only that job).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The runner threads; dropping this lets them finish the queue and exit.
pub(crate) struct Runners {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runners").finish_non_exhaustive()
    }
}

impl Runners {
    /// Starts `threads` runner threads with stacks of `stack_bytes` (deep enough for the
    /// Lua C stack and deeply nested JSON, as the runtime's own threads).
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub(crate) fn start(threads: usize, stack_bytes: usize) -> std::io::Result<Runners> {
        let shared = Arc::new(Shared::default());
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("moonjail-run-{i}"))
                .stack_size(stack_bytes)
                .spawn(move || serve(&shared))?;
        }
        Ok(Runners { shared })
    }

    /// Queues `job`; a runner thread takes it in turn.
    pub(crate) fn submit(&self, job: Job) {
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queue.jobs.push_back(job);
        drop(queue);
        self.shared.ready.notify_one();
    }
}

impl Drop for Runners {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.ready.notify_all();
    }
}

/// A runner thread: takes jobs until the queue is closed and empty.
fn serve(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        // A panicking job drops what it holds (its executor, its answer's sender: the
        // request gets a 500); the thread goes on.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_turn_and_a_panic_ends_only_its_job() {
        let runners = Runners::start(2, 1 << 20).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        runners.submit(Box::new(|| panic!("a job that panics")));
        for i in 0..8 {
            let tx = tx.clone();
            runners.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let mut done: Vec<i32> = (0..8).map(|_| rx.recv().unwrap()).collect();
        done.sort_unstable();
        assert_eq!(done, (0..8).collect::<Vec<_>>());
    }
}
