//! Guarded base functions, written against the C API so they raise plain string errors
//! exactly like the stock ones (scripts match on those messages).

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use crate::vm::{current, hook::raise, Stop};

/// Prefix of every error raised for a refused operation; the outcome maps it to
/// `forbidden`.
pub(crate) const FORBIDDEN: &str = "forbidden: ";

/// Raises a `forbidden:` error with position information.
///
/// # Safety
/// `l` is the running thread inside a C function; nothing with a destructor is alive.
unsafe fn forbid(l: *mut lua_State, what: &'static std::ffi::CStr) -> ! {
    if let Some(ctl) = current() {
        ctl.forbidden.set(true);
    }
    // SAFETY: caller's contract; the format takes one C string.
    unsafe {
        ffi::luaL_error(l, c"forbidden: %s".as_ptr(), what.as_ptr());
    }
    // luaL_error never returns.
    unreachable!()
}

/// `print`: like the stock one (`luaL_tolstring`, tabs, newline) but into the run's
/// captured output, under the output limit, with opaque identities for objects.
pub(crate) unsafe extern "C-unwind" fn print(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe {
        let n = ffi::lua_gettop(l);
        for i in 1..=n {
            let mut len = 0usize;
            let s = super::identity::tolstring(l, i, &mut len);
            let bytes = std::slice::from_raw_parts(s.cast::<u8>(), len);
            if i > 1 {
                emit(l, b"\t");
            }
            emit(l, bytes);
            ffi::lua_pop(l, 1);
        }
        emit(l, b"\n");
    }
    0
}

/// # Safety
/// `l` is the running thread inside a C function.
unsafe fn emit(l: *mut lua_State, bytes: &[u8]) {
    let Some(ctl) = current() else { return };
    if !ctl.write_output(bytes) {
        ctl.set_stop(Stop::Output);
        ctl.arm_all();
        // SAFETY: caller's contract.
        unsafe { raise(l, Stop::Output.message()) }
    }
}

/// `load`: text chunks only, never a binary one (which gets `nil, message`, as stock
/// `load` gives for any chunk it cannot load); honours `chunkname` and `env` like the
/// stock `load`; sources over the run's source limit are refused like a syntax error.
pub(crate) unsafe extern "C-unwind" fn load(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_load for string chunks.
    unsafe {
        let mut len = 0usize;
        let s = ffi::lua_tolstring(l, 1, &mut len);
        if s.is_null() {
            if ffi::lua_type(l, 1) == ffi::LUA_TFUNCTION {
                // A chunk the sandbox cannot load (a reader could stream a binary one):
                // answered as stock `load` answers any chunk it cannot load.
                ffi::lua_pushnil(l);
                ffi::lua_pushstring(
                    l,
                    c"load: only source strings can be loaded in the sandbox, not reader functions"
                        .as_ptr(),
                );
                return 2;
            }
            ffi::luaL_checktype(l, 1, ffi::LUA_TSTRING);
        }
        let src = std::slice::from_raw_parts(s.cast::<u8>(), len);
        if src.first() == Some(&0x1b) {
            // As stock `load` answers a chunk it cannot load (here: any binary one,
            // whatever the mode): nil and why, for the script to handle.
            ffi::lua_pushnil(l);
            ffi::lua_pushstring(
                l,
                c"attempt to load a binary chunk (the sandbox loads text only)".as_ptr(),
            );
            return 2;
        }
        let mode = ffi::luaL_optlstring(l, 3, c"bt".as_ptr(), std::ptr::null_mut());
        let env = if ffi::lua_isnone(l, 4) != 0 { 0 } else { 4 };
        let chunkname = ffi::luaL_optlstring(l, 2, s, std::ptr::null_mut());
        let too_big = current().is_some_and(|c| len > c.source_limit.get());
        let status = if too_big {
            ffi::lua_pushstring(
                l,
                c"chunk too large for the sandbox's source limit".as_ptr(),
            );
            ffi::LUA_ERRSYNTAX
        } else if !std::ffi::CStr::from_ptr(mode).to_bytes().contains(&b't') {
            ffi::lua_pushstring(l, c"attempt to load a text chunk (mode is 'b')".as_ptr());
            ffi::LUA_ERRSYNTAX
        } else {
            crate::vm::load::load_text(l, src, std::ffi::CStr::from_ptr(chunkname))
        };
        if status == ffi::LUA_OK {
            if env != 0 {
                ffi::lua_pushvalue(l, env);
                if ffi::lua_setupvalue(l, -2, 1).is_null() {
                    ffi::lua_pop(l, 1);
                }
            }
            1
        } else {
            ffi::lua_pushnil(l);
            ffi::lua_insert(l, -2);
            2
        }
    }
}

