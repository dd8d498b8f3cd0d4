//! The private memory of a deterministic state.
//!
//! Lua hashes tables, functions, userdata and threads used as table keys by their
//! address (`point2uint`, the low 32 bits), so the order `pairs` and `next` visit them
//! depends on where the allocator put them: with ASLR and a shared heap, a different
//! order in each process. A deterministic state allocates from an arena whose base is
//! aligned to 4 GiB, so the low 32 bits of every address are an offset into the arena,
//! and the allocator (talc, a maintained allocator that works over regions it is given,
//! no randomness, no per-thread caches) places each block as a function of the sequence
//! of requests alone, which is itself deterministic for a deterministic script.
//!
//! The arena is mapped on demand, starting small and doubling, inside its 4 GiB window
//! (`MAP_FIXED_NOREPLACE` right after the part already mapped): a worker's `RLIMIT_AS`
//! is charged for what the state uses, not for the window. A state in an arena holds at
//! most 4 GiB (less whatever the window's growth finds already mapped, which only other
//! fixed mappings could be; the kernel places ordinary mappings far from the windows).
//! Only `mmap`/`munmap` without `PROT_EXEC` are used, which the worker's seccomp filter
//! allows.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::{self, NonNull};

use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

/// Bytes of address space whose low 32 bits are the offset from the window's base.
const WINDOW: usize = 1 << 32;
/// First mapping; each growth at least doubles what is mapped.
const FIRST: usize = 1 << 20;
/// The unit of growth.
const GRAIN: usize = 1 << 16;
/// Where the search for a free window starts (16 TiB: far above the executable and the
/// brk heap, far below where the kernel puts ordinary mappings on x86-64 and aarch64).
const SEARCH_FROM: usize = 1 << 44;
/// Windows tried before giving up.
const SEARCH_TRIES: usize = 256;

/// A 4 GiB-aligned region and the allocator over its mapped part.
pub(crate) struct Arena {
    talc: Talc<Manual, DefaultBinning>,
    base: *mut u8,
    mapped: usize,
    heap_end: NonNull<u8>,
}

impl Arena {
    /// Maps the first part of a free window; `None` if no window could be found.
    pub(crate) fn new() -> Option<Arena> {
        if usize::BITS < 64 {
            return None;
        }
        let base = (0..SEARCH_TRIES).find_map(|i| map_at(SEARCH_FROM + i * WINDOW, FIRST))?;
        let mut talc = Talc::new(Manual);
        // SAFETY: `base..base + FIRST` was just mapped read-write for this arena alone and
        // stays mapped until `Drop` (after every block was given back or abandoned).
        let heap_end = match unsafe { talc.claim(base, FIRST) } {
            Some(end) => end,
            None => {
                // SAFETY: unmapping exactly what `map_at` mapped.
                unsafe { libc::munmap(base.cast(), FIRST) };
                return None;
            }
        };
        Some(Arena {
            talc,
            base,
            mapped: FIRST,
            heap_end,
        })
    }

    /// Whether `p` is a block of this arena.
    #[inline]
    pub(crate) fn contains(&self, p: *mut c_void) -> bool {
        (p as usize).wrapping_sub(self.base as usize) < self.mapped
    }

    /// A block of `size` (non-zero) bytes aligned to `align`, or null.
    pub(crate) fn alloc(&mut self, size: usize, align: usize) -> *mut c_void {
        let Ok(layout) = Layout::from_size_align(size, align) else {
            return ptr::null_mut();
        };
        loop {
            // SAFETY: `size` is non-zero (Lua never asks for 0 bytes through this path).
            if let Some(p) = unsafe { self.talc.try_allocate(layout) } {
                return p.as_ptr().cast();
            }
            if !self.grow(size) {
                return ptr::null_mut();
            }
        }
    }

    /// Gives back a block of this arena.
    ///
    /// # Safety
    /// `p` was returned by [`Arena::alloc`] or [`Arena::realloc`] of this arena with
    /// `size` and `align` and not freed since.
    pub(crate) unsafe fn free(&mut self, p: *mut c_void, size: usize, align: usize) {
        // SAFETY: caller's contract.
        unsafe {
            self.talc
                .deallocate(p.cast(), Layout::from_size_align_unchecked(size, align))
        }
    }

