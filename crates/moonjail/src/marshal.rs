//! JSON ⇄ Lua, reading Lua values with raw access only: no metamethod ever runs on the
//! host side, cycles are reported with their path, and every value JSON cannot hold is an
//! error, never silently dropped.
//!
//! Rules: JSON objects ⇄ tables with string keys; arrays ⇄ sequences; integers stay
//! integers; `null` ⇄ `json.null`. A table whose keys are exactly `1..n` (n ≥ 1) becomes
//! an array; any other table an object, with integer and float keys written as strings.
//! An empty table is `{}`, unless it came from a JSON array: arrays are remembered in a
//! weak set only the host can reach (a metatable marker could be reached and tampered
//! with by the script), so `[]`, and an array the script emptied, stay arrays. Two keys
//! that would become the same JSON key (`1` and `"1"`) are an error.

use std::fmt;

use mlua::{LightUserData, Lua, Table, Value};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value as Json};

use crate::vm::Meter;

/// Registry key of the weak set of tables that came from JSON arrays.
pub(crate) const EMPTY_ARRAYS_KEY: &str = "moonjail.json.empty_arrays";

/// `json.null`: the NULL light userdata.
pub(crate) fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// Bounds for one conversion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Deepest nesting of tables/arrays accepted.
    pub depth: usize,
    /// Largest JSON text accepted, counted as it would be written (escapes included).
    pub bytes: usize,
    /// Most host memory the converted value may take. A table reachable many times
    /// (`t = {t, t}` twenty times over) is one table in Lua but a million in JSON: the
    /// host pays per copy, so the copies are counted against this.
    pub host_bytes: usize,
}

impl Bounds {
    /// Depth and text bounds, with the host bound equal to the text bound.
    pub(crate) fn new(depth: usize, bytes: usize) -> Bounds {
        Bounds {
            depth,
            bytes,
            host_bytes: bytes,
        }
    }
}

/// Stack left below which a conversion continues on a new segment, and that segment's
/// size. (Inside a worker, the first call, during warm-up before the lockdown, is what
/// reads the thread's stack bounds: `stacker` caches them per thread.)
const STACK_RED_ZONE: usize = 64 << 10;
/// Levels converted without a stack check: a thread has room for these.
const SHALLOW_LEVELS: usize = 16;
const STACK_SEGMENT: usize = 1 << 20;

/// Host bytes of one JSON node beyond its text: the `Value` itself.
const NODE_HOST_BYTES: usize = std::mem::size_of::<Json>();
/// Host bytes of one object entry beyond its key's text: the key `String` and the map's
/// share of a B-tree node.
const ENTRY_HOST_BYTES: usize = std::mem::size_of::<String>() + 24;

/// The length of `text` as a JSON string literal, quotes and escapes included, as
/// moonjail writes it (U+2028, U+2029 and U+0085 escaped too, see `to_json_line`).
/// Counted over bytes, not characters: it runs on every string marshaled.
pub(crate) fn escaped_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut n = 2 + bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        n += match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            // U+0085 (C2 85): 2 bytes become 6.
            0xc2 if bytes.get(i + 1) == Some(&0x85) => 4,
            // U+2028, U+2029 (E2 80 A8/A9): 3 bytes become 6.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                3
            }
            _ => 0,
        };
    }
    n
}

/// A value that cannot be turned into JSON, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarshalError {
    pub path: String,
    pub message: String,
    /// The value exceeded the byte bound (rather than being unrepresentable).
    pub too_large: bool,
    /// The value exceeded the host-memory bound.
    pub host: bool,
}

impl fmt::Display for MarshalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render_path(segs: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in segs {
        match seg {
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::Key(k)
                if !k.is_empty()
                    && !k.starts_with(|c: char| c.is_ascii_digit())
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                s.push('.');
                s.push_str(k);
            }
            Seg::Key(k) => s.push_str(&format!("[{}]", Json::String(k.clone()))),
        }
    }
    s
}

/// Converts a Lua value to JSON under `bounds`.
pub(crate) fn to_json(lua: &Lua, value: &Value, bounds: Bounds) -> Result<Json, MarshalError> {
    to_json_all(lua, std::iter::once(value), bounds)
        .map(|mut all| all.pop().unwrap_or(Json::Null))
        .map_err(|(_, e)| e)
}

