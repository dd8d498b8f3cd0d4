//! The environment layer: turns a profile's list into a state's globals.
//!
//! Every run has a fresh state, so nothing a script changes can reach another run; the
//! builder only has to make sure nothing outside the list exists, and that each listed
//! name is the guarded version where the stock one is unsafe.

use mlua::{Lua, StdLib, Table, Value};

use crate::host::EnvOptions;
use crate::profile::{Item, ProfileSpec};
use crate::stdlib::{aos, base, charged, identity, json, recipe};
use crate::vm::{retain_string_keys, set_c_functions};

/// The stock libraries a profile needs opened.
pub(crate) fn libs_for(spec: &ProfileSpec) -> StdLib {
    recipe::LIBRARIES
        .iter()
        .filter(|(name, _)| spec.library(name).is_some())
        .fold(StdLib::NONE, |libs, (_, lib)| libs | *lib)
}

/// Replaces the state's globals with exactly what `spec` lists.
pub(crate) fn build(lua: &Lua, spec: &ProfileSpec, opts: &EnvOptions) -> mlua::Result<()> {
    let g = lua.globals();
    // Lock the string metatable of a stock `string` (the recipe makes it locked).
    if let Value::Table(mt) = crate::vm::string_metatable(lua)? {
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
                // Unless `Vm::new` opened the stock library (deterministic states do),
                // the table is made with exactly the profile's members, each already
                // its final version.
                if recipe::open(lua, &g, name, members)? {
                    continue;
                }
                let lib: Table = g.raw_get(name)?;
                trim(lua, &lib, members)?;
                // The recipe's guards, on the members the profile kept.
                let guards = recipe::guards(name);
                for list in guards.functions {
                    set_c_functions(lua, &lib, list, true)?;
                }
                recipe::wrap_closures(lua, &lib, guards.closures)?;
                if !guards.charged.is_empty() {
                    charged::wrap(lua, &lib, guards.charged)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mlua::ffi;

    use super::*;
    use crate::profile::Profile;
    use crate::vm::{Activation, Vm};

    /// A state with `profile`'s environment; with `stock`, its libraries opened by the
    /// stock `luaopen_*` functions first (then trimmed and guarded), as before the recipe.
    fn built(profile: Profile, stock: bool) -> Vm {
        let spec = profile.spec();
        let vm = Vm::new(libs_for(spec), usize::MAX, None).unwrap();
        {
            let _active = Activation::new(vm.ctl());
            vm.begin_call(None);
            if stock {
                vm.lua().load_std_libs(libs_for(spec)).unwrap();
            }
            build(vm.lua(), spec, &EnvOptions::default()).unwrap();
        }
        vm
    }

    /// What a value is, as far as a script or an error message can tell: functions by
    /// their C function, whether light, and their upvalues (the same addresses in every
    /// state of the process), tables by their type.
    fn describe(lua: &Lua, value: &Value) -> String {
        let Value::Function(f) = value else {
            return match value {
                Value::String(s) => format!("string {:?}", s.as_bytes()),
                Value::Integer(i) => format!("integer {i}"),
                Value::Number(n) => format!("number {n}"),
                Value::Boolean(b) => format!("boolean {b}"),
                other => other.type_name().to_string(),
            };
        };
        let mut desc = [(0usize, 0i64, 0usize); 4];
        let (mut ups, mut light, mut cfn) = (0usize, false, 0usize);
        // SAFETY: `exec_raw` pushes `f` at 1; the closure reads it and its upvalues with
        // calls that cannot raise and writes plain values.
        unsafe {
            lua.exec_raw::<()>(f, |l| {
                cfn = ffi::lua_tocfunction(l, 1).map_or(0, |f| f as usize);
                light = cfn != 0 && ffi::lua_topointer(l, 1) as usize == cfn;
                while ups < desc.len() && !ffi::lua_getupvalue(l, 1, ups as i32 + 1).is_null() {
                    let t = ffi::lua_type(l, -1);
                    desc[ups] = (
                        t as usize,
                        if t == ffi::LUA_TNUMBER {
                            ffi::lua_tointeger(l, -1)
                        } else {
                            0
                        },
                        match t {
                            ffi::LUA_TFUNCTION => {
                                ffi::lua_tocfunction(l, -1).map_or(0, |f| f as usize)
                            }
                            ffi::LUA_TUSERDATA => ffi::lua_rawlen(l, -1),
                            _ => 0,
                        },
                    );
                    ffi::lua_pop(l, 1);
                    ups += 1;
                }
            })
            .unwrap();
        }
        format!(
            "function {cfn:#x} light {light} upvalues {:?}",
            &desc[..ups]
        )
    }

    /// Every global, every member of a table global, the string metatable and the
    /// registry's `_LOADED`, described.
    fn inventory(vm: &Vm) -> BTreeMap<String, String> {
        let lua = vm.lua();
        let mut all = BTreeMap::new();
        let add = |prefix: &str, t: &Table, all: &mut BTreeMap<String, String>| {
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.unwrap();
                let k = match k {
                    Value::String(s) => s.to_string_lossy(),
                    other => format!("[{other:?}]"),
                };
                all.insert(format!("{prefix}{k}"), describe(lua, &v));
            }
        };
        let g = lua.globals();
        add("", &g, &mut all);
        for pair in g.pairs::<String, Value>() {
            if let (k, Value::Table(t)) = pair.unwrap() {
                add(&format!("{k}."), &t, &mut all);
            }
        }
        if let Value::Table(mt) = crate::vm::string_metatable(lua).unwrap() {
            add("(string metatable).", &mt, &mut all);
            let string: Value = g.raw_get("string").unwrap();
            assert_eq!(mt.raw_get::<Value>("__index").unwrap(), string);
        }
        let loaded: Table = lua.named_registry_value("_LOADED").unwrap();
        add("(_LOADED).", &loaded, &mut all);
        for pair in loaded.pairs::<String, Value>() {
            let (name, lib) = pair.unwrap();
            if name != "_G" {
                assert_eq!(g.raw_get::<Value>(&*name).unwrap(), lib, "_LOADED.{name}");
            }
        }
        all
    }

    /// The recipe makes what opening, trimming and guarding the stock libraries made:
    /// fails when a Lua or moonjail change lets the two drift apart.
    #[test]
    fn recipe_matches_the_stock_libraries_in_every_profile() {
        for profile in Profile::ALL {
            let made = inventory(&built(profile, false));
            let stock = inventory(&built(profile, true));
            let keys: std::collections::BTreeSet<&String> =
                made.keys().chain(stock.keys()).collect();
            let drift: Vec<_> = keys
                .into_iter()
                .filter(|k| made.get(*k) != stock.get(*k))
                .map(|k| format!("{k}: recipe {:?}, stock {:?}", made.get(k), stock.get(k)))
                .collect();
            assert!(drift.is_empty(), "{profile}:\n{}", drift.join("\n"));
            assert!(made.contains_key("string.format"), "{profile}");
        }
    }
}
