//! Per-run (or per-session-call) control block: quotas, stop flags, the resume chain,
//! captured output and the host's interrupt check. It is reached from the allocator, the
//! hook, native library functions and the deadline signal handler, all on the VM's own
//! thread, through a thread-local.

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use mlua::ffi::lua_State;

use crate::host::InterruptCheck;
use crate::ErrorKind;

/// Deepest resume nesting tracked. Lua's own C-call limit (LUAI_MAXCCALLS = 200) stops
/// nesting before this, so the chain never overflows in practice; if it would, the
/// resume is refused.
pub(crate) const MAX_CHAIN: usize = 256;

/// Why a run was stopped. Once set it never goes back to `None` for that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stop {
    None = 0,
    Timeout = 1,
    Instructions = 2,
    Output = 3,
    /// The host's interrupt check said so.
    Interrupted = 4,
    /// The script called a deferred tool: the run waits for the host's answer.
    Suspended = 5,
}

/// Bits of [`Control::pending`]: what the signal handler (or a native checkpoint, or the
/// watchdog thread) found, for the next look at the stops to act on.
pub(crate) const EXPIRED: u8 = 1;
/// The interrupt check is due.
const POLL_DUE: u8 = 2;

impl Stop {
    fn from_u8(v: u8) -> Stop {
        match v {
            1 => Stop::Timeout,
            2 => Stop::Instructions,
            3 => Stop::Output,
            4 => Stop::Interrupted,
            5 => Stop::Suspended,
            _ => Stop::None,
        }
    }

    /// The message raised into Lua; also what the outcome reports.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Stop::None => "",
            Stop::Timeout => "timeout: the script ran past its wall-clock deadline",
            Stop::Instructions => "instruction_limit: the script used up its instruction budget",
            Stop::Output => "output_limit: the script printed more than its output limit",
            Stop::Interrupted => "interrupted: the host stopped the run",
            Stop::Suspended => {
                "suspended: the run stopped at a deferred tool call to wait for the host's answer"
            }
        }
    }

    pub(crate) fn kind(self) -> Option<ErrorKind> {
        match self {
            Stop::None => None,
            Stop::Timeout => Some(ErrorKind::Timeout),
            Stop::Instructions => Some(ErrorKind::InstructionLimit),
            Stop::Output => Some(ErrorKind::OutputLimit),
            Stop::Interrupted => Some(ErrorKind::Interrupted),
            Stop::Suspended => Some(ErrorKind::Suspended),
        }
    }
}

/// Exact heap accounting for one Lua state.
#[derive(Debug, Default)]
pub(crate) struct MemState {
    pub(crate) used: usize,
    pub(crate) peak: usize,
    pub(crate) limit: usize,
    /// Refusals that were not rescued by Lua's emergency collection.
    pub(crate) hits: u32,
    /// The last refused request, to recognise Lua's retry after an emergency GC.
    pub(crate) pending: Option<(usize, usize, usize)>,
}

pub(crate) struct Control {
    pub(crate) mem: UnsafeCell<MemState>,
    /// [`EXPIRED`] once the deadline passed (set by the deadline signal's handler, a
    /// native checkpoint, or the watchdog thread where there are no per-thread timers);
    /// [`POLL_DUE`] when the interrupt check is due. One byte, so the hot path's look at
    /// it is one load whether or not the call has a check.
    pending: Arc<AtomicU8>,
    /// When the deadline passes, in monotonic nanoseconds; `u64::MAX` for none. Lets the
    /// signal handler tell a stale signal (from an earlier call) from a real expiry.
    deadline_ns: AtomicU64,
    /// When the timer should next fire for the interrupt check, in monotonic nanoseconds;
    /// `u64::MAX` for no check, and while the check runs (it is scheduled again after).
    poll_ns: AtomicU64,
    /// This call's interrupt check (taken out while it runs, so it never runs nested).
    interrupt: Cell<Option<InterruptCheck>>,
    /// How often the check is asked, in nanoseconds (0: only as the call starts). Read
    /// by the signal handler.
    poll_every_ns: AtomicU64,
    stop: AtomicU8,
    pub(crate) instr_limit: Cell<Option<u64>>,
    pub(crate) instr_charged: Cell<u64>,
    /// The thread holding the unpaid count of one once the budget is spent (null: none;
    /// see `hook::meter`).
    pub(crate) instr_sentinel: Cell<*mut lua_State>,
    chain: [AtomicPtr<lua_State>; MAX_CHAIN],
    depth: AtomicUsize,
    output: UnsafeCell<super::output::Captured>,
    pub(crate) output_limit: Cell<usize>,
    pub(crate) output_overflow: Cell<super::output::OutputOverflow>,
    pub(crate) source_limit: Cell<usize>,
    /// A `forbidden:` error was raised during this run.
    pub(crate) forbidden: Cell<bool>,
    /// The time (Unix seconds) a deterministic state's `os.time()` and `os.date()` read
    /// in this call, when the request brought its own (`CallOptions::time`); `None`: the
    /// spec's fixed timestamp. Per call, so no request inherits another's clock.
    pub(crate) clock: Cell<Option<i64>>,
    /// Where this call raised its error or was stopped (see `trace.rs`).
    pub(crate) trace: UnsafeCell<Option<Vec<crate::error::Frame>>>,
}

