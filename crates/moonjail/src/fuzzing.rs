//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, off by default;
//! never for production): thin wrappers over what the supervisor parses from a worker
//! (frames, `Done` documents, host calls) and over the metered pattern matcher, so that
//! the targets reach them without widening the public API; and over the linter's two
//! parsers, held to the same tree.
//!
//! Everything here calls the crate's own code paths unchanged; nothing is reimplemented
//! except the Lua harness that runs the stock and the metered matcher side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::worker::host_call::{self, Budget, Host, Refusal};
use crate::worker::protocol::{self, Decoded, Kind};
use crate::worker::supervisor;

/// A frame as the supervisor's reader sees it.
#[derive(Debug)]
pub struct DecodedFrame {
    /// The type byte.
    pub kind: u8,
    /// The sections, in order.
    pub sections: Vec<Vec<u8>>,
    /// Bytes of the buffer the frame used.
    pub used: usize,
    /// The size of the frame on the wire, as the supervisor charges it (`encoded_len`).
    pub encoded_len: usize,
    /// The frame encoded again from its kind and sections (`protocol::encode`).
    pub reencoded: Vec<u8>,
    /// What the supervisor makes of it: for `Done`, `decode_done` under default limits;
    /// for `HostCall`, the answer from a fixed host ([`HostCallAnswer`]); else `None`.
    pub handled: Option<Result<String, String>>,
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug)]
pub enum FrameResult {
    /// Not enough bytes yet; at least this many are needed in total.
    Need(usize),
    /// A whole frame.
    Frame(DecodedFrame),
}

/// `protocol::decode(bytes, max)`, then the supervisor's handling of a `Done` or
/// `HostCall` frame; errors as their messages.
pub fn decode_frame(bytes: &[u8], max: usize) -> Result<FrameResult, String> {
    match protocol::decode(bytes, max).map_err(|e| e.to_string())? {
        Decoded::Need(n) => Ok(FrameResult::Need(n)),
        Decoded::Frame(frame, used) => {
            let mut sections = Vec::new();
            while let Some(s) = frame.section(sections.len()) {
                sections.push(s.to_vec());
            }
            let slices: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
            let reencoded = protocol::encode(frame.kind, &slices).map_err(|e| e.to_string())?;
            let handled = match frame.kind {
                Kind::Done => Some(
                    supervisor::decode_done(&frame, &Limits::default())
                        .map(|outcome| format!("{:?}", outcome.result)),
                ),
                Kind::HostCall => Some(answer_host_call(&frame, 64).map(|a| format!("{a:?}"))),
                _ => None,
            };
            Ok(FrameResult::Frame(DecodedFrame {
                kind: frame.kind as u8,
                sections,
                used,
                encoded_len: frame.encoded_len(),
                reencoded,
                handled,
            }))
        }
    }
}

/// `protocol::parse_value`: JSON from a worker, nesting refused past `max_depth`, and
/// refused past 64 MiB of estimated memory once parsed.
pub fn parse_value(bytes: &[u8], max_depth: usize) -> Result<Json, String> {
    protocol::parse_value(bytes, max_depth, 64 << 20)
}

/// The supervisor's `decode_done` on a `Done` frame made of `sections`, under default
/// limits with `result_depth` (as `Outcome`, or the message the run would fail with).
pub fn decode_done(sections: &[&[u8]], result_depth: usize) -> Result<Outcome, String> {
    let bytes = protocol::encode(Kind::Done, sections).map_err(|e| e.to_string())?;
    let frame = match protocol::decode(&bytes, usize::MAX).map_err(|e| e.to_string())? {
        Decoded::Frame(frame, _) => frame,
        Decoded::Need(n) => return Err(format!("an encoded frame needs {n} bytes")),
    };
    let limits = Limits {
        result_depth,
        ..Limits::default()
    };
    supervisor::decode_done(&frame, &limits)
}

/// The answer the supervisor sends to a host call.
#[derive(Debug)]
pub struct HostCallAnswer {
    /// The `HostReply` frame's JSON section, as text.
    pub reply: String,
    /// Its bytes section.
    pub data: Vec<u8>,
    /// The whole frame.
    pub frame: Vec<u8>,
}

/// The fixed host that [`decode_host_call`] answers from: one listed file (which does
/// not exist), no module directory, and the tools `echo` (returns its arguments) and
/// `fail` (always fails), with the default quotas and a deadline an hour away.
struct FuzzHost {
    files: crate::HostFiles,
    run: crate::ToolRun,
}

