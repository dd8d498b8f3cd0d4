//! The quota layer: one Lua state with exact memory accounting, a hook-free deadline,
//! an opt-in shared instruction budget and captured output.

mod alloc;
pub(crate) mod control;
pub(crate) mod hook;
pub(crate) mod load;
pub(crate) mod output;
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
    /// Creates a state with `libs` opened and the counting allocator installed.
    pub(crate) fn new(libs: StdLib, memory_limit: usize) -> mlua::Result<Vm> {
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        // The embedded state is incremental by default; lua5.4 itself runs generational,
        // which is up to 2.5x faster on allocation-heavy code.
        lua.gc_set_mode(GcMode::Generational(GcGenParams::default()));
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
        // SAFETY: `main` is this state's main thread; `ctl` is boxed and outlives the
        // wrapper, which `Drop` uninstalls before closing the state.
        let alloc = unsafe { alloc::install(main, &ctl, used) };
        // SAFETY: `entry_shim` follows the lua_CFunction protocol.
        let shim = unsafe { lua.create_c_function(hook::entry_shim) }?;
        Ok(Vm {
            lua: ManuallyDrop::new(lua),
            main,
            alloc: ManuallyDrop::new(alloc),
            ctl,
            shim: ManuallyDrop::new(shim),
        })
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

/// Makes `table` the state's globals as `lua_load` and `lua_getglobal` see them.
pub(crate) fn set_registry_globals(lua: &Lua, table: &mlua::Table) -> mlua::Result<()> {
    // SAFETY: `exec_raw` pushes `table` at index 1; it is stored in the registry slot that
    // holds the globals, which accepts any table.
    unsafe {
        lua.exec_raw::<()>(table, |l| {
            ffi::lua_rawseti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
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
