//! `moonjail._native`: the Python extension module under the `moonjail` package.
//!
//! A thin shell over the library: `Sandbox` and `Session` wrap the library's, outcomes
//! keep the library's `Outcome` and convert it on access, and Python callables become
//! host tools. Python-only conveniences (`run_async`, the context manager of a session
//! made by `Sandbox.session()`, `Tool`) live in `python/moonjail/`.

mod config;
mod convert;
mod durable;
mod interrupt;
mod outcome;
mod sandbox;
mod session;
mod tools;

use pyo3::prelude::*;

/// The Rust side of the module (every sandbox's Lua objects included, see moonjail's
/// vm/alloc.rs) allocates through mimalloc, in its secure mode, as the `moonjail`
/// executable does (its main.rs says why): a fresh sandbox is hundreds of small
/// allocations made and freed again, which mimalloc does in fewer instructions than the
/// C library's malloc (BENCHMARKS.md §6 and §7). Python's own objects keep Python's
/// allocator; nothing allocated here is freed by anything else, or the reverse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sandbox::Sandbox>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<outcome::Outcome>()?;
    m.add_class::<interrupt::CancelToken>()?;
    m.add_class::<durable::Suspension>()?;
    m.add_function(wrap_pyfunction!(durable::replay, m)?)?;
    m.add_function(wrap_pyfunction!(tools::time_left, m)?)?;
    m.add("LUA_VERSION", "Lua 5.4")?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