/// The path of the one file the fuzzing host lists.
pub const LISTED_FILE: &str = "/nonexistent/moonjail-fuzz/listed";

fn fuzz_host() -> FuzzHost {
    let mut registry = crate::ToolRegistry::new();
    registry
        .register("echo", |args| Ok(Json::Array(args)))
        .expect("a valid tool name");
    registry
        .register("fail", |_| Err("nope".into()))
        .expect("a valid tool name");
    FuzzHost {
        files: crate::HostFiles::default().allow_read(LISTED_FILE),
        run: Arc::new(registry).start_run(Some(Instant::now() + Duration::from_secs(3600))),
    }
}

fn answer_host_call(frame: &protocol::Frame, max_depth: usize) -> Result<HostCallAnswer, String> {
    let host = fuzz_host();
    let mut budget = Budget::new(1000, 1 << 30);
    let reply = host_call::answer(
        frame,
        Host {
            files: &host.files,
            tools: Some(&host.run),
            max_depth,
            max_host_bytes: 64 << 20,
        },
        &mut budget,
    )
    .map_err(|refusal| match refusal {
        Refusal::Frame(e) => format!("frame: {e}"),
        Refusal::Forbidden(why) => format!("forbidden: {why}"),
    })?;
    let decoded = match protocol::decode(&reply, usize::MAX) {
        Ok(Decoded::Frame(decoded, used)) if used == reply.len() => decoded,
        other => panic!("the supervisor encoded a HostReply it cannot decode: {other:?}"),
    };
    assert_eq!(decoded.kind, Kind::HostReply, "a reply of another type");
    let meta = decoded.section(0).expect("a HostReply has section 0");
    let _: protocol::HostReply = serde_json::from_slice(meta).expect("a HostReply parses");
    Ok(HostCallAnswer {
        reply: String::from_utf8_lossy(meta).into_owned(),
        data: decoded.section(1).unwrap_or_default().to_vec(),
        frame: reply,
    })
}

/// The supervisor's handling of a `HostCall` frame whose sections are `sections`
/// (`host_call::answer`, argument depth `max_depth`), answered from a fixed host: the
/// reply, or why the worker would be killed.
pub fn decode_host_call(sections: &[&[u8]], max_depth: usize) -> Result<HostCallAnswer, String> {
    let bytes = protocol::encode(Kind::HostCall, sections).map_err(|e| e.to_string())?;
    match protocol::decode(&bytes, usize::MAX).map_err(|e| e.to_string())? {
        Decoded::Frame(frame, _) => answer_host_call(&frame, max_depth),
        Decoded::Need(n) => Err(format!("an encoded frame needs {n} bytes")),
    }
}

// ---------------------------------------------------------------------------
// The metered matcher against lstrlib
// ---------------------------------------------------------------------------

/// A pattern-matching call.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `string.find(s, p, init, plain)`.
    Find {
        /// `init` (`None`: absent).
        init: Option<i64>,
        /// `plain` as `true` when set (absent otherwise).
        plain: bool,
    },
    /// `string.match(s, p, init)`.
    Match {
        /// `init` (`None`: absent).
        init: Option<i64>,
    },
    /// `string.gmatch(s, p, init)`, iterated up to 200 times.
    Gmatch {
        /// `init` (`None`: absent).
        init: Option<i64>,
    },
    /// `string.gsub(s, p, repl, n)`.
    Gsub {
        /// The replacement.
        repl: Repl,
        /// `n` (`None`: absent).
        n: Option<i64>,
    },
}

/// A `gsub` replacement.
#[derive(Debug, Clone)]
pub enum Repl {
    /// A replacement string (with `%0`-`%9`, `%%`).
    Str(Vec<u8>),
    /// A table mapping a few keys (strings, an integer, `false`, a table value).
    Table,
    /// One of a few functions (index modulo their number): nil, a string, false, a
    /// number, a table (an error), the first capture upper-cased.
    Function(u8),
}

