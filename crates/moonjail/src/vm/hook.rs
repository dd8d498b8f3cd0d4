//! The quota hook, the deadline signal handler, the resume-chain-aware coroutine
//! functions and the entry shim: the raw Lua C API pieces of the quota layer.
//!
//! No hook is installed while a run is within its deadline and has no instruction limit.
//! When the deadline passes, the VM thread is signalled (its own POSIX timer on Linux,
//! a watchdog thread elsewhere; see `watchdog.rs`); the handler hooks every
//! coroutine of the live resume chain (`lua_sethook` is documented as signal-safe), and
//! the hook then raises at every instruction, so `pcall`, `xpcall`, message handlers and
//! `__close` cannot swallow the stop.
//!
//! A host interrupt check (`SandboxBuilder::interrupt_check`) rides on the same timer:
//! when the check is due, the handler marks it due and hooks the coroutines of the resume
//! chain that have no hook (see [`arm_for_poll`]); the hook (or a native checkpoint,
//! whichever looks first) asks the check on the run's own thread, and either stops the
//! run as it stops at the deadline, or unhooks itself and lets it go on. A coroutine
//! running a block of the instruction budget is not hooked for it: its count hook looks
//! within [`COUNT_STEP`] instructions anyway, and its block stays exactly as paid.

use std::ffi::{c_int, c_void};

use mlua::ffi::{self, lua_Debug, lua_State};

use super::control::{current, Control, Stop};

/// Instructions between two count-hook calls when an instruction limit is set.
pub(crate) const COUNT_STEP: u64 = 256;

/// Raises `msg` as a Lua error on `l`.
///
/// # Safety
/// `l` must be a running Lua thread in a context where raising is allowed (a hook or a
/// C function); no Rust value with a destructor may be alive in the caller's frames.
pub(crate) unsafe fn raise(l: *mut lua_State, msg: &'static str) -> ! {
    // SAFETY: per the function's contract.
    unsafe {
        super::trace::capture(l);
        ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
        ffi::lua_error(l)
    }
}

unsafe extern "C-unwind" fn quota_hook(l: *mut lua_State, ar: *mut lua_Debug) {
    let Some(ctl) = current() else { return };
    if let Some(msg) = ctl.check_stop() {
        // SAFETY: raising from a hook is allowed (lua.c does it on Ctrl-C); this frame
        // owns nothing with a destructor.
        unsafe { raise(l, msg) }
    }
    // SAFETY: Lua passes a valid activation record to the hook.
    let event = unsafe { (*ar).event };
    if event == ffi::LUA_HOOKCOUNT {
        if ctl.instr_limit.get().is_none() {
            // No budget, no stop: `l` was hooked only so that it would look at a due
            // interrupt check (done above, which let the run go on). It runs unhooked
            // again, as it did before.
            // SAFETY: a hook may change its thread's hook (lua.c's `lstop` does).
            unsafe { ffi::lua_sethook(l, None, 0, 0) };
            // A stop, or the next check, that came between the look above and the
            // unhooking was hooked for, and just unhooked: hook again.
            if ctl.stopped_or_pending() {
                arm_thread(l);
            }
            return;
        }
        if ctl.instr_sentinel.get() == l {
            // The instruction about to run is past the budget.
            ctl.set_stop(Stop::Instructions);
            ctl.arm_all();
            // SAFETY: as above.
            unsafe { raise(l, Stop::Instructions.message()) }
        }
        // The instruction about to run is the last of a paid block: it runs, and `l`
        // pays for what follows.
        meter(ctl, l, true);
    }
}