impl Control {
    pub(crate) fn new(memory_limit: usize) -> Box<Control> {
        Box::new(Control {
            mem: UnsafeCell::new(MemState {
                limit: memory_limit,
                ..MemState::default()
            }),
            pending: Arc::new(AtomicU8::new(0)),
            deadline_ns: AtomicU64::new(u64::MAX),
            poll_ns: AtomicU64::new(u64::MAX),
            interrupt: Cell::new(None),
            poll_every_ns: AtomicU64::new(0),
            stop: AtomicU8::new(Stop::None as u8),
            instr_limit: Cell::new(None),
            instr_charged: Cell::new(0),
            instr_sentinel: Cell::new(std::ptr::null_mut()),
            chain: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHAIN],
            depth: AtomicUsize::new(0),
            output: UnsafeCell::new(super::output::Captured::default()),
            output_limit: Cell::new(usize::MAX),
            output_overflow: Cell::new(super::output::OutputOverflow::Fail),
            source_limit: Cell::new(usize::MAX),
            forbidden: Cell::new(false),
            clock: Cell::new(None),
            trace: UnsafeCell::new(None),
        })
    }

    pub(crate) fn stop(&self) -> Stop {
        Stop::from_u8(self.stop.load(Ordering::SeqCst))
    }

    /// Records the first stop reason; later ones do not overwrite it.
    pub(crate) fn set_stop(&self, reason: Stop) {
        let _ = self.stop.compare_exchange(
            Stop::None as u8,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Clears per-call state so a session can take its next call.
    pub(crate) fn reset_for_call(&self) {
        self.stop.store(Stop::None as u8, Ordering::SeqCst);
        self.pending.store(0, Ordering::SeqCst);
        self.deadline_ns.store(u64::MAX, Ordering::SeqCst);
        self.clear_interrupt();
        self.instr_charged.set(0);
        self.instr_sentinel.set(std::ptr::null_mut());
        self.forbidden.set(false);
        self.clock.set(None);
        let _ = self.take_trace();
        // SAFETY: only the VM thread touches the output buffer, and no borrow of it is
        // alive between calls.
        unsafe { *self.output.get() = super::output::Captured::default() };
        // SAFETY: as above, for the memory counters. The peak is this call's: a
        // session's later call reports its own, from what the state holds now.
        unsafe {
            let mem = &mut *self.mem.get();
            mem.hits = 0;
            mem.peak = mem.used;
        }
    }

    /// Sets when this call's deadline passes (monotonic nanoseconds).
    pub(crate) fn set_deadline_ns(&self, due: u64) {
        self.deadline_ns.store(due, Ordering::SeqCst);
    }

    /// Stops the deadline's clock while the run waits on the host (parked at a deferred
    /// tool call, [`crate::Sandbox::start`]): the time left, for
    /// [`Control::resume_deadline`]. `None`: no deadline.
    pub(crate) fn pause_deadline(&self) -> Option<u64> {
        let due = self.deadline_ns.swap(u64::MAX, Ordering::SeqCst);
        (due != u64::MAX).then(|| due.saturating_sub(super::watchdog::monotonic_ns()))
    }

    /// Starts the clock again with `left` (from [`Control::pause_deadline`]) and sets
    /// this thread's timer for it.
    pub(crate) fn resume_deadline(&self, left: Option<u64>) {
        if let Some(left) = left {
            let due = super::watchdog::monotonic_ns().saturating_add(left);
            self.deadline_ns.store(due, Ordering::SeqCst);
            super::watchdog::rearm_from_handler();
        }
    }

    /// Marks the deadline as passed (async-signal-safe).
    pub(crate) fn expire(&self) {
        self.pending.fetch_or(EXPIRED, Ordering::SeqCst);
    }

    /// Whether the deadline was marked as passed.
    pub(crate) fn expired(&self) -> bool {
        self.pending.load(Ordering::SeqCst) & EXPIRED != 0
    }

    /// The flags the watchdog thread sets (where there are no per-thread timers).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    pub(crate) fn pending_flags(&self) -> Arc<AtomicU8> {
        Arc::clone(&self.pending)
    }

    /// Marks the deadline as passed if the clock says so (signal-safe).
    pub(crate) fn observe_clock(&self) {
        let due = self.deadline_ns.load(Ordering::SeqCst);
        if due != u64::MAX && super::watchdog::monotonic_ns() >= due {
            self.expire();
        }
    }

    /// What the timer signal's handler does for this call at `now` (async-signal-safe:
    /// atomics, `lua_gethookmask`, `lua_gethookcount` and `lua_sethook` only). A passed
    /// deadline becomes the sticky [`Stop::Timeout`] with every running coroutine hooked.
    /// A due interrupt check is marked for the run's own thread to make (never here: it
    /// is the host's code), and the coroutines of the resume chain that have no hook get
    /// one, so that the next instruction looks; coroutines that have one already (the
    /// instruction budget's count hook) keep it untouched, and look at their next block
    /// of at most [`super::hook::COUNT_STEP`] instructions, so that the count stays
    /// exact.
    ///
    /// With a check, the timer fires once per period for as long as the call runs (not
    /// while the check itself runs), and each firing hooks again what the last one
    /// hooked: a coroutine that unhooks itself after a check can miss a hook set at
    /// that very moment (Lua clears its trap on the next instruction, having read the
    /// hook mask just before the handler set it), and the next firing makes up for it.
    pub(crate) fn on_timer(&self, now: u64) {
        let due = self.deadline_ns.load(Ordering::SeqCst);
        if due != u64::MAX && now >= due {
            self.expire();
        }
        let poll = self.poll_ns.load(Ordering::SeqCst);
        let polled = poll != u64::MAX && now >= poll;
        if polled {
            let every = self.poll_every_ns.load(Ordering::SeqCst);
            self.poll_ns
                .store(now.saturating_add(every.max(1)), Ordering::SeqCst);
        }
        if self.expired() {
            self.set_stop(Stop::Timeout);
            self.arm_all();
        } else if polled {
            if self.stop() == Stop::None {
                self.pending.fetch_or(POLL_DUE, Ordering::SeqCst);
                self.arm_for_poll();
            } else {
                self.arm_all();
            }
        }
    }

    /// True when a stop is recorded or something is pending (signal-safe).
    pub(crate) fn stopped_or_pending(&self) -> bool {
        self.stop() != Stop::None || self.pending.load(Ordering::SeqCst) != 0
    }

    /// When this call next needs the timer (monotonic nanoseconds, `u64::MAX`: never): its
    /// deadline unless that passed already, or its next interrupt check. Signal-safe.
    pub(crate) fn next_wakeup_ns(&self) -> u64 {
        let deadline = if self.expired() {
            u64::MAX
        } else {
            self.deadline_ns.load(Ordering::SeqCst)
        };
        deadline.min(self.poll_ns.load(Ordering::SeqCst))
    }

    /// Gives this call the host's interrupt check (see [`Control::interrupt_now`]) and,
    /// when it has a period, schedules its first poll one period from now.
    pub(crate) fn set_interrupt(&self, check: &InterruptCheck) {
        let every = check.every.map_or(0, |every| {
            u64::try_from(every.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.poll_every_ns.store(every, Ordering::SeqCst);
        self.interrupt.set(Some(check.clone()));
        self.schedule_poll();
    }

    /// Takes the interrupt check away (the call is over).
    pub(crate) fn clear_interrupt(&self) {
        self.poll_ns.store(u64::MAX, Ordering::SeqCst);
        self.poll_every_ns.store(0, Ordering::SeqCst);
        self.pending.fetch_and(!POLL_DUE, Ordering::SeqCst);
        drop(self.interrupt.take());
    }

    /// How often this call's interrupt check is asked, if it is polled at all.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    pub(crate) fn poll_every(&self) -> Option<std::time::Duration> {
        let every = self.poll_every_ns.load(Ordering::SeqCst);
        (every > 0).then(|| std::time::Duration::from_nanos(every))
    }

    fn schedule_poll(&self) {
        let every = self.poll_every_ns.load(Ordering::SeqCst);
        let next = if every == 0 {
            u64::MAX
        } else {
            super::watchdog::monotonic_ns().saturating_add(every)
        };
        self.poll_ns.store(next, Ordering::SeqCst);
    }

    /// Asks the interrupt check now (on the run's thread, in normal context); true means
    /// the call must stop, and is recorded as the sticky [`Stop::Interrupted`] with every
    /// running coroutine hooked. False without a check, and while the check is running
    /// (a check that itself runs code of this call's thread does not ask again).
    pub(crate) fn interrupt_now(&self) -> bool {
        let Some(check) = self.interrupt.take() else {
            return false;
        };
        let stop = check.ask();
        self.interrupt.set(Some(check));
        if stop {
            self.set_stop(Stop::Interrupted);
            self.arm_all();
        }
        stop
    }

    /// The stop message if the run must end now: a sticky stop, or a passed deadline
    /// (which this call turns into a sticky stop, hooking every running coroutine); a due
    /// interrupt check is made here. The hot path (nothing pending) is two loads and two
    /// branches, with or without a check.
    #[inline]
    pub(crate) fn check_stop(&self) -> Option<&'static str> {
        let s = self.stop();
        if s != Stop::None {
            return Some(s.message());
        }
        let pending = self.pending.load(Ordering::SeqCst);
        if pending != 0 {
            return self.attend(pending);
        }
        None
    }

    /// [`Control::check_stop`] when something is pending: a passed deadline, or a due
    /// interrupt check, asked here; if it says go on, the next one is scheduled (and the
    /// thread's timer set for it) and the run goes on, unless a stop came meanwhile.
    #[cold]
    #[inline(never)]
    fn attend(&self, pending: u8) -> Option<&'static str> {
        if pending & EXPIRED == 0 && pending & POLL_DUE != 0 {
            self.pending.fetch_and(!POLL_DUE, Ordering::SeqCst);
            // No firing while the check runs (however long it takes): the next period
            // starts when it returns. Scheduled again after a stop too, so that the
            // firings keep the coroutines hooked until the stop is raised.
            self.poll_ns.store(u64::MAX, Ordering::SeqCst);
            self.interrupt_now();
            self.schedule_poll();
            super::watchdog::rearm_from_handler();
        }
        let s = self.stop();
        if s != Stop::None {
            return Some(s.message());
        }
        // The deadline passed (before the check was due, or while it ran).
        if self.expired() {
            self.set_stop(Stop::Timeout);
            self.arm_all();
            return Some(self.stop().message());
        }
        None
    }

    pub(crate) fn memory(&self) -> (usize, usize, bool) {
        // SAFETY: read on the VM thread; the allocator is not running concurrently.
        let m = unsafe { &*self.mem.get() };
        (m.used, m.peak, m.hits > 0)
    }

    /// Records a refusal made on the host side on the heap's behalf (e.g. `json.encode`
    /// text that would not fit in the memory left), so the run reports `memory_limit`.
    pub(crate) fn note_memory_refusal(&self) {
        // SAFETY: as in `memory`.
        let m = unsafe { &mut *self.mem.get() };
        m.hits = m.hits.saturating_add(1);
    }

    /// Grants `bytes` more heap (for moonjail's own bookkeeping inside the state).
    pub(crate) fn raise_memory_limit(&self, bytes: usize) {
        // SAFETY: as in `memory`; the allocator is not running concurrently.
        let m = unsafe { &mut *self.mem.get() };
        m.limit = m.limit.saturating_add(bytes);
    }

    pub(crate) fn memory_remaining(&self) -> usize {
        // SAFETY: as in `memory`.
        let m = unsafe { &*self.mem.get() };
        m.limit.saturating_sub(m.used)
    }

    /// Pushes a thread onto the resume chain. Returns false when the chain is full.
    pub(crate) fn push_thread(&self, l: *mut lua_State) -> bool {
        // The chain is only ever read by this thread (its signal handler included), so
        // program order is all that matters: relaxed accesses and a compiler fence, not
        // the full barriers SeqCst stores cost on every coroutine resume.
        let d = self.depth.load(Ordering::Relaxed);
        if d >= MAX_CHAIN {
            return false;
        }
        self.chain[d].store(l, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        self.depth.store(d + 1, Ordering::Relaxed);
        true
    }

    pub(crate) fn pop_thread(&self) {
        let d = self.depth.load(Ordering::Relaxed);
        if d > 0 {
            self.depth.store(d - 1, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
    }

    /// Resets the chain to just the entry thread.
    pub(crate) fn reset_chain(&self, main: *mut lua_State) {
        self.depth.store(0, Ordering::SeqCst);
        self.push_thread(main);
    }

    /// The thread running now: the top of the resume chain (null before the first call).
    pub(crate) fn running_thread(&self) -> *mut lua_State {
        let d = self.depth.load(Ordering::Relaxed).min(MAX_CHAIN);
        match d.checked_sub(1) {
            Some(top) => self.chain[top].load(Ordering::Relaxed),
            None => ptr::null_mut(),
        }
    }

    /// The threads that resumed `l`, nearest first: the rest of the resume chain below
    /// it (empty when `l` is not on the chain).
    pub(crate) fn chain_below(&self, l: *mut lua_State) -> Vec<*mut lua_State> {
        let d = self.depth.load(Ordering::Relaxed).min(MAX_CHAIN);
        let threads: Vec<_> = self.chain[..d]
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .collect();
        match threads.iter().rposition(|&t| t == l) {
            Some(at) => threads[..at].iter().rev().copied().collect(),
            None => Vec::new(),
        }
    }

    /// Hooks the threads of the live resume chain for a due interrupt check (see
    /// `hook::arm_for_poll`), so that the next instruction looks. Async-signal-safe.
    fn arm_for_poll(&self) {
        compiler_fence(Ordering::SeqCst);
        let d = self.depth.load(Ordering::Relaxed).min(MAX_CHAIN);
        for slot in &self.chain[..d] {
            let l = slot.load(Ordering::Relaxed);
            if !l.is_null() {
                super::hook::arm_for_poll(l);
            }
        }
    }

    /// Hooks every thread of the live resume chain so its next instruction raises the
    /// stop error. Async-signal-safe: atomics and `lua_sethook` only.
    pub(crate) fn arm_all(&self) {
        compiler_fence(Ordering::SeqCst);
        let d = self.depth.load(Ordering::Relaxed).min(MAX_CHAIN);
        for slot in &self.chain[..d] {
            let l = slot.load(Ordering::Relaxed);
            if !l.is_null() {
                super::hook::arm_thread(l);
            }
        }
    }

    /// Appends to captured output; false (after keeping what fits) when the limit is hit
    /// and overflowing fails the run. Invalid UTF-8 is replaced here, as it is written,
    /// so the limit counts the text the outcome will carry (each bad byte becomes a
    /// 3-byte U+FFFD) and the buffer always holds valid UTF-8.
    pub(crate) fn write_output(&self, bytes: &[u8]) -> bool {
        // SAFETY: only the VM thread writes output and no reference to the buffer
        // outlives this call.
        let out = unsafe { &mut *self.output.get() };
        let text = String::from_utf8_lossy(bytes);
        out.write(&text, self.output_limit.get(), self.output_overflow.get())
    }

    /// Bytes written so far in this call.
    pub(crate) fn output_total(&self) -> usize {
        // SAFETY: as in `write_output`.
        unsafe { (*self.output.get()).total() }
    }

    /// The captured text, and what was dropped when it was cut.
    pub(crate) fn take_output(&self) -> (String, Option<super::output::Truncation>) {
        // SAFETY: as in `write_output`.
        unsafe { (*self.output.get()).take(self.output_limit.get()) }
    }
}

thread_local! {
    /// The control block of the run executing on this thread, or null. Const-initialised
    /// and without a destructor, so the deadline signal handler can read it.
    static CURRENT: Cell<*const Control> = const { Cell::new(ptr::null()) };
}

/// The active control block on this thread.
pub(crate) fn current<'a>() -> Option<&'a Control> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: `CURRENT` is only non-null while an `Activation` holds it, and the
    // activation's owner keeps the `Control` alive (boxed, never moved) until it is
    // dropped, which clears `CURRENT` first.
    unsafe { p.as_ref() }
}

/// Makes a control block current on this thread for as long as it lives.
pub(crate) struct Activation {
    prev: *const Control,
}

impl Activation {
    pub(crate) fn new(ctl: &Control) -> Activation {
        let prev = CURRENT.with(|c| c.replace(ctl as *const Control));
        Activation { prev }
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// Called by long-running native library functions (pattern matching, marshaling) every
/// few thousand steps. `Some(message)` means the run must stop: raise that message.
pub(crate) fn native_checkpoint() -> Option<&'static str> {
    current().and_then(|c| {
        // Long native work polls the clock too, in case the signal is held back.
        c.observe_clock();
        c.check_stop()
    })
}

/// Units of native work per instruction charged to the instruction budget.
///
/// A *unit* is one element moved, read, written or compared by a metered library loop,
/// or [`BYTES_PER_UNIT`] bytes copied or compared. One unit costs one instruction: about
/// what the interpreter spends on a `t[i] = t[j]` of its own, so a script gains nothing
/// by handing a loop to the library instead of writing it.
pub(crate) const INSTRUCTIONS_PER_UNIT: u64 = 1;

/// Bytes copied or compared that count as one unit of native work.
pub(crate) const BYTES_PER_UNIT: u64 = 64;

/// Units between two looks at the clock and the budget: large enough that the fast path
/// is a subtraction and a branch, small enough (microseconds of work) that the deadline
/// is honoured to well within a millisecond.
pub(crate) const METER_INTERVAL: u64 = 4096;

/// Charges `units` of native work done since the last call, and says whether the run
/// must stop: a passed deadline (the clock is read here, in case the deadline signal is
/// held back), a stop already recorded, or an exhausted instruction budget (recorded as
/// [`Stop::Instructions`] with every running coroutine hooked, exactly as the count hook
/// does). `Some(message)` means: raise exactly that message.
///
/// Charges `units` to the instruction budget without reading the clock: for small,
/// frequent charges whose work is bounded (see `stdlib/charged.rs`). `Some(message)`
/// means the run must stop: a stop is armed, or the budget ran out.
pub(crate) fn native_charge_quiet(units: u64) -> Option<&'static str> {
    let c = current()?;
    if let Some(msg) = c.check_stop() {
        return Some(msg);
    }
    c.charge_instructions(units)
}

/// Reads the clock: callers batch their work and call this every [`METER_INTERVAL`]
/// units or so (see [`Meter`]).
pub(crate) fn native_charge(units: u64) -> Option<&'static str> {
    let c = current()?;
    c.observe_clock();
    if let Some(msg) = c.check_stop() {
        return Some(msg);
    }
    c.charge_instructions(units)
}

impl Control {
    /// Charges `units` of native work to the instruction budget, if the run has one.
    /// The charge is capped at the limit (the reported count never exceeds it); reaching
    /// the limit stops the run as [`Stop::Instructions`].
    fn charge_instructions(&self, units: u64) -> Option<&'static str> {
        let limit = self.instr_limit.get()?;
        let cost = units.saturating_mul(INSTRUCTIONS_PER_UNIT);
        let charged = self.instr_charged.get();
        // The running thread has paid for a block it has not run yet: that part of the
        // budget is still there for native work (see `hook::meter`).
        let used = super::hook::instructions_used(self.running_thread(), charged);
        if cost > limit.saturating_sub(used) {
            self.instr_charged.set(limit);
            self.set_stop(Stop::Instructions);
            self.arm_all();
            return Some(Stop::Instructions.message());
        }
        self.instr_charged.set(charged + cost);
        None
    }
}

