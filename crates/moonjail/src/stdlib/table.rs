//! Metered ports of `ltablib.c` (Lua 5.4.9): `table.move`, `insert`, `remove`, `concat`,
//! `unpack` and `sort`, plus `string.rep`, `reverse`, `lower` and `upper` from
//! `lstrlib.c`.
//!
//! The stock functions loop in C over ranges the script chooses
//! (`table.move({}, 1, math.maxinteger - 1, 1)`, `table.remove` on a table whose `__len`
//! says `math.maxinteger`, `string.rep("", math.maxinteger)`), and Lua hooks never fire
//! inside a C function, so neither the deadline nor the instruction budget could end
//! them. These ports do the same work in the same order through the same C API calls
//! (`lua_geti`/`lua_seti`, so `__index`, `__newindex` and `__len` are honoured exactly
//! as in `ltablib.c`), with the same results and error messages, and count their work on
//! a [`Meter`]: one unit per element read, written or compared, one per
//! [`BYTES_PER_UNIT`](crate::vm::control::BYTES_PER_UNIT) bytes copied or compared.
//!
//! `table.sort` also compares strings itself: two references to the same string are
//! equal at once, and other strings are compared chunk by chunk with the cost charged,
//! where the stock `lua_compare` spends one uninterruptible `strcoll` pass per
//! embedded `\0`.
//!
//! Glue conventions (as in `strmatch.rs`): Lua errors are `longjmp`s, so no frame here
//! keeps a value with a destructor alive across a Lua API call that can raise, and no
//! arithmetic can panic (indices use wrapping or checked operations where stock Lua
//! relies on its range checks).

use std::ffi::{c_char, c_int, CStr};
use std::mem::MaybeUninit;

use mlua::ffi::{self, lua_Integer, lua_State};

use crate::vm::hook::raise;
use crate::vm::Meter;

type State = *mut lua_State;

/// What an argument must support to stand in for a table (`ltablib.c`'s `TAB_*`).
const TAB_R: c_int = 1;
const TAB_W: c_int = 2;
const TAB_L: c_int = 4;
const TAB_RW: c_int = TAB_R | TAB_W;

/// Counts `units` of work; raises the stop message when the run must end.
///
/// # Safety
/// `l` is the running thread inside a C function; nothing with a destructor is alive in
/// the caller's frames.
#[inline(always)]
pub(super) unsafe fn tick(l: State, m: &mut Meter, units: u64) {
    if let Some(msg) = m.charge(units) {
        // SAFETY: caller's contract.
        unsafe { raise(l, msg) }
    }
}

/// Counts `bytes` copied or compared; raises the stop message when the run must end.
///
/// # Safety
/// As [`tick`].
#[inline(always)]
unsafe fn tick_bytes(l: State, m: &mut Meter, bytes: usize) {
    if let Some(msg) = m.charge_bytes(bytes) {
        // SAFETY: caller's contract.
        unsafe { raise(l, msg) }
    }
}

/// Units for `bytes` copied or compared.
#[inline(always)]
pub(super) fn units_of(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(crate::vm::control::BYTES_PER_UNIT)
}

/// Charges what is left on the meter at the end of a call.
///
/// # Safety
/// As [`tick`].
#[inline]
pub(super) unsafe fn finish(l: State, m: &mut Meter) {
    if let Some(msg) = m.finish() {
        // SAFETY: caller's contract.
        unsafe { raise(l, msg) }
    }
}

/// `checkfield`: is `key` a non-nil raw field of the metatable `n` slots down?
///
/// # Safety
/// `l` is the running thread inside a C function with the metatable on its stack.
unsafe fn checkfield(l: State, key: &CStr, n: c_int) -> bool {
    // SAFETY: caller's contract; mirrors ltablib's checkfield.
    unsafe {
        ffi::lua_pushstring(l, key.as_ptr());
        ffi::lua_rawget(l, -n) != ffi::LUA_TNIL
    }
}

/// `checktab`: argument `arg` is a table or has a metatable with the metamethods `what`
/// needs; raises the stock type error otherwise.
///
/// # Safety
/// `l` is the running thread inside a C function.
unsafe fn checktab(l: State, arg: c_int, what: c_int) {
    // SAFETY: caller's contract; mirrors ltablib's checktab step by step.
    unsafe {
        if ffi::lua_type(l, arg) != ffi::LUA_TTABLE {
            let mut n = 1;
            let ok = ffi::lua_getmetatable(l, arg) != 0
                && (what & TAB_R == 0 || {
                    n += 1;
                    checkfield(l, c"__index", n)
                })
                && (what & TAB_W == 0 || {
                    n += 1;
                    checkfield(l, c"__newindex", n)
                })
                && (what & TAB_L == 0 || {
                    n += 1;
                    checkfield(l, c"__len", n)
                });
            if ok {
                ffi::lua_pop(l, n);
            } else {
                ffi::luaL_checktype(l, arg, ffi::LUA_TTABLE);
            }
        }
    }
}

