//! The AO pieces: `package`/`require` of host-provided modules, read-only `io.open`,
//! and deterministic time and randomness.

use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::host::{Determinism, FileSource};

/// `require` as Lua 5.4 defines it, minus every searcher that reaches the disk or C:
/// `package.loaded`, then `package.preload`, then the host's module directory, then
/// moonjail's built-in modules that the profile does not make globals (`json` in `aos`,
/// whose global list is exactly HyperAOS's, while real AO code does `require("json")`;
/// a host module of the same name wins). Trusted text, compiled once per state; its
/// upvalues are captured before any script runs.
const PACKAGE_PRELUDE: &str = r#"
local find, load, type, error, tostring, note, builtin = ...
local package = { loaded = {}, preload = {}, path = "", cpath = "" }
local function require(name)
  if type(name) == "number" then name = tostring(name) end
  if type(name) ~= "string" then
    error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
  end
  local loaded = package.loaded
  local have = loaded[name]
  if have then note(name, true) return have end
  local loader, extra
  local pre = package.preload[name]
  if pre ~= nil then
    loader, extra = pre, ":preload:"
    note(name, true)
  else
    local src, path = find(name)
    local make = builtin[name]
    note(name, src ~= nil or make ~= nil)
    if src == nil and make ~= nil then
      loader, extra = make, ":builtin:"
    elseif src == nil then
      error("module '" .. name .. "' not found:\n\tno field package.preload['" .. name .. "']" .. path, 2)
    else
      local f, err = load(src, "@" .. path, "t")
      if not f then
        error("error loading module '" .. name .. "' from file '" .. path .. "':\n\t" .. tostring(err), 2)
      end
      loader, extra = f, path
    end
  end
  local r = loader(name, extra)
  if r ~= nil then
    loaded[name] = r
  elseif loaded[name] == nil then
    loaded[name] = true
  end
  return loaded[name], extra
end
return package, require
"#;

/// Builds `package` and `require`; the caller fills `package.loaded` with the libraries.
/// Host modules come from `files` (the host's file system in process, the supervisor
/// inside a worker process); `builtin` maps module names to the functions that make
/// them, for modules the profile offers to `require` only.
pub(crate) fn package(
    lua: &Lua,
    files: Arc<dyn FileSource>,
    builtin: Table,
    deterministic: bool,
) -> mlua::Result<(Table, Function)> {
    let find = lua.create_function(move |lua, name: String| {
        Ok(match files.module(&name) {
            Ok((src, path)) => (Value::String(lua.create_string(&src)?), path),
            Err(tried) => (Value::Nil, tried),
        })
    })?;
    let g = lua.globals();
    let load: Value = g.raw_get("load")?;
    let type_: Value = g.raw_get("type")?;
    let error: Value = g.raw_get("error")?;
    let tostring: Value = g.raw_get("tostring")?;
    let prelude = prelude(lua, deterministic)?;
    let note = lua.create_function(|lua, (name, found): (String, bool)| {
        crate::diag::note_require(lua, &name, found);
        Ok(())
    })?;
    prelude.call((find, load, type_, error, tostring, note, builtin))
}

/// The prelude's bytecode, compiled once per process: parsing its text cost every
/// state of a profile with `require` a third of its construction.
static PRELUDE_BYTECODE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// The compiled prelude: compiled from its text the first time in a process, loaded from
/// the bytecode that compile made afterwards. The bytecode is moonjail's own, never a
/// script's, and is loaded through the C API (the sandbox's `load` refuses binary
/// chunks, and so does mlua's safe mode).
///
/// A `deterministic` state never compiles it: compiling costs a state other allocations
/// than loading does, and a deterministic state must allocate the same way whether or
/// not it is the process's first (see vm/arena.rs), so the first compile is then made in
/// a scratch state. Other states keep compiling in place (a scratch state would cost the
/// process's first run ~0.2M instructions).
fn prelude(lua: &Lua, deterministic: bool) -> mlua::Result<Function> {
    const NAME: &std::ffi::CStr = c"=[moonjail package]";
    let compile = |lua: &Lua| {
        lua.load(PACKAGE_PRELUDE)
            .set_name(NAME.to_string_lossy())
            .into_function()
    };
    let code = match PRELUDE_BYTECODE.get() {
        Some(code) => code,
        None if deterministic => {
            let scratch = Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::new())?;
            let f = compile(&scratch)?;
            PRELUDE_BYTECODE.get_or_init(|| f.dump(false))
        }
        None => {
            let f = compile(lua)?;
            let _ = PRELUDE_BYTECODE.set(f.dump(false));
            return Ok(f);
        }
    };
    // SAFETY: `exec_raw` runs the closure protected with room for one push;
    // `luaL_loadbufferx` pushes the function (or an error message, turned into an error
    // below) and the buffer outlives the call.
    let loaded = unsafe {
        lua.exec_raw::<Value>((), |l| {
            let status = mlua::ffi::luaL_loadbufferx(
                l,
                code.as_ptr().cast(),
                code.len(),
                NAME.as_ptr(),
                c"b".as_ptr(),
            );
            if status != mlua::ffi::LUA_OK {
                mlua::ffi::lua_error(l);
            }
        })
    }?;
    match loaded {
        Value::Function(f) => Ok(f),
        _ => Err(mlua::Error::runtime("the package prelude did not load")),
    }
}

