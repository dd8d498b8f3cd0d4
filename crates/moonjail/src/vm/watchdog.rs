//! Wall-clock deadlines without a per-instruction hook.
//!
//! On Linux each VM thread has one POSIX timer (`timer_create` with `SIGEV_THREAD_ID`)
//! that signals that very thread when the run's deadline passes; the handler (in
//! `hook.rs`) checks the deadline stored in the run's control block and hooks the live
//! coroutines. No helper thread exists, so a single-threaded host stays single-threaded
//! (glibc's allocator takes no locks then: allocation-heavy scripts ran ~30% slower with
//! a watchdog thread alive). Elsewhere one process-wide watchdog thread keeps the pending
//! deadlines and signals the run's thread. Native functions also poll the clock.
//!
//! The same timer (or watchdog) also tells a call when its host interrupt check is due:
//! the timer is set for whichever comes first, the deadline or the next check. A call
//! with neither has no timer armed at all.

use std::sync::atomic::{AtomicU64, Ordering};
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
pub(crate) use timer::{for_each_armed, rearm_from_handler, Deadline};

/// Without per-thread timers, the handler knows only the current run.
#[cfg(not(target_os = "linux"))]
pub(crate) fn for_each_armed(mut f: impl FnMut(&Control)) {
    if let Some(ctl) = super::control::current() {
        f(ctl);
    }
}

/// Without per-thread timers there is nothing to set: the watchdog thread signals a call
/// with an interrupt check once per period.
#[cfg(not(target_os = "linux"))]
pub(crate) fn rearm_from_handler() {}