const DIFF_HARNESS: &str = r#"
local stock, metered, op, s, p, a3, a4 = ...
local function ser(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v)
  elseif t == "table" then
    local parts = {}
    for i = 1, (v.n or #v) do parts[i] = ser(v[i]) end
    return "{" .. table.concat(parts, ",") .. "}"
  else return t .. ":" .. tostring(v) end
end
local funcs = {
  function(...) return nil end,
  function(a, ...) return tostring(a) .. "|" .. select('#', ...) end,
  function(a) return false end,
  function(a) return 1.5 end,
  function(a) return {} end,
  function(a) if a == "a" then return "A" end return (a:upper()) end,
  function(...) return 42 end,
}
local tbl = { a = "<A>", b = false, c = 7, ["1"] = "one", [1] = "pos1", ab = "AB", x = {} }
local function run(lib)
  if op == "find" then return lib.find(s, p, a3, a4)
  elseif op == "match" then return lib.match(s, p, a3)
  elseif op == "gmatch" then
    local it = lib.gmatch(s, p, a3)
    local out = { n = 0 }
    for _ = 1, 200 do
      local r = table.pack(it())
      if r.n == 0 then break end
      out.n = out.n + 1
      out[out.n] = r
    end
    return out
  else
    local r = a3
    if r == true then r = tbl
    elseif type(r) == "number" then r = funcs[r % #funcs + 1] end
    return lib.gsub(s, p, r, a4)
  end
end
return ser(table.pack(pcall(run, stock))), ser(table.pack(pcall(run, metered)))
"#;

/// One Lua state with the stock `lstrlib` functions and the metered ones side by side.
pub struct Differential {
    lua: mlua::Lua,
    harness: mlua::Function,
    stock: mlua::Table,
    metered: mlua::Table,
}

impl Differential {
    /// A fresh state: `string`'s stock `find`, `match`, `gmatch` and `gsub` are kept in
    /// one table, then replaced by the metered ones exactly as sandboxes install them.
    pub fn new() -> mlua::Result<Differential> {
        let lua = mlua::Lua::new();
        let string: mlua::Table = lua.globals().get("string")?;
        let stock = lua.create_table()?;
        let metered = lua.create_table()?;
        for name in ["find", "match", "gmatch", "gsub"] {
            stock.set(name, string.get::<mlua::Value>(name)?)?;
        }
        crate::stdlib::strmatch::install(&lua, &string)?;
        for name in ["find", "match", "gmatch", "gsub"] {
            metered.set(name, string.get::<mlua::Value>(name)?)?;
        }
        let harness = lua
            .load(DIFF_HARNESS)
            .set_name("=differential")
            .into_function()?;
        Ok(Differential {
            lua,
            harness,
            stock,
            metered,
        })
    }

    /// Runs `op` on `subject` and `pattern` with the stock functions and with the metered
    /// ones: each outcome serialised (`true, results...` or `false, message`; bytes, since
    /// results hold any byte).
    pub fn compare(
        &self,
        subject: &[u8],
        pattern: &[u8],
        op: &MatchOp,
    ) -> mlua::Result<(Vec<u8>, Vec<u8>)> {
        let lua = &self.lua;
        let int = |v: &Option<i64>| v.map_or(mlua::Value::Nil, mlua::Value::Integer);
        let (name, a3, a4) = match op {
            MatchOp::Find { init, plain } => (
                "find",
                int(init),
                if *plain {
                    mlua::Value::Boolean(true)
                } else {
                    mlua::Value::Nil
                },
            ),
            MatchOp::Match { init } => ("match", int(init), mlua::Value::Nil),
            MatchOp::Gmatch { init } => ("gmatch", int(init), mlua::Value::Nil),
            MatchOp::Gsub { repl, n } => (
                "gsub",
                match repl {
                    Repl::Str(bytes) => mlua::Value::String(lua.create_string(bytes)?),
                    Repl::Table => mlua::Value::Boolean(true),
                    Repl::Function(k) => mlua::Value::Integer(i64::from(*k)),
                },
                int(n),
            ),
        };
        let (stock, metered) = self.harness.call::<(mlua::LuaString, mlua::LuaString)>((
            &self.stock,
            &self.metered,
            name,
            lua.create_string(subject)?,
            lua.create_string(pattern)?,
            a3,
            a4,
        ))?;
        Ok((stock.as_bytes().to_vec(), metered.as_bytes().to_vec()))
    }
}

/// The linter's fast parser against full_moon on `source`: panics when the fast parser
/// accepts what full_moon refuses, or when their trees differ (offsets included).
/// Returns whether the fast parser accepted it. Sources that nest deeper than the
/// linter would parse are skipped (`false`), as the linter skips them.
pub fn lint_parsers_agree(source: &str) -> bool {
    crate::lint::parsers_agree_bounded(source)
}