/// `setmetatable`: the stock checks, plus a refusal of `__gc` (Lua 5.4 runs finalizers
/// with hooks off and at close, out of reach of every quota). A C closure whose upvalue 1
/// is the string `"__gc"` (see [`setmetatable_closure`]).
unsafe extern "C-unwind" fn setmetatable(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_setmetatable.
    unsafe {
        let t = ffi::lua_type(l, 2);
        ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
        if t != ffi::LUA_TNIL && t != ffi::LUA_TTABLE {
            ffi::luaL_argerror(l, 2, c"nil or table expected".as_ptr());
        }
        if t == ffi::LUA_TTABLE && !gc_known_absent(ffi::lua_topointer(l, 2)) {
            // The interned "__gc" waits in upvalue 1: no string lookup per call.
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
            let gc = ffi::lua_rawget(l, 2);
            ffi::lua_pop(l, 1);
            if gc != ffi::LUA_TNIL {
                forbid(l, c"__gc metamethods (finalizers) are not allowed");
            }
        }
        if ffi::luaL_getmetafield(l, 1, c"__metatable".as_ptr()) != ffi::LUA_TNIL {
            ffi::luaL_error(l, c"cannot change a protected metatable".as_ptr());
        }
        ffi::lua_settop(l, 2);
        ffi::lua_setmetatable(l, 1);
    }
    1
}

/// `collectgarbage`: only `"count"`; every other option would let a script steer the
/// collector (stop it, force work during parsing) and is refused.
pub(crate) unsafe extern "C-unwind" fn collectgarbage(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe {
        let opt = ffi::luaL_optlstring(l, 1, c"collect".as_ptr(), std::ptr::null_mut());
        if std::ffi::CStr::from_ptr(opt).to_bytes() != b"count" {
            forbid(l, c"collectgarbage only accepts \"count\" in the sandbox");
        }
        let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0);
        let b = ffi::lua_gc(l, ffi::LUA_GCCOUNTB, 0);
        ffi::lua_pushnumber(l, kb as ffi::lua_Number + b as ffi::lua_Number / 1024.0);
    }
    1
}

/// `xpcall`, with the message handler skipped once the run has been stopped.
///
/// When the quota hook raises the stop error, Lua calls the message handler from inside
/// the hook, where hooks are off: a looping handler would then run unmetered forever.
/// The guard returns the stop error unchanged instead; every other error reaches the
/// script's handler as usual. Otherwise this is `luaB_xpcall`, continuation included, so
/// yielding inside `xpcall` keeps working.
pub(crate) unsafe extern "C-unwind" fn xpcall(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_xpcall.
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::luaL_checktype(l, 2, ffi::LUA_TFUNCTION);
        ffi::lua_pushvalue(l, 2);
        ffi::lua_pushcclosure(l, message_guard, 1);
        ffi::lua_replace(l, 2);
        ffi::lua_pushboolean(l, 1);
        ffi::lua_pushvalue(l, 1);
        ffi::lua_rotate(l, 3, 2);
        let status = ffi::lua_pcallk(l, n - 2, ffi::LUA_MULTRET, 2, 2, Some(finish_pcall));
        finish_pcall(l, status, 2)
    }
}

unsafe extern "C-unwind" fn finish_pcall(
    l: *mut lua_State,
    status: c_int,
    extra: ffi::lua_KContext,
) -> c_int {
    // SAFETY: called by xpcall or by Lua as its continuation; mirrors finishpcall.
    unsafe {
        if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_pushvalue(l, -2);
            2
        } else {
            ffi::lua_gettop(l) - extra as c_int
        }
    }
}

