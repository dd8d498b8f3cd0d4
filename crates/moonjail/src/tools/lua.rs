//! The Lua side of host tools: read-only namespaces and the functions in them.
//!
//! A namespace (`weather` for `weather.lookup`) is a userdata, not a table: a table can
//! always be written with `rawset`, which would let a script shadow a tool (only for
//! itself, but "cannot be modified" should hold without footnotes). The userdata has no
//! storage of its own and a metatable the script cannot reach:
//!
//! - `__index`: a hidden table of the members (tools and nested namespaces);
//! - `__newindex`: an error (`weather.x = nil`, `weather.lookup = f`);
//! - `__metatable`: a string, so `getmetatable(weather)` returns it and the metatable
//!   itself (and so the hidden table) stays out of reach; `setmetatable`, `rawset`,
//!   `rawget` and `next` refuse a userdata outright;
//! - `__pairs`: iterates the members in name order without handing out the table;
//! - `__tostring`: `tool namespace: weather`.
//!
//! `type(weather)` is therefore `"userdata"`. Replacing the global (`weather = {}`)
//! changes only the script's own globals: the host reads nothing back from them.
//!
//! Tool functions raise plain string errors (`pcall` gets the message, `"x" .. err`
//! works) through [`with_plain_errors`]; a panic anywhere on the way is contained.
//!
//! The namespaces are built once per state, from the registry's names; the [`ToolRun`]
//! a call goes to (its quotas, deadline and audit) is looked up when the call is made.
//! A run attaches one before its environment is built; a session attaches a fresh one
//! before each of its calls, so each call has its own deadline and its own record.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use mlua::{ffi, Function, Lua, MultiValue, Table, Value};
use serde_json::Value as Json;

use super::{ToolError, ToolRun};
use crate::marshal::{self, Bounds};
use crate::stdlib::base::with_plain_errors;
use crate::vm::{current, native_checkpoint};

/// What a metatable's `__metatable` field shows the script.
const LOCKED: &str = "locked: tool namespaces cannot be changed";

/// The tools of the call in progress, attached to the state.
struct Attached {
    run: Arc<ToolRun>,
    /// Bounds for each call's arguments (all of them together).
    args: Bounds,
    /// Deepest result accepted.
    result_depth: usize,
}

/// Sends the tool calls `lua` makes to `run` from now on. Attached before the
/// environment is built, it also makes the tools part of the environment [`install`]
/// builds; attached again (between calls of a session) it replaces the run, which must
/// come from the same registry.
pub(crate) fn attach(lua: &Lua, run: Arc<ToolRun>, args: Bounds, result_depth: usize) {
    lua.set_app_data(Attached {
        run,
        args,
        result_depth,
    });
}

/// The attached run and bounds.
fn attached(lua: &Lua) -> Option<(Arc<ToolRun>, Bounds, usize)> {
    lua.app_data_ref::<Attached>()
        .map(|a| (a.run.clone(), a.args, a.result_depth))
}

/// Installs the attached tools as globals: namespaces, and bare tools as functions.
/// Nothing happens when no tools were attached.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let Some((run, _, _)) = attached(lua) else {
        return Ok(());
    };
    let mut root = Node::default();
    for name in run.registry().names() {
        root.insert(name);
    }
    let g = lua.globals();
    for (key, child) in &root.children {
        let value = build(lua, key, child)?;
        g.raw_set(key.as_str(), value)?;
    }
    Ok(())
}

/// The names, as a tree: a leaf is a tool, an inner node a namespace.
#[derive(Default)]
struct Node {
    children: std::collections::BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, name: &str) {
        let mut node = self;
        for seg in name.split('.') {
            node = node.children.entry(seg.to_string()).or_default();
        }
    }
}

fn build(lua: &Lua, path: &str, node: &Node) -> mlua::Result<Value> {
    if node.children.is_empty() {
        return tool_function(lua, path.to_string()).map(Value::Function);
    }
    let members = lua.create_table()?;
    for (key, child) in &node.children {
        let value = build(lua, &format!("{path}.{key}"), child)?;
        members.raw_set(key.as_str(), value)?;
    }
    namespace(lua, path, members, node.children.keys().cloned().collect())
}

