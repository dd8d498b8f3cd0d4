//! The quota layer: one Lua state with exact memory accounting, a hook-free deadline,
//! an opt-in shared instruction budget and captured output.

mod alloc;
mod arena;
pub(crate) mod control;
pub(crate) mod hook;
pub(crate) mod load;
pub(crate) mod output;
pub(crate) mod seed;
pub(crate) mod trace;
pub(crate) mod watchdog;

use std::mem::ManuallyDrop;

use mlua::state::{GcGenParams, GcMode};
use mlua::{ffi, Function, IntoLuaMulti, Lua, LuaOptions, MultiValue, StdLib};

pub(crate) use control::{
    current, native_charge, native_charge_quiet, native_checkpoint, Activation, Control, Meter,
    Stop,
};

/// A Lua state under quota. Dropping it closes the state with its control block active,
/// so nothing the script left behind can run unmetered.
pub(crate) struct Vm {
    lua: ManuallyDrop<Lua>,
    main: *mut ffi::lua_State,
    alloc: ManuallyDrop<Box<alloc::Wrapped>>,
    ctl: Box<Control>,
    shim: ManuallyDrop<Function>,
}

impl Vm {
    /// Creates a state with `libs` opened and the counting allocator installed, its
    /// collector stopped until [`Vm::start_collector`].
    ///
    /// With `deterministic` (the run's seed), everything the script can observe is a
    /// function of its inputs: the string-hash seed is derived from the run's seed (see
    /// seed.rs), and the state allocates from a private arena (see arena.rs) from the
    /// moment mlua hands it over, before the libraries are opened; the globals table,
    /// which mlua made before that, is replaced by a copy made in the arena.
    pub(crate) fn new(
        libs: StdLib,
        memory_limit: usize,
        deterministic: Option<i64>,
    ) -> mlua::Result<Vm> {
        seed::arm(deterministic.map_or_else(seed::random, seed::derived));
        // The libraries are opened once the handle below is the state's only one.
        let created = Lua::new_with(StdLib::NONE, LuaOptions::new());
        let seeded = seed::disarm();
        // mlua's `Lua` runs a full collection when the handle that created the state is
        // dropped, right before `lua_close` frees everything anyway: a whole mark and
        // sweep per run (4% of a `return 1` run's instructions). A clone shares the state
        // without that duty; the original is dropped now, while the state is empty and
        // its collection costs next to nothing.
        let lua = {
            let original = created?;
            let handle = original.clone();
            drop(original);
            handle
        };
        // No collector work while the state is built (see `start_collector`).
        lua.gc_stop();
        if deterministic.is_none() {
            lua.load_std_libs(libs)?;
        }
        let arena = match deterministic {
            None => None,
            Some(_) if !seeded => {
                return Err(mlua::Error::runtime(
                    "deterministic mode is unavailable: this build of Lua does not take \
                     moonjail's string-hash seed (build with the CFLAGS of moonjail's \
                     .cargo/config.toml; a build made before them needs \
                     `cargo clean -p mlua-sys`)",
                ))
            }
            Some(_) => Some(arena::Arena::new().ok_or_else(|| {
                mlua::Error::runtime("deterministic mode: no address window for the arena")
            })?),
        };
        let in_arena = arena.is_some();
        // A non-zero mlua limit makes mlua protect its own allocations, which can now fail.
        lua.set_memory_limit(isize::MAX as usize)?;
        let used = lua.used_memory();
        let mut main: *mut ffi::lua_State = std::ptr::null_mut();
        // SAFETY: the closure only reads the state pointer it is given.
        unsafe { lua.exec_raw::<()>((), |l| main = l)? };
        // Before any hook exists on this state: the one place the layout probe may set
        // and clear one.
        hook::count_layout_ok(main);
        let ctl = Control::new(memory_limit);
        // SAFETY: `entry_shim` follows the lua_CFunction protocol.
        let shim = unsafe { lua.create_c_function(hook::entry_shim) }?;
        // SAFETY: `main` is this state's main thread; `ctl` is boxed and outlives the
        // wrapper, which `Drop` uninstalls before closing the state.
        let alloc = unsafe { alloc::install(main, &ctl, used, arena) };
        // From here on the state is only dropped through `Vm`'s `Drop`, which closes it
        // before the allocator it now uses goes away.
        let vm = Vm {
            lua: ManuallyDrop::new(lua),
            main,
            alloc: ManuallyDrop::new(alloc),
            ctl,
            shim: ManuallyDrop::new(shim),
        };
        if in_arena {
            let lua = vm.lua();
            lua.load_std_libs(libs)?;
            let globals = lua.create_table()?;
            for pair in lua.globals().pairs::<mlua::Value, mlua::Value>() {
                let (k, v) = pair?;
                globals.raw_set(k, v)?;
            }
            set_registry_globals(lua, &globals)?;
        }
        Ok(vm)
    }