/// Makes `l`, the thread about to run Lua code, pay for its next instructions: a block of
/// up to [`COUNT_STEP`] paid in advance (so the budget is never overdrawn), or, when the
/// budget is spent, a count of one that is not paid, so that its next instruction raises
/// (the sentinel). Only the running thread holds a block: a resumer gives its unspent
/// instructions back while the coroutine runs (see `enter_thread`), so the count is exact.
fn meter(ctl: &Control, l: *mut lua_State, in_hook: bool) {
    let Some(limit) = ctl.instr_limit.get() else {
        return;
    };
    if ctl.stop() != Stop::None {
        arm_thread(l);
        return;
    }
    let charged = ctl.instr_charged.get();
    if charged >= limit {
        ctl.instr_sentinel.set(l);
        // SAFETY: `l` is a live thread of the running state.
        unsafe { ffi::lua_sethook(l, Some(quota_hook), ffi::LUA_MASKCOUNT, 1) };
    } else {
        if !in_hook && ctl.instr_sentinel.get() != l {
            // A thread coming back to run (resumed, or a resumer whose coroutine
            // yielded) kept the block it had: it pays again for what is left of it, and
            // its hook stays as it is (`lua_sethook` walks the thread's whole call stack;
            // on every coroutine switch that was the metering's main cost).
            let left = unspent(l);
            if left > 0 && charged.saturating_add(left) <= limit {
                ctl.instr_charged.set(charged + left);
                return;
            }
        }
        // SAFETY: as above.
        unsafe { charge_next(l, limit, charged, in_hook) };
    }
}

/// Gives back what `l` paid for and did not run (it yielded, returned, or resumed
/// another thread); it pays for it again when it next runs. Nothing changes while a
/// stop is armed: its hook must stay.
fn unmeter(ctl: &Control, l: *mut lua_State) {
    if ctl.instr_limit.get().is_none() || ctl.stop() != Stop::None {
        return;
    }
    if ctl.instr_sentinel.get() == l {
        // Its count of one was never paid for.
        ctl.instr_sentinel.set(std::ptr::null_mut());
        // SAFETY: `l` is a live thread that is not executing a Lua instruction now.
        unsafe { ffi::lua_sethook(l, None, 0, 0) };
    } else {
        // The rest of its block is given back; the hook stays, holding that rest
        // unpaid until the thread runs again (see `meter`).
        let left = unspent(l);
        ctl.instr_charged
            .set(ctl.instr_charged.get().saturating_sub(left));
    }
}

/// Pays in advance for the next block of instructions of `l` and sets its count hook to
/// that block, so the budget is never overdrawn (a block never runs unpaid).
///
/// # Safety
/// `l` must be a valid thread of the running state.
unsafe fn charge_next(l: *mut lua_State, limit: u64, charged: u64, in_hook: bool) {
    let Some(ctl) = current() else { return };
    let step = COUNT_STEP.min(limit - charged).max(1);
    ctl.instr_charged.set(charged + step);
    // Inside its own count hook, Lua has already reset `l`'s count to the block size it
    // had: when that is the size wanted, there is nothing to set. (`lua_sethook` marks
    // every Lua frame of the thread for tracing, a walk of the whole call stack: on
    // deep recursion that, every 256 instructions, was most of the hook's cost.)
    // SAFETY: caller's contract; reading a thread's hook settings is always allowed.
    let unchanged = in_hook
        && unsafe {
            ffi::lua_gethookmask(l) == ffi::LUA_MASKCOUNT
                && i64::from(ffi::lua_gethookcount(l)) == step as i64
        };
    if !unchanged {
        // SAFETY: caller's contract; `step` ≤ 256 fits a c_int.
        unsafe { ffi::lua_sethook(l, Some(quota_hook), ffi::LUA_MASKCOUNT, step as c_int) };
    }
}

/// Where `lua_State.basehookcount` sits in Lua 5.4.9 on 64-bit targets (`lstate.h`:
/// the common header and 10 pointer-sized fields, the 64-byte `base_ci`, `hook`,
/// `errfunc`, `nCcalls` and `oldpc`); `hookcount`, the instructions left in the current
/// count block, follows it. Lua has no API for the remaining count, and an exact
/// instruction count needs it. [`count_layout_ok`] checks the offset against
/// `lua_gethookcount` before it is ever used, so a Lua upgrade that moves it makes counts
/// block-granular again rather than wrong.
#[cfg(target_pointer_width = "64")]
const BASEHOOKCOUNT_OFFSET: usize = 184;
#[cfg(not(target_pointer_width = "64"))]
const BASEHOOKCOUNT_OFFSET: usize = usize::MAX;