    /// Resizes a block of this arena (`new` non-zero): in place when talc can, else moved.
    /// Null (the block untouched) when there is no room.
    ///
    /// # Safety
    /// As for [`Arena::free`], with `old` its size.
    pub(crate) unsafe fn realloc(
        &mut self,
        p: *mut c_void,
        old: usize,
        new: usize,
        align: usize,
    ) -> *mut c_void {
        // SAFETY: caller's contract; `old` is the block's size.
        let layout = unsafe { Layout::from_size_align_unchecked(old, align) };
        // SAFETY: as above; `new` is non-zero.
        if unsafe { self.talc.try_realloc_in_place(p.cast(), layout, new) } {
            return p;
        }
        let q = self.alloc(new, align);
        if !q.is_null() {
            // SAFETY: two distinct live blocks, `old < new` bytes copied (a shrink is
            // always done in place above).
            unsafe {
                ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(new));
                self.free(p, old, align);
            }
        }
        q
    }

    /// Maps more of the window (at least doubling it) to fit a `need`-byte request.
    #[cold]
    fn grow(&mut self, need: usize) -> bool {
        // A request the rest of the window cannot hold fails without mapping it all.
        if need > WINDOW - self.mapped {
            return false;
        }
        // Whole 64 KiB units (a multiple of any page size), so each mapping starts on a
        // page boundary.
        let want = self
            .mapped
            .saturating_add(need.saturating_add(FIRST))
            .max(self.mapped.saturating_mul(2))
            .min(WINDOW)
            & !(GRAIN - 1);
        if want <= self.mapped {
            return false;
        }
        // SAFETY: `mapped < WINDOW`, so the address stays inside this arena's window.
        let at = unsafe { self.base.add(self.mapped) };
        if map_at(at as usize, want - self.mapped).is_none() {
            return false;
        }
        // SAFETY: `heap_end` is the end talc returned for this heap; the memory up to
        // `base + want` is now mapped for this arena alone.
        self.heap_end = unsafe { self.talc.extend(self.heap_end, self.base.add(want)) };
        self.mapped = want;
        true
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the state that used the arena is closed; nothing points into it.
        unsafe { libc::munmap(self.base.cast(), self.mapped) };
    }
}

/// Exactly there or not at all, without reserving swap for the whole mapping. Elsewhere
/// than Linux the address is only a hint (checked below).
#[cfg(any(target_os = "linux", target_os = "android"))]
const PLACE_FLAGS: libc::c_int = libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const PLACE_FLAGS: libc::c_int = 0;

/// Maps `len` read-write bytes at exactly `addr`, or nothing.
fn map_at(addr: usize, len: usize) -> Option<*mut u8> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (it fails with
    // EEXIST instead); a kernel without it treats the address as a hint, and a mapping
    // elsewhere is undone below.
    let p = unsafe {
        libc::mmap(
            addr as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | PLACE_FLAGS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if p as usize != addr {
        // SAFETY: unmapping the mapping just made, which nothing uses.
        unsafe { libc::munmap(p, len) };
        return None;
    }
    Some(p.cast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_requests_same_offsets() {
        let offsets = || {
            let mut a = Arena::new().expect("an arena");
            let base = a.base as usize;
            assert_eq!(base % WINDOW, 0);
            let mut out = Vec::new();
            let mut live = Vec::new();
            for i in 1..2000usize {
                let size = (i * 37) % 3000 + 1;
                let p = a.alloc(size, 16);
                assert!(!p.is_null());
                out.push(p as usize - base);
                live.push((p, size));
                if i % 3 == 0 {
                    let (p, s) = live.swap_remove(i % live.len());
                    // SAFETY: a live block of this arena with its size.
                    unsafe { a.free(p, s, 16) };
                }
            }
            out
        };
        let first = offsets();
        let _other = Arena::new();
        assert_eq!(first, offsets());
    }

    #[test]
    fn grows_past_the_first_mapping() {
        let mut a = Arena::new().expect("an arena");
        let p = a.alloc(8 << 20, 16);
        assert!(!p.is_null() && a.contains(p));
        // SAFETY: the block is live and 8 MiB long.
        let q = unsafe { a.realloc(p, 8 << 20, 20 << 20, 16) };
        assert!(!q.is_null() && a.contains(q));
    }

    #[test]
    fn a_request_past_the_window_fails_without_mapping_it() {
        let mut a = Arena::new().expect("an arena");
        assert!(a.alloc(WINDOW, 16).is_null());
        assert_eq!(a.mapped, FIRST);
        assert!(!a.alloc(64, 16).is_null());
    }

    #[test]
    fn grows_by_small_requests() {
        // A table's array doubling among many small objects, as Lua allocates.
        let mut a = Arena::new().expect("an arena");
        let mut array = a.alloc(16, 16);
        let mut cap = 1usize;
        for i in 0..100_000usize {
            if i == cap {
                // SAFETY: the live array block, `cap * 16` bytes long.
                array = unsafe { a.realloc(array, cap * 16, cap * 32, 16) };
                assert!(!array.is_null(), "array of {cap} at {i}");
                cap *= 2;
            }
            assert!(
                !a.alloc(56, 16).is_null(),
                "object {i}, {} mapped",
                a.mapped
            );
        }
        assert_eq!(a.mapped % GRAIN, 0);
    }
}