    /// Starts the collector, which [`Vm::new`] leaves stopped: the environment a builder
    /// makes is nearly all live, so collecting while it is made only marks it over and
    /// over. The embedded state is incremental by default; lua5.4 itself runs
    /// generational, which is up to 2.5x faster on allocation-heavy code. Entering that
    /// mode marks everything once, here, instead of the incremental steps and the switch
    /// on a half-built state that it replaces (-1% instructions per fresh `return 1`).
    pub(crate) fn start_collector(&self) {
        self.lua.gc_restart();
        self.lua
            .gc_set_mode(GcMode::Generational(GcGenParams::default()));
    }

    /// The state's main thread.
    #[cfg(test)]
    pub(crate) fn main_thread(&self) -> *mut ffi::lua_State {
        self.main
    }

    pub(crate) fn lua(&self) -> &Lua {
        &self.lua
    }

    pub(crate) fn ctl(&self) -> &Control {
        &self.ctl
    }

    /// Prepares the control block for a new run or session call and starts metering.
    /// The caller must hold an [`Activation`] of this VM's control block.
    pub(crate) fn begin_call(&self, instructions: Option<u64>) {
        self.ctl.reset_for_call();
        self.ctl.instr_limit.set(instructions);
        self.ctl.reset_chain(self.main);
        hook::start_metering(self.main);
    }

    /// Instructions the current call has executed (meaningful with an instruction limit).
    pub(crate) fn instructions_used(&self) -> u64 {
        hook::instructions_used(self.main, self.ctl.instr_charged.get())
    }

    /// Calls `f` through the entry shim: `Ok(values)` or `Err(error value)`, without any
    /// metamethod of the error running on the way.
    pub(crate) fn call(
        &self,
        f: &Function,
        args: impl IntoLuaMulti,
    ) -> mlua::Result<Result<MultiValue, mlua::Value>> {
        let mut all: MultiValue = self.shim.call((f, args))?;
        let ok = matches!(all.pop_front(), Some(mlua::Value::Boolean(true)));
        if ok {
            Ok(Ok(all))
        } else {
            Ok(Err(all.pop_front().unwrap_or(mlua::Value::Nil)))
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _active = Activation::new(&self.ctl);
        // Anything that still runs during close must stop at once.
        if self.ctl.stop() == Stop::None {
            self.ctl.set_stop(Stop::Timeout);
        }
        self.ctl.arm_all();
        // SAFETY: dropped exactly once, in this order: the shim reference before the
        // state, the allocator restored before `lua_close`, and its box after.
        unsafe {
            ManuallyDrop::drop(&mut self.shim);
            alloc::uninstall(self.main, &self.alloc);
            ManuallyDrop::drop(&mut self.lua);
            ManuallyDrop::drop(&mut self.alloc);
        }
    }
}

/// Sets `into[name] = value` for every entry of `from` whose key is a string and whose
/// value is a table (`_G` only with `keep_g`), in one raw traversal: what `require`
/// finds already loaded. (mlua's `pairs` made two registry references per entry: this
/// was a fifth of building a `standard` environment's table work.)
pub(crate) fn copy_table_entries(
    lua: &Lua,
    from: &mlua::Table,
    into: &mlua::Table,
    keep_g: bool,
) -> mlua::Result<()> {
    // SAFETY: `exec_raw` pushes `from` at 1 and `into` at 2 and runs the closure in
    // protected mode (a memory error raised by `lua_checkstack` or `lua_rawset` unwinds
    // to it; the closure owns nothing with a destructor). `lua_next` walks `from`, which
    // is not modified during the walk (only `into` is written, a different table), and
    // the key is left in place for the next step. The closure runs as a C function, with
    // LUA_MINSTACK free slots; `lua_checkstack` states the four it uses.
    unsafe {
        lua.exec_raw::<()>((from, into), |l| {
            ffi::lua_checkstack(l, 4);
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, 1) != 0 {
                if ffi::lua_type(l, -2) == ffi::LUA_TSTRING
                    && ffi::lua_type(l, -1) == ffi::LUA_TTABLE
                {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, -2, &mut len);
                    let name = std::slice::from_raw_parts(p.cast::<u8>(), len);
                    if keep_g || name != b"_G" {
                        ffi::lua_pushvalue(l, -2);
                        ffi::lua_pushvalue(l, -2);
                        ffi::lua_rawset(l, 2);
                    }
                }
                ffi::lua_pop(l, 1);
            }
        })
    }
}

