//! Exact per-state memory accounting.
//!
//! mlua creates the state with its own allocator; we replace it with one that allocates
//! the same way (the global Rust allocator, mlua's alignment, so blocks keep one owner)
//! and also counts bytes, enforces the limit and remembers that a refusal happened, which
//! mlua's allocator does not expose. mlua's allocator is put back before the state is
//! closed, so its own bookkeeping (the box it frees on drop) stays consistent. mlua is
//! pinned to an exact version in Cargo.toml because of this.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::ptr;

use mlua::ffi;

use super::control::Control;

/// The allocator installed on every sandbox state: mlua's own allocator (the global Rust
/// allocator with blocks aligned to `SYS_MIN_ALIGN`), so blocks move freely between the
/// two, plus exact accounting and the limit. Real exhaustion returns null (Lua raises a
/// memory error) instead of aborting the process as mlua does.
///
/// # Safety
/// `ud` must point to a live [`Wrapped`]; `block`/`osize` follow the `lua_Alloc` contract.
unsafe extern "C" fn counting_alloc(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `install` passes a pointer to a boxed `Wrapped` that outlives the state's
    // use of this allocator (it is uninstalled before the box is freed).
    let wrap = unsafe { &*(ud as *const Wrapped) };
    // SAFETY: the allocator runs on the VM thread only; no other reference to the
    // counters is alive during this call.
    let mem = unsafe { &mut *(*wrap.ctl).mem.get() };
    let old = if block.is_null() { 0 } else { osize };
    if nsize == 0 {
        if !block.is_null() {
            // SAFETY: every block of this state was allocated by this function or by
            // mlua's allocator, both with this layout.
            unsafe {
                alloc::dealloc(
                    block.cast(),
                    Layout::from_size_align_unchecked(osize, ALIGN),
                )
            };
            mem.used -= old.min(mem.used);
        }
        return ptr::null_mut();
    }
    let request = (block as usize, osize, nsize);
    if nsize > old && mem.used.saturating_add(nsize - old) > mem.limit {
        // Lua retries a refused allocation once after an emergency collection; only a
        // refusal that is not followed by a successful identical retry raises an error.
        mem.hits = mem.hits.saturating_add(1);
        mem.pending = Some(request);
        return ptr::null_mut();
    }
    let p = if block.is_null() {
        match Layout::from_size_align(nsize, ALIGN) {
            // SAFETY: a non-zero size with a valid alignment.
            Ok(layout) => unsafe { alloc::alloc(layout) },
            Err(_) => ptr::null_mut(),
        }
    } else if nsize > isize::MAX as usize - ALIGN {
        ptr::null_mut()
    } else {
        // SAFETY: `block` was allocated with this layout (see above); the new size is
        // non-zero and does not overflow when rounded to the alignment.
        unsafe {
            alloc::realloc(
                block.cast(),
                Layout::from_size_align_unchecked(osize, ALIGN),
                nsize,
            )
        }
    };
    if !p.is_null() {
        mem.used = mem.used - old.min(mem.used) + nsize;
        mem.peak = mem.peak.max(mem.used);
        if mem.pending.take() == Some(request) {
            mem.hits = mem.hits.saturating_sub(1);
        }
    }
    p.cast()
}

/// mlua's block alignment; both allocators must agree on it.
const ALIGN: usize = ffi::SYS_MIN_ALIGN;

/// The allocator pair we wrap, kept beside the control block.
pub(crate) struct Wrapped {
    ctl: *const Control,
    inner: ffi::lua_Alloc,
    inner_ud: *mut c_void,
}

/// Installs the counting allocator on `l`. Returns the boxed wrapper, which must outlive
/// the installation; pass it to [`uninstall`] before the state is closed.
///
/// # Safety
/// `l` must be a valid main state owned by the caller, `ctl` must outlive the wrapper.
pub(crate) unsafe fn install(l: *mut ffi::lua_State, ctl: &Control, used: usize) -> Box<Wrapped> {
    let mut inner_ud = ptr::null_mut();
    // SAFETY: `l` is a valid state (caller's contract).
    let inner = unsafe { ffi::lua_getallocf(l, &mut inner_ud) };
    // SAFETY: the allocator only runs on this thread, and no allocation is in flight.
    unsafe {
        let mem = &mut *ctl.mem.get();
        mem.used = used;
        mem.peak = used;
    }
    let wrapped = Box::new(Wrapped {
        ctl,
        inner,
        inner_ud,
    });
    // SAFETY: the box address is stable and outlives the installation (caller's contract).
    unsafe {
        ffi::lua_setallocf(
            l,
            counting_alloc,
            &*wrapped as *const Wrapped as *mut c_void,
        )
    };
    wrapped
}

/// Puts the original allocator back.
///
/// # Safety
/// `l` must be the state `wrapped` was installed on, still open.
pub(crate) unsafe fn uninstall(l: *mut ffi::lua_State, wrapped: &Wrapped) {
    // SAFETY: restoring the allocator pair read from this same state in `install`.
    unsafe { ffi::lua_setallocf(l, wrapped.inner, wrapped.inner_ud) };
}
