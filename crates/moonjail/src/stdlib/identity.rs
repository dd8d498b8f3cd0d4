//! Opaque identities: `tostring`, `print`, `string.format`'s `%s` and `%p` show a number
//! given out per state (`table: 0x0000000a`) instead of a host address.
//!
//! Stock Lua prints `lua_topointer` (`table: 0x55d0c8a2b2c0`), which hands the script
//! heap addresses of the host process: information for an attacker (ASLR) and a source
//! of nondeterminism between runs. The numbers come from a weak-keyed table in the
//! registry (unreachable from scripts), so an object keeps its number while it lives and
//! the table does not keep it alive; values that are not collectable as weak keys
//! (strings, light C functions) keep theirs for the state's life.
//!
//! `string.format` is a port of `lstrlib.c`'s `str_format` (Lua 5.4.9) with only `%p`
//! changed: a wrapper around the stock function could not keep the stock error messages
//! (`bad argument #2 to 'format'`, positions), which name the calling function.
//! Conversions go through the C library's `snprintf` with the same format text, as in
//! stock Lua, so numbers print identically. The port is metered too (one unit per item,
//! per 64 bytes of plain text or of `%q` input), so a huge format or `%q` of a huge
//! string stops at the deadline.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::MaybeUninit;

use mlua::ffi::{self, lua_Integer, lua_State};

use super::table::{finish, tick, units_of};
use crate::vm::Meter;

type State = *mut lua_State;

/// Its address is the registry key of the identity table.
static IDS_KEY: u8 = 0;

/// The number of the value at `idx`, giving it the next one if it has none yet.
///
/// # Safety
/// `l` is the running thread inside a C function, with 4 free stack slots.
unsafe fn object_id(l: State, idx: c_int) -> u64 {
    let key = std::ptr::addr_of!(IDS_KEY).cast::<c_void>();
    // SAFETY: caller's contract; only raw accesses to moonjail's own registry table.
    unsafe {
        let idx = ffi::lua_absindex(l, idx);
        if ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, key) != ffi::LUA_TTABLE {
            ffi::lua_pop(l, 1);
            ffi::lua_createtable(l, 0, 0);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushstring(l, c"k".as_ptr());
            ffi::lua_setfield(l, -2, c"__mode".as_ptr());
            ffi::lua_setmetatable(l, -2);
            ffi::lua_pushvalue(l, -1);
            ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key);
        }
        ffi::lua_pushvalue(l, idx);
        if ffi::lua_rawget(l, -2) == ffi::LUA_TNUMBER {
            let id = ffi::lua_tointeger(l, -1);
            ffi::lua_pop(l, 2);
            return id as u64;
        }
        ffi::lua_pop(l, 1);
        // The last number given out is kept under `true`, which no object can be.
        ffi::lua_pushboolean(l, 1);
        ffi::lua_rawget(l, -2);
        let next = ffi::lua_tointeger(l, -1).wrapping_add(1);
        ffi::lua_pop(l, 1);
        ffi::lua_pushboolean(l, 1);
        ffi::lua_pushinteger(l, next);
        ffi::lua_rawset(l, -3);
        ffi::lua_pushvalue(l, idx);
        ffi::lua_pushinteger(l, next);
        ffi::lua_rawset(l, -3);
        ffi::lua_pop(l, 1);
        next as u64
    }
}

/// `0x` and at least 8 hex digits of `id`, NUL-terminated.
fn id_text(id: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0] = b'0';
    out[1] = b'x';
    let digits = (16 - id.leading_zeros() as usize / 4).max(8);
    for i in 0..digits {
        let nibble = ((id >> (4 * (digits - 1 - i))) & 0xf) as u8;
        out[2 + i] = if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        };
    }
    out
}

