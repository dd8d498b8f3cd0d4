//! Exact per-state memory accounting.
//!
//! mlua creates the state with its own allocator; we replace it with one that allocates
//! the same way (the global Rust allocator, mlua's alignment, so blocks keep one owner)
//! and also counts bytes, enforces the limit and remembers that a refusal happened, which
//! mlua's allocator does not expose. mlua's allocator is put back before the state is
//! closed, so its own bookkeeping (the box it frees on drop) stays consistent. mlua is
//! pinned to an exact version in Cargo.toml because of this.
//!
//! A deterministic state is created on [`arena_alloc`] instead (`lua_newstate`, not
//! mlua's constructor): the same accounting, every block from its private [`Arena`]
//! (see arena.rs), the main thread's first. It keeps its allocator through `lua_close`,
//! which its owner calls.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::ptr;

use mlua::ffi;

use super::arena::Arena;
use super::control::{Control, MemState};

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
    // SAFETY: `install` passes the control block's `MemState`, which outlives the state's
    // use of this allocator (it is uninstalled before the control block is freed). The
    // allocator runs on the VM thread only; no other reference to it is alive meanwhile.
    let mem = unsafe { &mut *(ud as *mut MemState) };
    if nsize == 0 {
        if !block.is_null() {
            mem.used = mem.used.saturating_sub(osize);
            // SAFETY: every block of this state was allocated by this function or by
            // mlua's allocator, both with this layout.
            unsafe { free_system(block, osize) };
        }
        return ptr::null_mut();
    }
    let Some(used) = admit(mem, block, osize, nsize) else {
        return ptr::null_mut();
    };
    // The books are settled before the call, so the allocation is a tail call: this is the
    // hottest function of allocation-heavy scripts. If the system allocator itself then
    // fails (true exhaustion), the count stays a little high: the limit only gets stricter.
    book(mem, used);
    // SAFETY: a non-zero size that does not overflow when rounded to the alignment
    // (`MAX_BLOCK`); an existing `block` was allocated with the layout given (see above).
    unsafe {
        if block.is_null() {
            alloc::alloc(Layout::from_size_align_unchecked(nsize, ALIGN)).cast()
        } else {
            alloc::realloc(
                block.cast(),
                Layout::from_size_align_unchecked(osize, ALIGN),
                nsize,
            )
            .cast()
        }
    }
}

/// Largest block handed to the system allocator (Lua's own size checks come first).
const MAX_BLOCK: usize = isize::MAX as usize - ALIGN;

/// The count a request for `nsize` bytes in place of `block` (`osize` bytes) would leave,
/// or `None` when the limit refuses it (the refusal recorded). Both allocators' one rule.
#[inline(always)]
fn admit(mem: &mut MemState, block: *mut c_void, osize: usize, nsize: usize) -> Option<usize> {
    let old = if block.is_null() { 0 } else { osize };
    let used = mem.used.saturating_sub(old) + nsize;
    if (used > mem.limit && nsize > old) || nsize > MAX_BLOCK {
        refuse(mem, block, osize, nsize);
        return None;
    }
    if mem.pending.is_some() {
        settle_retry(mem, block, osize, nsize);
    }
    Some(used)
}

/// Records the count of a request granted.
#[inline(always)]
fn book(mem: &mut MemState, used: usize) {
    mem.used = used;
    if used > mem.peak {
        mem.peak = used;
    }
}

/// Gives a block of mlua's allocator back.
///
/// # Safety
/// `block` is a live block of the global allocator of `osize` bytes with this layout.
#[inline(always)]
unsafe fn free_system(block: *mut c_void, osize: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        alloc::dealloc(
            block.cast(),
            Layout::from_size_align_unchecked(osize, ALIGN),
        )
    }
}

/// A refused request. Lua retries a refused allocation once after an emergency
/// collection; only a refusal not followed by a successful identical retry raises an
/// error, so the refusal is remembered until the next request.
#[cold]
fn refuse(mem: &mut MemState, block: *mut c_void, osize: usize, nsize: usize) {
    mem.hits = mem.hits.saturating_add(1);
    mem.pending = Some((block as usize, osize, nsize));
}

/// The request after a refusal: if it is Lua's identical retry, the refusal was rescued.
#[cold]
fn settle_retry(mem: &mut MemState, block: *mut c_void, osize: usize, nsize: usize) {
    if mem.pending.take() == Some((block as usize, osize, nsize)) {
        mem.hits = mem.hits.saturating_sub(1);
    }
}

/// mlua's block alignment; both allocators must agree on it.
const ALIGN: usize = ffi::SYS_MIN_ALIGN;