unsafe extern "C-unwind" fn message_guard(l: *mut lua_State) -> c_int {
    if current().is_some_and(|c| c.stop() != Stop::None) {
        return 1;
    }
    // SAFETY: called by Lua as a message handler with the error object at index 1 and
    // the script's handler as upvalue 1.
    unsafe {
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, ffi::lua_gettop(l) - 1, 1);
    }
    1
}

/// Wraps a host function that returns `true, results...` or `false, message` so that the
/// message is raised as a plain string with the caller's position, like a stock library
/// error (mlua would raise a userdata, which `"x" .. err` cannot use).
pub(crate) fn with_plain_errors(
    lua: &mlua::Lua,
    f: &mlua::Function,
) -> mlua::Result<mlua::Function> {
    // SAFETY: `exec_raw` pushes `f` at index 1; it becomes the single upvalue of a C
    // closure following the lua_CFunction protocol, left as the one result.
    unsafe {
        lua.exec_raw::<mlua::Function>(f, |l| {
            ffi::lua_pushcclosure(l, plain_errors, 1);
        })
    }
}

unsafe extern "C-unwind" fn plain_errors(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as the C closure made in `with_plain_errors`.
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, n, ffi::LUA_MULTRET);
        if ffi::lua_toboolean(l, 1) == 0 {
            ffi::luaL_where(l, 1);
            ffi::lua_pushvalue(l, 2);
            ffi::lua_concat(l, 2);
            ffi::lua_error(l);
        }
        ffi::lua_remove(l, 1);
        ffi::lua_gettop(l)
    }
}

/// Offset of `flags` in Lua 5.4's `struct Table` (after `CommonHeader`: a pointer and
/// two bytes), and the bit that caches "this table has no `__gc`" (`1 << TM_GC`).
const TABLE_FLAGS_OFFSET: usize = std::mem::size_of::<*const ()>() + 2;
const NO_GC_BIT: u8 = 1 << 2;

/// True when Lua itself has cached that the metatable `mt` has no `__gc`.
///
/// Lua sets this bit when a lookup finds `__gc` absent (as `setmetatable` does) and
/// clears it whenever a key is added to the table, and `lua_setmetatable` decides whether
/// to mark an object for finalization from the same bit. So a set bit means Lua will not
/// finalize, and the raw lookup can be skipped: it was 2% of an object-heavy benchmark.
/// The layout is that of the vendored Lua 5.4 that mlua pins; `tests` below check it.
///
/// # Safety
/// `mt` must be `lua_topointer` of a table on a live state.
unsafe fn gc_known_absent(mt: *const std::ffi::c_void) -> bool {
    // SAFETY: for a table, lua_topointer returns its `Table*`; `flags` lies within it.
    unsafe { *mt.cast::<u8>().add(TABLE_FLAGS_OFFSET) & NO_GC_BIT != 0 }
}