/// A batching meter for one native library call: [`Meter::charge`] is a subtraction on
/// the fast path and calls [`native_charge`] once per [`METER_INTERVAL`] units.
///
/// Plain `Copy` data with no destructor, so a Lua error may unwind over it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    /// Units left before the next settlement.
    left: u64,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub(crate) const fn new() -> Meter {
        Meter {
            left: METER_INTERVAL,
        }
    }

    /// Counts `units` of work; `Some(message)` means the run must stop now.
    #[inline(always)]
    pub(crate) fn charge(&mut self, units: u64) -> Option<&'static str> {
        if units < self.left {
            self.left -= units;
            None
        } else {
            self.settle(units)
        }
    }

    /// Counts `bytes` copied or compared, rounded up to whole units.
    #[inline(always)]
    pub(crate) fn charge_bytes(&mut self, bytes: usize) -> Option<&'static str> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.charge(bytes.div_ceil(BYTES_PER_UNIT))
    }

    #[cold]
    #[inline(never)]
    fn settle(&mut self, units: u64) -> Option<&'static str> {
        let spent = (METER_INTERVAL - self.left).saturating_add(units);
        self.left = METER_INTERVAL;
        native_charge(spent)
    }

    /// Charges the units counted since the last settlement to the instruction budget at
    /// the end of a call (without reading the clock), so many short calls pay for their
    /// work too. `Some(message)` means the budget ran out: raise that message.
    #[inline]
    pub(crate) fn finish(&mut self) -> Option<&'static str> {
        let spent = METER_INTERVAL - self.left;
        self.left = METER_INTERVAL;
        if spent == 0 {
            return None;
        }
        current().and_then(|c| c.charge_instructions(spent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn counting(answer: bool, calls: &Arc<AtomicUsize>) -> InterruptCheck {
        let calls = Arc::clone(calls);
        InterruptCheck {
            every: Some(Duration::from_secs(3600)),
            check: Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                answer
            }),
        }
    }

    /// The handler only marks a due check; the next look at the stops makes it, on this
    /// thread, and schedules the next one (or records the stop).
    #[test]
    fn a_due_check_is_made_at_the_next_look_and_scheduled_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let ctl = Control::new(usize::MAX);
        ctl.set_interrupt(&counting(false, &calls));
        let first = ctl.next_wakeup_ns();
        assert!(first < u64::MAX);
        // Not due yet: nothing happens.
        ctl.on_timer(first - 1);
        assert_eq!(ctl.check_stop(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // Due: marked, then made by the next look, which lets the run go on.
        ctl.on_timer(first);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "never from the handler");
        assert_eq!(ctl.check_stop(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(ctl.check_stop(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "once per period");
        assert!(ctl.next_wakeup_ns() > first);

        let stop = Arc::new(AtomicUsize::new(0));
        ctl.set_interrupt(&counting(true, &stop));
        ctl.on_timer(ctl.next_wakeup_ns());
        assert_eq!(ctl.check_stop(), Some(Stop::Interrupted.message()));
        assert_eq!(ctl.stop(), Stop::Interrupted);
        // Sticky, and the check is not asked again.
        assert_eq!(ctl.check_stop(), Some(Stop::Interrupted.message()));
        assert_eq!(stop.load(Ordering::SeqCst), 1);
        // A call starts afresh.
        ctl.reset_for_call();
        assert_eq!(ctl.check_stop(), None);
        assert_eq!(ctl.next_wakeup_ns(), u64::MAX);
    }

    /// A passed deadline wins over a check due at the same time: the check is not asked.
    #[test]
    fn a_passed_deadline_is_a_timeout_without_asking_the_check() {
        let calls = Arc::new(AtomicUsize::new(0));
        let ctl = Control::new(usize::MAX);
        ctl.set_interrupt(&counting(true, &calls));
        let at = ctl.next_wakeup_ns();
        ctl.set_deadline_ns(at);
        ctl.on_timer(at);
        assert_eq!(ctl.check_stop(), Some(Stop::Timeout.message()));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    /// A session call's peak is its own: the next call starts from what the state holds,
    /// not from an earlier call's peak.
    #[test]
    fn each_call_starts_its_peak_from_the_memory_in_use() {
        let ctl = Control::new(usize::MAX);
        // SAFETY: no allocator runs on this block.
        unsafe {
            let mem = &mut *ctl.mem.get();
            mem.used = 1000;
            mem.peak = 9000;
        }
        ctl.reset_for_call();
        assert_eq!(ctl.memory(), (1000, 1000, false));
    }
}
