//! Tracebacks: where a script was when it raised an error or was stopped.
//!
//! A script cannot build a traceback itself (no `debug` library), and by the time an
//! error reaches the host its stack has unwound. So the frames are read where the error
//! is raised, with the read-only debug API (`lua_getstack`, `lua_getinfo`, no pushes, no
//! allocation in the state): by the entry shim's message handler for errors nothing
//! caught, and by [`super::hook::raise`] for the stops (deadline, instruction budget,
//! output), whose first raise is the point the run was stopped. The first capture of a
//! call wins; it is kept in the control block until the engine collects it.
//!
//! A memory error has no traceback: Lua unwinds it without calling any handler, and the
//! allocator that refuses the block runs while the stack may be mid-move, where reading
//! frames is not safe.

use std::ffi::{c_int, CStr};
use std::mem::MaybeUninit;

use mlua::ffi::{self, lua_Debug, lua_State};

use super::control::{current, Control};
use crate::error::{Frame, MAX_FRAMES};

/// Levels (C frames included) a capture looks at per thread: walking to a level is
/// linear in it, so this bounds a capture in a deep recursion to a few thousand steps.
const MAX_LEVELS: c_int = 128;

/// Globals looked through to name a frame its caller did not name (`run`, called by the
/// host): a bounded, raw traversal.
const MAX_NAME_SEARCH: usize = 4096;

/// Records the frames of `l` and of the threads that resumed it (the resume chain), as
/// the current call's traceback, unless one is recorded already.
///
/// # Safety
/// `l` is the running thread of the state whose control block is current, at a point
/// where its stack is consistent: inside a C function, a hook or a message handler.
pub(crate) unsafe fn capture(l: *mut lua_State) {
    let Some(ctl) = current() else { return };
    if ctl.has_trace() {
        return;
    }
    let mut frames = Vec::new();
    // SAFETY: caller's contract for `l`; the threads below it on the resume chain are
    // suspended inside `coroutine.resume`, their stacks consistent.
    unsafe {
        collect(l, &mut frames);
        for thread in ctl.chain_below(l) {
            if frames.len() >= MAX_FRAMES {
                break;
            }
            collect(thread, &mut frames);
        }
    }
    ctl.set_trace(frames);
}

/// Appends the Lua frames of `l`, innermost first, up to [`MAX_FRAMES`] in all.
///
/// # Safety
/// As for [`capture`].
unsafe fn collect(l: *mut lua_State, frames: &mut Vec<Frame>) {
    let mut level = 0;
    while level < MAX_LEVELS && frames.len() < MAX_FRAMES {
        let mut ar = MaybeUninit::<lua_Debug>::zeroed();
        // SAFETY: caller's contract; "Sln" fills the record without pushing anything.
        let frame = unsafe {
            if ffi::lua_getstack(l, level, ar.as_mut_ptr()) == 0 {
                break;
            }
            if ffi::lua_getinfo(l, c"Sln".as_ptr(), ar.as_mut_ptr()) == 0 {
                break;
            }
            let ar = ar.assume_init_ref();
            frame_of(l, ar, level)
        };
        if let Some(frame) = frame {
            frames.push(frame);
        }
        level += 1;
    }
}

/// The frame `ar` describes, if it is a Lua function (C functions have no line).
///
/// # Safety
/// `ar` was filled by `lua_getinfo(l, "Sln")` for `level` of `l`.
unsafe fn frame_of(l: *mut lua_State, ar: &lua_Debug, level: c_int) -> Option<Frame> {
    // SAFETY: `what` and `short_src` are set by "S"; `name`, when not null, points to a
    // string the state keeps alive.
    unsafe {
        let what = CStr::from_ptr(ar.what).to_bytes();
        if what == b"C" || ar.currentline < 0 {
            return None;
        }
        let source = CStr::from_ptr(ar.short_src.as_ptr())
            .to_string_lossy()
            .into_owned();
        let function = if what == b"main" {
            None
        } else if ar.name.is_null() {
            global_name(l, level)
        } else {
            Some(CStr::from_ptr(ar.name).to_string_lossy().into_owned())
        };
        Some(Frame {
            function,
            source,
            line: u32::try_from(ar.currentline).unwrap_or(0),
        })
    }
}

/// The name of a global bound to the function at `level` (what `luaL_traceback` does
/// for functions it cannot otherwise name), found by a raw, bounded traversal of the
/// globals: no metamethod runs.
///
/// # Safety
/// As for [`frame_of`].
unsafe fn global_name(l: *mut lua_State, level: c_int) -> Option<String> {
    // SAFETY: every push is preceded by room for it (checked without raising); the
    // stack is restored to its height before returning.
    unsafe {
        if ffi::lua_checkstack(l, 4) == 0 {
            return None;
        }
        let top = ffi::lua_gettop(l);
        let mut ar = MaybeUninit::<lua_Debug>::zeroed();
        if ffi::lua_getstack(l, level, ar.as_mut_ptr()) == 0
            || ffi::lua_getinfo(l, c"f".as_ptr(), ar.as_mut_ptr()) == 0
        {
            ffi::lua_settop(l, top);
            return None;
        }
        let f = ffi::lua_gettop(l);
        let mut found = None;
        if ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS) == ffi::LUA_TTABLE {
            let globals = ffi::lua_gettop(l);
            ffi::lua_pushnil(l);
            let mut seen = 0;
            while seen < MAX_NAME_SEARCH && ffi::lua_next(l, globals) != 0 {
                seen += 1;
                if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_rawequal(l, -1, f) != 0 {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, -2, &mut len);
                    let name = std::slice::from_raw_parts(p.cast::<u8>(), len);
                    found = Some(String::from_utf8_lossy(name).into_owned());
                    break;
                }
                ffi::lua_pop(l, 1);
            }
        }
        ffi::lua_settop(l, top);
        found
    }
}

/// The entry shim's message handler: captures the traceback at the point of an error
/// nothing in the script caught, and returns the error value unchanged (no metamethod
/// of it runs).
pub(crate) unsafe extern "C-unwind" fn message_handler(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as the message handler, on the thread that raised, with the
    // raiser's frames still on the stack; level 0 is this handler, skipped as a C frame.
    unsafe { capture(l) };
    1
}

impl Control {
    /// True when this call's traceback is recorded.
    pub(crate) fn has_trace(&self) -> bool {
        // SAFETY: only the VM thread touches the trace, and no borrow of it outlives a
        // method of this block.
        unsafe { (*self.trace.get()).is_some() }
    }

    fn set_trace(&self, frames: Vec<Frame>) {
        // SAFETY: as in `has_trace`.
        unsafe { *self.trace.get() = Some(frames) };
    }

    /// Takes this call's traceback (empty when none was recorded).
    pub(crate) fn take_trace(&self) -> Vec<Frame> {
        // SAFETY: as in `has_trace`.
        unsafe { (*self.trace.get()).take() }.unwrap_or_default()
    }
}