/// Replaces `pairs`, `ipairs` and `utf8.codes` (where the state has them) by versions
/// that return closures of their iterators instead of light C functions: the stock ones
/// push their iterators anew on every call, as light functions, which Lua hashes by
/// their code address (moved by ASLR) when a script uses them as table keys. After
/// [`crate::vm::close_light_functions`], so the `next` that `pairs` returns is the global
/// `next` (`pairs({}) == next`, as in stock Lua). Only deterministic states need it.
pub(crate) fn close_iterators(lua: &mlua::Lua) -> mlua::Result<()> {
    /// Calls the function at `maker` (an absolute index) on an empty table, or on `""`
    /// and `lax` (`utf8.codes`), and pushes a closure of the light C function it returns
    /// first (one nil upvalue, as [`crate::vm::close_light_functions`] makes them).
    /// False, pushing nothing, when it returns none.
    ///
    /// # Safety
    /// Inside a protected call with 4 free stack slots; `maker` is one of Lua's own
    /// library functions.
    unsafe fn push_twin(l: *mut lua_State, maker: c_int, lax: Option<bool>) -> bool {
        // SAFETY: caller's contract.
        unsafe {
            ffi::lua_pushvalue(l, maker);
            let args = match lax {
                None => {
                    ffi::lua_createtable(l, 0, 0);
                    1
                }
                Some(lax) => {
                    ffi::lua_pushstring(l, c"".as_ptr());
                    ffi::lua_pushboolean(l, c_int::from(lax));
                    2
                }
            };
            ffi::lua_call(l, args, 1);
            let light = ffi::lua_tocfunction(l, -1);
            ffi::lua_pop(l, 1);
            let Some(light) = light else {
                return false;
            };
            ffi::lua_pushnil(l);
            ffi::lua_pushcclosure(l, light, 1);
            true
        }
    }
    // SAFETY: `exec_raw` runs the closure in protected mode on an empty stack (a memory
    // or argument error unwinds to it; the closure owns nothing with a destructor). The
    // globals sit at 1, the function being replaced at 2 (`utf8` at 2 and `codes` at 3),
    // and the stack is cut back after each step.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_checkstack(l, 8);
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            if ffi::lua_getfield(l, 1, c"pairs".as_ptr()) == ffi::LUA_TFUNCTION
                && push_twin(l, 2, None)
            {
                // The global `next`, when it is that closure already: `pairs({}) == next`.
                ffi::lua_getfield(l, 1, c"next".as_ptr());
                let (twin, next) = (ffi::lua_tocfunction(l, -2), ffi::lua_tocfunction(l, -1));
                // Both pointers come from Lua, for the same C function of its library.
                if matches!((twin, next), (Some(a), Some(b)) if std::ptr::fn_addr_eq(a, b)) {
                    ffi::lua_replace(l, -2);
                } else {
                    ffi::lua_pop(l, 1);
                }
                ffi::lua_pushcclosure(l, closed_pairs, 1);
                ffi::lua_setfield(l, 1, c"pairs".as_ptr());
            }
            ffi::lua_settop(l, 1);
            if ffi::lua_getfield(l, 1, c"ipairs".as_ptr()) == ffi::LUA_TFUNCTION
                && push_twin(l, 2, None)
            {
                ffi::lua_pushcclosure(l, closed_ipairs, 1);
                ffi::lua_setfield(l, 1, c"ipairs".as_ptr());
            }
            ffi::lua_settop(l, 1);
            // utf8.codes: the stock function, then the twins of its strict and lax
            // iterators, are the wrapper's three upvalues.
            if ffi::lua_getfield(l, 1, c"utf8".as_ptr()) == ffi::LUA_TTABLE
                && ffi::lua_getfield(l, 2, c"codes".as_ptr()) == ffi::LUA_TFUNCTION
                && ffi::lua_iscfunction(l, 3) != 0
                && push_twin(l, 3, Some(false))
                && push_twin(l, 3, Some(true))
            {
                ffi::lua_pushcclosure(l, closed_codes, 3);
                ffi::lua_setfield(l, 2, c"codes".as_ptr());
            }
            ffi::lua_settop(l, 0);
        })
    }
}

/// `pairs` of a deterministic state: `luaB_pairs`, returning its upvalue 1 (a closure
/// of `next`, see [`close_iterators`]) where the stock one pushes `next` as a light
/// function, whose hash as a table key depends on where ASLR put the code.
pub(crate) unsafe extern "C-unwind" fn closed_pairs(l: *mut lua_State) -> c_int {
    /// The stock continuation: the metamethod's three results are the call's.
    unsafe extern "C-unwind" fn finish(
        _l: *mut lua_State,
        _status: c_int,
        _ctx: ffi::lua_KContext,
    ) -> c_int {
        3
    }
    // SAFETY: called by Lua as a C closure with one upvalue; mirrors luaB_pairs (the
    // metamethod called with a continuation, so it may yield, as in stock Lua).
    unsafe {
        ffi::luaL_checkany(l, 1);
        if ffi::luaL_getmetafield(l, 1, c"__pairs".as_ptr()) == ffi::LUA_TNIL {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
            ffi::lua_pushvalue(l, 1);
            ffi::lua_pushnil(l);
        } else {
            ffi::lua_pushvalue(l, 1);
            ffi::lua_callk(l, 1, 3, 0, Some(finish));
        }
    }
    3
}