/// `luaL_tolstring` with the object's number in place of its address: pushes the text
/// of the value at `idx` and returns it.
///
/// # Safety
/// `l` is the running thread inside a C function.
pub(crate) unsafe fn tolstring(l: State, idx: c_int, len: *mut usize) -> *const c_char {
    // SAFETY: caller's contract; mirrors luaL_tolstring.
    unsafe {
        let idx = ffi::lua_absindex(l, idx);
        if ffi::luaL_callmeta(l, idx, c"__tostring".as_ptr()) != 0 {
            if ffi::lua_isstring(l, -1) == 0 {
                ffi::luaL_error(l, c"'__tostring' must return a string".as_ptr());
            }
        } else {
            match ffi::lua_type(l, idx) {
                // No address in these: the stock conversion (which finds no __tostring
                // either) is exact.
                ffi::LUA_TNUMBER | ffi::LUA_TSTRING | ffi::LUA_TBOOLEAN | ffi::LUA_TNIL => {
                    return ffi::luaL_tolstring(l, idx, len);
                }
                _ => {
                    let tt = ffi::luaL_getmetafield(l, idx, c"__name".as_ptr());
                    let kind = if tt == ffi::LUA_TSTRING {
                        ffi::lua_tolstring(l, -1, std::ptr::null_mut())
                    } else {
                        ffi::luaL_typename(l, idx)
                    };
                    let text = id_text(object_id(l, idx));
                    ffi::lua_pushfstring(l, c"%s: %s".as_ptr(), kind, text.as_ptr());
                    if tt != ffi::LUA_TNIL {
                        ffi::lua_remove(l, -2); // remove '__name'
                    }
                }
            }
        }
        ffi::lua_tolstring(l, -1, len)
    }
}

/// `tostring` with opaque identities.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn tostring(l: State) -> c_int {
    // SAFETY: called by Lua as a C function; mirrors luaB_tostring.
    unsafe {
        ffi::luaL_checkany(l, 1);
        tolstring(l, 1, std::ptr::null_mut());
    }
    1
}

// ---- string.format ----

/// Room for one formatted item (`MAX_ITEM`).
const MAX_ITEM: usize = 120;
/// Room for a `%f` item: 110 + DBL_MAX_10_EXP (`MAX_ITEMF`).
const MAX_ITEMF: usize = 110 + 308;
/// Room for one format specification (`MAX_FORMAT`).
const MAX_FORMAT: usize = 32;
const L_FMTFLAGSF: &[u8] = b"-+#0 ";
const L_FMTFLAGSX: &[u8] = b"-#0";
const L_FMTFLAGSI: &[u8] = b"-+0 ";
const L_FMTFLAGSU: &[u8] = b"-0";
const L_FMTFLAGSC: &[u8] = b"-";