/// Reads `(basehookcount, hookcount)` of `l`.
///
/// # Safety
/// `l` is a live thread and [`BASEHOOKCOUNT_OFFSET`] is within its `lua_State`.
unsafe fn hook_counts(l: *mut lua_State) -> (c_int, c_int) {
    // SAFETY: caller's contract; unaligned reads of two plain ints.
    unsafe {
        let base = (l as *const u8).add(BASEHOOKCOUNT_OFFSET);
        (
            std::ptr::read_unaligned(base.cast::<c_int>()),
            std::ptr::read_unaligned(base.add(4).cast::<c_int>()),
        )
    }
}

/// True when [`BASEHOOKCOUNT_OFFSET`] is right for the linked Lua: checked once per
/// process on `l` (a fresh state's main thread, no hook set), whose hook is left unset.
pub(crate) fn count_layout_ok(l: *mut lua_State) -> bool {
    // Checked at most once per process; concurrent first states may both probe, which
    // is harmless (each probes its own thread).
    if let Some(ok) = layout_verdict() {
        return ok;
    }
    let probe: c_int = 0x2b3c_4d5e;
    let ok = BASEHOOKCOUNT_OFFSET != usize::MAX && {
        // SAFETY: `l` is a live thread not running Lua code; setting and clearing a hook
        // is always allowed. The offset is inside every 64-bit 5.4 `lua_State` (at least
        // 200 bytes), and is only trusted if both reads return what was just set.
        unsafe {
            ffi::lua_sethook(l, Some(quota_hook), ffi::LUA_MASKCOUNT, probe);
            let seen = hook_counts(l);
            let api = ffi::lua_gethookcount(l);
            ffi::lua_sethook(l, None, 0, 0);
            api == probe && seen == (probe, probe)
        }
    };
    LAYOUT.store(if ok { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
    ok
}

/// Instructions paid for but not yet executed in `l`'s current count block (0 when `l`
/// is not metered or the layout check failed).
fn unspent(l: *mut lua_State) -> u64 {
    // SAFETY: `l` is a live thread of the running state; the layout was verified.
    unsafe {
        // Only moonjail sets hooks in a sandbox: a count mask is its count hook.
        if !count_layout_ok_cached() || ffi::lua_gethookmask(l) & ffi::LUA_MASKCOUNT == 0 {
            return 0;
        }
        let (base, left) = hook_counts(l);
        if base <= 0 || left <= 0 || left > base {
            return 0;
        }
        left as u64
    }
}

/// [`count_layout_ok`]'s verdict: 0 not checked yet, 1 wrong, 2 right. One relaxed load
/// on the coroutine-switch path.
static LAYOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn layout_verdict() -> Option<bool> {
    match LAYOUT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        v => Some(v == 2),
    }
}

/// [`count_layout_ok`]'s verdict, false if it was never checked (the check runs when the
/// first state is made, so in practice it always has been).
#[inline]
fn count_layout_ok_cached() -> bool {
    layout_verdict() == Some(true)
}

/// Instructions the call has executed so far: what was paid for, less what `main` (the
/// running thread; the only one holding a block) has not run of its current block.
pub(crate) fn instructions_used(main: *mut lua_State, charged: u64) -> u64 {
    let sentinel = current().is_some_and(|ctl| ctl.instr_sentinel.get() == main);
    if sentinel || main.is_null() {
        charged
    } else {
        charged.saturating_sub(unspent(main))
    }
}

/// Hooks `l` so its next instruction raises the run's stop error. Async-signal-safe.
pub(crate) fn arm_thread(l: *mut lua_State) {
    // SAFETY: `l` comes from the live resume chain; `lua_sethook` only stores fields and
    // sets traps, which ldebug.c documents as safe even from a signal handler.
    unsafe { ffi::lua_sethook(l, Some(quota_hook), ffi::LUA_MASKCOUNT, 1) };
}

/// Hooks `l` for a due interrupt check: like [`arm_thread`], when it has no hook, or a
/// count of one (hooked for a check already, or the budget's sentinel or a block of
/// one, which setting a count of one again leaves exactly as it was, traps set anew).
/// A thread with a longer block of the instruction budget keeps it as paid: its count
/// hook looks at its end. Async-signal-safe.
pub(crate) fn arm_for_poll(l: *mut lua_State) {
    // SAFETY: `l` comes from the live resume chain; reading its hook mask and count is a
    // plain load each.
    let (mask, count) = unsafe { (ffi::lua_gethookmask(l), ffi::lua_gethookcount(l)) };
    if mask == 0 || count <= 1 {
        arm_thread(l);
    }
}

/// Starts instruction metering on `l` (the entry thread) when the run has a limit.
pub(crate) fn start_metering(l: *mut lua_State) {
    let Some(ctl) = current() else { return };
    match ctl.instr_limit.get() {
        Some(_) => meter(ctl, l, false),
        // SAFETY: `l` is the state's entry thread, not running Lua code right now; this
        // clears any hook left from a previous session call.
        None => unsafe { ffi::lua_sethook(l, None, 0, 0) },
    }
}

/// Brings a thread about to run (resumed or closed) under the run's quotas.
/// The resumer `l` gives its unspent instructions back and `co` pays for its own.
fn enter_thread(l: *mut lua_State, co: *mut lua_State) -> bool {
    let Some(ctl) = current() else { return true };
    if !ctl.push_thread(co) {
        return false;
    }
    if ctl.check_stop().is_some() {
        arm_thread(co);
    } else if ctl.instr_limit.get().is_some() {
        unmeter(ctl, l);
        meter(ctl, co, false);
    }
    true
}

/// Takes `co` (which just yielded, returned or died) off the resume chain; it gives back
/// what it did not run, and the resumer `l` pays for its own instructions again.
fn leave_thread(l: *mut lua_State, co: *mut lua_State) {
    if let Some(ctl) = current() {
        ctl.pop_thread();
        if ctl.instr_limit.get().is_some() {
            unmeter(ctl, co);
            meter(ctl, l, false);
        }
    }
}

/// Signal handler for the deadline signal: stops the runs whose deadline passed and
/// marks due interrupt checks (see `Control::on_timer`), then sets the thread's timer for
/// what is due next.
pub(crate) extern "C" fn on_deadline_signal(
    _sig: c_int,
    _info: *mut libc::siginfo_t,
    _ctx: *mut c_void,
) {
    // A timer signal carries no run id: compare with each armed run's own times (the
    // current one and any run it is nested in), so a stale signal changes nothing and an
    // outer run's deadline is not lost while a run started inside it is active.
    let now = super::watchdog::monotonic_ns();
    super::watchdog::for_each_armed(|ctl| ctl.on_timer(now));
    if let Some(ctl) = current() {
        ctl.on_timer(now);
    }
    super::watchdog::rearm_from_handler();
}

// ---- coroutine library, ported from lcorolib.c with the resume chain maintained ----

const COS_RUN: c_int = 0;
const COS_DEAD: c_int = 1;
const COS_YIELD: c_int = 2;
const COS_NORM: c_int = 3;
const STAT_NAMES: [&str; 4] = ["running\0", "dead\0", "suspended\0", "normal\0"];

/// # Safety
/// `l` must be a running thread inside a C function call.
unsafe fn getco(l: *mut lua_State) -> *mut lua_State {
    // SAFETY: caller's contract; lua_tothread returns null for non-threads.
    unsafe {
        let co = ffi::lua_tothread(l, 1);
        if co.is_null() {
            ffi::luaL_checktype(l, 1, ffi::LUA_TTHREAD);
        }
        co
    }
}

/// Port of `auxresume`: returns the number of results moved to `l`, or -1 with the error
/// message on `l`'s stack.
///
/// # Safety
/// `l` is the running thread, `co` a thread of the same state, `narg` values on `l`.
unsafe fn aux_resume(l: *mut lua_State, co: *mut lua_State, narg: c_int) -> c_int {
    // SAFETY: caller's contract; every call below is the C API used as lcorolib uses it.
    unsafe {
        if ffi::lua_checkstack(co, narg) == 0 {
            push_str(l, "too many arguments to resume");
            return -1;
        }
        if !enter_thread(l, co) {
            push_str(l, "coroutines nested too deeply");
            return -1;
        }
        ffi::lua_xmove(l, co, narg);
        let mut nres: c_int = 0;
        let status = ffi::lua_resume(co, l, narg, &mut nres);
        leave_thread(l, co);
        if status == ffi::LUA_OK || status == ffi::LUA_YIELD {
            if ffi::lua_checkstack(l, nres + 1) == 0 {
                ffi::lua_pop(co, nres);
                push_str(l, "too many results to resume");
                return -1;
            }
            ffi::lua_xmove(co, l, nres);
            nres
        } else {
            ffi::lua_xmove(co, l, 1);
            -1
        }
    }
}

/// # Safety
/// `l` must be valid with one free stack slot.
unsafe fn push_str(l: *mut lua_State, s: &str) {
    // SAFETY: caller's contract.
    unsafe { ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len()) };
}

