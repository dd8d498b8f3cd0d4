//! Issue 9, "every loop moonjail ships is metered": one-line scripts whose work happens
//! inside one long library call must still end at the deadline (as `timeout`) and
//! against the instruction budget (as `instruction_limit`), in process; and the metered
//! replacements must behave exactly like stock Lua 5.4.
//!
//! Timing assertions are hang detectors only: a run must come back well within
//! [`DID_NOT_HANG`] (the deadline is [`DEADLINE`]); nothing asserts how fast it was.
//!
//! The differential tests compare each snippet's result in the sandbox with the same
//! snippet run by a plain, unsandboxed Lua state of the same vendored release (mlua's
//! stock libraries), so no system `lua5.4` is needed.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use moonjail::{ErrorKind, Outcome, Profile, Sandbox};
use serde_json::Value as Json;

/// The deadline of the runs that must time out.
const DEADLINE: Duration = Duration::from_millis(300);
/// A run that took longer than this hung past its deadline (generous: the machine is
/// small and shared).
const DID_NOT_HANG: Duration = Duration::from_secs(5);
/// The test fails with "the host hung" after this long.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// The instruction budget of the runs that must run out of instructions.
const BUDGET: u64 = 300_000;

/// Runs `src` on a helper thread; panics if it does not come back within [`HANG_GUARD`].
fn run(sb: &Sandbox, src: &str) -> (Outcome, Duration) {
    let sb = sb.clone();
    let source = src.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let out = sb.run(source.as_bytes(), &Json::Null);
        let _ = tx.send((out, start.elapsed()));
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) => panic!("the host hung on: {src}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the run panicked on: {src}"),
    }
}

fn timed(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .timeout(DEADLINE)
        .memory_limit(256 << 20)
        .build()
        .expect("a valid configuration")
}

fn budgeted(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .no_timeout()
        .instruction_limit(BUDGET)
        .memory_limit(256 << 20)
        .build()
        .expect("a valid configuration")
}

/// `src` ends as exactly `kind`, well within [`DID_NOT_HANG`].
fn expect_stop(sb: &Sandbox, src: &str, kind: ErrorKind) -> Outcome {
    let (out, took) = run(sb, src);
    match &out.result {
        Err(e) => assert_eq!(e.kind, kind, "wrong kind for {src}: {e:?}"),
        Ok(v) => panic!("{src} should have stopped as {kind}, it returned {v}"),
    }
    assert!(took < DID_NOT_HANG, "{src} hung for {took:?}");
    out
}

/// Scripts whose one library call loops for (practically) ever in stock Lua.
const RUNAWAY: &[&str] = &[
    "table.move({}, 1, math.maxinteger - 1, 1)",
    "table.move({}, 1, math.maxinteger - 1, 2)",
    "table.move({}, 1, math.maxinteger - 1, 1, {})",
    "table.remove(setmetatable({}, {__len = function() return math.maxinteger end}), 1)",
    "table.insert(setmetatable({}, {__len = function() return math.maxinteger - 1 end}), 1, 0)",
    // Each element comes from a C __index (concat of an empty table): no Lua instruction
    // runs between elements, so no hook ever fires.
    "table.concat(setmetatable({}, {__index = table.concat}), '', 1, math.maxinteger)",
    "table.move(setmetatable({}, {__index = table.concat}), 1, math.maxinteger - 1, 1, \
     setmetatable({}, {__newindex = rawequal}))",
    // Backtracking in the (already metered) pattern matcher: the budget counts it too.
    "string.find(('a'):rep(40), ('a*'):rep(40) .. 'b')",
    // Two different strings with the same 8 MB of "\\0": one stock comparison is 8
    // million strcoll calls.
    "local a = ('\\0'):rep(8e6) local b = ('\\0'):rep(8e6 - 1) .. '\\0' \
     local t = {} for i = 1, 2e4 do t[i] = (i % 2 == 0) and a or b end table.sort(t)",
];

#[test]
fn runaway_library_loops_time_out() {
    for p in [Profile::Minimal, Profile::Standard, Profile::Aos] {
        let sb = timed(p);
        for src in RUNAWAY {
            if p == Profile::Minimal && src.contains("setmetatable") {
                continue; // minimal has no setmetatable
            }
            let _ = expect_stop(&sb, src, ErrorKind::Timeout);
        }
    }
}

