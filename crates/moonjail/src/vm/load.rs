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