/// Converts several values (the results of one call) under one budget: `bounds` cover
/// them together, counted as they are converted. On failure, the position of the value
/// that broke them.
pub(crate) fn to_json_all<'a>(
    lua: &Lua,
    values: impl ExactSizeIterator<Item = &'a Value>,
    bounds: Bounds,
) -> Result<Vec<Json>, (usize, MarshalError)> {
    let mut w = Walker {
        bounds,
        lua: lua.clone(),
        empty_arrays: None,
        open: Vec::new(),
        path: Vec::new(),
        bytes: 0,
        host: 0,
        meter: Meter::new(),
    };
    let count = values.len();
    let mut out = Vec::with_capacity(count);
    for (i, value) in values.enumerate() {
        out.push(w.walk(value).map_err(|e| (i, e))?);
    }
    // What was counted since the last settlement is paid too, so many small conversions
    // (a loop around `json.encode`) use up an instruction budget.
    if let Some(msg) = w.meter.finish() {
        return Err((count.saturating_sub(1), w.fail(msg)));
    }
    Ok(out)
}

struct Walker {
    bounds: Bounds,
    lua: Lua,
    /// The set of tables `json.decode` made from empty arrays, looked up at the first
    /// empty table (most conversions meet none, and a session call's result is often a
    /// scalar: the registry lookup was a tenth of such a call).
    empty_arrays: Option<Option<Table>>,
    open: Vec<*const std::ffi::c_void>,
    path: Vec<Seg>,
    bytes: usize,
    host: usize,
    /// The conversion's work against the deadline and the instruction budget: one unit
    /// a value, one per 64 bytes of string.
    meter: Meter,
}

impl Walker {
    fn fail(&self, message: impl Into<String>) -> MarshalError {
        MarshalError {
            path: render_path(&self.path),
            message: message.into(),
            too_large: false,
            host: false,
        }
    }

    fn add_host(&mut self, n: usize) -> Result<(), MarshalError> {
        self.host = self.host.saturating_add(n);
        if self.host > self.bounds.host_bytes {
            let mut e = self.fail(format!(
                "the value would take more than {} bytes of host memory as JSON (a table \
                 reachable many times is copied each time)",
                self.bounds.host_bytes
            ));
            e.host = true;
            return Err(e);
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: usize) -> Result<(), MarshalError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.bounds.bytes {
            let mut e = self.fail(format!(
                "the JSON would be larger than the {} byte limit",
                self.bounds.bytes
            ));
            e.too_large = true;
            return Err(e);
        }
        Ok(())
    }