#[test]
fn runaway_library_loops_run_out_of_instructions() {
    let sb = budgeted(Profile::Standard);
    for src in RUNAWAY {
        let out = expect_stop(&sb, src, ErrorKind::InstructionLimit);
        let charged = out.stats.instructions.expect("counted under a limit");
        assert!(charged <= BUDGET, "{src}: charged {charged} > {BUDGET}");
    }
}

#[test]
fn aos_unpack_alias_is_metered() {
    let sb = budgeted(Profile::Aos);
    let (out, _) = run(&sb, "return unpack == table.unpack");
    assert_eq!(out.result, Ok(Json::Bool(true)));
    // Ten calls of 900 000 elements each (every one from a C __index) in a few dozen
    // instructions: only the native charge can exhaust the budget.
    let _ = expect_stop(
        &sb,
        "local t = setmetatable({}, {__index = table.concat}) \
         for i = 1, 10 do unpack(t, 1, 900000) end",
        ErrorKind::InstructionLimit,
    );
}

#[test]
fn pcall_cannot_swallow_a_native_stop() {
    let sb = timed(Profile::Standard);
    let _ = expect_stop(
        &sb,
        "for i = 1, 3 do pcall(table.move, {}, 1, math.maxinteger - 1, 1) end return 1",
        ErrorKind::Timeout,
    );
    let sb = budgeted(Profile::Standard);
    let _ = expect_stop(
        &sb,
        "local ok, e = pcall(table.move, {}, 1, math.maxinteger - 1, 1) while true do end",
        ErrorKind::InstructionLimit,
    );
}

/// Native work counts against the budget even in many short calls, each far below
/// the meter's batch size.
#[test]
fn short_native_calls_are_charged() {
    let sb = Sandbox::builder()
        .profile(Profile::Standard)
        .no_timeout()
        .instruction_limit(1_000_000)
        .build()
        .expect("a valid configuration");
    // 300 calls of 4000 elements each: 1.2 million units, a few thousand instructions.
    let src = "local t = {} for i = 1, 300 do table.move(t, 1, 4000, 1, {}) end return 1";
    let _ = expect_stop(&sb, src, ErrorKind::InstructionLimit);
}

/// `string.format` (ported for opaque identities) charges its plain text and `%q` input;
/// `upper`, `lower` and `reverse` charge the bytes they map.
#[test]
fn string_functions_are_charged() {
    let sb = budgeted(Profile::Standard);
    for src in [
        "local s = ('\\0'):rep(1e7) for i = 1, 10 do local q = string.format('%q', s) end",
        "local s = ('x'):rep(1e7) for i = 1, 10 do local q = string.format(s) end",
        "local s = ('x'):rep(1e7) for i = 1, 10 do local q = s:upper() end",
        "local s = ('x'):rep(1e7) for i = 1, 10 do local q = s:reverse() end",
    ] {
        let _ = expect_stop(&sb, src, ErrorKind::InstructionLimit);
    }
}

/// Stock functions linear in a string the script holds are charged per call: a loop of
/// them uses up a budget with no clock (it used to be charged only its VM instructions).
#[test]
fn linear_stock_functions_are_charged_per_call() {
    let sb = budgeted(Profile::Standard);
    for src in [
        "local s = ('x'):rep(1e6) while true do local n = utf8.len(s) end",
        "local s = ('x'):rep(1e6) while true do local n = utf8.offset(s, -1) end",
        "local s = ('x'):rep(1e6) while true do local t = s:sub(2) end",
        "local s = ('x'):rep(1e5) while true do local a = s:byte(1, 5000) end",
        "local t = {} for i = 1, 5000 do t[i] = 65 end while true do local c = string.char(table.unpack(t)) end",
    ] {
        let _ = expect_stop(&sb, src, ErrorKind::InstructionLimit);
    }
}