/// `get2digits`: skips up to two digits of `form` from `i`.
fn get2digits(form: &[u8], mut i: usize) -> usize {
    for _ in 0..2 {
        if form.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    i
}

/// `checkformat`: `form` (`%...` and its conversion, NUL-terminated) has only `flags`,
/// a width of up to two digits and, when allowed, a precision of up to two.
///
/// # Safety
/// `l` is the running thread inside a C function.
unsafe fn checkformat(l: State, form: &[u8; MAX_FORMAT], flags: &[u8], precision: bool) {
    let mut i = 1; // skip '%'
    while form.get(i).is_some_and(|c| *c != 0 && flags.contains(c)) {
        i += 1;
    }
    if form[i] != b'0' {
        i = get2digits(form, i);
        if form[i] == b'.' && precision {
            i = get2digits(form, i + 1);
        }
    }
    if !form[i].is_ascii_alphabetic() {
        // SAFETY: caller's contract; `form` is NUL-terminated.
        unsafe {
            ffi::luaL_error(
                l,
                c"invalid conversion specification: '%s'".as_ptr(),
                form.as_ptr(),
            )
        };
    }
}

/// Length of the NUL-terminated text in `form`.
fn form_len(form: &[u8; MAX_FORMAT]) -> usize {
    form.iter().position(|c| *c == 0).unwrap_or(MAX_FORMAT)
}

/// `addlenmod`: inserts a length modifier before the conversion.
fn addlenmod(form: &mut [u8; MAX_FORMAT], lenmod: &[u8]) {
    let l = form_len(form);
    let spec = form[l - 1];
    form[l - 1..l - 1 + lenmod.len()].copy_from_slice(lenmod);
    form[l - 1 + lenmod.len()] = spec;
    form[l + lenmod.len()] = 0;
}

/// `addquoted`: `s` as a Lua string literal, metered per [`QUOTE_CHUNK`] bytes.
///
/// # Safety
/// `b` is an initialised buffer of the running thread `l`; nothing with a destructor is
/// alive in the caller's frames.
unsafe fn addquoted(l: State, b: *mut ffi::luaL_Buffer, s: &[u8], m: &mut Meter) {
    // SAFETY: caller's contract.
    unsafe {
        ffi::luaL_addchar(b, b'"' as c_char);
        for (i, &c) in s.iter().enumerate() {
            if i % QUOTE_CHUNK == 0 {
                tick(l, m, units_of(QUOTE_CHUNK.min(s.len() - i)));
            }
            if c == b'"' || c == b'\\' || c == b'\n' {
                ffi::luaL_addchar(b, b'\\' as c_char);
                ffi::luaL_addchar(b, c as c_char);
            } else if c.is_ascii_control() {
                let next_is_digit = s.get(i + 1).is_some_and(u8::is_ascii_digit);
                let mut buff = [0u8; 10];
                let fmt = if next_is_digit { c"\\%03d" } else { c"\\%d" };
                let n = libc::snprintf(
                    buff.as_mut_ptr().cast(),
                    buff.len(),
                    fmt.as_ptr(),
                    c_int::from(c),
                );
                ffi::luaL_addlstring(b, buff.as_ptr().cast(), n.max(0) as usize);
            } else {
                ffi::luaL_addchar(b, c as c_char);
            }
        }
        ffi::luaL_addchar(b, b'"' as c_char);
    }
}

/// Bytes quoted by `%q` between two meter charges.
const QUOTE_CHUNK: usize = 4096;

/// `quotefloat`: a float that reads back exactly, into `buff` (`MAX_ITEM` bytes).
///
/// # Safety
/// `buff` has room for `MAX_ITEM` bytes.
unsafe fn quotefloat(buff: *mut c_char, n: f64) -> usize {
    let fixed: Option<&CStr> = if n == f64::INFINITY {
        Some(c"1e9999")
    } else if n == f64::NEG_INFINITY {
        Some(c"-1e9999")
    } else if n.is_nan() {
        Some(c"(0/0)")
    } else {
        None
    };
    // SAFETY: caller's contract.
    unsafe {
        let nb = match fixed {
            Some(s) => libc::snprintf(buff, MAX_ITEM, c"%s".as_ptr(), s.as_ptr()),
            None => libc::snprintf(buff, MAX_ITEM, c"%a".as_ptr(), n),
        };
        let nb = nb.clamp(0, MAX_ITEM as c_int - 1) as usize;
        if fixed.is_none() {
            // Make sure the radix character is a dot, whatever the locale.
            let s = std::slice::from_raw_parts_mut(buff.cast::<u8>(), nb);
            if !s.contains(&b'.') {
                let point = *(*libc::localeconv()).decimal_point as u8;
                if let Some(p) = s.iter_mut().find(|c| **c == point) {
                    *p = b'.';
                }
            }
        }
        nb
    }
}

/// `addliteral`: `%q`.
///
/// # Safety
/// `l` is the running thread inside `format`, `b` its buffer.
unsafe fn addliteral(l: State, b: *mut ffi::luaL_Buffer, arg: c_int, m: &mut Meter) {
    // SAFETY: caller's contract; mirrors lstrlib's addliteral.
    unsafe {
        match ffi::lua_type(l, arg) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let s = ffi::lua_tolstring(l, arg, &mut len);
                addquoted(l, b, std::slice::from_raw_parts(s.cast::<u8>(), len), m);
            }
            ffi::LUA_TNUMBER => {
                let buff = ffi::luaL_prepbuffsize(b, MAX_ITEM);
                let nb = if ffi::lua_isinteger(l, arg) == 0 {
                    quotefloat(buff, ffi::lua_tonumber(l, arg))
                } else {
                    let n = ffi::lua_tointeger(l, arg);
                    let fmt = if n == lua_Integer::MIN {
                        c"0x%llx"
                    } else {
                        c"%lld"
                    };
                    let nb = libc::snprintf(buff, MAX_ITEM, fmt.as_ptr(), n);
                    nb.clamp(0, MAX_ITEM as c_int - 1) as usize
                };
                ffi::luaL_addsize(b, nb);
            }
            ffi::LUA_TNIL | ffi::LUA_TBOOLEAN => {
                ffi::luaL_tolstring(l, arg, std::ptr::null_mut());
                ffi::luaL_addvalue(b);
            }
            _ => {
                ffi::luaL_argerror(l, arg, c"value has no literal form".as_ptr());
            }
        }
    }
}