/// `aux_getn`: checks argument `n` and returns its length (`__len` honoured).
///
/// # Safety
/// `l` is the running thread inside a C function.
unsafe fn aux_getn(l: State, n: c_int, what: c_int) -> lua_Integer {
    // SAFETY: caller's contract.
    unsafe {
        checktab(l, n, what | TAB_L);
        ffi::luaL_len(l, n)
    }
}

/// `luaL_argcheck` with a static message.
///
/// # Safety
/// `l` is the running thread inside a C function.
#[inline]
unsafe fn argcheck(l: State, cond: bool, arg: c_int, msg: &CStr) {
    if !cond {
        // SAFETY: caller's contract; luaL_argerror raises.
        unsafe { ffi::luaL_argerror(l, arg, msg.as_ptr()) };
    }
}

/// Metered `table.insert`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tinsert(l: State) -> c_int {
    let mut m = Meter::new();
    // SAFETY: called by Lua as a C function; mirrors ltablib's tinsert, with one unit
    // charged per element moved up.
    unsafe {
        let e = aux_getn(l, 1, TAB_RW).wrapping_add(1); // first empty element
        let pos = match ffi::lua_gettop(l) {
            2 => e,
            3 => {
                let pos = ffi::luaL_checkinteger(l, 2);
                // check whether 'pos' is in [1, e]
                argcheck(
                    l,
                    (pos as u64).wrapping_sub(1) < e as u64,
                    2,
                    c"position out of bounds",
                );
                let mut i = e;
                while i > pos {
                    // i > pos >= 1, so i - 1 cannot overflow
                    ffi::lua_geti(l, 1, i - 1);
                    ffi::lua_seti(l, 1, i); // t[i] = t[i - 1]
                    tick(l, &mut m, 1);
                    i -= 1;
                }
                pos
            }
            _ => {
                return ffi::luaL_error(l, c"wrong number of arguments to 'insert'".as_ptr());
            }
        };
        ffi::lua_seti(l, 1, pos); // t[pos] = v
        finish(l, &mut m);
    }
    0
}

/// Metered `table.remove`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tremove(l: State) -> c_int {
    let mut m = Meter::new();
    // SAFETY: called by Lua as a C function; mirrors ltablib's tremove, with one unit
    // charged per element moved down.
    unsafe {
        let size = aux_getn(l, 1, TAB_RW);
        let mut pos = ffi::luaL_optinteger(l, 2, size);
        if pos != size {
            // check whether 'pos' is in [1, size + 1]
            argcheck(
                l,
                (pos as u64).wrapping_sub(1) <= size as u64,
                2,
                c"position out of bounds",
            );
        }
        ffi::lua_geti(l, 1, pos); // result = t[pos]
        while pos < size {
            // pos < size <= maxinteger, so pos + 1 cannot overflow
            ffi::lua_geti(l, 1, pos + 1);
            ffi::lua_seti(l, 1, pos); // t[pos] = t[pos + 1]
            tick(l, &mut m, 1);
            pos += 1;
        }
        ffi::lua_pushnil(l);
        ffi::lua_seti(l, 1, pos); // remove entry t[pos]
        finish(l, &mut m);
    }
    1
}