/// What was quadratic or unbounded in stock Lua and is now cheap, with the same result.
#[test]
fn degenerate_inputs_finish_quickly() {
    // A patient deadline: these must finish, the bound below only detects a hang.
    let sb = Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(Duration::from_secs(20))
        .memory_limit(256 << 20)
        .build()
        .expect("a valid configuration");
    for (src, want) in [
        ("return #string.rep('', math.maxinteger)", Json::from(0)),
        ("return #string.rep('', math.maxinteger, '')", Json::from(0)),
        ("return #('x'):rep(3e7, ',')", Json::from(59_999_999)),
        (
            // 100 000 references to one 30 MB string: equal at once.
            "local s = ('\\0'):rep(30e6) local t = {} for i = 1, 1e5 do t[i] = s end \
             table.sort(t) return #t[1e5]",
            Json::from(30_000_000),
        ),
        (
            "local ok, e = pcall(table.unpack, {}, 1, 1e7) return e",
            Json::from("too many results to unpack"),
        ),
        (
            "local ok, e = pcall(string.rep, 'x', 3e9) return e",
            Json::from("resulting string too large"),
        ),
    ] {
        let (out, took) = run(&sb, src);
        assert_eq!(out.result, Ok(want), "{src}");
        assert!(took < DID_NOT_HANG, "{src} took {took:?}");
    }
}

#[test]
fn string_rep_hits_the_memory_limit_not_the_host() {
    let sb = Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(DEADLINE)
        .memory_limit(64 << 20)
        .build()
        .expect("a valid configuration");
    let _ = expect_stop(&sb, "return #('x'):rep(1e8, ',')", ErrorKind::MemoryLimit);
    let _ = expect_stop(&sb, "return #string.rep('x', 1e9)", ErrorKind::MemoryLimit);
}

// ---- differential: the sandbox against stock Lua 5.4 ----