/// A read-only namespace over `members` (see the module docs).
fn namespace(lua: &Lua, path: &str, members: Table, keys: Vec<String>) -> mlua::Result<Value> {
    let mt = lua.create_table()?;
    mt.raw_set("__index", &members)?;
    let message = format!("tool namespace `{path}` is read-only");
    let newindex = lua
        .create_function(move |lua, ()| Ok((false, Value::String(lua.create_string(&message)?))))?;
    mt.raw_set("__newindex", with_plain_errors(lua, &newindex)?)?;
    mt.raw_set("__metatable", LOCKED)?;
    let iter_members = members.clone();
    let iter = lua.create_function(move |lua, (_, key): (Value, Value)| {
        guard(|| {
            let next = match &key {
                Value::Nil => keys.first(),
                Value::String(k) => {
                    let k = k.as_bytes();
                    let at = keys.iter().position(|x| x.as_bytes() == &k[..]);
                    at.and_then(|i| keys.get(i + 1))
                }
                _ => None,
            };
            match next {
                Some(k) => Ok((
                    Value::String(lua.create_string(k)?),
                    iter_members.raw_get::<Value>(k.as_str())?,
                )),
                None => Ok((Value::Nil, Value::Nil)),
            }
        })
    })?;
    let pairs = lua.create_function(move |_, this: Value| Ok((iter.clone(), this, Value::Nil)))?;
    mt.raw_set("__pairs", pairs)?;
    let label = format!("tool namespace: {path}");
    mt.raw_set(
        "__tostring",
        lua.create_function(move |_, _: Value| Ok(label.clone()))?,
    )?;
    // SAFETY: `exec_raw` pushes `mt` at index 1 and runs the closure protected. A new
    // userdata with no bytes and no user values gets `mt` as its metatable; the closure
    // leaves exactly that userdata on the stack, which becomes the result.
    unsafe {
        lua.exec_raw::<Value>(&mt, |l| {
            ffi::lua_newuserdatauv(l, 0, 0);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_setmetatable(l, -2);
            ffi::lua_remove(l, 1);
        })
    }
}

/// The Lua function of tool `name`.
fn tool_function(lua: &Lua, name: String) -> mlua::Result<Function> {
    let f = lua.create_function(move |lua, values: MultiValue| {
        guard(|| match attached(lua) {
            Some((run, args, depth)) => call(lua, &run, args, depth, &name, values),
            None => fail(lua, format!("{name}: no tools are attached to this state")),
        })
    })?;
    with_plain_errors(lua, &f)
}

/// One call from Lua: `Ok((true, result))`, or `Ok((false, message))` for an error the
/// script may catch. Only errors of the state itself (out of memory) are raised as such.
fn call(
    lua: &Lua,
    run: &ToolRun,
    bounds: Bounds,
    depth: usize,
    name: &str,
    values: MultiValue,
) -> mlua::Result<(bool, Value)> {
    if let Some(stop) = native_checkpoint() {
        return fail(lua, stop.to_string());
    }
    let mut values: Vec<Value> = values.into_iter().collect();
    // `f(a, nil)` and `f(a)` mean the same to a Lua function: trailing nils are dropped,
    // so optional arguments stay optional. Other nils become JSON nulls.
    while matches!(values.last(), Some(Value::Nil)) {
        values.pop();
    }
    let result = run.call_prepared(name, || {
        let mut budget = bounds.bytes;
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let b = Bounds {
                bytes: budget,
                ..bounds
            };
            let j = marshal::to_json(lua, v, b)
                .map_err(|e| ToolError::new(format!("argument {}: {e}", i + 1)))?;
            budget = budget.saturating_sub(approx_len(&j));
            out.push(j);
        }
        Ok(out)
    });
    // A deferred tool's answer: the run stops here, for good (a `pcall` around the call
    // cannot go on), and its outcome says it is suspended.
    if matches!(&result, Err(e) if e.suspend) {
        if let Some(ctl) = current() {
            ctl.set_stop(crate::vm::Stop::Suspended);
            ctl.arm_all();
        }
    }
    // A call cannot outlive the run: past the deadline, the run ends as a timeout, even
    // if the watchdog has not fired yet.
    if run.deadline().is_some_and(|d| Instant::now() >= d) {
        if let Some(ctl) = current() {
            ctl.expire();
        }
    }
    if let Some(stop) = native_checkpoint() {
        return fail(lua, stop.to_string());
    }
    match result {
        Ok(json) => match marshal::from_json(lua, &json, depth) {
            Ok(v) => Ok((true, v)),
            Err(e @ mlua::Error::MemoryError(_)) => Err(e),
            Err(e) => fail(
                lua,
                format!("{name}: result: {}", crate::error::mlua_message(&e)),
            ),
        },
        Err(e) => fail(lua, format!("{name}: {}", e.message())),
    }
}

/// A cheap upper bound of `j`'s JSON size (for the argument budget).
fn approx_len(j: &Json) -> usize {
    usize::try_from(super::json_len(j)).unwrap_or(usize::MAX)
}

fn fail(lua: &Lua, message: String) -> mlua::Result<(bool, Value)> {
    Ok((false, Value::String(lua.create_string(&message)?)))
}

/// Contains a panic in host code as an ordinary Lua error.
fn guard<T>(f: impl FnOnce() -> mlua::Result<T>) -> mlua::Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(mlua::Error::runtime("internal error in a host tool")))
}
