//! The environment layer: turns a profile's list into a state's globals.
//!
//! Every run has a fresh state, so nothing a script changes can reach another run; the
//! builder only has to make sure nothing outside the list exists, and that each listed
//! name is the guarded version where the stock one is unsafe.

use mlua::{Function, Lua, StdLib, Table, Value};

use crate::host::EnvOptions;
use crate::profile::{Item, ProfileSpec};
use crate::stdlib::{aos, base, charged, identity, json, strmatch, table};
use crate::vm::{retain_string_keys, set_c_functions};

/// The stock libraries a profile needs opened.
pub(crate) fn libs_for(spec: &ProfileSpec) -> StdLib {
    let mut libs = StdLib::NONE;
    for (name, lib) in [
        ("string", StdLib::STRING),
        ("table", StdLib::TABLE),
        ("math", StdLib::MATH),
        ("coroutine", StdLib::COROUTINE),
        ("utf8", StdLib::UTF8),
        ("os", StdLib::OS),
    ] {
        if spec.library(name).is_some() {
            libs |= lib;
        }
    }
    libs
}

/// Replaces the state's globals with exactly what `spec` lists.
pub(crate) fn build(lua: &Lua, spec: &ProfileSpec, opts: &EnvOptions) -> mlua::Result<()> {
    let g = lua.globals();
    // Lock the string metatable while the stock getmetatable is still at hand.
    let getmt: Function = g.raw_get("getmetatable")?;
    if let Value::Table(mt) = getmt.call::<Value>("")? {
        mt.raw_set("__metatable", false)?;
    }

    retain_string_keys(lua, &g, |k| {
        std::str::from_utf8(k).is_ok_and(|k| spec.has_global(k))
    })?;

    for item in spec.items {
        match *item {
            Item::Global(name) => {
                // SAFETY (of create_c_function): every function below follows the
                // lua_CFunction protocol.
                let guarded = match name {
                    "print" => Some(base::print as mlua::ffi::lua_CFunction),
                    "load" => Some(base::load as mlua::ffi::lua_CFunction),
                    "collectgarbage" => Some(base::collectgarbage as mlua::ffi::lua_CFunction),
                    "xpcall" => Some(base::xpcall as mlua::ffi::lua_CFunction),
                    "tostring" => Some(identity::tostring as mlua::ffi::lua_CFunction),
                    _ => None,
                };
                if let Some(f) = guarded {
                    set_c_functions(lua, &g, &[(name, f)], false)?;
                } else if name == "setmetatable" {
                    g.raw_set(name, base::setmetatable_closure(lua)?)?;
                }
            }
            Item::Library { name, members } => {
                let lib: Table = g.raw_get(name)?;
                trim(lua, &lib, members)?;
                if name == "coroutine" {
                    guard_coroutine(lua, &lib)?;
                }
                if name == "string" {
                    strmatch::install(lua, &lib)?;
                    table::install_string(lua, &lib)?;
                    identity::install_string(lua, &lib)?;
                    charged::install_string(lua, &lib)?;
                }
                if name == "utf8" {
                    charged::install_utf8(lua, &lib)?;
                }
                if name == "table" {
                    table::install_table(lua, &lib)?;
                }
            }
            Item::GlobalsRef => g.raw_set("_G", &g)?,
            Item::Json => g.raw_set("json", json::create(lua)?)?,
            // Built below, once every function they capture is in place.
            Item::Alias { .. } | Item::Package | Item::Io => {}
        }
    }
    for item in spec.items {
        match *item {
            Item::Alias { name, target } => {
                let value = match target.split_once('.') {
                    Some((lib, member)) => g.raw_get::<Table>(lib)?.raw_get::<Value>(member)?,
                    None => g.raw_get::<Value>(target)?,
                };
                g.raw_set(name, value)?;
            }
            Item::Io => g.raw_set("io", aos::io(lua, opts.files.clone())?)?,
            _ => {}
        }
    }
    // Host tools, when the run has any: read-only namespaces and bare functions.
    crate::tools::lua::install(lua)?;
    if spec.items.contains(&Item::Package) {
        let builtin = lua.create_table()?;
        if !spec.items.contains(&Item::Json) {
            // Made on first `require("json")`: sandbox creation stays as cheap as before.
            let make = lua.create_function(|lua, ()| crate::stdlib::json::create(lua))?;
            builtin.raw_set("json", make)?;
        }
        let (package, require) = aos::package(
            lua,
            opts.files.clone(),
            builtin,
            opts.deterministic.is_some(),
        )?;
        let loaded: Table = package.raw_get("loaded")?;
        crate::vm::copy_table_entries(lua, &g, &loaded, spec.has_global("_G"))?;
        loaded.raw_set("package", &package)?;
        g.raw_set("package", package)?;
        g.raw_set("require", require)?;
    }
    if let Some(d) = opts.deterministic {
        aos::make_deterministic(lua, d)?;
        crate::vm::close_light_functions(lua)?;
        base::close_iterators(lua)?;
    }
    if opts.diagnostic {
        let mut libs: Vec<&str> = spec
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Library { name, .. } => Some(*name),
                Item::Json => Some("json"),
                Item::Io => Some("io"),
                _ => None,
            })
            .collect();
        libs.dedup();
        // The proxies are bookkeeping: raise the memory limit by what they cost.
        let before = crate::vm::current().map(|c| c.memory().0);
        crate::diag::install(lua, &libs)?;
        if let (Some(ctl), Some(before)) = (crate::vm::current(), before) {
            ctl.raise_memory_limit(ctl.memory().0.saturating_sub(before));
        }
    }
    Ok(())
}

fn trim(lua: &Lua, lib: &Table, members: &[&str]) -> mlua::Result<()> {
    retain_string_keys(lua, lib, |k| members.iter().any(|m| m.as_bytes() == k))
}

fn guard_coroutine(lua: &Lua, co: &Table) -> mlua::Result<()> {
    use crate::vm::hook;
    let entries: [(&str, mlua::ffi::lua_CFunction); 4] = [
        ("create", hook::co_create),
        ("resume", hook::co_resume),
        ("wrap", hook::co_wrap),
        ("close", hook::co_close),
    ];
    set_c_functions(lua, co, &entries, true)
}
