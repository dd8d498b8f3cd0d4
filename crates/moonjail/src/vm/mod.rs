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
    /// Creates a state with the counting allocator installed, its collector stopped
    /// until [`Vm::start_collector`]. Only a deterministic state has the stock `libs`
    /// opened here; the environment builder makes the others' library tables with
    /// exactly the profile's members (stdlib/recipe.rs).
    ///
    /// With `deterministic` (the run's seed), everything the script can observe is a
    /// function of its inputs: the string-hash seed is derived from the run's seed (see
    /// seed.rs), and the state is created on a private arena (see arena.rs), so that
    /// every object, the main thread first, has an address that is a function of the
    /// requests before it.
    pub(crate) fn new(
        libs: StdLib,
        memory_limit: usize,
        deterministic: Option<i64>,
    ) -> mlua::Result<Vm> {
        match deterministic {
            None => Vm::shared(memory_limit),
            Some(seed) => Vm::in_arena(libs, memory_limit, seed),
        }
    }

    /// A state made by mlua on the global allocator, then given the counting allocator,
    /// with no library but the base one.
    fn shared(memory_limit: usize) -> mlua::Result<Vm> {
        seed::arm(seed::random());
        let created = Lua::new_with(StdLib::NONE, LuaOptions::new());
        seed::disarm();
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
        // The libraries are made by `env::build` with only the profile's members
        // (stdlib/recipe.rs), not opened here.

        // A non-zero mlua limit makes mlua protect its own allocations, which can now fail.
        lua.set_memory_limit(isize::MAX as usize)?;
        let used = lua.used_memory();
        let main = main_thread(&lua)?;
        // Before any hook exists on this state: the one place the layout probe may set
        // and clear one.
        hook::count_layout_ok(main);
        let ctl = Control::new(memory_limit);
        // SAFETY: `entry_shim` follows the lua_CFunction protocol.
        let shim = unsafe { lua.create_c_function(hook::entry_shim) }?;
        // SAFETY: `main` is this state's main thread; `ctl` is boxed and outlives the
        // wrapper, which `Drop` uninstalls before closing the state.
        let alloc = unsafe { alloc::install(main, &ctl, used) };
        // From here on the state is only dropped through `Vm`'s `Drop`, which closes it
        // before the allocator it now uses goes away.
        Ok(Vm {
            lua: ManuallyDrop::new(lua),
            main,
            alloc: ManuallyDrop::new(alloc),
            ctl,
            shim: ManuallyDrop::new(shim),
        })
    }

    /// A deterministic state, created with `lua_newstate` on its arena's allocator and
    /// only then handed to mlua (`Lua::get_or_init_from_ptr`, which leaves closing it to
    /// us): mlua's own constructor would allocate the main thread, the registry and its
    /// own tables from the global heap, at addresses ASLR moves, and the main thread is
    /// a value scripts can use as a table key (`coroutine.running()`).
    fn in_arena(libs: StdLib, memory_limit: usize, run_seed: i64) -> mlua::Result<Vm> {
        // The limit applies once the state exists (below): what mlua makes for itself
        // must not fail half-way, which it would answer with a panic.
        let ctl = Control::new(usize::MAX);
        let arena = arena::Arena::new().ok_or_else(|| {
            mlua::Error::runtime("deterministic mode: no address window for the arena")
        })?;
        let (alloc, f, ud) = alloc::Wrapped::arena(&ctl, arena);
        seed::arm(seed::derived(run_seed));
        // SAFETY: `f` is `arena_alloc` with its `InArena`, which `alloc` keeps at a
        // stable address until after the state is closed (by `Made` below on an error,
        // by `Vm`'s `Drop` otherwise).
        let main = unsafe { ffi::lua_newstate(f, ud) };
        let seeded = seed::disarm();
        if main.is_null() {
            return Err(mlua::Error::runtime(
                "deterministic mode: the arena refused the state's first block",
            ));
        }
        let made = Made(main);
        if !seeded {
            return Err(mlua::Error::runtime(
                "deterministic mode is unavailable: this build of Lua does not take \
                 moonjail's string-hash seed (build with the CFLAGS of moonjail's \
                 .cargo/config.toml; a build made before them needs \
                 `cargo clean -p mlua-sys`)",
            ));
        }
        // SAFETY: `main` is a fresh state with an empty stack; `open_base` follows the
        // lua_CFunction protocol and runs protected, so a memory error unwinds to the
        // `lua_pcall` (which pushes it on failure, popped with the state).
        let opened = unsafe {
            ffi::lua_pushcfunction(main, open_base);
            ffi::lua_pcall(main, 0, 0, 0)
        };
        if opened != ffi::LUA_OK {
            return Err(mlua::Error::runtime(
                "deterministic mode: opening the base library failed",
            ));
        }
        // SAFETY: `main` is a valid main state that nothing else owns; mlua keeps its
        // handle in the state's registry and leaves `lua_close` to the caller: `made`
        // on an error below (declared before `lua`, so after it is dropped), `Vm`'s
        // `Drop` once the state is one.
        let lua = unsafe { Lua::get_or_init_from_ptr(main) }.clone();
        lua.gc_stop();
        hook::count_layout_ok(main);
        // SAFETY: `entry_shim` follows the lua_CFunction protocol.
        let shim = unsafe { lua.create_c_function(hook::entry_shim) }?;
        // SAFETY: the allocator runs on this thread only, and no allocation is in flight.
        unsafe { (*ctl.mem.get()).limit = memory_limit };
        std::mem::forget(made);
        let vm = Vm {
            lua: ManuallyDrop::new(lua),
            main,
            alloc: ManuallyDrop::new(alloc),
            ctl,
            shim: ManuallyDrop::new(shim),
        };
        vm.lua.load_std_libs(libs)?;
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
        // state, the allocator restored before `lua_close`, and its box after. mlua
        // closes a state it made when its last handle goes; one made on an arena
        // (`Vm::in_arena`) is closed here, after the last handle outside its registry.
        unsafe {
            ManuallyDrop::drop(&mut self.shim);
            alloc::uninstall(self.main, &self.alloc);
            ManuallyDrop::drop(&mut self.lua);
            if self.alloc.made_the_state() {
                ffi::lua_close(self.main);
            }
            ManuallyDrop::drop(&mut self.alloc);
        }
    }
}

/// Closes a state [`Vm::in_arena`] created, if it fails before the state is a `Vm`.
struct Made(*mut ffi::lua_State);

impl Drop for Made {
    fn drop(&mut self) {
        // A panic inside mlua's set-up (`get_or_init_from_ptr`) can leave its registry
        // data half made, which closing the state would finalise: leak the state then.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: a state made by `lua_newstate` whose handles are all gone, closed once,
        // before its allocator (declared earlier) is dropped.
        unsafe { ffi::lua_close(self.0) };
    }
}

/// Opens the base library into the globals, as mlua's constructor and `luaL_openlibs` do.
unsafe extern "C-unwind" fn open_base(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by `lua_pcall` on a valid state with room for the module it leaves.
    unsafe {
        ffi::luaL_requiref(l, c"_G".as_ptr(), ffi::luaopen_base, 1);
        ffi::lua_pop(l, 1);
    }
    0
}

/// The main thread of `lua`'s state.
fn main_thread(lua: &Lua) -> mlua::Result<*mut ffi::lua_State> {
    let mut main: *mut ffi::lua_State = std::ptr::null_mut();
    // SAFETY: the closure only reads the state pointer it is given.
    unsafe { lua.exec_raw::<()>((), |l| main = l)? };
    Ok(main)
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
