//! The `json` library: `json.encode`, `json.decode`, `json.null`, in Rust, under the
//! run's limits (decoded values are allocated by the Lua state and counted; encoded text
//! may not exceed the memory left).
//!
//! `json.decode` follows the input's rule for `null` (see `marshal::from_json`): `nil`
//! for the document itself and for object fields (absent), `json.null` in arrays, so
//! `if obj.x then` works; `json.decode(s, {null = json.null})` keeps `json.null`
//! everywhere, for a faithful round trip through `json.encode`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{Lua, Table, Value};

use crate::marshal::{self, Bounds, LuaSeed};
use crate::stdlib::base::with_plain_errors;
use crate::vm::current;

/// Nesting accepted by `json.encode`/`json.decode`.
pub(crate) const JSON_DEPTH: usize = 128;

/// Builds the `json` table.
pub(crate) fn create(lua: &Lua) -> mlua::Result<Table> {
    let json = lua.create_table()?;
    let encode = lua.create_function(|lua, value: Value| {
        guard(|| {
            let room = current().map_or(usize::MAX, |c| c.memory_remaining());
            // The text and the value it is made from both come out of what is left of
            // the heap.
            let bounds = Bounds::new(JSON_DEPTH, room);
            let j = match marshal::to_json(lua, &value, bounds) {
                Ok(j) => j,
                Err(e) => {
                    // Text larger than the heap left is the memory limit, whoever holds it.
                    if e.too_large || e.host {
                        if let Some(ctl) = current() {
                            ctl.note_memory_refusal();
                        }
                    }
                    return fail(lua, format!("json.encode: {e}"));
                }
            };
            let text = match serde_json::to_string(&j) {
                Ok(t) => t,
                Err(e) => return fail(lua, format!("json.encode: {e}")),
            };
            Ok((true, Value::String(lua.create_string(&text)?)))
        })
    })?;
    let decode = lua.create_function(|lua, (text, options): (Value, Value)| {
        guard(|| {
            let Value::String(text) = text else {
                return fail(
                    lua,
                    format!("json.decode: expected a string, got {}", type_name(&text)),
                );
            };
            let keep_null = match options {
                Value::Nil => false,
                Value::Table(t) => t.raw_get::<Value>("null")? == marshal::null(),
                other => {
                    return fail(
                        lua,
                        format!(
                            "json.decode: expected an options table as argument 2, got {}",
                            type_name(&other)
                        ),
                    )
                }
            };
            let empty_arrays = marshal::empty_array_set(lua)?;
            let bytes = text.as_bytes();
            // Decoding is linear in text the script already paid memory for: one unit
            // per 64 bytes against the deadline and the instruction budget, paid up
            // front.
            if let Some(msg) = crate::vm::native_charge(bytes.len().div_ceil(64) as u64) {
                return fail(lua, format!("json.decode: {msg}"));
            }
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let seed = LuaSeed {
                lua,
                empty_arrays: &empty_arrays,
                depth: JSON_DEPTH,
                keep_null,
                in_array: false,
            };
            match serde::de::DeserializeSeed::deserialize(seed, &mut de)
                .and_then(|v| de.end().map(|()| v))
            {
                Ok(v) => Ok((true, v)),
                Err(e) => fail(lua, format!("json.decode: {e}")),
            }
        })
    })?;
    json.raw_set("encode", with_plain_errors(lua, &encode)?)?;
    json.raw_set("decode", with_plain_errors(lua, &decode)?)?;
    json.raw_set("null", marshal::null())?;
    Ok(json)
}

/// A value's type as Lua names it (`json.null` is the userdata it is).
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

/// The `false, message` half of the plain-error convention.
fn fail(lua: &Lua, message: String) -> mlua::Result<(bool, Value)> {
    Ok((false, Value::String(lua.create_string(&message)?)))
}

/// Contains a panic in host code as an ordinary Lua error.
fn guard<T>(f: impl FnOnce() -> mlua::Result<T>) -> mlua::Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(mlua::Error::runtime("internal error in a json function")))
}