/// Defines `S` (a deterministic serializer) and `P` (pcall, serialized).
const PRELUDE: &str = r#"
local function S(v, depth)
  depth = depth or 0
  local ty = type(v)
  if ty == "table" then
    if depth > 2 then return "{...}" end
    local parts = {}
    local n = rawlen(v)
    for i = 1, n do parts[#parts + 1] = S(rawget(v, i), depth + 1) end
    local keys = {}
    for k in next, v do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        keys[#keys + 1] = k
      end
    end
    local strs = {}
    for _, k in ipairs(keys) do
      strs[#strs + 1] = "[" .. S(k, depth + 1) .. "]=" .. S(rawget(v, k), depth + 1)
    end
    local sorted = {}
    for i, s in ipairs(strs) do sorted[i] = s end
    -- insertion sort: the serializer must not rely on the function under test
    for i = 2, #sorted do
      local x, j = sorted[i], i - 1
      while j >= 1 and sorted[j] > x do sorted[j + 1] = sorted[j]; j = j - 1 end
      sorted[j + 1] = x
    end
    for _, s in ipairs(sorted) do parts[#parts + 1] = s end
    local out = "{"
    for i, s in ipairs(parts) do out = out .. (i > 1 and "," or "") .. s end
    return out .. "}"
  elseif ty == "string" then
    return string.format("%q", v)
  elseif ty == "number" then
    return math.type(v) .. ":" .. string.format("%.17g", v)
  else
    return ty == "function" and "function" or tostring(v)
  end
end
local function P(f, ...)
  local r = table.pack(pcall(f, ...))
  local out = r[1] and "ok" or "err"
  for i = 2, r.n do out = out .. "|" .. S(r[i]) end
  return out
end
"#;

/// Snippets (Lua expressions) whose value must be the same in the sandbox and in stock
/// Lua. Each is wrapped as `return S(<expr>)`.
const SNIPPETS: &[&str] = &[
    // table.insert
    "(function() local t = {1, 2, 3} table.insert(t, 4) table.insert(t, 1, 0) table.insert(t, 3, 'x') return t end)()",
    "P(table.insert, {1, 2, 3}, 5, 'x')",
    "P(table.insert, {1, 2, 3}, 0, 'x')",
    "P(table.insert, {1, 2, 3}, 4, 'x')",
    "P(table.insert, {1, 2, 3}, 1, 2, 3)",
    "P(table.insert, {1, 2, 3})",
    "P(table.insert, nil, 1)",
    "P(table.insert, 'abc', 1)",
    "P(table.insert, {}, 1.5, 1)",
    "P(table.insert, {}, 'x', 1)",
    "P(table.insert, setmetatable({}, {__len = function() return math.maxinteger end}), 1, 'v')",
    "P(table.insert, setmetatable({}, {__len = function() return 2.5 end}), 1)",
    "P(table.insert, setmetatable({}, {__len = function() return '3' end}), 1)",
    "(function() local log = {} local t = setmetatable({}, {__len = function() return 3 end, __index = function(_, k) log[#log + 1] = 'get' .. k return k * 10 end, __newindex = function(_, k, v) log[#log + 1] = 'set' .. k .. '=' .. tostring(v) end}) table.insert(t, 2, 'v') return log end)()",
    "P(table.insert, setmetatable({}, {__index = {}, __newindex = {}, __len = function() return 0 end}), 1)",
    "P(table.insert, setmetatable({}, {__index = {}, __len = function() return 0 end}), 1)",
    // table.remove
    "(function() local t = {1, 2, 3, 4} local a = table.remove(t) local b = table.remove(t, 1) return {a, b, t} end)()",
    "P(table.remove, {})",
    "P(table.remove, {}, 0)",
    "P(table.remove, {}, 1)",
    "P(table.remove, {}, 2)",
    "P(table.remove, {1, 2, 3}, 4)",
    "P(table.remove, {1, 2, 3}, 5)",
    "P(table.remove, {1, 2, 3}, -1)",
    "P(table.remove, {[0] = 'z'}, 0)",
    "P(table.remove, setmetatable({}, {__len = function() return math.maxinteger end}))",
    "P(table.remove, setmetatable({}, {__len = function() return math.mininteger end}))",
    "(function() local log = {} local t = setmetatable({}, {__len = function() return 3 end, __index = function(_, k) log[#log + 1] = 'get' .. k return k end, __newindex = function(_, k, v) log[#log + 1] = 'set' .. k .. '=' .. tostring(v) end}) local r = table.remove(t, 1) return {r, log} end)()",
    // table.move
    "table.move({1, 2, 3, 4, 5}, 2, 4, 1)",
    "table.move({1, 2, 3, 4, 5}, 1, 3, 3)",
    "table.move({1, 2, 3}, 1, 3, 1, {})",
    "table.move({1, 2, 3}, 1, 0, 1, {9})",
    "table.move({1, 2, 3}, -1, 1, 5)",
    "P(table.move, {}, 1, math.maxinteger, 2)",
    "P(table.move, {}, -1, math.maxinteger, 2)",
    "P(table.move, {}, 1, 3, math.maxinteger - 1)",
    "P(table.move, {}, math.mininteger, -1, 1)",
    "P(table.move, {}, 1, 2)",
    "P(table.move, {}, 1, 2, 3, 'x')",
    "P(table.move, 1, 1, 2, 3)",
    "P(table.move, {1}, 1, 1, 1.5)",
    "(function() local log = {} local src = setmetatable({}, {__index = function(_, k) log[#log + 1] = 'get' .. k return k end}) local dst = setmetatable({}, {__newindex = function(_, k, v) log[#log + 1] = 'set' .. k .. '=' .. v end}) table.move(src, 1, 3, 2, dst) return log end)()",
    "(function() local log = {} local t = setmetatable({}, {__index = function(_, k) log[#log + 1] = 'get' .. k return k end, __newindex = function(_, k, v) log[#log + 1] = 'set' .. k .. '=' .. v end}) table.move(t, 1, 3, 2) return log end)()",
    "(function() local mt = {__eq = function() return true end} local a, b = setmetatable({1, 2, 3}, mt), setmetatable({}, mt) table.move(a, 1, 3, 2, b) return {a, b} end)()",
    // table.concat
    "table.concat({1, 2, 3})",
    "table.concat({1, 2.5, 'x'}, ', ')",
    "table.concat({'a', 'b', 'c'}, '-', 2)",
    "table.concat({'a', 'b', 'c'}, '-', 2, 3)",
    "table.concat({'a', 'b', 'c'}, '-', 3, 2)",
    "table.concat({}, 'x')",
    "P(table.concat, {1, {}, 3})",
    "P(table.concat, {1, 2, 3}, ',', 1, 5)",
    "P(table.concat, {true})",
    "P(table.concat, {}, {})",
    "P(table.concat, {1, 2}, ',', 'a')",
    "P(table.concat, setmetatable({}, {__index = function(_, k) return k * 2 end, __len = function() return 4 end}), '+')",
    "P(table.concat, setmetatable({}, {__index = table.concat}), ',', 1, 3)",
    "P(table.concat, 'abc')",
    "table.concat({'a', 'b'}, ('x'):rep(100))",
    // table.unpack
    "{table.unpack({1, 2, 3})}",
    "{table.unpack({1, 2, 3}, 2)}",
    "{table.unpack({1, 2, 3}, 2, 5)}",
    "{table.unpack({1, 2, 3}, -1, 1)}",
    "select('#', table.unpack({}, 1, 0))",
    "select('#', table.unpack({}, 1, 100))",
    "P(table.unpack, {}, 1, 1e7)",
    "P(table.unpack, {}, math.mininteger, math.maxinteger)",
    "P(table.unpack, {}, 0, math.maxinteger)",
    "P(table.unpack, {}, math.maxinteger - 2, math.maxinteger)",
    "P(table.unpack, {}, 1, 'x')",
    "P(table.unpack, nil)",
    "P(table.unpack, setmetatable({}, {__index = function(_, k) return k end, __len = function() return 3 end}))",
    "P(table.unpack, 'abc', 1, 2)",
    // table.sort
    "(function() local t = {5, 2, 8, 1, 9, 3} table.sort(t) return t end)()",
    "(function() local t = {5, 2, 8, 1, 9, 3} table.sort(t, function(a, b) return a > b end) return t end)()",
    "(function() local t = {'b', 'a', 'c', 'a\\0b', 'a\\0', 'A', ''} table.sort(t) return t end)()",
    "(function() local t = {3, 1.5, 2, -1, math.huge, -math.huge, 0} table.sort(t) return t end)()",
    "P(table.sort, {3, 'a', 1})",
    // long strings: chunked comparison (64 KiB chunks), late differences, prefixes,
    // equal contents in different objects
    "(function() local a = ('x'):rep(70000) local b = a:sub(1, -2) .. 'y' local c = ('x'):rep(69999) local d = ('x'):rep(140000) local e = ('x'):rep(65536) .. 'a' .. ('x'):rep(10) local t = {d, b, a, c, e, a .. '', ('x'):rep(70000), b .. '\\0', c .. '\\0'} table.sort(t) local o = {} for i = 1, #t do o[i] = #t[i] .. t[i]:sub(-1) end return o end)()",
    "(function() local t = {'\\0\\0', '\\0', '\\0a', 'a\\0\\0b', 'a\\0\\0a', '\\255', '\\128', '\\127'} table.sort(t) local o = {} for i = 1, #t do o[i] = t[i]:byte(1, -1) and table.concat({t[i]:byte(1, -1)}, '.') or '' end return o end)()",
    "P(table.sort, {3, 2, 1}, 'x')",
    "P(table.sort, {3, 2, 1}, function() error('boom', 0) end)",
    "P(table.sort, {3, 2, 1}, function() error({code = 7}) end)",
    "P(table.sort, {5, 4, 3, 2, 1, 6, 7, 8}, function() return true end)",
    "P(table.sort, {1, 1, 1, 1, 1}, function(a, b) return a <= b end)",
    "P(table.sort, setmetatable({}, {__len = function() return math.maxinteger end}))",
    "P(table.sort, setmetatable({}, {__len = function() return 1 end}))",
    // stability of equal keys: the exact algorithm decides their order
    "(function() local t = {} for i = 1, 60 do t[i] = {k = i % 5, i = i} end table.sort(t, function(a, b) return a.k < b.k end) local o = {} for i = 1, #t do o[i] = t[i].i end return o end)()",
    "(function() local t = {} local x = 7 for i = 1, 500 do x = (x * 1103515245 + 12345) % 2147483648 t[i] = x % 1000 end table.sort(t) local o = {} for i = 1, #t, 37 do o[#o + 1] = t[i] end return o end)()",
    "(function() local t = {} local x = 3 for i = 1, 300 do x = (x * 69069 + 1) % 4294967296 t[i] = {k = x % 7, i = i} end table.sort(t, function(a, b) return a.k > b.k end) local o = {} for i = 1, #t, 11 do o[#o + 1] = t[i].i end return o end)()",
    "(function() local mt = {__lt = function(a, b) return a.v < b.v end} local t = {} for i = 1, 20 do t[i] = setmetatable({v = (i * 7) % 20}, mt) end table.sort(t) local o = {} for i = 1, #t do o[i] = t[i].v end return o end)()",
    "(function() local log = 0 local t = setmetatable({}, {__len = function() return 4 end, __index = function(_, k) log = log + 1 return 5 - k end, __newindex = function() log = log + 100 end}) return {P(table.sort, t), log} end)()",
    // string.rep
    "string.rep('ab', 3)",
    "string.rep('ab', 3, ',')",
    "string.rep('ab', 1, ',')",
    "string.rep('ab', 0, ',')",
    "string.rep('ab', -5)",
    "string.rep('', 5, '')",
    "string.rep('', 5, 'x')",
    "string.rep('a\\0b', 4, '\\0')",
    "#string.rep('xyz', 100000, '--')",
    "P(string.rep, 'x', 2^31)",
    "P(string.rep, 'xx', 2^30)",
    "P(string.rep, '', 2^40, 'x')",
    "P(string.rep, 'x', 1.5)",
    "P(string.rep, {}, 1)",
    "P(string.rep, 'x')",
    "('x'):rep(3, 7)",
    // string.reverse/lower/upper (ported to be metered)
    "(function() local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end local s = table.concat(t) return {s:lower():byte(1, -1)} end)()",
    "(function() local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end local s = table.concat(t) return {s:upper():byte(1, -1)} end)()",
    "(function() local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end local s = table.concat(t) return {s:reverse():byte(1, -1)} end)()",
    "{('Hello, World'):lower(), ('Hello, World'):upper(), ('Hello, World'):reverse(), (''):reverse(), ('a'):reverse()}",
    "(function() local s = ('abc'):rep(50000) .. 'XYZ' local r = s:reverse() local u = s:upper() return {#r, r:sub(1, 5), r:sub(-5), u:sub(-8), #u, s:lower():sub(-4)} end)()",
    "{P(string.reverse), P(string.lower, {}), P(string.upper, 12), P(string.reverse, 1.5)}",
    // string.format (ported to make %p opaque): everything else must be stock
    "string.format('%d %5d %-5d| %05d %+d % d %i', 1, 2, 3, 4, 5, 6, 7)",
    "string.format('%x %X %#x %o %#o %u', 255, 255, 255, 8, 8, 42)",
    "string.format('%d', math.mininteger)",
    "string.format('%x', -1)",
    "string.format('%5.2f|%-10.3e|%g|%G|%.14g|%a|%A', math.pi, 12345.678, 1e20, 1e-20, 0.1, 1.0, 0.5)",
    "string.format('%f', 1e300)",
    "string.format('%.99f', 1/3)",
    "string.format('%99.99f', -1e308)",
    "string.format('%c%c%c', 76, 117, 97)",
    "string.format('%5c|%-5c|', 65, 66)",
    "string.format('%s %s %s %s', 1, 2.5, true, nil)",
    "string.format('%10s|%-10s|%.2s', 'abc', 'abc', 'abc')",
    "string.format('%s', ('x'):rep(200))",
    "string.format('%5s', ('x'):rep(200))",
    "string.format('%.3s', ('x'):rep(200))",
    "string.format('%s', setmetatable({}, {__tostring = function() return 'custom' end}))",
    "string.format('%q', 'a\\nb\\0c\\\"d\\1e\\0019\\r\\127')",
    "string.format('%q', 1/0) .. string.format('%q', -1/0) .. string.format('%q', 0/0)",
    "string.format('%q %q %q', 0.1, math.mininteger, 42)",
    "string.format('%q %q', true, nil)",
    "string.format('100%% %s', 'sure')",
    "string.format('')",
    "string.format('no items')",
    "string.format('%s\\0%s', 'a', 'b')",
    "P(string.format, '%q', {})",
    "P(string.format, '%10q', 'x')",
    "P(string.format, '%d', 1.5)",
    "P(string.format, '%d', 'x')",
    "P(string.format, '%d')",
    "P(string.format, '%y', 1)",
    "P(string.format, '%', 1)",
    "P(string.format, '%123d', 1)",
    "P(string.format, '%0-5d', 1)",
    "P(string.format, '%#d', 1)",
    "P(string.format, '%.3c', 65)",
    "P(string.format, '%-+ #0-+ #0-+ #0d', 1)",
    "P(string.format, '%10.3p', {})",
    "P(string.format, '%5s', 'a\\0b')",
    "P(string.format, '%s', setmetatable({}, {__tostring = function() return {} end}))",
    "P(string.format, '%s', setmetatable({}, {__tostring = function() error('in tostring', 0) end}))",
    "P(string.format)",
    "P(string.format, {})",
    "P(string.format, '%ld', 1)",
    "string.format('%p|%5p|%-8p|', nil, true, 12)",
    "string.format('%s', setmetatable({}, {__name = 42, __tostring = function() return 'named' end}))",
    // Charged per call (stdlib/charged.rs), the stock function doing the work.
    "P(utf8.len, 'h\\xc3\\xa9llo')",
    "P(utf8.len, 'h\\xffllo')",
    "P(utf8.len, 'abc', 5)",
    "P(utf8.len, 'abc', 1, 10)",
    "P(utf8.len)",
    "P(utf8.codepoint, 'h\\xc3\\xa9llo', 1, -1)",
    "P(utf8.codepoint, 'abc', 4)",
    "P(utf8.offset, 'h\\xc3\\xa9llo', 3)",
    "P(utf8.offset, 'abc', 1, 10)",
    "P(utf8.char, 72, 228, 8364)",
    "P(utf8.char, -1)",
    "P(string.byte, 'hello', 2, 4)",
    "P(string.byte, 'hello', -2)",
    "P(string.byte)",
    "P(string.char, 104, 105)",
    "P(string.char, 256)",
    "P(string.sub, 'hello', 2, -2)",
    "P(string.sub, 'hello', -100, 100)",
    "P(string.sub)",
    "('hello'):sub(2)",
    "('x'):byte()",
];

/// The stock result of each snippet, from a plain Lua state.
fn stock_results() -> Vec<String> {
    let lua = mlua::Lua::new();
    SNIPPETS
        .iter()
        .map(|s| {
            let src = format!("{PRELUDE}\nreturn S({s})");
            lua.load(&src)
                .eval::<String>()
                .unwrap_or_else(|e| panic!("stock Lua failed on {s}: {e}"))
        })
        .collect()
}

#[test]
fn metered_functions_match_stock_lua() {
    let stock = stock_results();
    let sb = Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a valid configuration");
    let mut failures = Vec::new();
    for (s, want) in SNIPPETS.iter().zip(&stock) {
        let src = format!("{PRELUDE}\nreturn S({s})");
        let (out, _) = run(&sb, &src);
        match out.result {
            Ok(Json::String(got)) if &got == want => {}
            other => failures.push(format!("{s}\n  stock:   {want}\n  sandbox: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same snippets under an instruction limit (the metered path charging as it goes)
/// give the same results.
#[test]
fn metered_functions_match_stock_lua_under_an_instruction_limit() {
    let stock = stock_results();
    let sb = Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(Duration::from_secs(20))
        .instruction_limit(50_000_000)
        .build()
        .expect("a valid configuration");
    for (s, want) in SNIPPETS.iter().zip(&stock) {
        let src = format!("{PRELUDE}\nreturn S({s})");
        let (out, _) = run(&sb, &src);
        assert_eq!(out.result, Ok(Json::String(want.clone())), "{s}");
    }
}

/// A few stock results written out, so a reader sees what "the same" means and the
/// differential test cannot pass by both sides being wrong in the same way.
#[test]
fn known_stock_values() {
    let sb = timed(Profile::Standard);
    for (src, want) in [
        (
            "return select(2, pcall(table.insert, {1}, 5, 0))",
            "bad argument #2 to 'table.insert' (position out of bounds)",
        ),
        (
            "return select(2, pcall(table.move, {}, 1, 3, math.maxinteger - 1))",
            "bad argument #4 to 'table.move' (destination wrap around)",
        ),
        (
            "return select(2, pcall(table.concat, {1, {}, 3}))",
            "invalid value (table) at index 2 in table for 'concat'",
        ),
        (
            "return select(2, pcall(table.sort, {5, 4, 3, 2, 1, 6, 7, 8}, function() return true end))",
            "invalid order function for sorting",
        ),
        ("return table.concat({1, 2, 3}, ', ')", "1, 2, 3"),
        ("return ('ab'):rep(3, ',')", "ab,ab,ab"),
    ] {
        let (out, _) = run(&sb, src);
        assert_eq!(out.result, Ok(Json::from(want)), "{src}");
    }
}
