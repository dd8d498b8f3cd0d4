//! Wall-clock deadlines without a per-instruction hook.
//!
//! One process-wide watchdog thread keeps the pending deadlines. When one passes it sets
//! the run's `expired` flag and signals the run's thread; the handler (in `hook.rs`)
//! hooks the live coroutines there. Native functions poll `expired` themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest the watchdog sleeps with nothing due; registering a deadline later than its
/// planned wake-up needs no notification (the common case), keeping runs syscall-free.
const IDLE_TICK: Duration = Duration::from_millis(50);

struct Entry {
    thread: libc::pthread_t,
    expired: Arc<AtomicBool>,
}

struct State {
    pending: BTreeMap<(Instant, u64), Entry>,
    wake_at: Instant,
}

struct Watchdog {
    state: Mutex<State>,
    cv: Condvar,
    next_id: AtomicU64,
}

/// The real-time signal used to interrupt a VM thread. Embedders must leave it alone.
pub fn deadline_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

fn watchdog() -> &'static Watchdog {
    static WD: OnceLock<&'static Watchdog> = OnceLock::new();
    WD.get_or_init(|| {
        install_handler();
        let wd: &'static Watchdog = Box::leak(Box::new(Watchdog {
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                wake_at: Instant::now(),
            }),
            cv: Condvar::new(),
            next_id: AtomicU64::new(1),
        }));
        let spawned = std::thread::Builder::new()
            .name("moonjail-watchdog".into())
            .spawn(move || wd.run());
        if let Err(e) = spawned {
            tracing::error!("cannot start the moonjail watchdog thread: {e}");
        }
        wd
    })
}

fn install_handler() {
    // SAFETY: installing a plain SA_SIGINFO handler; the handler only touches a
    // const-initialised thread-local, atomics and `lua_sethook`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = super::hook::on_deadline_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(deadline_signal(), &sa, std::ptr::null_mut()) != 0 {
            tracing::error!(
                "cannot install the deadline signal handler: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn unblock_on_this_thread() {
    thread_local! { static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) }; }
    if DONE.with(|d| d.replace(true)) {
        return;
    }
    // SAFETY: adjusting this thread's own signal mask with a valid set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, deadline_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

impl Watchdog {
    fn run(&self) {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        loop {
            let now = Instant::now();
            while let Some(entry) = st.pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let e = entry.remove();
                e.expired.store(true, Ordering::SeqCst);
                // SAFETY: the target thread is alive: a run removes its entry (under this
                // lock) before its thread can finish, so `thread` is a live pthread.
                unsafe { libc::pthread_kill(e.thread, deadline_signal()) };
            }
            let next = st
                .pending
                .first_key_value()
                .map(|((t, _), _)| *t)
                .unwrap_or(now + IDLE_TICK)
                .min(now + IDLE_TICK);
            st.wake_at = next;
            let wait = next.saturating_duration_since(Instant::now());
            st = match self.cv.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// A registered deadline; dropping it cancels the deadline.
pub(crate) struct Deadline {
    key: (Instant, u64),
}

impl Deadline {
    /// Registers `at` for the calling thread: when it passes, `expired` is set and the
    /// thread is signalled.
    pub(crate) fn arm(at: Instant, expired: Arc<AtomicBool>) -> Deadline {
        unblock_on_this_thread();
        let wd = watchdog();
        let key = (at, wd.next_id.fetch_add(1, Ordering::Relaxed));
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        let mut st = match wd.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.pending.insert(key, Entry { thread, expired });
        if at < st.wake_at {
            wd.cv.notify_one();
        }
        Deadline { key }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let wd = watchdog();
        let mut st = match wd.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.pending.remove(&self.key);
    }
}