/// Metered `table.move`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tmove(l: State) -> c_int {
    let mut m = Meter::new();
    // SAFETY: called by Lua as a C function; mirrors ltablib's tmove, with one unit
    // charged per element copied.
    unsafe {
        let f = ffi::luaL_checkinteger(l, 2);
        let e = ffi::luaL_checkinteger(l, 3);
        let t = ffi::luaL_checkinteger(l, 4);
        let tt = if ffi::lua_isnoneornil(l, 5) == 0 {
            5
        } else {
            1
        }; // destination
        checktab(l, 1, TAB_R);
        checktab(l, tt, TAB_W);
        if e >= f {
            // f <= 0 in the second operand, so the addition cannot overflow
            argcheck(
                l,
                f > 0 || e < lua_Integer::MAX.wrapping_add(f),
                3,
                c"too many elements to move",
            );
            let n = e.wrapping_sub(f).wrapping_add(1); // number of elements to move
            argcheck(
                l,
                t <= lua_Integer::MAX.wrapping_sub(n).wrapping_add(1),
                4,
                c"destination wrap around",
            );
            // After the checks, f + i and t + i stay in range for 0 <= i < n.
            if t > e || t <= f || (tt != 1 && ffi::lua_compare(l, 1, tt, ffi::LUA_OPEQ) == 0) {
                let mut i: lua_Integer = 0;
                while i < n {
                    ffi::lua_geti(l, 1, f + i);
                    ffi::lua_seti(l, tt, t + i);
                    tick(l, &mut m, 1);
                    i += 1;
                }
            } else {
                let mut i = n - 1;
                while i >= 0 {
                    ffi::lua_geti(l, 1, f + i);
                    ffi::lua_seti(l, tt, t + i);
                    tick(l, &mut m, 1);
                    i -= 1;
                }
            }
        }
        ffi::lua_pushvalue(l, tt); // return destination table
        finish(l, &mut m);
    }
    1
}

/// `addfield`: appends `t[i]` to the buffer, or raises the stock concat error; returns
/// how many bytes it appended.
///
/// # Safety
/// `l` is the running thread inside `tconcat`, `b` its initialised buffer.
unsafe fn addfield(l: State, b: *mut ffi::luaL_Buffer, i: lua_Integer) -> usize {
    // SAFETY: caller's contract; mirrors ltablib's addfield.
    unsafe {
        ffi::lua_geti(l, 1, i);
        if ffi::lua_isstring(l, -1) == 0 {
            ffi::luaL_error(
                l,
                c"invalid value (%s) at index %I in table for 'concat'".as_ptr(),
                ffi::luaL_typename(l, -1),
                i,
            );
        }
        let before = (*b).n;
        ffi::luaL_addvalue(b);
        (*b).n.wrapping_sub(before)
    }
}

/// Metered `table.concat`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tconcat(l: State) -> c_int {
    let mut m = Meter::new();
    let mut buf = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buf.as_mut_ptr();
    // SAFETY: called by Lua as a C function; mirrors ltablib's tconcat, with one unit per
    // element plus the bytes appended. `buf` stays in this frame (never moved) while the
    // buffer is in use, as luaL_Buffer requires.
    unsafe {
        let mut last = aux_getn(l, 1, TAB_R);
        let mut lsep = 0usize;
        let sep = ffi::luaL_optlstring(l, 2, c"".as_ptr(), &mut lsep);
        let mut i = ffi::luaL_optinteger(l, 3, 1);
        last = ffi::luaL_optinteger(l, 4, last);
        ffi::luaL_buffinit(l, b);
        while i < last {
            let len = addfield(l, b, i);
            ffi::luaL_addlstring(b, sep, lsep);
            tick(l, &mut m, 1 + units_of(len.saturating_add(lsep)));
            i += 1; // i < last, so no overflow
        }
        if i == last {
            // add last value (if interval was not empty)
            let len = addfield(l, b, i);
            tick(l, &mut m, 1 + units_of(len));
        }
        ffi::luaL_pushresult(b);
        finish(l, &mut m);
    }
    1
}

/// Metered `table.unpack` (also the `aos` profile's `unpack`).
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tunpack(l: State) -> c_int {
    let mut m = Meter::new();
    // SAFETY: called by Lua as a C function; mirrors ltablib's tunpack, with one unit
    // per element pushed.
    unsafe {
        let mut i = ffi::luaL_optinteger(l, 2, 1);
        let e = if ffi::lua_isnoneornil(l, 3) != 0 {
            ffi::luaL_len(l, 1)
        } else {
            ffi::luaL_checkinteger(l, 3)
        };
        if i > e {
            return 0; // empty range
        }
        // number of elements minus 1 (avoid overflows)
        let n = (e as u64).wrapping_sub(i as u64);
        if n >= c_int::MAX as u64 || ffi::lua_checkstack(l, (n + 1) as c_int) == 0 {
            return ffi::luaL_error(l, c"too many results to unpack".as_ptr());
        }
        while i < e {
            // push arg[i..e - 1] (to avoid overflows)
            ffi::lua_geti(l, 1, i);
            tick(l, &mut m, 1);
            i += 1;
        }
        ffi::lua_geti(l, 1, e); // push last element
        finish(l, &mut m);
        (n + 1) as c_int
    }
}