/// Removes every entry of `table` whose key is not a string accepted by `keep`, in one
/// raw traversal (no metamethods, no per-key allocation): the environment builder's hot
/// loop.
pub(crate) fn retain_string_keys(
    lua: &Lua,
    table: &mlua::Table,
    keep: impl Fn(&[u8]) -> bool,
) -> mlua::Result<()> {
    // SAFETY: the closure runs on the state's stack with `table` pushed at index 1 by
    // `exec_raw`; it only traverses and clears existing fields (assigning nil to an
    // existing field during `lua_next` is allowed and never allocates, so nothing can
    // raise while Rust frames are live), and leaves the stack as it found it.
    unsafe {
        lua.exec_raw::<()>(table, |l| {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, 1) != 0 {
                ffi::lua_pop(l, 1);
                let mut len = 0usize;
                let keep_it = ffi::lua_type(l, -1) == ffi::LUA_TSTRING && {
                    let p = ffi::lua_tolstring(l, -1, &mut len);
                    keep(std::slice::from_raw_parts(p.cast::<u8>(), len))
                };
                if !keep_it {
                    ffi::lua_pushvalue(l, -1);
                    ffi::lua_pushnil(l);
                    ffi::lua_rawset(l, 1);
                }
            }
        })
    }
}

/// The metatable shared by all strings (nil if there is none), read raw.
pub(crate) fn string_metatable(lua: &Lua) -> mlua::Result<mlua::Value> {
    // SAFETY: pushes a string, replaces it by its metatable (or nil); `exec_raw` turns
    // the one value left on the stack into the result.
    unsafe {
        lua.exec_raw::<mlua::Value>((), |l| {
            ffi::lua_pushstring(l, c"".as_ptr());
            if ffi::lua_getmetatable(l, -1) == 0 {
                ffi::lua_pushnil(l);
            }
            ffi::lua_remove(l, -2);
        })
    }
}

/// Makes `table` the state's globals as `lua_load` and `lua_getglobal` see them, and as
/// the auxiliary library names functions in error messages (`bad argument #1 to
/// 'pairs'` for a function called without a name at its call site: it looks the
/// function up in `_LOADED._G`).
pub(crate) fn set_registry_globals(lua: &Lua, table: &mlua::Table) -> mlua::Result<()> {
    // SAFETY: `exec_raw` pushes `table` at index 1 and runs the closure in protected mode
    // (a memory error raised by `lua_setfield` unwinds to it); it is stored in the
    // registry slot that holds the globals, which accepts any table, and as the `_G`
    // entry of the registry's `_LOADED` table when there is one. The stack is left as
    // found.
    unsafe {
        lua.exec_raw::<()>(table, |l| {
            ffi::lua_pushvalue(l, 1);
            ffi::lua_rawseti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            if ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, c"_LOADED".as_ptr()) == ffi::LUA_TTABLE
            {
                ffi::lua_pushvalue(l, 1);
                ffi::lua_setfield(l, -2, c"_G".as_ptr());
            }
            ffi::lua_pop(l, 1);
        })
    }
}

/// Sets `table[name] = f` (raw) for each C function in `entries`, in one protected call:
/// creating each through mlua's API would cost thousands of instructions apiece on the
/// hot path of sandbox creation. With `only_present`, names the table does not already
/// hold (trimmed away by the profile) are left absent.
pub(crate) fn set_c_functions(
    lua: &Lua,
    table: &mlua::Table,
    entries: &[(&str, ffi::lua_CFunction)],
    only_present: bool,
) -> mlua::Result<()> {
    // SAFETY: `exec_raw` pushes `table` at index 1 and runs the closure in protected mode
    // (a memory error raised by a push unwinds to it; the closure owns nothing with a
    // destructor). Each entry is one of moonjail's own lua_CFunctions.
    unsafe {
        lua.exec_raw::<()>(table, |l| {
            for (name, f) in entries {
                ffi::lua_pushlstring(l, name.as_ptr().cast(), name.len());
                if only_present {
                    ffi::lua_pushvalue(l, -1);
                    let present = ffi::lua_rawget(l, 1) != ffi::LUA_TNIL;
                    ffi::lua_pop(l, 1);
                    if !present {
                        ffi::lua_pop(l, 1);
                        continue;
                    }
                }
                ffi::lua_pushcfunction(l, *f);
                ffi::lua_rawset(l, 1);
            }
        })
    }
}