/// Creates a coroutine and pays its first instruction block in advance when metered.
///
/// # Safety
/// `l` is the running thread with the function at index 1.
unsafe fn create_thread(l: *mut lua_State) -> *mut lua_State {
    // SAFETY: caller's contract; mirrors luaB_cocreate.
    unsafe {
        ffi::luaL_checktype(l, 1, ffi::LUA_TFUNCTION);
        let nl = ffi::lua_newthread(l);
        ffi::lua_pushvalue(l, 1);
        ffi::lua_xmove(l, nl, 1);
        // A new coroutine pays for its instructions when it first runs (`enter_thread`).
        nl
    }
}

/// The guarded members of `coroutine`: the deadline and the instruction budget reach
/// every coroutine.
pub(crate) const CO_GUARDS: [(&str, ffi::lua_CFunction); 4] = [
    ("create", co_create),
    ("resume", co_resume),
    ("wrap", co_wrap),
    ("close", co_close),
];

pub(crate) unsafe extern "C-unwind" fn co_create(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { create_thread(l) };
    1
}

pub(crate) unsafe extern "C-unwind" fn co_resume(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_coresume.
    unsafe {
        let co = getco(l);
        let r = aux_resume(l, co, ffi::lua_gettop(l) - 1);
        if r < 0 {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_insert(l, -2);
            2
        } else {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_insert(l, -(r + 1));
            r + 1
        }
    }
}

