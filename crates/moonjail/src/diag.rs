//! Diagnostic mode: records which globals a script read and wrote, which library members
//! it used, which globals it looked for and did not find, and what it required.
//!
//! The globals table and each library table are replaced by empty proxies whose
//! metamethods (C functions, so they run no counted instruction) record the access and
//! forward it to the real table with the same semantics (including the real table's own
//! metatable). The raw functions, `next`, `pairs` and the metatable functions see through
//! the proxies, so a script behaves the same with or without diagnostics. The records
//! live on the host heap and the proxies' few bytes are added to the memory limit: the
//! bookkeeping costs the script nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use crate::vm::{set_registry_globals, string_metatable};
use serde::{Deserialize, Serialize};

/// What a run touched, by name and count. Each map keeps at most 4096 distinct names
/// of at most 256 bytes (the records live on the host, outside the script's memory
/// limit); accesses past that are counted under `"(more names, not recorded)"`, and at
/// most 4096 `require`s are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Diagnostics {
    /// Globals read that existed, with how often.
    pub globals_read: BTreeMap<String, u64>,
    /// Globals assigned, with how often.
    pub globals_written: BTreeMap<String, u64>,
    /// Library members used (`string.format`), with how often.
    pub library: BTreeMap<String, u64>,
    /// Globals and library members read that did not exist: missing dependencies.
    pub missing: BTreeMap<String, u64>,
    /// Every `require`, in order, and whether it found the module.
    pub require: Vec<RequireRecord>,
}

/// One `require` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RequireRecord {
    /// The module name.
    pub name: String,
    /// Whether a module was found (loaded, preloaded or host-provided).
    pub found: bool,
}

/// The handle kept in the state's app data while diagnostics are on.
#[derive(Clone)]
pub(crate) struct DiagHandle {
    pub(crate) records: Rc<RefCell<Diagnostics>>,
    /// The real globals table behind the proxy.
    pub(crate) globals: Table,
}

/// Most distinct names one map records, and the longest name kept: the records live on
/// the host heap, outside the script's memory limit, and a script chooses the names.
/// Past the count, accesses are tallied under [`MORE_NAMES`].
pub(crate) const MAX_RECORDED_NAMES: usize = 4096;
const MAX_NAME_BYTES: usize = 256;
/// The key under which accesses to names past [`MAX_RECORDED_NAMES`] are counted.
pub(crate) const MORE_NAMES: &str = "(more names, not recorded)";

fn bump(map: &mut BTreeMap<String, u64>, mut key: String) {
    if key.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
        key.push('…');
    }
    if !map.contains_key(&key) && map.len() >= MAX_RECORDED_NAMES {
        key = MORE_NAMES.to_string();
    }
    *map.entry(key).or_insert(0) += 1;
}

/// The real globals table: behind the proxy when diagnostics are on.
pub(crate) fn real_globals(lua: &Lua) -> Table {
    match lua.app_data_ref::<DiagHandle>() {
        Some(h) => h.globals.clone(),
        None => lua.globals(),
    }
}

/// Takes the records of the run, if diagnostics are on.
pub(crate) fn take(lua: &Lua) -> Option<Diagnostics> {
    lua.app_data_ref::<DiagHandle>()
        .map(|h| std::mem::take(&mut *h.records.borrow_mut()))
}

/// Records a `require` (called by the package prelude).
pub(crate) fn note_require(lua: &Lua, name: &str, found: bool) {
    if let Some(h) = lua.app_data_ref::<DiagHandle>() {
        let mut records = h.records.borrow_mut();
        if records.require.len() < MAX_RECORDED_NAMES {
            let mut end = name.len().min(MAX_NAME_BYTES);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            let name = name[..end].to_string();
            records.require.push(RequireRecord { name, found });
        }
    }
}