// ---- sort: ltablib's quicksort, ported with metered comparisons ----

/// Type of array indices in the sort (`IdxT`, C's `unsigned int`).
type IdxT = u32;

/// Arrays larger than this may use randomized pivots (`RANLIMIT`).
const RANLIMIT: IdxT = 100;

/// Bytes compared between two meter charges when comparing long strings.
const CMP_CHUNK: usize = 64 * 1024;

/// State of one `table.sort` call: plain `Copy` data, so errors may unwind over it.
#[derive(Clone, Copy)]
struct Sort {
    l: State,
    meter: Meter,
    /// Whether string collation is plain byte order (the C locale), decided at the first
    /// string comparison: then strings are compared with chunked `memcmp`.
    bytewise: Option<bool>,
    /// Whether argument 2 is an order function (it is a function or nil, and stays on
    /// the stack for the whole sort).
    has_comparator: bool,
}

/// `l_randomizePivot`: clocks mixed into a "random" pivot seed, as stock Lua does with
/// `clock()` and `time()`.
fn randomize_pivot() -> u32 {
    // SAFETY: time accepts a null pointer.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    let c = crate::vm::watchdog::monotonic_ns();
    let mut rnd: u32 = 0;
    for v in [c, t as u64] {
        rnd = rnd.wrapping_add(v as u32).wrapping_add((v >> 32) as u32);
    }
    rnd
}

/// True when the calling thread collates strings in the C (or POSIX) locale, where
/// `strcoll` is `strcmp` and Lua's `l_strcmp` is plain byte order.
fn collation_is_bytewise() -> bool {
    // SAFETY: querying (null locale argument) only reads the current locale's name,
    // which stays valid until the next setlocale call; it is copied out at once.
    let name = unsafe { libc::setlocale(libc::LC_COLLATE, std::ptr::null()) };
    if name.is_null() {
        return false;
    }
    // SAFETY: setlocale returned a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    name == b"C" || name == b"POSIX"
}

impl Sort {
    /// `l_strcmp(a, b) < 0` for the strings at stack indices `a` and `b`, metered.
    ///
    /// # Safety
    /// `self.l` is the running thread; the values at `a` and `b` are strings.
    #[inline(never)]
    unsafe fn str_less(&mut self, a: c_int, b: c_int) -> bool {
        let l = self.l;
        let (mut la, mut lb) = (0usize, 0usize);
        // SAFETY: both values are strings, so lua_tolstring converts nothing and
        // returns their NUL-terminated bytes, alive while they sit on the stack.
        let (pa, pb) = unsafe {
            (
                ffi::lua_tolstring(l, a, &mut la),
                ffi::lua_tolstring(l, b, &mut lb),
            )
        };
        if pa == pb {
            return false; // the same string object: equal, whatever its length
        }
        let bytewise = *self.bytewise.get_or_insert_with(collation_is_bytewise);
        // SAFETY: the pointers are valid for their lengths plus the terminating NUL.
        unsafe {
            if bytewise {
                let sa = std::slice::from_raw_parts(pa.cast::<u8>(), la);
                let sb = std::slice::from_raw_parts(pb.cast::<u8>(), lb);
                self.bytes_less(sa, sb)
            } else {
                self.coll_less(pa, la, pb, lb)
            }
        }
    }

    /// Byte-order comparison, the cost charged per chunk of [`CMP_CHUNK`] bytes.
    ///
    /// # Safety
    /// `self.l` is the running thread; nothing with a destructor is alive.
    unsafe fn bytes_less(&mut self, sa: &[u8], sb: &[u8]) -> bool {
        let common = sa.len().min(sb.len());
        let mut at = 0;
        while common - at > CMP_CHUNK {
            let end = at + CMP_CHUNK;
            // SAFETY: caller's contract.
            unsafe { tick(self.l, &mut self.meter, units_of(CMP_CHUNK)) };
            match sa[at..end].cmp(&sb[at..end]) {
                std::cmp::Ordering::Equal => at = end,
                o => return o.is_lt(),
            }
        }
        // The last (usually the only) chunk, and the lengths if it is equal.
        // SAFETY: caller's contract.
        unsafe { tick(self.l, &mut self.meter, units_of(common - at)) };
        sa[at..].cmp(&sb[at..]).is_lt()
    }

