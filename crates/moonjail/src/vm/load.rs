//! Compiling text chunks under the run's deadline.
//!
//! Lua's parser is one C call: a chunk built to compile slowly (`load("return " ..
//! ("a or "):rep(200000) .. "a")` is quadratic in the code generator, 50 s for 1 MB)
//! would run past any deadline, since the deadline hook needs an instruction to run.
//! So every chunk moonjail compiles (the script, `load`, `loadstring`, `require`) is fed
//! to the parser in small pieces through a reader that checks the deadline (and every
//! other stop) before each piece; the parser consumes its input as it goes, so the checks
//! are spread over the whole compilation.

use std::ffi::{c_char, c_int, c_void, CStr};

use mlua::ffi::{self, lua_State};

use super::control::native_checkpoint;
use super::hook::raise;

/// Bytes handed to the parser per reader call: small enough that a pathological piece
/// compiles in milliseconds, large enough that an ordinary megabyte costs a thousand
/// calls.
const PIECE_BYTES: usize = 1024;

/// The rest of the source, handed out a piece at a time.
struct Pieces<'a> {
    rest: &'a [u8],
}

unsafe extern "C-unwind" fn read_piece(
    l: *mut lua_State,
    data: *mut c_void,
    size: *mut usize,
) -> *const c_char {
    if let Some(msg) = native_checkpoint() {
        // SAFETY: raising from a reader is allowed (lbaselib's generic_reader does); the
        // parser runs protected and `lua_load` returns the error. No frame between here
        // and there owns anything with a destructor.
        unsafe { raise(l, msg) }
    }
    // SAFETY: `data` is the `Pieces` that `load_text` passed to `lua_load`, alive for its
    // duration; `size` is Lua's out-parameter.
    unsafe {
        let pieces = &mut *data.cast::<Pieces>();
        let n = pieces.rest.len().min(PIECE_BYTES);
        let piece = pieces.rest.as_ptr();
        pieces.rest = &pieces.rest[n..];
        *size = n;
        if n == 0 {
            std::ptr::null()
        } else {
            piece.cast()
        }
    }
}

/// `luaL_loadbufferx(l, source, chunkname, "t")`, compiled under the run's stops: pushes
/// the function, or the error message, and returns Lua's status.
///
/// # Safety
/// `l` is a thread of the running state with room for one more stack slot.
pub(crate) unsafe fn load_text(l: *mut lua_State, source: &[u8], chunkname: &CStr) -> c_int {
    let mut pieces = Pieces { rest: source };
    // SAFETY: caller's contract; `pieces` outlives the call, and mode "t" refuses binary
    // chunks.
    unsafe {
        ffi::lua_load(
            l,
            read_piece,
            (&mut pieces as *mut Pieces).cast(),
            chunkname.as_ptr(),
            c"t".as_ptr(),
        )
    }
}

/// What `lua.c` (through `luaL_loadfilex`) skips before compiling a script file: a UTF-8
/// byte order mark, then a first line starting with `#` (a Unix shebang, `#!/usr/bin/env
/// lua`). The `#` line's text goes but its newline stays, so that the script's line 2 is
/// still line 2 in error messages and lint findings. Only script files get this: `load`
/// compiles its string exactly as given, as in stock Lua.
pub(crate) fn skip_prelude(source: &[u8]) -> &[u8] {
    let source = source.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(source);
    if source.first() != Some(&b'#') {
        return source;
    }
    match source.iter().position(|&b| b == b'\n') {
        Some(newline) => &source[newline..],
        // The whole script is the `#` line: nothing to compile.
        None => &source[source.len()..],
    }
}

#[cfg(test)]
mod tests {
    use super::skip_prelude;

    #[test]
    fn a_bom_is_skipped() {
        assert_eq!(skip_prelude(b"\xEF\xBB\xBFreturn 1"), b"return 1");
        // Only a whole BOM, and only at the start.
        assert_eq!(skip_prelude(b"\xEF\xBBreturn 1"), b"\xEF\xBBreturn 1");
        assert_eq!(skip_prelude(b"x\xEF\xBB\xBF"), b"x\xEF\xBB\xBF");
    }

    #[test]
    fn a_hash_line_goes_but_its_newline_stays() {
        assert_eq!(skip_prelude(b"#!/usr/bin/env lua\nreturn 1"), b"\nreturn 1");
        assert_eq!(skip_prelude(b"# comment\r\nx = 1"), b"\nx = 1");
        assert_eq!(
            skip_prelude(b"\xEF\xBB\xBF#!lua\n\nreturn 2"),
            b"\n\nreturn 2"
        );
        assert_eq!(skip_prelude(b"#!lua"), b"");
        assert_eq!(skip_prelude(b"#\n"), b"\n");
    }

    #[test]
    fn other_sources_are_unchanged() {
        for source in [&b""[..], b"return 1", b" #x\n", b"\n#x", b"--#\nreturn 1"] {
            assert_eq!(skip_prelude(source), source);
        }
    }

    #[test]
    fn line_numbers_survive() {
        let source = b"#!/usr/bin/env lua\nlocal a = 1\nerror('x')\n";
        let rest = skip_prelude(source);
        // Line 3 of the file is line 3 of what is compiled: one newline before `local`.
        let before_error = rest
            .windows(5)
            .position(|w| w == b"error")
            .expect("the text is kept");
        let lines = rest[..before_error].iter().filter(|&&b| b == b'\n').count() + 1;
        assert_eq!(lines, 3);
    }
}