    fn walk(&mut self, value: &Value) -> Result<Json, MarshalError> {
        // One level of a table is several kilobytes of stack in a debug build: past a
        // few levels, grow the stack instead of trusting the thread to have
        // `result_depth` times that. (Not for shallow values: `stacker`'s first call on
        // a thread reads the stack's bounds from /proc, ~30 µs.)
        if self.open.len() < SHALLOW_LEVELS {
            return self.walk_value(value);
        }
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || self.walk_value(value))
    }

    fn walk_value(&mut self, value: &Value) -> Result<Json, MarshalError> {
        if let Some(msg) = self.meter.charge(1) {
            return Err(self.fail(msg));
        }
        self.add_host(NODE_HOST_BYTES)?;
        match value {
            Value::Nil => {
                self.add_bytes(4)?;
                Ok(Json::Null)
            }
            Value::Boolean(b) => {
                self.add_bytes(5)?;
                Ok(Json::Bool(*b))
            }
            Value::Integer(i) => {
                self.add_bytes(20)?;
                Ok(Json::from(*i))
            }
            Value::Number(f) => {
                self.add_bytes(24)?;
                Number::from_f64(*f).map(Json::Number).ok_or_else(|| {
                    self.fail(format!(
                        "{f} cannot be represented in JSON (NaN and infinities have no JSON form)"
                    ))
                })
            }
            Value::String(s) => {
                let bytes = s.as_bytes();
                self.add_host(bytes.len())?;
                if let Some(msg) = self.meter.charge_bytes(bytes.len()) {
                    return Err(self.fail(msg));
                }
                match std::str::from_utf8(&bytes) {
                    Ok(text) => {
                        self.add_bytes(escaped_len(text))?;
                        Ok(Json::String(text.to_owned()))
                    }
                    Err(e) => Err(self.fail(format!(
                        "string is not valid UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ))),
                }
            }
            Value::LightUserData(p) if p.0.is_null() => {
                self.add_bytes(4)?;
                Ok(Json::Null)
            }
            Value::Table(t) => self.table(t),
            other => Err(self.fail(format!(
                "a {} cannot be represented in JSON",
                other.type_name()
            ))),
        }
    }

    fn table(&mut self, t: &Table) -> Result<Json, MarshalError> {
        let ptr = t.to_pointer();
        if self.open.contains(&ptr) {
            return Err(self.fail("the table contains itself (a cycle)"));
        }
        if self.open.len() >= self.bounds.depth {
            return Err(self.fail(format!(
                "nested deeper than the limit of {} levels",
                self.bounds.depth
            )));
        }
        self.open.push(ptr);
        let r = self.table_inner(t);
        self.open.pop();
        r
    }

    fn table_inner(&mut self, t: &Table) -> Result<Json, MarshalError> {
        let len = t.raw_len();
        let mut count = 0usize;
        // An array needs keys exactly 1..n: count the integer keys in range; `#t` alone
        // is fooled by holes (`{nil, 2, 3}`) and by extra keys.
        let mut in_range = 0usize;
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| self.fail(e.to_string()))?;
            count += 1;
            if matches!(k, Value::Integer(i) if i >= 1 && (i as u64) <= len as u64) {
                in_range += 1;
            }
        }
        self.add_bytes(2)?;
        if count == 0 {
            let lua = &self.lua;
            let is_array = self
                .empty_arrays
                .get_or_insert_with(|| {
                    lua.named_registry_value::<Option<Table>>(EMPTY_ARRAYS_KEY)
                        .ok()
                        .flatten()
                })
                .as_ref()
                .is_some_and(|set| matches!(set.raw_get::<Value>(t), Ok(Value::Boolean(true))));
            return Ok(if is_array {
                Json::Array(Vec::new())
            } else {
                Json::Object(Map::new())
            });
        }
        if count == len && in_range == len {
            let mut out = Vec::with_capacity(len);
            for i in 1..=len {
                let v: Value = t.raw_get(i).map_err(|e| self.fail(e.to_string()))?;
                self.path.push(Seg::Index(i));
                let j = self.walk(&v);
                self.path.pop();
                out.push(j?);
                self.add_bytes(1)?;
            }
            return Ok(Json::Array(out));
        }
        let mut map = Map::new();
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| self.fail(e.to_string()))?;
            let key = match &k {
                Value::String(s) => match std::str::from_utf8(&s.as_bytes()) {
                    Ok(text) => text.to_owned(),
                    Err(_) => return Err(self.fail("a table key is not valid UTF-8")),
                },
                Value::Integer(i) => i.to_string(),
                Value::Number(f) if f.is_finite() => {
                    if f.fract() == 0.0 && f.abs() < 1e15 {
                        format!("{f:.1}")
                    } else {
                        f.to_string()
                    }
                }
                other => {
                    return Err(self.fail(format!(
                        "a table key of type {} cannot be a JSON object key",
                        other.type_name()
                    )))
                }
            };
            self.add_bytes(escaped_len(&key) + 2)?;
            self.add_host(key.len() + ENTRY_HOST_BYTES)?;
            if map.contains_key(&key) {
                return Err(self.fail(format!("two table keys become the same JSON key {:?}", key)));
            }
            self.path.push(Seg::Key(key.clone()));
            let j = self.walk(&v);
            self.path.pop();
            map.insert(key, j?);
        }
        Ok(Json::Object(map))
    }
}

/// Converts host JSON to a Lua value (input, call arguments, tool results), nesting at
/// most `depth` levels.
///
/// JSON `null` becomes `nil` where a script looks for a value (the value itself, an
/// object's field, which is then absent), so that `x or default` and `if t.x then`
/// work as Lua code expects; inside an array it becomes [`null`] (`json.null`), which
/// keeps the positions of the elements after it.
pub(crate) fn from_json(lua: &Lua, value: &Json, depth: usize) -> mlua::Result<Value> {
    // The array set is made on the first array only: most inputs have none, and sandbox
    // creation is a hot path.
    let mut arrays = None;
    build(lua, &mut arrays, value, depth, 0, Value::Nil)
}

