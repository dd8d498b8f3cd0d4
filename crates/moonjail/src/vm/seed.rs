//! The seed of Lua's string hashes.
//!
//! Stock Lua 5.4 seeds each state's string hashes in `lua_newstate` with `luai_makeseed`
//! (lstate.c): `time(NULL)` mixed with three addresses (the state, a stack variable,
//! `lua_newstate` itself), so with ASLR the order `pairs` visits string keys in differs
//! from one process to the next. lstate.c only defines `luai_makeseed` when it is not
//! already defined; this workspace's `.cargo/config.toml` defines it (through `CFLAGS`,
//! the only way lua-src takes a define) as a call of [`moonjail_lua_seed`], which hands
//! out the seed [`arm`] chose for the state being created on this thread:
//!
//! - deterministic states: a value derived from the run's seed ([`derived`]), the same
//!   in every process and on every machine;
//! - every other state: fresh unpredictable bits ([`random`]), so that nobody can
//!   precompute colliding keys (hash flooding) — stronger than the stock seed, whose
//!   time and address inputs are partly guessable.
//!
//! A build of Lua without the define still links (the function is then never called):
//! [`disarm`] says whether Lua asked, and a deterministic state refuses to start if it did
//! not, rather than run with an order that changes between processes.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::ffi::c_uint;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    /// The seed for the next state created on this thread, set by [`arm`].
    static NEXT: Cell<Option<c_uint>> = const { Cell::new(None) };
    /// Whether Lua asked for a seed since the last [`arm`].
    static ASKED: Cell<bool> = const { Cell::new(false) };
}

/// Called by Lua's `lua_newstate` (through the `luai_makeseed` define) for each state.
/// States that moonjail did not [`arm`] for (another library's `Lua::new` in the same
/// process) get a random seed.
#[no_mangle]
pub extern "C" fn moonjail_lua_seed() -> c_uint {
    ASKED.with(|a| a.set(true));
    NEXT.with(|n| n.take()).unwrap_or_else(random)
}

/// Chooses the seed of the next state this thread creates.
pub(crate) fn arm(seed: c_uint) {
    NEXT.with(|n| n.set(Some(seed)));
    ASKED.with(|a| a.set(false));
}

/// Ends an [`arm`]: whether Lua asked for the seed meanwhile (false: Lua was built
/// without moonjail's `luai_makeseed`).
pub(crate) fn disarm() -> bool {
    NEXT.with(|n| n.set(None));
    ASKED.with(|a| a.replace(false))
}

/// Unpredictable bits: SipHash-1-3 under std's per-process random keys (read from the
/// OS once per thread, then stepped for each `RandomState`), no system call per state.
pub(crate) fn random() -> c_uint {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x6d6f_6f6e_6a61_696c);
    let x = h.finish();
    (x ^ (x >> 32)) as c_uint
}

/// 64 unpredictable bits, as [`random`] makes them.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x6d61_7468_7261_6e64);
    h.finish()
}

/// The string-hash seed of a deterministic state, from the run's seed (splitmix64's
/// finalizer, so nearby run seeds give unrelated hash seeds).
pub(crate) fn derived(run_seed: i64) -> c_uint {
    let mut z = (run_seed as u64) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z ^ (z >> 32)) as c_uint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_seeds_differ() {
        let a: Vec<c_uint> = (0..8).map(|_| random()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), a.len(), "{a:?}");
    }

    #[test]
    fn derived_is_a_function_of_the_run_seed() {
        assert_eq!(derived(42), derived(42));
        assert_ne!(derived(42), derived(43));
    }

    #[test]
    fn lua_takes_moonjail_seed() {
        arm(12345);
        let lua = mlua::Lua::new();
        assert!(disarm(), "Lua was built without moonjail's luai_makeseed");
        drop(lua);
    }
}