    /// Lua's `l_strcmp` (one `strcoll` per `\0`-separated segment) for other locales,
    /// the cost of each segment charged before it is compared.
    ///
    /// # Safety
    /// `self.l` is the running thread; `pa`/`pb` point to `la`/`lb` bytes plus a NUL.
    unsafe fn coll_less(
        &mut self,
        mut pa: *const c_char,
        mut la: usize,
        mut pb: *const c_char,
        mut lb: usize,
    ) -> bool {
        loop {
            // SAFETY: both pointers are NUL-terminated within their strings.
            let (za, zb) = unsafe { (libc::strlen(pa), libc::strlen(pb)) };
            // SAFETY: caller's contract.
            unsafe { tick_bytes(self.l, &mut self.meter, za.min(zb).saturating_add(1)) };
            // SAFETY: as above.
            let temp = unsafe { libc::strcoll(pa, pb) };
            if temp != 0 {
                return temp < 0;
            }
            if zb == lb {
                return false; // b finished: a is equal or greater
            } else if za == la {
                return true; // a finished, b goes on
            }
            // both go on after the '\0'
            // SAFETY: za < la and zb < lb, so the next segments start within the strings.
            unsafe {
                pa = pa.add(za + 1);
                pb = pb.add(zb + 1);
            }
            la -= za + 1;
            lb -= zb + 1;
        }
    }

    /// `sort_comp`: is the value at `a` less than the value at `b` in the sort's order?
    ///
    /// # Safety
    /// `self.l` is the running thread inside `sort`, with the comparator (or nil) at 2.
    #[inline(always)]
    unsafe fn less(&mut self, a: c_int, b: c_int) -> bool {
        let l = self.l;
        // SAFETY: caller's contract; mirrors ltablib's sort_comp.
        unsafe {
            tick(l, &mut self.meter, 1);
            if !self.has_comparator {
                if ffi::lua_type(l, a) == ffi::LUA_TSTRING
                    && ffi::lua_type(l, b) == ffi::LUA_TSTRING
                {
                    self.str_less(a, b)
                } else {
                    ffi::lua_compare(l, a, b, ffi::LUA_OPLT) != 0
                }
            } else {
                ffi::lua_pushvalue(l, 2); // push function
                ffi::lua_pushvalue(l, a - 1); // -1 to compensate function
                ffi::lua_pushvalue(l, b - 2); // -2 to compensate function and 'a'
                ffi::lua_call(l, 2, 1);
                let res = ffi::lua_toboolean(l, -1) != 0;
                ffi::lua_pop(l, 1);
                res
            }
        }
    }

    /// `set2`: `t[i] = top; t[j] = next`.
    ///
    /// # Safety
    /// As [`Sort::less`], with two values on top of the stack.
    #[inline(always)]
    unsafe fn set2(&mut self, i: IdxT, j: IdxT) {
        // SAFETY: caller's contract.
        unsafe {
            ffi::lua_seti(self.l, 1, lua_Integer::from(i));
            ffi::lua_seti(self.l, 1, lua_Integer::from(j));
            tick(self.l, &mut self.meter, 1);
        }
    }

    /// # Safety
    /// As [`Sort::less`].
    #[inline(always)]
    unsafe fn geti(&mut self, i: IdxT) {
        // SAFETY: caller's contract.
        unsafe { ffi::lua_geti(self.l, 1, lua_Integer::from(i)) };
    }

    /// `partition`: the pivot P is on top of the stack; precondition
    /// `a[lo] <= P == a[up-1] <= a[up]`; returns the pivot's final index.
    ///
    /// # Safety
    /// As [`Sort::less`].
    unsafe fn partition(&mut self, lo: IdxT, up: IdxT) -> IdxT {
        let l = self.l;
        let mut i = lo; // will be incremented before first use
        let mut j = up - 1; // will be decremented before first use
                            // SAFETY: caller's contract; mirrors ltablib's partition, wrapping where C's
                            // unsigned arithmetic wraps.
        unsafe {
            loop {
                // next loop: repeat ++i while a[i] < P
                loop {
                    i = i.wrapping_add(1);
                    self.geti(i);
                    if !self.less(-1, -2) {
                        break;
                    }
                    if i == up - 1 {
                        // a[i] < P but a[up - 1] == P ??
                        ffi::luaL_error(l, c"invalid order function for sorting".as_ptr());
                    }
                    ffi::lua_pop(l, 1); // remove a[i]
                }
                // next loop: repeat --j while P < a[j]
                loop {
                    j = j.wrapping_sub(1);
                    self.geti(j);
                    if !self.less(-3, -1) {
                        break;
                    }
                    if j < i {
                        // j < i but a[j] > P ??
                        ffi::luaL_error(l, c"invalid order function for sorting".as_ptr());
                    }
                    ffi::lua_pop(l, 1); // remove a[j]
                }
                if j < i {
                    // no elements out of place
                    ffi::lua_pop(l, 1); // pop a[j]
                    self.set2(up - 1, i); // swap pivot (a[up - 1]) with a[i]
                    return i;
                }
                // otherwise, swap a[i] - a[j] to restore invariant and repeat
                self.set2(i, j);
            }
        }
    }