fn build(
    lua: &Lua,
    arrays: &mut Option<Table>,
    value: &Json,
    depth: usize,
    level: usize,
    null_is: Value,
) -> mlua::Result<Value> {
    // The first levels need no stack check (see `Walker::walk`).
    if level < SHALLOW_LEVELS {
        return build_value(lua, arrays, value, depth, level, null_is);
    }
    stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
        build_value(lua, arrays, value, depth, level, null_is)
    })
}

fn build_value(
    lua: &Lua,
    arrays: &mut Option<Table>,
    value: &Json,
    depth: usize,
    level: usize,
    null_is: Value,
) -> mlua::Result<Value> {
    Ok(match value {
        Json::Null => null_is,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => number(n),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let depth = descend(depth)?;
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, build(lua, arrays, item, depth, level + 1, null())?)?;
            }
            let set = match arrays {
                Some(set) => set,
                None => arrays.insert(empty_array_set(lua)?),
            };
            set.raw_set(&t, true)?;
            Value::Table(t)
        }
        Json::Object(map) => {
            let depth = descend(depth)?;
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                if !v.is_null() {
                    t.raw_set(
                        k.as_str(),
                        build(lua, arrays, v, depth, level + 1, Value::Nil)?,
                    )?;
                }
            }
            Value::Table(t)
        }
    })
}

fn descend(depth: usize) -> mlua::Result<usize> {
    depth
        .checked_sub(1)
        .ok_or_else(|| mlua::Error::runtime("JSON nested too deeply"))
}

fn number(n: &Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Integer(i),
        None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// The weak set of empty tables that came from JSON arrays (created on first use).
pub(crate) fn empty_array_set(lua: &Lua) -> mlua::Result<Table> {
    if let Some(t) = lua.named_registry_value::<Option<Table>>(EMPTY_ARRAYS_KEY)? {
        return Ok(t);
    }
    let set = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.raw_set("__mode", "k")?;
    set.set_metatable(Some(mt))?;
    lua.set_named_registry_value(EMPTY_ARRAYS_KEY, &set)?;
    Ok(set)
}

/// Deserialises JSON text straight into Lua values, so every byte of the result is
/// allocated (and counted) by the Lua state.
#[derive(Clone, Copy)]
pub(crate) struct LuaSeed<'a> {
    pub lua: &'a Lua,
    pub empty_arrays: &'a Table,
    pub depth: usize,
    /// Keep every `null` as [`null`] (`json.decode(s, {null = json.null})`), for a
    /// faithful round trip; otherwise nulls follow [`from_json`]'s rule.
    pub keep_null: bool,
    /// The value being built is an array element (where a null keeps its position).
    pub in_array: bool,
}

impl<'de> DeserializeSeed<'de> for LuaSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl LuaSeed<'_> {
    fn child<E: serde::de::Error>(&self, in_array: bool) -> Result<Self, E> {
        let depth = self
            .depth
            .checked_sub(1)
            .ok_or_else(|| E::custom("JSON nested too deeply"))?;
        Ok(LuaSeed {
            depth,
            in_array,
            ..*self
        })
    }
}

impl<'de> Visitor<'de> for LuaSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Number(v as f64),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.lua
            .create_string(v)
            .map(Value::String)
            .map_err(E::custom)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(if self.keep_null || self.in_array {
            null()
        } else {
            Value::Nil
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child(true)?;
        let t = self.lua.create_table().map_err(A::Error::custom)?;
        let mut i = 1usize;
        while let Some(v) = seq.next_element_seed(child)? {
            t.raw_set(i, v).map_err(A::Error::custom)?;
            i += 1;
        }
        self.empty_arrays
            .raw_set(&t, true)
            .map_err(A::Error::custom)?;
        Ok(Value::Table(t))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child(false)?;
        let t = self.lua.create_table().map_err(A::Error::custom)?;
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(child)?;
            t.raw_set(k, v).map_err(A::Error::custom)?;
        }
        Ok(Value::Table(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render() {
        let p = [
            Seg::Key("a".into()),
            Seg::Index(3),
            Seg::Key("b c".into()),
            Seg::Key("1x".into()),
        ];
        assert_eq!(render_path(&p), r#"$.a[3]["b c"]["1x"]"#);
    }
}