/// How many times this process is a `fork` child of the process it started in (0 in the
/// original): what tells a forked child that state it inherited belongs to its parent.
/// POSIX timers are not inherited (a timer id kept across a fork names no timer, and
/// arming it arms nothing: a forked child's scripts then ran past their deadlines
/// forever), and workers are the parent's (`worker/pool.rs`, `Worker::belongs_here`).
/// One atomic load, where `getpid` would be a system call.
pub(crate) fn fork_generation() -> u64 {
    static FORKS: AtomicU64 = AtomicU64::new(0);
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    extern "C" fn after_fork_in_child() {
        FORKS.fetch_add(1, Ordering::Relaxed);
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a child handler that only bumps an atomic (async-signal
        // safe, as a handler run after fork in a multithreaded process must be).
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORKS.load(Ordering::Relaxed)
}

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
                LIVE_TIMER.with(|live| live.set(None));
                // SAFETY: `t` was created by `timer_create` on this thread and is
                // deleted once, here.
                unsafe { libc::timer_delete(t) };
            }
        }
    }

    thread_local! {
        static TIMER: ThreadTimer = const { ThreadTimer(Cell::new(None)) };
        /// The same timer for the signal handler: a const-initialised cell without a
        /// destructor, which a handler may read (`TIMER`'s destructor is registered on
        /// first use, which is not async-signal-safe). An `Option`: a timer's id may be 0.
        static LIVE_TIMER: Cell<Option<libc::timer_t>> = const { Cell::new(None) };
    }

    thread_local! {
        /// The fork generation in which this thread's timer was made.
        static TIMER_FORKS: Cell<u64> = const { Cell::new(0) };
    }

    fn this_thread_timer() -> Option<libc::timer_t> {
        let forks = super::fork_generation();
        TIMER.with(|t| {
            if let Some(timer) = t.0.get() {
                if TIMER_FORKS.with(Cell::get) == forks {
                    return Some(timer);
                }
                // Made before a fork: it does not exist in this process. Forget it
                // (deleting could only fail, or hit a timer of this process).
                t.0.set(None);
                LIVE_TIMER.with(|live| live.set(None));
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
            TIMER_FORKS.with(|f| f.set(forks));
            LIVE_TIMER.with(|live| live.set(Some(timer)));
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

    /// How many deadlines may nest on one thread (a host tool that starts a run inside a
    /// run, and so on). Deeper ones are refused by `arm`, which stops that run at once.
    pub(crate) const MAX_NESTED: usize = 16;

    /// The control blocks of the runs whose deadlines are armed on this thread, outermost
    /// first. Const-initialised cells without a destructor, so the signal handler may
    /// read them; only this thread writes them, with the signal's handler seeing either
    /// the old or the new length.
    struct Stack {
        len: Cell<usize>,
        entries: [Cell<*const Control>; MAX_NESTED],
    }

    thread_local! {
        static STACK: Stack = const {
            Stack {
                len: Cell::new(0),
                entries: [const { Cell::new(std::ptr::null()) }; MAX_NESTED],
            }
        };
    }

    /// Calls `f` with every control block whose deadline is armed on this thread.
    /// Async-signal-safe: reads const-initialised thread-locals only.
    pub(crate) fn for_each_armed(mut f: impl FnMut(&Control)) {
        STACK.with(|stack| {
            for cell in stack.entries.iter().take(stack.len.get()) {
                // SAFETY: an entry is pushed by `Deadline::arm` and popped by its drop, and
                // the run keeps its `Control` alive (boxed, never moved) until after the
                // drop; so every entry below `len` points to a live control block.
                if let Some(ctl) = unsafe { cell.get().as_ref() } {
                    f(ctl);
                }
            }
        });
    }

    /// Sets this thread's timer for what is due first among the armed calls (a deadline
    /// that has not passed, an interrupt check), or disarms it. Async-signal-safe.
    fn rearm(timer: libc::timer_t) {
        let mut earliest = u64::MAX;
        for_each_armed(|ctl| earliest = earliest.min(ctl.next_wakeup_ns()));
        if earliest == u64::MAX {
            settime(timer, 0);
        } else {
            let left = earliest.saturating_sub(super::monotonic_ns());
            // At least 1 ns: a zero value would disarm instead of firing at once.
            settime(timer, left.max(1));
        }
    }

    /// Sets the timer again from the signal handler: it fired, so it is disarmed, and an
    /// interrupt check scheduled later (or the deadline of a call nested in the one that
    /// was due) still needs it. Async-signal-safe: const thread-locals, atomics,
    /// `clock_gettime` and `timer_settime`.
    pub(crate) fn rearm_from_handler() {
        if let Some(timer) = LIVE_TIMER.with(Cell::get) {
            rearm(timer);
        }
    }

    /// A registered deadline; dropping it unregisters it and re-arms the thread's timer
    /// for the deadline of the run it was nested in, if any, so an outer run keeps its
    /// deadline across a run started inside it on the same thread.
    pub(crate) struct Deadline {
        timer: Option<libc::timer_t>,
        pushed: bool,
    }

    impl Deadline {
        /// Arms this thread's timer for `at` or the call's next interrupt check (or for
        /// what an enclosing run needs earlier): when one is due, the thread is signalled
        /// and the handler stops each run whose deadline has passed, and marks each due
        /// check.
        ///
        /// # Errors
        /// When the deadline signal's handler could not be installed (the host program
        /// has its own handler for that signal): the deadline could not be delivered.
        pub(crate) fn arm(ctl: &Control, at: Option<Instant>) -> Result<Deadline, String> {
            static HANDLER: OnceLock<Result<(), String>> = OnceLock::new();
            HANDLER
                .get_or_init(super::thread::install_handler)
                .clone()?;
            super::thread::unblock_on_this_thread();
            if let Some(at) = at {
                set_due(ctl, at);
            }
            let pushed = STACK.with(|stack| {
                let len = stack.len.get();
                match stack.entries.get(len) {
                    Some(cell) => {
                        cell.set(ctl as *const Control);
                        stack.len.set(len + 1);
                        true
                    }
                    None => false,
                }
            });
            if !pushed {
                // Nested past the limit: this run has no deadline it could be given
                // without losing an outer one, so it stops at its first instruction.
                tracing::error!("deadlines nested more than {MAX_NESTED} deep on one thread");
                ctl.set_stop(super::super::control::Stop::Timeout);
                ctl.arm_all();
            }
            let timer = this_thread_timer();
            if let Some(timer) = timer {
                rearm(timer);
            }
            Ok(Deadline { timer, pushed })
        }
    }

    impl Drop for Deadline {
        fn drop(&mut self) {
            if self.pushed {
                STACK.with(|stack| {
                    let len = stack.len.get();
                    if len > 0 {
                        stack.len.set(len - 1);
                        stack.entries[len - 1].set(std::ptr::null());
                    }
                });
            }
            if let Some(timer) = self.timer {
                rearm(timer);
            }
        }
    }
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
mod thread {
    use super::super::control::{Control, EXPIRED};
    use super::{deadline_signal, set_due};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::{Arc, Condvar, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// Longest the watchdog sleeps with nothing due; registering a deadline later than its
    /// planned wake-up needs no notification (the common case), keeping runs syscall-free.
    const IDLE_TICK: Duration = Duration::from_millis(50);

    struct Entry {
        thread: libc::pthread_t,
        /// The call's pending flags (`Control::pending`): a deadline entry sets
        /// `EXPIRED` in them.
        pending: Arc<AtomicU8>,
        /// For an interrupt check's entry, its period: the thread is signalled once per
        /// period (the handler marks the check due when its time has come), and the
        /// entry comes back one period later. `None`: a deadline, signalled once.
        every: Option<Duration>,
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
            if let Err(message) = install_handler() {
                tracing::error!("{message}");
            }
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

    /// Installs the deadline signal's handler, unless the program already handles that
    /// signal itself: silently replacing an embedder's handler would break the embedder,
    /// so moonjail refuses instead, and every run with a deadline fails saying why.
    ///
    /// # Errors
    /// A foreign handler is installed, or `sigaction` failed.
    pub(super) fn install_handler() -> Result<(), String> {
        let ours = crate::vm::hook::on_deadline_signal as *const () as usize;
        // SAFETY: reading the current disposition into a zeroed struct, then installing
        // a plain SA_SIGINFO handler; the handler only touches const-initialised
        // thread-locals, atomics and `lua_sethook`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(deadline_signal(), std::ptr::null(), &mut old) != 0 {
                return Err(format!(
                    "cannot read the deadline signal's disposition: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let foreign = old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != ours;
            if foreign {
                let message = format!(
                    "the deadline signal (SIGRTMIN+{}) already has a handler of the host \
                     program's; moonjail will not replace it, so runs with a deadline \
                     cannot be stopped in this process (leave that signal to moonjail, see \
                     moonjail::deadline_signal)",
                    deadline_signal() - libc::SIGRTMIN()
                );
                tracing::error!("{message}");
                return Err(message);
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ours;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(deadline_signal(), &sa, std::ptr::null_mut()) != 0 {
                return Err(format!(
                    "cannot install the deadline signal handler: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
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
                    let id = entry.key().1;
                    let e = entry.remove();
                    match e.every {
                        None => {
                            e.pending.fetch_or(EXPIRED, Ordering::SeqCst);
                        }
                        Some(every) => {
                            let again = Entry {
                                thread: e.thread,
                                pending: Arc::clone(&e.pending),
                                every: e.every,
                            };
                            st.pending.insert((now + every, id), again);
                        }
                    }
                    // SAFETY: the target thread is alive: a run removes its entries (under
                    // this lock) before its thread can finish, so `thread` is a live pthread.
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

    /// A registered deadline and interrupt check; dropping it cancels them.
    pub(crate) struct Deadline {
        id: u64,
    }

    impl Deadline {
        /// Registers `at` for the calling thread, and the call's interrupt check if it
        /// has a period: when the deadline passes, `EXPIRED` is set and the thread is
        /// signalled; the check's entry signals it once per period.
        ///
        /// # Errors
        /// Never on this path (kept for the same signature as the timer's).
        pub(crate) fn arm(ctl: &Control, at: Option<Instant>) -> Result<Deadline, String> {
            if let Some(at) = at {
                set_due(ctl, at);
            }
            unblock_on_this_thread();
            let wd = watchdog();
            let id = wd.next_id.fetch_add(1, Ordering::Relaxed);
            // SAFETY: pthread_self has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            let entry = |every| Entry {
                thread,
                pending: ctl.pending_flags(),
                every,
            };
            let mut entries = Vec::new();
            if let Some(at) = at {
                entries.push((at, entry(None)));
            }
            if let Some(every) = ctl.poll_every() {
                entries.push((Instant::now() + every, entry(Some(every))));
            }
            let mut st = match wd.state.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let mut earliest = None::<Instant>;
            for (when, e) in entries {
                earliest = Some(earliest.map_or(when, |t| t.min(when)));
                st.pending.insert((when, id), e);
            }
            if earliest.is_some_and(|t| t < st.wake_at) {
                wd.cv.notify_one();
            }
            Ok(Deadline { id })
        }
    }

    impl Drop for Deadline {
        fn drop(&mut self) {
            let wd = watchdog();
            let mut st = match wd.state.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            st.pending.retain(|key, _| key.1 != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::control::{Activation, Control, Stop};
    use crate::host::InterruptCheck;

    /// The watchdog thread (what systems without per-thread timers use; built on Linux
    /// too) signals a call with a check once per period, and the check stops it.
    #[test]
    fn the_watchdog_thread_brings_the_check_round() {
        let ctl = Control::new(usize::MAX);
        let _active = Activation::new(&ctl);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        ctl.set_interrupt(&InterruptCheck {
            every: Some(Duration::from_millis(2)),
            check: Arc::new(move || counted.fetch_add(1, Ordering::SeqCst) == 2),
        });
        let armed = super::thread::Deadline::arm(&ctl, None).expect("armed");
        let give_up = Instant::now() + Duration::from_secs(60);
        let stopped = loop {
            if let Some(message) = ctl.check_stop() {
                break message;
            }
            assert!(Instant::now() < give_up, "the check never came round");
            std::hint::spin_loop();
        };
        drop(armed);
        assert_eq!(stopped, Stop::Interrupted.message());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