/// A read-only file handle over bytes the host read for the script.
struct FileHandle {
    data: mlua::LuaString,
    pos: usize,
    closed: bool,
}

impl FileHandle {
    fn read_one(&mut self, lua: &Lua, fmt: &Value) -> mlua::Result<Value> {
        let bytes = self.data.as_bytes();
        let rest = &bytes[self.pos.min(bytes.len())..];
        match fmt {
            Value::Integer(n) => {
                let n = usize::try_from(*n).unwrap_or(0);
                if rest.is_empty() {
                    return Ok(if n == 0 && self.pos < bytes.len() {
                        Value::String(lua.create_string("")?)
                    } else {
                        Value::Nil
                    });
                }
                let take = n.min(rest.len());
                self.pos += take;
                Ok(Value::String(lua.create_string(&rest[..take])?))
            }
            Value::Number(n) => self.read_one(lua, &Value::Integer(*n as i64)),
            Value::String(s) => {
                let f = s.to_string_lossy();
                let f = f.trim_start_matches('*');
                match f.chars().next() {
                    Some('a') => {
                        self.pos = bytes.len();
                        Ok(Value::String(lua.create_string(rest)?))
                    }
                    Some(c @ ('l' | 'L')) => {
                        if rest.is_empty() {
                            return Ok(Value::Nil);
                        }
                        let end = rest.iter().position(|&b| b == b'\n');
                        let (line, used) = match end {
                            Some(i) if c == 'L' => (&rest[..=i], i + 1),
                            Some(i) => (&rest[..i], i + 1),
                            None => (rest, rest.len()),
                        };
                        self.pos += used;
                        Ok(Value::String(lua.create_string(line)?))
                    }
                    Some('n') => {
                        let skip = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
                        let body = &rest[skip..];
                        let len = body
                            .iter()
                            .take(200)
                            .take_while(|b| b.is_ascii_hexdigit() || b"+-.xXpP".contains(b))
                            .count();
                        self.pos += skip + len;
                        let text = lua.create_string(&body[..len])?;
                        Ok(lua
                            .coerce_number(Value::String(text))?
                            .map(Value::Number)
                            .map(|v| match v {
                                Value::Number(f)
                                    if f.fract() == 0.0
                                        && body[..len].iter().all(|b| {
                                            b.is_ascii_digit() || *b == b'-' || *b == b'+'
                                        })
                                        && f.abs() < 9.0e15 =>
                                {
                                    Value::Integer(f as i64)
                                }
                                v => v,
                            })
                            .unwrap_or(Value::Nil))
                    }
                    _ => Err(mlua::Error::runtime(
                        "bad argument to 'read' (invalid format)",
                    )),
                }
            }
            _ => Err(mlua::Error::runtime(
                "bad argument to 'read' (invalid format)",
            )),
        }
    }

    fn read(&mut self, lua: &Lua, formats: MultiValue) -> mlua::Result<MultiValue> {
        if self.closed {
            return Err(mlua::Error::runtime("attempt to use a closed file"));
        }
        let mut out = MultiValue::new();
        if formats.is_empty() {
            out.push_back(self.read_one(lua, &Value::String(lua.create_string("l")?))?);
            return Ok(out);
        }
        for f in formats.iter() {
            let v = self.read_one(lua, f)?;
            let stop = v.is_nil();
            out.push_back(v);
            if stop {
                break;
            }
        }
        Ok(out)
    }
}