    /// `auxsort`: sorts `a[lo..=up]`, recursing on the smaller half only.
    ///
    /// # Safety
    /// As [`Sort::less`].
    unsafe fn auxsort(&mut self, mut lo: IdxT, mut up: IdxT, mut rnd: u32) {
        let l = self.l;
        // SAFETY: caller's contract; mirrors ltablib's auxsort.
        unsafe {
            while lo < up {
                // sort elements 'lo', 'p', and 'up'
                self.geti(lo);
                self.geti(up);
                if self.less(-1, -2) {
                    self.set2(lo, up); // a[up] < a[lo]: swap
                } else {
                    ffi::lua_pop(l, 2);
                }
                if up - lo == 1 {
                    return; // only 2 elements, already sorted
                }
                let mut p = if up - lo < RANLIMIT || rnd == 0 {
                    lo + (up - lo) / 2 // (lo + up) / 2 without overflow
                } else {
                    choose_pivot(lo, up, rnd)
                };
                self.geti(p);
                self.geti(lo);
                if self.less(-2, -1) {
                    self.set2(p, lo); // a[p] < a[lo]: swap
                } else {
                    ffi::lua_pop(l, 1); // remove a[lo]
                    self.geti(up);
                    if self.less(-1, -2) {
                        self.set2(p, up); // a[up] < a[p]: swap
                    } else {
                        ffi::lua_pop(l, 2);
                    }
                }
                if up - lo == 2 {
                    return; // only 3 elements, already sorted
                }
                self.geti(p); // get middle element (Pivot)
                ffi::lua_pushvalue(l, -1); // push Pivot
                self.geti(up - 1); // push a[up - 1]
                self.set2(p, up - 1); // swap Pivot (a[p]) with a[up - 1]
                p = self.partition(lo, up);
                let n;
                // a[lo .. p - 1] <= a[p] == P <= a[p + 1 .. up]
                if p - lo < up - p {
                    // lower interval is smaller: recurse on it, loop on the upper
                    self.auxsort(lo, p.wrapping_sub(1), rnd);
                    n = p - lo;
                    lo = p + 1;
                } else {
                    self.auxsort(p + 1, up, rnd);
                    n = up - p;
                    up = p.wrapping_sub(1);
                }
                if up.wrapping_sub(lo) / 128 > n {
                    // partition too imbalanced: try a new randomization
                    rnd = randomize_pivot();
                }
            }
        }
    }
}

/// `choosePivot`: an element in the middle half of `[lo, up]`, "randomized" by `rnd`.
fn choose_pivot(lo: IdxT, up: IdxT, rnd: u32) -> IdxT {
    let r4 = (up - lo) / 4; // range/4; up - lo >= RANLIMIT here, so r4 > 0
    (rnd % (r4 * 2)).wrapping_add(lo + r4)
}

/// Metered `table.sort`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn sort(l: State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors ltablib's sort.
    unsafe {
        let n = aux_getn(l, 1, TAB_RW);
        if n > 1 {
            argcheck(l, n < lua_Integer::from(c_int::MAX), 1, c"array too big");
            if ffi::lua_isnoneornil(l, 2) == 0 {
                ffi::luaL_checktype(l, 2, ffi::LUA_TFUNCTION);
            }
            ffi::lua_settop(l, 2); // make sure there are two arguments
            let mut s = Sort {
                l,
                meter: Meter::new(),
                bytewise: None,
                has_comparator: ffi::lua_type(l, 2) != ffi::LUA_TNIL,
            };
            // 1 < n < INT_MAX, so it fits an IdxT.
            s.auxsort(1, n as IdxT, 0);
            finish(l, &mut s.meter);
        }
    }
    0
}

// ---- string.rep ----

/// lstrlib's `MAXSIZE` on a 64-bit `size_t`: `INT_MAX`.
const MAXSIZE: usize = c_int::MAX as usize;