/// Installs the proxies. `libs` are the global names of the library tables to watch.
pub(crate) fn install(lua: &Lua, libs: &[&str]) -> mlua::Result<()> {
    let g = lua.globals();
    let records = Rc::new(RefCell::new(Diagnostics::default()));
    let real_of = lua.create_table()?;
    let stock_next: Function = lua
        .load("return next")
        .set_name("=[moonjail diagnostics]")
        .call(())?;

    let loaded: Option<Table> = match g.raw_get::<Value>("package")? {
        Value::Table(p) => p.raw_get::<Option<Table>>("loaded")?,
        _ => None,
    };
    for &name in libs {
        let Value::Table(real) = g.raw_get::<Value>(name)? else {
            continue;
        };
        let proxy = make_proxy(lua, &real, Some(name), &records, &stock_next)?;
        real_of.raw_set(&proxy, &real)?;
        g.raw_set(name, &proxy)?;
        if let Some(loaded) = &loaded {
            loaded.raw_set(name, &proxy)?;
        }
        if name == "string" {
            if let Value::Table(mt) = string_metatable(lua)? {
                mt.raw_set("__index", &proxy)?;
            }
        }
    }
    let gp = make_proxy(lua, &g, None, &records, &stock_next)?;
    real_of.raw_set(&gp, &g)?;
    if g.raw_get::<Value>("_G")?.is_table() {
        g.raw_set("_G", &gp)?;
    }
    if let Some(loaded) = &loaded {
        if loaded.raw_get::<Value>("_G")?.is_table() {
            loaded.raw_set("_G", &gp)?;
        }
    }
    see_through(lua, &g, &real_of)?;
    set_registry_globals(lua, &gp)?;
    lua.set_app_data(DiagHandle {
        records,
        globals: g,
    });
    Ok(())
}

fn make_proxy(
    lua: &Lua,
    real: &Table,
    lib: Option<&str>,
    records: &Rc<RefCell<Diagnostics>>,
    stock_next: &Function,
) -> mlua::Result<Table> {
    let mt = lua.create_table()?;
    let lib_name = lib.map(str::to_string);
    {
        let real = real.clone();
        let records = records.clone();
        let lib_name = lib_name.clone();
        mt.raw_set(
            "__index",
            lua.create_function(move |_, (_p, k): (Value, Value)| {
                let v: Value = real.get(&k)?;
                if let Value::String(s) = &k {
                    let key = s.to_string_lossy();
                    let mut r = records.borrow_mut();
                    let full = match &lib_name {
                        Some(l) => format!("{l}.{key}"),
                        None => key,
                    };
                    match (&lib_name, v.is_nil()) {
                        (_, true) => bump(&mut r.missing, full),
                        (Some(_), false) => bump(&mut r.library, full),
                        (None, false) => bump(&mut r.globals_read, full),
                    }
                }
                Ok(v)
            })?,
        )?;
    }
    {
        let real = real.clone();
        let records = records.clone();
        let lib_name = lib_name.clone();
        mt.raw_set(
            "__newindex",
            lua.create_function(move |_, (_p, k, v): (Value, Value, Value)| {
                if let Value::String(s) = &k {
                    let key = s.to_string_lossy();
                    let full = match &lib_name {
                        Some(l) => format!("{l}.{key}"),
                        None => key,
                    };
                    bump(&mut records.borrow_mut().globals_written, full);
                }
                real.set(k, v)
            })?,
        )?;
    }
    {
        let real = real.clone();
        let next = stock_next.clone();
        mt.raw_set(
            "__pairs",
            lua.create_function(move |_, _p: Value| Ok((next.clone(), real.clone(), Value::Nil)))?,
        )?;
    }
    {
        let real = real.clone();
        mt.raw_set(
            "__len",
            lua.create_function(move |_, _p: Value| Ok(real.raw_len()))?,
        )?;
    }
    let proxy = lua.create_table()?;
    proxy.set_metatable(Some(mt))?;
    Ok(proxy)
}

/// Makes the raw functions, `next` and the metatable functions treat a proxy as the
/// table behind it.
fn see_through(lua: &Lua, g: &Table, real_of: &Table) -> mlua::Result<()> {
    for name in [
        "rawget",
        "rawset",
        "rawlen",
        "next",
        "getmetatable",
        "setmetatable",
    ] {
        let Value::Function(stock) = g.raw_get::<Value>(name)? else {
            continue;
        };
        let real_of = real_of.clone();
        let wrapped = lua.create_function(move |_, mut args: MultiValue| {
            if let Some(first) = args.front_mut() {
                if let Value::Table(t) = &*first {
                    if let Value::Table(real) = real_of.raw_get::<Value>(t)? {
                        let proxy = std::mem::replace(first, Value::Table(real));
                        let out: MultiValue = stock.call(args)?;
                        // setmetatable returns its first argument: hand back the proxy.
                        if name == "setmetatable" {
                            return Ok(MultiValue::from_iter([proxy]));
                        }
                        return Ok(out);
                    }
                }
            }
            stock.call(args)
        })?;
        g.raw_set(name, wrapped)?;
    }
    Ok(())
}