/// The allocator of a deterministic state: [`counting_alloc`]'s accounting, blocks from
/// the state's arena.
///
/// # Safety
/// `ud` must point to a live [`InArena`]; `block`/`osize` follow the `lua_Alloc` contract.
unsafe extern "C" fn arena_alloc(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: the state was created with this allocator and a boxed `InArena`
    // (`Wrapped::arena`), which outlives the state (its owner closes the state before
    // dropping the wrapper); its `mem` points to the control block's `MemState`, which
    // outlives it too. The allocator runs on the VM thread only and no other reference
    // to either is alive meanwhile.
    let st = unsafe { &mut *(ud as *mut InArena) };
    // SAFETY: as above.
    let mem = unsafe { &mut *st.mem };
    if nsize == 0 {
        if !block.is_null() {
            mem.used = mem.used.saturating_sub(osize);
            debug_assert!(st.arena.contains(block));
            // SAFETY: every block of the state is a block of this arena (the state was
            // created on it), live, with the size Lua gives.
            unsafe { st.arena.free(block, osize, ALIGN) };
        }
        return ptr::null_mut();
    }
    let Some(used) = admit(mem, block, osize, nsize) else {
        return ptr::null_mut();
    };
    let p = if block.is_null() {
        st.arena.alloc(nsize, ALIGN)
    } else {
        debug_assert!(st.arena.contains(block));
        // SAFETY: a live block of this arena (as above) with its size `osize`; `nsize`
        // is non-zero.
        unsafe { st.arena.realloc(block, osize, nsize, ALIGN) }
    };
    // The arena's window is full: Lua keeps the old block and raises a memory error.
    if !p.is_null() {
        book(mem, used);
    }
    p
}

/// What [`arena_alloc`] works on.
pub(crate) struct InArena {
    mem: *mut MemState,
    arena: Arena,
}

/// The allocator a state runs on: mlua's pair, wrapped with the accounting, or a
/// deterministic state's arena, which the state was created on.
pub(crate) enum Wrapped {
    /// Installed over mlua's allocator, which is put back before the state is closed.
    Counting {
        inner: ffi::lua_Alloc,
        inner_ud: *mut c_void,
    },
    /// The allocator of a state made by [`Wrapped::arena`]; boxed, a stable address.
    Arena {
        /// What `arena_alloc` works on, owned here and only read through the pointer the
        /// state was given.
        _state: Box<InArena>,
    },
}

impl Wrapped {
    /// The allocator of a state to be created on `arena` with `lua_newstate`, so that
    /// every one of its blocks, the main thread's first, comes from the arena: the
    /// wrapper, which must outlive the state, and the `lua_Alloc` pair to pass.
    pub(crate) fn arena(
        ctl: &Control,
        arena: Arena,
    ) -> (Box<Wrapped>, ffi::lua_Alloc, *mut c_void) {
        let mut st = Box::new(InArena {
            mem: ctl.mem.get(),
            arena,
        });
        // `arena_alloc` reads the pointer as an `InArena`, boxed at a stable address (the
        // box moves into the wrapper, its contents do not).
        let ud: *mut c_void = (&mut *st as *mut InArena).cast();
        (Box::new(Wrapped::Arena { _state: st }), arena_alloc, ud)
    }

    /// Whether the state was created on this allocator (and so is closed by its owner,
    /// before the allocator goes).
    pub(crate) fn made_the_state(&self) -> bool {
        matches!(self, Wrapped::Arena { .. })
    }
}

/// Installs the counting allocator on `l`, whose blocks so far come to `used` bytes.
/// Returns the boxed wrapper, which must outlive the installation; pass it to
/// [`uninstall`] before the state is closed.
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
    // SAFETY: the control block is boxed (a stable address) and outlives the
    // installation (caller's contract); `counting_alloc` reads it as a `MemState`.
    unsafe { ffi::lua_setallocf(l, counting_alloc, ctl.mem.get().cast()) };
    Box::new(Wrapped::Counting { inner, inner_ud })
}

/// Puts mlua's allocator back on a state [`install`] wrapped; a state made on an arena
/// keeps its allocator through `lua_close`.
///
/// # Safety
/// `l` must be the state `wrapped` was installed on, still open.
pub(crate) unsafe fn uninstall(l: *mut ffi::lua_State, wrapped: &Wrapped) {
    if let Wrapped::Counting { inner, inner_ud } = *wrapped {
        // SAFETY: restoring the allocator pair read from this same state in `install`.
        unsafe { ffi::lua_setallocf(l, inner, inner_ud) };
    }
}
