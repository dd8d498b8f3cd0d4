//! Stock library functions whose work is linear in a string or argument list the script
//! already holds (`utf8.len/codepoint/offset/char`, `string.byte/char/sub`): each call is
//! charged before it runs, one unit per 64 bytes of the range it covers or per argument,
//! against the instruction budget (and the deadline, for large ranges). The work itself
//! is the stock C function, called directly (not through `lua_call`), so its results and
//! error messages are exactly stock Lua's. One call's own work is bounded by the data it
//! covers, which the memory limit bounds; what this adds is that a loop of such calls
//! uses up an instruction budget as a loop of VM instructions would.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use crate::vm::hook::raise;
use crate::vm::native_charge;

/// How a wrapped function's cost follows from its arguments.
#[derive(Clone, Copy, Debug)]
#[repr(i64)]
pub(crate) enum Cost {
    /// `(s [, i [, j]])`, `j` defaulting to -1 (`utf8.len`, `string.sub`).
    RangeToEnd = 0,
    /// `(s [, i [, j]])`, `j` defaulting to `i` (`string.byte`, `utf8.codepoint`).
    RangeToI = 1,
    /// The whole string at argument 1 (`utf8.offset`).
    Whole = 2,
    /// One unit per argument (`string.char`, `utf8.char`).
    Args = 3,
}

impl Cost {
    /// The kind stored in a wrapper's upvalue (see [`wrap`]).
    fn of(tag: i64) -> Cost {
        match tag {
            0 => Cost::RangeToEnd,
            1 => Cost::RangeToI,
            2 => Cost::Whole,
            _ => Cost::Args,
        }
    }
}

const UNITS_CHECKING_THE_CLOCK: u64 = 4096;

/// Lua's `posrelat` for a start, and the clamped end: the length of `s[i..j]`.
fn range_len(len: i64, i: i64, j: i64) -> i64 {
    let rel = |pos: i64| {
        if pos >= 0 {
            pos
        } else if pos.unsigned_abs() > len as u64 {
            0
        } else {
            len + pos + 1
        }
    };
    let (i, j) = (rel(i).max(1), rel(j).min(len));
    (j - i + 1).max(0)
}

/// The integer at `idx`, or `default` when absent or not an integer (the stock function
/// then reports a bad argument itself).
unsafe fn opt_int(l: *mut lua_State, idx: c_int, default: i64) -> i64 {
    // SAFETY: caller's contract; `lua_tointegerx` accepts any index.
    unsafe {
        if ffi::lua_isnoneornil(l, idx) != 0 {
            return default;
        }
        let mut ok = 0;
        let v = ffi::lua_tointegerx(l, idx, &mut ok);
        if ok != 0 {
            v
        } else {
            default
        }
    }
}

unsafe extern "C-unwind" fn charged(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as the C closure made in `install`: upvalue 1 is the stock C
    // function, upvalue 2 the cost kind.
    unsafe {
        let len = if ffi::lua_type(l, 1) == ffi::LUA_TSTRING {
            ffi::lua_rawlen(l, 1) as i64
        } else {
            0
        };
        let bytes = |covered: i64| (covered as u64) / 64 + 1;
        let units = match Cost::of(ffi::lua_tointeger(l, ffi::lua_upvalueindex(2))) {
            Cost::RangeToEnd => bytes(range_len(len, opt_int(l, 2, 1), opt_int(l, 3, -1))),
            Cost::RangeToI => {
                let i = opt_int(l, 2, 1);
                bytes(range_len(len, i, opt_int(l, 3, i)))
            }
            Cost::Whole => bytes(len),
            Cost::Args => ffi::lua_gettop(l).unsigned_abs().into(),
        };
        let stop = if units >= UNITS_CHECKING_THE_CLOCK {
            native_charge(units)
        } else {
            crate::vm::native_charge_quiet(units)
        };
        if let Some(msg) = stop {
            raise(l, msg);
        }
        match ffi::lua_tocfunction(l, ffi::lua_upvalueindex(1)) {
            Some(stock) => stock(l),
            None => raise(
                l,
                "internal error: a charged library function lost its body",
            ),
        }
    }
}

/// Pushes the charged version of `stock` (a C closure of [`charged`] over it).
///
/// # Safety
/// Inside a protected call (the push allocates) with 3 free stack slots.
pub(crate) unsafe fn push(l: *mut lua_State, stock: ffi::lua_CFunction, cost: Cost) {
    // SAFETY: caller's contract; the closure's upvalues are what `charged` reads.
    unsafe {
        ffi::lua_pushcfunction(l, stock);
        ffi::lua_pushinteger(l, cost as i64);
        ffi::lua_pushcclosure(l, charged, 2);
    }
}

/// Wraps the listed members of `lib` (a library table the profile kept) that are present.
pub(crate) fn wrap(
    lua: &mlua::Lua,
    lib: &mlua::Table,
    members: &[(&str, Cost)],
) -> mlua::Result<()> {
    // SAFETY: `exec_raw` pushes `lib` at index 1 and runs the closure in protected mode;
    // the closure owns nothing with a destructor. Only C functions are wrapped.
    unsafe {
        lua.exec_raw::<()>(lib, |l| {
            for (name, cost) in members {
                ffi::lua_pushlstring(l, name.as_ptr().cast(), name.len());
                ffi::lua_pushvalue(l, -1);
                ffi::lua_rawget(l, 1);
                if ffi::lua_iscfunction(l, -1) == 0 {
                    ffi::lua_pop(l, 2);
                    continue;
                }
                ffi::lua_pushinteger(l, *cost as i64);
                ffi::lua_pushcclosure(l, charged, 2);
                ffi::lua_rawset(l, 1);
            }
        })
    }
}

/// The charged members of `utf8`.
pub(crate) const UTF8: [(&str, Cost); 4] = [
    ("len", Cost::RangeToEnd),
    ("codepoint", Cost::RangeToI),
    ("offset", Cost::Whole),
    ("char", Cost::Args),
];

/// The charged members of `string`.
pub(crate) const STRING: [(&str, Cost); 3] = [
    ("byte", Cost::RangeToI),
    ("char", Cost::Args),
    ("sub", Cost::RangeToEnd),
];

#[cfg(test)]
mod tests {
    use super::range_len;

    #[test]
    fn ranges_follow_lua_posrelat() {
        assert_eq!(range_len(10, 1, -1), 10);
        assert_eq!(range_len(10, 3, 5), 3);
        assert_eq!(range_len(10, -3, -1), 3);
        assert_eq!(range_len(10, 0, 100), 10);
        assert_eq!(range_len(10, 8, 2), 0);
        assert_eq!(range_len(10, -100, 2), 2);
        assert_eq!(range_len(0, 1, -1), 0);
    }
}