/// `ipairs` of a deterministic state: `luaB_ipairs`, returning its upvalue 1 (a closure
/// of the stock iterator) for the reason [`closed_pairs`] gives.
pub(crate) unsafe extern "C-unwind" fn closed_ipairs(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C closure with one upvalue; mirrors luaB_ipairs.
    unsafe {
        ffi::luaL_checkany(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_pushvalue(l, 1);
        ffi::lua_pushinteger(l, 0);
    }
    3
}

/// `utf8.codes` of a deterministic state: the stock function (upvalue 1), called in this
/// frame (its argument errors read as the stock ones), its light iterator then swapped
/// for the closure twin in upvalue 2 (strict) or 3 (lax), for the reason
/// [`closed_pairs`] gives.
pub(crate) unsafe extern "C-unwind" fn closed_codes(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as the C closure [`close_iterators`] makes: upvalue 1 a C
    // function, upvalues 2 and 3 closures. The stock function runs on this frame's
    // arguments and leaves its results on top; only the first is replaced, in place.
    unsafe {
        let Some(stock) = ffi::lua_tocfunction(l, ffi::lua_upvalueindex(1)) else {
            return ffi::luaL_error(l, c"internal error: utf8.codes lost its body".as_ptr());
        };
        let n = stock(l);
        let first = ffi::lua_gettop(l) - n + 1;
        if n >= 1 && ffi::lua_iscfunction(l, first) != 0 {
            for up in [2, 3] {
                let twin = ffi::lua_upvalueindex(up);
                let same = match (
                    ffi::lua_tocfunction(l, first),
                    ffi::lua_tocfunction(l, twin),
                ) {
                    (Some(a), Some(b)) => std::ptr::fn_addr_eq(a, b),
                    _ => false,
                };
                if same {
                    ffi::lua_pushvalue(l, twin);
                    ffi::lua_replace(l, first);
                    break;
                }
            }
        }
        n
    }
}

/// Builds the guarded `setmetatable` closure.
pub(crate) fn setmetatable_closure(lua: &mlua::Lua) -> mlua::Result<mlua::Function> {
    // SAFETY: `exec_raw` pushes the string at index 1; it becomes the single upvalue of
    // `setmetatable`, which reads it as such, and the closure is the one result.
    unsafe {
        lua.exec_raw::<mlua::Function>("__gc", |l| {
            ffi::lua_pushcclosure(l, setmetatable, 1);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag layout `gc_known_absent` reads: set on a fresh table and once Lua found
    /// `__gc` absent, cleared when a key is added. If a Lua upgrade moved it, this fails
    /// before any script could slip a finalizer through.
    #[test]
    fn table_flag_layout_matches_lua() {
        let lua = mlua::Lua::new();
        let mt: mlua::Table = lua.create_table().unwrap();
        let flag = |t: &mlua::Table| {
            // SAFETY: `t` is a live table of `lua`.
            unsafe { gc_known_absent(t.to_pointer()) }
        };
        assert!(flag(&mt), "a fresh table is known to have no metamethods");
        mt.raw_set("x", 1).unwrap();
        assert!(!flag(&mt), "adding a key clears the cache");
        let setmt: mlua::Function = lua.globals().get("setmetatable").unwrap();
        let _: mlua::Value = setmt.call((lua.create_table().unwrap(), &mt)).unwrap();
        assert!(flag(&mt), "setmetatable's __gc lookup caches its absence");
        mt.raw_set("__gc", true).unwrap();
        assert!(!flag(&mt), "adding __gc raw clears it");
        mt.raw_set("__gc", mlua::Value::Nil).unwrap();
        let _: mlua::Value = setmt.call((lua.create_table().unwrap(), &mt)).unwrap();
        assert!(flag(&mt));
        mt.set("__gc", true).unwrap();
        assert!(
            !flag(&mt),
            "adding __gc by a normal assignment clears it too"
        );
    }
}