unsafe extern "C-unwind" fn aux_wrap(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as the C closure made in `co_wrap`; mirrors auxwrap.
    unsafe {
        let co = ffi::lua_tothread(l, ffi::lua_upvalueindex(1));
        let r = aux_resume(l, co, ffi::lua_gettop(l));
        if r < 0 {
            let mut stat = ffi::lua_status(co);
            if stat != ffi::LUA_OK && stat != ffi::LUA_YIELD {
                stat = close_thread(l, co);
                ffi::lua_xmove(co, l, 1);
            }
            if stat != ffi::LUA_ERRMEM && ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                ffi::luaL_where(l, 1);
                ffi::lua_insert(l, -2);
                ffi::lua_concat(l, 2);
            }
            ffi::lua_error(l);
        }
        r
    }
}

pub(crate) unsafe extern "C-unwind" fn co_wrap(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_cowrap.
    unsafe {
        create_thread(l);
        ffi::lua_pushcclosure(l, aux_wrap, 1);
    }
    1
}

/// Closes `co`'s pending to-be-closed variables under the run's quotas.
///
/// # Safety
/// `co` is a suspended or dead thread of the running state, `l` the running thread.
unsafe fn close_thread(l: *mut lua_State, co: *mut lua_State) -> c_int {
    let entered = enter_thread(l, co);
    // SAFETY: caller's contract.
    let status = unsafe { ffi::lua_closethread(co, l) };
    if entered {
        leave_thread(l, co);
    }
    status
}

