//! Wall-clock deadlines without a per-instruction hook.
//!
//! On Linux each VM thread has one POSIX timer (`timer_create` with `SIGEV_THREAD_ID`)
//! that signals that very thread when the run's deadline passes; the handler (in
//! `hook.rs`) checks the deadline stored in the run's control block and hooks the live
//! coroutines. No helper thread exists, so a single-threaded host stays single-threaded
//! (glibc's allocator takes no locks then: allocation-heavy scripts ran ~30% slower with
//! a watchdog thread alive). Elsewhere one process-wide watchdog thread keeps the pending
//! deadlines and signals the run's thread. Native functions also poll the clock.

use std::time::Instant;

use super::control::Control;

/// The real-time signal used to interrupt a VM thread. Embedders must leave it alone.
pub fn deadline_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// Nanoseconds on the monotonic clock (async-signal-safe: `clock_gettime` only).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes the timespec it is given; CLOCK_MONOTONIC always
    // exists on the platforms moonjail builds for.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Records in `ctl` when its deadline passes, as monotonic nanoseconds.
fn set_due(ctl: &Control, at: Instant) -> std::time::Duration {
    let left = at.saturating_duration_since(Instant::now());
    let due = monotonic_ns().saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
    ctl.set_deadline_ns(due);
    left
}

#[cfg(not(target_os = "linux"))]
pub(crate) use thread::Deadline;
#[cfg(target_os = "linux")]
pub(crate) use timer::Deadline;

#[cfg(target_os = "linux")]
mod timer {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::time::Instant;

    use super::super::control::Control;
    use super::{deadline_signal, set_due};

    /// This thread's POSIX timer, deleted when the thread ends.
    struct ThreadTimer(Cell<Option<libc::timer_t>>);

    impl Drop for ThreadTimer {
        fn drop(&mut self) {
            if let Some(t) = self.0.get() {
                // SAFETY: `t` was created by `timer_create` on this thread and is
                // deleted once, here.
                unsafe { libc::timer_delete(t) };
            }
        }
    }

    thread_local! {
        static TIMER: ThreadTimer = const { ThreadTimer(Cell::new(None)) };
    }

    fn this_thread_timer() -> Option<libc::timer_t> {
        TIMER.with(|t| {
            if let Some(timer) = t.0.get() {
                return Some(timer);
            }
            // SAFETY: a zeroed sigevent is valid; we fill the fields SIGEV_THREAD_ID
            // needs and let the kernel write the new timer's id.
            let timer = unsafe {
                let mut sev: libc::sigevent = std::mem::zeroed();
                sev.sigev_notify = libc::SIGEV_THREAD_ID;
                sev.sigev_signo = deadline_signal();
                sev.sigev_notify_thread_id = libc::gettid();
                let mut timer: libc::timer_t = std::ptr::null_mut();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                    tracing::error!(
                        "timer_create for the deadline failed: {}",
                        std::io::Error::last_os_error()
                    );
                    return None;
                }
                timer
            };
            t.0.set(Some(timer));
            Some(timer)
        })
    }

    fn settime(timer: libc::timer_t, nanos: u64) {
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `timer` is this thread's live timer; a zero value disarms it.
        unsafe { libc::timer_settime(timer, 0, &value, std::ptr::null_mut()) };
    }

    /// A registered deadline; dropping it disarms the timer.
    pub(crate) struct Deadline {
        timer: Option<libc::timer_t>,
    }

    impl Deadline {
        /// Arms this thread's timer for `at`: when it passes, the thread is signalled and
        /// the handler stops the run whose control block is `ctl`.
        pub(crate) fn arm(ctl: &Control, at: Instant) -> Deadline {
            static HANDLER: OnceLock<()> = OnceLock::new();
            HANDLER.get_or_init(super::thread::install_handler);
            super::thread::unblock_on_this_thread();
            let left = set_due(ctl, at);
            let timer = this_thread_timer();
            if let Some(timer) = timer {
                // At least 1 ns: a zero value would disarm instead of firing at once.
                let nanos = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX).max(1);
                settime(timer, nanos);
            }
            Deadline { timer }
        }
    }

    impl Drop for Deadline {
        fn drop(&mut self) {
            if let Some(timer) = self.timer {
                settime(timer, 0);
            }
        }
    }
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
mod thread {
    use super::super::control::Control;
    use super::{deadline_signal, set_due};
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

    pub(super) fn install_handler() {
        // SAFETY: installing a plain SA_SIGINFO handler; the handler only touches a
        // const-initialised thread-local, atomics and `lua_sethook`.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = crate::vm::hook::on_deadline_signal as *const () as usize;
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

    pub(super) fn unblock_on_this_thread() {
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
        pub(crate) fn arm(ctl: &Control, at: Instant) -> Deadline {
            set_due(ctl, at);
            let expired = ctl.expired.clone();
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
}