/// Bytes copied between two meter charges in `string.rep`.
const REP_CHUNK: usize = 1 << 20;

/// Metered `string.rep`: same results and errors as lstrlib's `str_rep`, built by
/// doubling copies of `s .. sep` in chunks (so small pieces repeated many times cost a
/// few large `memcpy`s, not one tiny one each), the bytes charged per chunk; an empty
/// result is returned at once whatever the count.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_rep(l: State) -> c_int {
    let mut m = Meter::new();
    let mut buf = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buf.as_mut_ptr();
    // SAFETY: called by Lua as a C function; mirrors lstrlib's str_rep. `buf` stays in
    // this frame while in use. The slices below cover the buffer luaL_buffinitsize
    // reserved (`total` bytes) and the argument strings, all alive on the stack.
    unsafe {
        let mut ls = 0usize;
        let s = ffi::luaL_checklstring(l, 1, &mut ls);
        let n = ffi::luaL_checkinteger(l, 2);
        let mut lsep = 0usize;
        let sep = ffi::luaL_optlstring(l, 3, c"".as_ptr(), &mut lsep);
        if n <= 0 {
            ffi::lua_pushstring(l, c"".as_ptr());
            return 1;
        }
        // n > 0 and lua_Integer is no wider than size_t here.
        let Some(unit) = ls.checked_add(lsep).filter(|u| *u <= MAXSIZE / n as usize) else {
            return ffi::luaL_error(l, c"resulting string too large".as_ptr());
        };
        if unit == 0 {
            ffi::lua_pushstring(l, c"".as_ptr()); // n copies of nothing
            return 1;
        }
        // unit * n <= MAXSIZE, so nothing below overflows.
        let n = n as usize;
        let total = n * ls + (n - 1) * lsep;
        let p = ffi::luaL_buffinitsize(l, b, total);
        let out = std::slice::from_raw_parts_mut(p.cast::<u8>(), total);
        // The result is the first `total` bytes of (s .. sep) repeated: write one period,
        // then copy what is written after itself.
        let s = std::slice::from_raw_parts(s.cast::<u8>(), ls);
        let sep = std::slice::from_raw_parts(sep.cast::<u8>(), lsep);
        let first = ls.min(total);
        out[..first].copy_from_slice(&s[..first]);
        let mut filled = first;
        if filled < total {
            let more = lsep.min(total - filled);
            out[filled..filled + more].copy_from_slice(&sep[..more]);
            filled += more;
        }
        tick_bytes(l, &mut m, filled);
        // `filled` is a whole number of periods until the last copy, so copying a
        // prefix of the output after it continues the repetition.
        while filled < total {
            let c = filled.min(total - filled).min(REP_CHUNK);
            out.copy_within(..c, filled);
            filled += c;
            tick_bytes(l, &mut m, c);
        }
        ffi::luaL_pushresultsize(b, total);
        finish(l, &mut m);
    }
    1
}

// ---- string.reverse, string.lower, string.upper ----

/// Bytes mapped between two meter charges.
const MAP_CHUNK: usize = 64 * 1024;

/// Strings up to this long are case-mapped byte by byte through the C library (a
/// table of all 256 answers costs more than that), uncharged like any short call.
const SHORT_MAP: usize = 256;

/// What [`map_string`] does to each byte.
#[derive(Clone, Copy)]
enum Map {
    Reverse,
    Case(unsafe extern "C" fn(c_int) -> c_int),
}