/// # Safety
/// `l` is the running thread, `co` a thread of the same state.
unsafe fn aux_status(l: *mut lua_State, co: *mut lua_State) -> c_int {
    if l == co {
        return COS_RUN;
    }
    // SAFETY: caller's contract; mirrors auxstatus.
    unsafe {
        match ffi::lua_status(co) {
            ffi::LUA_YIELD => COS_YIELD,
            ffi::LUA_OK => {
                let mut ar = std::mem::MaybeUninit::<lua_Debug>::zeroed();
                if ffi::lua_getstack(co, 0, ar.as_mut_ptr()) != 0 {
                    COS_NORM
                } else if ffi::lua_gettop(co) == 0 {
                    COS_DEAD
                } else {
                    COS_YIELD
                }
            }
            _ => COS_DEAD,
        }
    }
}

pub(crate) unsafe extern "C-unwind" fn co_close(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_close.
    unsafe {
        let co = getco(l);
        let status = aux_status(l, co);
        match status {
            COS_DEAD | COS_YIELD => {
                let st = close_thread(l, co);
                if st == ffi::LUA_OK {
                    ffi::lua_pushboolean(l, 1);
                    1
                } else {
                    ffi::lua_pushboolean(l, 0);
                    ffi::lua_xmove(co, l, 1);
                    2
                }
            }
            _ => {
                let name = STAT_NAMES[status as usize];
                ffi::luaL_error(
                    l,
                    c"cannot close a %s coroutine".as_ptr(),
                    name.as_ptr().cast::<std::ffi::c_char>(),
                )
            }
        }
    }
}

/// Calls the function at index 1 with the values above it in protected mode, with a
/// message handler that only records the traceback (no metamethod of the error object
/// ever runs), and returns
/// `true, results...` or `false, error`. The host calls scripts only through this.
pub(crate) unsafe extern "C-unwind" fn entry_shim(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function with the callee at index 1.
    unsafe {
        // The message handler goes below the callee (when the stack has room for it).
        let handler = ffi::lua_checkstack(l, 1) != 0;
        if handler {
            ffi::lua_pushcfunction(l, super::trace::message_handler);
            ffi::lua_insert(l, 1);
        }
        let n = ffi::lua_gettop(l) - c_int::from(handler);
        let status = ffi::lua_pcall(l, n - 1, ffi::LUA_MULTRET, c_int::from(handler));
        if handler {
            ffi::lua_remove(l, 1);
        }
        if ffi::lua_checkstack(l, 1) == 0 {
            // Results fill the stack; drop them rather than fail outside protection.
            ffi::lua_settop(l, 0);
            push_str(l, "too many results");
            ffi::lua_pushboolean(l, 0);
            ffi::lua_insert(l, 1);
            return 2;
        }
        ffi::lua_pushboolean(l, (status == ffi::LUA_OK) as c_int);
        ffi::lua_insert(l, 1);
        ffi::lua_gettop(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when a Lua upgrade moves `basehookcount`: counts would silently become
    /// block-granular again.
    #[test]
    fn the_hook_count_layout_matches_lua() {
        let vm = crate::vm::Vm::new(mlua::StdLib::NONE, usize::MAX, None).unwrap();
        assert!(count_layout_ok(vm.main_thread()));
        assert!(count_layout_ok_cached());
    }
}