/// Replaces every light C function reachable through tables from the globals (and the
/// string metatable) by a C closure of the same function (one nil upvalue, which no
/// light function reads), the same closure wherever the function appears.
///
/// Lua hashes a light C function used as a table key by its code address, which ASLR
/// moves in each process; a closure is an object in the state's memory, hashed like any
/// other (see arena.rs). Only deterministic states need it. Functions that library code
/// pushes anew at run time (`pairs` returns `next`, `ipairs` its iterator) stay light.
pub(crate) fn close_light_functions(lua: &Lua) -> mlua::Result<()> {
    // Stack slots of the walk.
    const SEEN: i32 = 1;
    const MEMO: i32 = 2;
    const QUEUE: i32 = 3;
    const TABLE: i32 = 4;
    /// Queues the value on top once if it is a table, and pops it.
    ///
    /// # Safety
    /// Inside the walk below, with 3 free stack slots.
    unsafe fn enqueue(l: *mut ffi::lua_State, queued: &mut ffi::lua_Integer) {
        // SAFETY: caller's contract; raw accesses to the walk's own tables.
        unsafe {
            if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                ffi::lua_pushvalue(l, -1);
                if ffi::lua_rawget(l, SEEN) == ffi::LUA_TNIL {
                    ffi::lua_pushvalue(l, -2);
                    ffi::lua_pushboolean(l, 1);
                    ffi::lua_rawset(l, SEEN);
                    *queued += 1;
                    ffi::lua_pushvalue(l, -2);
                    ffi::lua_rawseti(l, QUEUE, *queued);
                }
                ffi::lua_pop(l, 1);
            }
            ffi::lua_pop(l, 1);
        }
    }
    // SAFETY: `exec_raw` runs the closure in protected mode on an empty stack (a memory
    // error raised by a push unwinds to it; the closure owns nothing with a destructor).
    // The walk uses raw accesses only, so no metamethod runs; assigning to an existing
    // field during `lua_next` is allowed. Every push is balanced before the loop's next
    // turn (at most 4 slots above the walk's 4), and the stack is emptied at the end.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_settop(l, 0);
            ffi::lua_createtable(l, 0, 32); // SEEN: table -> true
            ffi::lua_createtable(l, 0, 256); // MEMO: light function -> closure
            ffi::lua_createtable(l, 32, 0); // QUEUE: tables to walk, in order
            let mut queued: ffi::lua_Integer = 0;
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            enqueue(l, &mut queued);
            ffi::lua_pushstring(l, c"".as_ptr());
            if ffi::lua_getmetatable(l, -1) != 0 {
                enqueue(l, &mut queued);
            }
            ffi::lua_pop(l, 1);
            let mut next: ffi::lua_Integer = 1;
            while next <= queued {
                ffi::lua_rawgeti(l, QUEUE, next); // at TABLE
                next += 1;
                if ffi::lua_getmetatable(l, TABLE) != 0 {
                    enqueue(l, &mut queued);
                }
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, TABLE) != 0 {
                    // The key at 5, the value at 6.
                    let mut light = None;
                    if ffi::lua_iscfunction(l, -1) != 0 {
                        if ffi::lua_getupvalue(l, -1, 1).is_null() {
                            light = ffi::lua_tocfunction(l, -1);
                        } else {
                            ffi::lua_pop(l, 1);
                        }
                    }
                    let Some(f) = light else {
                        enqueue(l, &mut queued);
                        continue;
                    };
                    ffi::lua_pushvalue(l, -1);
                    if ffi::lua_rawget(l, MEMO) == ffi::LUA_TNIL {
                        ffi::lua_pop(l, 1);
                        ffi::lua_pushnil(l);
                        ffi::lua_pushcclosure(l, f, 1);
                        ffi::lua_pushvalue(l, -2);
                        ffi::lua_pushvalue(l, -2);
                        ffi::lua_rawset(l, MEMO);
                    }
                    // The closure at 7: TABLE[key] = closure, leaving the key.
                    ffi::lua_pushvalue(l, -3);
                    ffi::lua_insert(l, -2);
                    ffi::lua_rawset(l, TABLE);
                    ffi::lua_pop(l, 1);
                }
                ffi::lua_pop(l, 1);
            }
            ffi::lua_settop(l, 0);
        })
    }
}