/// Shared body of `reverse`, `lower` and `upper` (as in `lstrlib.c`: a result of the
/// argument's length), filled chunk by chunk with the bytes charged: linear work, but
/// over strings as long as the memory limit allows.
///
/// # Safety
/// Called by Lua as a C function (through the functions below).
unsafe fn map_string(l: State, map: Map) -> c_int {
    let mut m = Meter::new();
    let mut buf = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buf.as_mut_ptr();
    // SAFETY: called by Lua as a C function; `buf` stays in this frame while in use; the
    // slices cover the argument string (alive on the stack) and the `len` bytes that
    // luaL_buffinitsize reserved. tolower/toupper accept any unsigned char value.
    unsafe {
        let mut len = 0usize;
        let s = ffi::luaL_checklstring(l, 1, &mut len);
        let p = ffi::luaL_buffinitsize(l, b, len);
        let src = std::slice::from_raw_parts(s.cast::<u8>(), len);
        let out = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        // Long strings map through a table of the C library's answers, read once per
        // call (so the current locale is honoured exactly as by stock Lua); short ones
        // ask per byte, as stock Lua does.
        match map {
            Map::Case(f) if len <= SHORT_MAP => {
                for (d, c) in out.iter_mut().zip(src) {
                    *d = f(c_int::from(*c)) as u8;
                }
            }
            Map::Case(f) => {
                let mut table = [0u8; 256];
                for (i, slot) in table.iter_mut().enumerate() {
                    *slot = f(i as c_int) as u8;
                }
                for (k, dst) in out.chunks_mut(MAP_CHUNK).enumerate() {
                    tick(l, &mut m, units_of(dst.len()));
                    for (d, c) in dst.iter_mut().zip(&src[k * MAP_CHUNK..]) {
                        *d = table[usize::from(*c)];
                    }
                }
            }
            Map::Reverse => {
                for (k, dst) in out.chunks_mut(MAP_CHUNK).enumerate() {
                    tick(l, &mut m, units_of(dst.len()));
                    let start = k * MAP_CHUNK;
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = src[len - 1 - (start + j)];
                    }
                }
            }
        }
        ffi::luaL_pushresultsize(b, len);
        finish(l, &mut m);
    }
    1
}

/// Metered `string.reverse`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_reverse(l: State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { map_string(l, Map::Reverse) }
}

/// Metered `string.lower`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_lower(l: State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { map_string(l, Map::Case(libc::tolower)) }
}

/// Metered `string.upper`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_upper(l: State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { map_string(l, Map::Case(libc::toupper)) }
}

/// The metered members of `table`.
pub(crate) const TABLE: [(&str, ffi::lua_CFunction); 6] = [
    ("move", tmove),
    ("insert", tinsert),
    ("remove", tremove),
    ("concat", tconcat),
    ("unpack", tunpack),
    ("sort", sort),
];

/// The metered members of `string` this module provides.
pub(crate) const STRING: [(&str, ffi::lua_CFunction); 4] = [
    ("rep", str_rep),
    ("reverse", str_reverse),
    ("lower", str_lower),
    ("upper", str_upper),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte strings with embedded NULs, prefixes and high bytes.
    fn samples() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0b".to_vec(),
            b"a\0a".to_vec(),
            b"ab".to_vec(),
            b"b".to_vec(),
            b"\x7f".to_vec(),
            b"\x80".to_vec(),
            b"\xff\0".to_vec(),
        ];
        v.push(vec![b'x'; CMP_CHUNK + 10]);
        let mut late = vec![b'x'; CMP_CHUNK + 10];
        late[CMP_CHUNK + 5] = b'y';
        v.push(late);
        v
    }

    /// Both comparison paths agree with byte order, which is `l_strcmp` in the C locale
    /// (the test process never calls setlocale).
    #[test]
    fn collation_paths_agree_with_byte_order() {
        assert!(collation_is_bytewise());
        let lua = mlua::Lua::new();
        let all = samples();
        let cs: Vec<Vec<u8>> = all
            .iter()
            .map(|s| {
                let mut c = s.clone();
                c.push(0);
                c
            })
            .collect();
        // SAFETY: the closure only uses the state pointer for the sort's (never raising:
        // no control block is active) meter.
        unsafe {
            lua.exec_raw::<()>((), |l| {
                let mut s = Sort {
                    l,
                    meter: Meter::new(),
                    bytewise: Some(true),
                    has_comparator: false,
                };
                for (a, ca) in all.iter().zip(&cs) {
                    for (b, cb) in all.iter().zip(&cs) {
                        let want = a < b;
                        assert_eq!(s.bytes_less(a, b), want, "{a:?} < {b:?}");
                        let coll =
                            s.coll_less(ca.as_ptr().cast(), a.len(), cb.as_ptr().cast(), b.len());
                        assert_eq!(coll, want, "strcoll path: {a:?} < {b:?}");
                    }
                }
            })
            .expect("the closure does not raise");
        }
    }

    #[test]
    fn choose_pivot_stays_in_the_middle_half() {
        for (lo, up) in [
            (1u32, 101u32),
            (1, 1000),
            (500, 100_000),
            (1, i32::MAX as u32 - 1),
        ] {
            for rnd in [1u32, 7, 12345, u32::MAX] {
                let p = choose_pivot(lo, up, rnd);
                let r4 = (up - lo) / 4;
                assert!(lo + r4 <= p && p <= up - r4, "{lo} {up} {rnd} -> {p}");
            }
        }
    }
}
