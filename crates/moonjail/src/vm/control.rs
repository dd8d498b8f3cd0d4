//! Per-run (or per-session-call) control block: quotas, stop flags, the resume chain and
//! captured output. It is reached from the allocator, the hook, native library functions
//! and the deadline signal handler, all on the VM's own thread, through a thread-local.

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{
    compiler_fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::Arc;

use mlua::ffi::lua_State;

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
}

impl Stop {
    fn from_u8(v: u8) -> Stop {
        match v {
            1 => Stop::Timeout,
            2 => Stop::Instructions,
            3 => Stop::Output,
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
        }
    }

    pub(crate) fn kind(self) -> Option<ErrorKind> {
        match self {
            Stop::None => None,
            Stop::Timeout => Some(ErrorKind::Timeout),
            Stop::Instructions => Some(ErrorKind::InstructionLimit),
            Stop::Output => Some(ErrorKind::OutputLimit),
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
    /// Set when the deadline passes (by the deadline signal's handler, a native
    /// checkpoint, or the watchdog thread where there are no per-thread timers).
    pub(crate) expired: Arc<AtomicBool>,
    /// When the deadline passes, in monotonic nanoseconds; `u64::MAX` for none. Lets the
    /// signal handler tell a stale signal (from an earlier call) from a real expiry.
    deadline_ns: AtomicU64,
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
            expired: Arc::new(AtomicBool::new(false)),
            deadline_ns: AtomicU64::new(u64::MAX),
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
        self.expired.store(false, Ordering::SeqCst);
        self.deadline_ns.store(u64::MAX, Ordering::SeqCst);
        self.instr_charged.set(0);
        self.instr_sentinel.set(std::ptr::null_mut());
        self.forbidden.set(false);
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

    /// When this call's deadline passes (monotonic nanoseconds; `u64::MAX`: never).
    pub(crate) fn deadline_ns(&self) -> u64 {
        self.deadline_ns.load(Ordering::SeqCst)
    }

    /// Marks the deadline as passed if the clock says so (signal-safe).
    pub(crate) fn observe_clock(&self) {
        let due = self.deadline_ns.load(Ordering::SeqCst);
        if due != u64::MAX && super::watchdog::monotonic_ns() >= due {
            self.expired.store(true, Ordering::SeqCst);
        }
    }

    /// The stop message if the run must end now: a sticky stop, or a passed deadline
    /// (which this call turns into a sticky stop, hooking every running coroutine).
    pub(crate) fn check_stop(&self) -> Option<&'static str> {
        let s = self.stop();
        if s != Stop::None {
            return Some(s.message());
        }
        if self.expired.load(Ordering::SeqCst) {
            self.set_stop(Stop::Timeout);
            self.arm_all();
            return Some(Stop::Timeout.message());
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