/// `string.format`: stock behaviour, except that `%p` and `%s` show opaque identities.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn format(l: State) -> c_int {
    let mut m = Meter::new();
    let mut buf = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buf.as_mut_ptr();
    // SAFETY: called by Lua as a C function; mirrors lstrlib's str_format. `buf` stays in
    // this frame while in use; `fmt` points into argument 1, alive on the stack; each
    // snprintf writes at most `maxitem` bytes into room prepared for that many, with a
    // format text checked like stock Lua checks it and an argument of the type it names.
    unsafe {
        let top = ffi::lua_gettop(l);
        let mut arg: c_int = 1;
        let mut sfl = 0usize;
        let fmt = ffi::luaL_checklstring(l, arg, &mut sfl);
        let fmt = std::slice::from_raw_parts(fmt.cast::<u8>(), sfl);
        ffi::luaL_buffinit(l, b);
        let mut i = 0usize;
        while i < fmt.len() {
            if fmt[i] != b'%' {
                // A run of plain text, copied at once (stock adds it byte by byte).
                let run = fmt[i..]
                    .iter()
                    .position(|c| *c == b'%')
                    .unwrap_or(fmt.len() - i);
                ffi::luaL_addlstring(b, fmt[i..].as_ptr().cast(), run);
                tick(l, &mut m, units_of(run));
                i += run;
                continue;
            }
            i += 1;
            if fmt.get(i) == Some(&b'%') {
                ffi::luaL_addchar(b, b'%' as c_char); // %%
                i += 1;
                continue;
            }
            // format item
            let mut form = [0u8; MAX_FORMAT];
            let mut maxitem = MAX_ITEM;
            let mut buff = ffi::luaL_prepbuffsize(b, maxitem);
            let mut nb: usize = 0;
            arg += 1;
            if arg > top {
                return ffi::luaL_argerror(l, arg, c"no value".as_ptr());
            }
            // getformat: flags, width and precision ('0' included as a flag), then the
            // conversion (a NUL past the end of the string when there is none).
            let span = fmt[i..]
                .iter()
                .take_while(|c| b"-+#0 123456789.".contains(c))
                .count();
            let len = span + 1;
            if len >= MAX_FORMAT - 10 {
                return ffi::luaL_error(l, c"invalid format (too long)".as_ptr());
            }
            form[0] = b'%';
            for k in 0..len {
                form[1 + k] = fmt.get(i + k).copied().unwrap_or(0);
            }
            let conv = form[len];
            i += len;
            let flen = len + 1; // '%' + spec
            match conv {
                b'c' => {
                    checkformat(l, &form, L_FMTFLAGSC, false);
                    let c = ffi::luaL_checkinteger(l, arg) as c_int;
                    nb = sprintf_len(libc::snprintf(buff, maxitem, form.as_ptr().cast(), c));
                }
                b'd' | b'i' | b'u' | b'o' | b'x' | b'X' => {
                    let flags = match conv {
                        b'd' | b'i' => L_FMTFLAGSI,
                        b'u' => L_FMTFLAGSU,
                        _ => L_FMTFLAGSX,
                    };
                    let n = ffi::luaL_checkinteger(l, arg);
                    checkformat(l, &form, flags, true);
                    addlenmod(&mut form, b"ll");
                    nb = sprintf_len(libc::snprintf(buff, maxitem, form.as_ptr().cast(), n));
                }
                b'a' | b'A' => {
                    checkformat(l, &form, L_FMTFLAGSF, true);
                    let n = ffi::luaL_checknumber(l, arg);
                    nb = sprintf_len(libc::snprintf(buff, maxitem, form.as_ptr().cast(), n));
                }
                b'f' | b'e' | b'E' | b'g' | b'G' => {
                    if conv == b'f' {
                        maxitem = MAX_ITEMF; // extra space for '%f'
                        buff = ffi::luaL_prepbuffsize(b, maxitem);
                    }
                    let n = ffi::luaL_checknumber(l, arg);
                    checkformat(l, &form, L_FMTFLAGSF, true);
                    nb = sprintf_len(libc::snprintf(buff, maxitem, form.as_ptr().cast(), n));
                }
                b'p' => {
                    let p = ffi::lua_topointer(l, arg);
                    checkformat(l, &form, L_FMTFLAGSC, false);
                    // Format a string instead of the pointer: "(null)" as stock Lua
                    // does for values that are no objects, the number otherwise.
                    form[flen - 1] = b's';
                    let text = if p.is_null() {
                        *b"(null)\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                    } else {
                        id_text(object_id(l, arg))
                    };
                    nb = sprintf_len(libc::snprintf(
                        buff,
                        maxitem,
                        form.as_ptr().cast(),
                        text.as_ptr(),
                    ));
                }
                b'q' => {
                    if form[2] != 0 {
                        return ffi::luaL_error(
                            l,
                            c"specifier '%%q' cannot have modifiers".as_ptr(),
                        );
                    }
                    addliteral(l, b, arg, &mut m);
                }
                b's' => {
                    let mut sl = 0usize;
                    let s = tolstring(l, arg, &mut sl);
                    if form[2] == 0 {
                        ffi::luaL_addvalue(b); // no modifiers: keep entire string
                    } else {
                        let bytes = std::slice::from_raw_parts(s.cast::<u8>(), sl);
                        if bytes.contains(&0) {
                            ffi::luaL_argerror(l, arg, c"string contains zeros".as_ptr());
                        }
                        checkformat(l, &form, L_FMTFLAGSC, true);
                        if !form[..flen].contains(&b'.') && sl >= 100 {
                            // no precision and string is too long to be formatted
                            ffi::luaL_addvalue(b);
                        } else {
                            nb =
                                sprintf_len(libc::snprintf(buff, maxitem, form.as_ptr().cast(), s));
                            ffi::lua_pop(l, 1); // remove result from 'tolstring'
                        }
                    }
                }
                _ => {
                    // also treat cases 'pnLlh'
                    return ffi::luaL_error(
                        l,
                        c"invalid conversion '%s' to 'format'".as_ptr(),
                        form.as_ptr(),
                    );
                }
            }
            ffi::luaL_addsize(b, nb.min(maxitem - 1));
            tick(l, &mut m, 1);
        }
        ffi::luaL_pushresult(b);
        finish(l, &mut m);
    }
    1
}

/// What `snprintf` wrote, as a length (0 on an encoding error, which cannot happen for
/// the conversions used here).
fn sprintf_len(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The members of `string` this module provides.
pub(crate) const STRING: [(&str, ffi::lua_CFunction); 1] = [("format", format)];