impl UserData for FileHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("read", |lua, this, formats: MultiValue| {
            this.read(lua, formats)
        });
        methods.add_method_mut("close", |_, this, ()| {
            this.closed = true;
            Ok(true)
        });
        methods.add_function(
            "lines",
            |lua, (ud, formats): (mlua::AnyUserData, MultiValue)| {
                // The formats live on the host heap until the iterator is collected:
                // as many as stock Lua keeps (its MAXARGLINE), no more.
                if formats.len() > MAX_LINES_FORMATS {
                    return Err(mlua::Error::runtime(
                        "bad argument #252 to 'lines' (too many arguments)",
                    ));
                }
                let formats: Vec<Value> = formats.into_iter().collect();
                lua.create_function_mut(move |lua, ()| {
                    let mut this = ud.borrow_mut::<FileHandle>()?;
                    this.read(lua, formats.iter().cloned().collect())
                })
            },
        );
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(if this.closed {
                "file (closed)"
            } else {
                "file (read-only)"
            })
        });
    }
}

/// Most formats `file:lines` takes (stock Lua's `MAXARGLINE`).
const MAX_LINES_FORMATS: usize = 250;

/// Builds `io` with only `open`, reading what the host allowlisted (through `files`).
pub(crate) fn io(lua: &Lua, files: Arc<dyn FileSource>) -> mlua::Result<Table> {
    let io = lua.create_table()?;
    let open = lua.create_function(move |lua, (path, mode): (String, Option<String>)| {
        let mode = mode.unwrap_or_else(|| "r".to_string());
        if mode != "r" && mode != "rb" {
            return Ok((
                Value::Nil,
                Some(format!(
                    "{path}: only reading (\"r\", \"rb\") is allowed in the sandbox"
                )),
            ));
        }
        match files.read(&path) {
            Some(Ok(bytes)) => {
                let data = lua.create_string(&bytes)?;
                let ud = lua.create_userdata(FileHandle {
                    data,
                    pos: 0,
                    closed: false,
                })?;
                Ok((Value::UserData(ud), None))
            }
            Some(Err(e)) => Ok((Value::Nil, Some(format!("{path}: {e}")))),
            None => Ok((
                Value::Nil,
                Some(format!("{path}: No such file or directory")),
            )),
        }
    })?;
    io.raw_set("open", open)?;
    Ok(io)
}

/// The time a deterministic state's script sees: the one its request brought
/// (`CallOptions::time`, on the call's control block), else the fixed timestamp.
fn now(d: &Determinism) -> i64 {
    crate::vm::current()
        .and_then(|ctl| ctl.clock.get())
        .unwrap_or(d.timestamp)
}

/// Replaces the clock and the random seed with the supplied ones.
pub(crate) fn make_deterministic(lua: &Lua, d: Determinism) -> mlua::Result<()> {
    let g = lua.globals();
    if let Ok(Value::Table(os)) = g.raw_get::<Value>("os") {
        if os.raw_get::<Value>("time")?.is_function() {
            let stock: Function = os.raw_get("time")?;
            os.raw_set(
                "time",
                lua.create_function(move |_, t: Value| match t {
                    Value::Nil => Ok(Value::Integer(now(&d))),
                    other => stock.call(other),
                })?,
            )?;
        }
        if os.raw_get::<Value>("clock")?.is_function() {
            os.raw_set("clock", lua.create_function(|_, ()| Ok(0.0))?)?;
        }
        if os.raw_get::<Value>("date")?.is_function() {
            let stock: Function = os.raw_get("date")?;
            os.raw_set(
                "date",
                lua.create_function(move |_, (fmt, t): (Option<Value>, Option<Value>)| {
                    let fmt = fmt.unwrap_or(Value::Nil);
                    let t = t.unwrap_or_else(|| Value::Integer(now(&d)));
                    match fmt {
                        Value::Nil => stock.call::<Value>(("%c", t)),
                        f => stock.call::<Value>((f, t)),
                    }
                })?,
            )?;
        }
    }
    if let Ok(Value::Table(math)) = g.raw_get::<Value>("math") {
        if let Ok(Value::Function(seed)) = math.raw_get::<Value>("randomseed") {
            seed.call::<()>(d.seed)?;
            math.raw_set(
                "randomseed",
                lua.create_function(move |_, args: MultiValue| {
                    if args.is_empty() {
                        seed.call::<MultiValue>(d.seed)
                    } else {
                        seed.call::<MultiValue>(args)
                    }
                })?,
            )?;
        }
    }
    Ok(())
}
