//! Deterministic states in the library: address-hashed keys come out in the same order
//! in every state (each state allocates from its own 4 GiB-aligned arena), the memory
//! limit stays exact on the arena, unlimited memory works, and arenas are given back.
//! The cross-process proof (fresh processes, both isolation modes) is the CLI's
//! `determinism` tests.

use crate::support::both_sandboxes as both;
use moonjail::{CallOptions, Determinism, ErrorKind, Sandbox};
use serde_json::{json, Value as Json};

const DET: Determinism = Determinism {
    timestamp: 1_700_000_000,
    seed: 7,
};

/// Object keys, string keys, then the order `pairs` visits them in.
const ORDER: &str = r#"
local t = {}
for i = 1, 16 do t[{}] = "t" .. i; t[function() end] = "f" .. i; t["s" .. i] = "s" .. i end
t[print] = "print"; t[string] = "string"; t[coroutine.create(print)] = "co"
t[coroutine.running()] = "main"
local o = {}
for _, v in pairs(t) do o[#o + 1] = v end
return table.concat(o, ",")
"#;

#[test]
fn every_deterministic_state_visits_object_keys_in_one_order() {
    // In one process each state's objects sit elsewhere on the heap: without the arena
    // the orders differ from state to state. The first state of the process (which
    // used to compile the package prelude itself, allocating differently) included. The
    // main thread is a key too: it is the state's first object, made in the arena only
    // because the state is created on it.
    let sb = Sandbox::builder().deterministic(Some(DET)).build().unwrap();
    let first = sb.run(ORDER, &Json::Null).result.unwrap();
    for _ in 0..5 {
        let other = Sandbox::builder().deterministic(Some(DET)).build().unwrap();
        assert_eq!(other.run(ORDER, &Json::Null).result.unwrap(), first);
        assert_eq!(sb.run(ORDER, &Json::Null).result.unwrap(), first);
    }
}

#[test]
fn states_alive_together_agree_on_the_main_thread_s_place() {
    // States that live at the same time: on a shared heap each one's main thread sits at
    // an address of its own (a state dropped before the next is made gives its block
    // back, and the next gets the same one, which hid this in the test above). Each
    // state is created on its arena, so the main thread hashes alike in all of them.
    let sb = Sandbox::builder().deterministic(Some(DET)).build().unwrap();
    let mut sessions: Vec<_> = (0..6).map(|_| sb.session().unwrap()).collect();
    let orders: Vec<String> = sessions
        .iter_mut()
        .map(|s| {
            let out = s.exec(ORDER);
            out.result
                .unwrap_or_else(|e| panic!("{e:?}"))
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(orders[0].contains("main"), "{}", orders[0]);
    for o in &orders[1..] {
        assert_eq!(o, &orders[0]);
    }
}

#[test]
fn the_memory_limit_is_exact_on_the_arena() {
    let grow = "local t = {} for i = 1, 1e7 do t[i] = ('x'):rep(20) .. i end";
    for limit in [200 << 10, 1 << 20, 4 << 20] {
        for (mode, sb) in both(|| {
            Sandbox::builder()
                .memory_limit(limit)
                .deterministic(Some(DET))
        }) {
            let a = sb.run(grow, &Json::Null);
            let b = sb.run(grow, &Json::Null);
            assert_eq!(
                a.error().map(|e| e.kind),
                Some(ErrorKind::MemoryLimit),
                "{mode}: {a:?}"
            );
            assert!(a.stats.peak_memory_bytes <= limit, "{mode}: {a:?}");
            assert!(
                a.stats.peak_memory_bytes > limit - (64 << 10),
                "{mode}: {a:?}"
            );
            assert_eq!(
                (a.stats.peak_memory_bytes, a.stats.memory_bytes),
                (b.stats.peak_memory_bytes, b.stats.memory_bytes),
                "{mode}"
            );
        }
    }
}

#[test]
fn unlimited_deterministic_memory_grows_the_arena() {
    for (mode, sb) in both(|| {
        Sandbox::builder()
            .no_memory_limit()
            .deterministic(Some(DET))
    }) {
        // 64 MiB of strings and a table of a million entries: many times the arena's
        // first mapping.
        let out = sb.run(
            "local s = {} for i = 1, 64 do s[i] = ('x'):rep(1 << 20) .. i end \
             local t = {} for i = 1, 1e6 do t[i] = i end return #s + #t",
            &Json::Null,
        );
        assert_eq!(
            out.result.as_ref().ok(),
            Some(&Json::from(1_000_064)),
            "{mode}: {out:?}"
        );
        assert!(out.stats.peak_memory_bytes > 64 << 20, "{mode}: {out:?}");
    }
}

/// Mappings in the range where arenas are placed (16 TiB up).
fn arena_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('-').next())
        .filter_map(|a| usize::from_str_radix(a, 16).ok())
        .filter(|&a| (1usize << 44..1usize << 45).contains(&a))
        .count()
}

#[test]
fn dropped_states_give_their_arena_back() {
    let sb = Sandbox::builder().deterministic(Some(DET)).build().unwrap();
    let _ = sb.run("return 1", &Json::Null);
    let before = arena_mappings();
    for _ in 0..100 {
        let out = sb.run("local t = {} for i = 1, 1e5 do t[i] = {} end", &Json::Null);
        assert!(out.result.is_ok(), "{out:?}");
    }
    // Other tests of this binary may hold a few arenas of their own meanwhile.
    assert!(arena_mappings() <= before + 8, "{}", arena_mappings());
}

#[test]
fn a_deterministic_session_request_reads_its_own_time_and_only_that_request() {
    let clock = "return {os.time(), os.date('!%H:%M:%S')}";
    for (mode, sb) in both(|| Sandbox::builder().deterministic(Some(DET))) {
        let mut s = sb.session().unwrap();
        let own = CallOptions::default().time(1_764_250_000);
        let out = s.eval(clock, &own);
        assert_eq!(
            out.result.unwrap(),
            json!([1_764_250_000, "13:26:40"]),
            "{mode}"
        );
        // The next request without one reads the sandbox's timestamp again.
        let out = s.eval(clock, &CallOptions::default());
        assert_eq!(
            out.result.unwrap(),
            json!([DET.timestamp, "22:13:20"]),
            "{mode}"
        );
    }
    // A session reading the system clock has no clock to set: refused, not ignored.
    for (mode, sb) in both(Sandbox::builder) {
        let mut s = sb.session().unwrap();
        let out = s.eval("return os.time()", &CallOptions::default().time(5));
        let e = out.result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input, "{mode}");
        assert!(
            e.message.contains("needs a deterministic session"),
            "{mode}: {e}"
        );
        assert!(s.is_open(), "{mode}");
    }
}

/// `pairs`, `ipairs` and `utf8.codes` of a deterministic state return closures of
/// their iterators (see `vm::close_iterators`) and otherwise behave as the stock ones:
/// the `__pairs` metamethod (which may yield), `ipairs` stopping at the first nil, both
/// `utf8.codes` iterators, and the stock argument errors, word for word as in an
/// ordinary state.
#[test]
fn deterministic_iterator_makers_behave_as_the_stock_ones() {
    const SCRIPT: &str = r#"
local out = {}
local proxy = setmetatable({}, {__pairs = function(t)
  coroutine.yield("yielded")
  return function(_, k) if not k then return 1, "one" end end, t, nil
end})
local co = coroutine.wrap(function()
  local got = {}
  for k, v in pairs(proxy) do got[#got + 1] = k .. "=" .. v end
  return table.concat(got, ",")
end)
out[#out + 1] = co()
out[#out + 1] = co()
local seq = {}
for i, v in ipairs({10, 20, nil, 40}) do seq[#seq + 1] = i .. ":" .. v end
out[#out + 1] = table.concat(seq, ",")
out[#out + 1] = tostring(pairs({}) == next)
out[#out + 1] = select(2, pcall(pairs))
out[#out + 1] = select(2, pcall(ipairs))
local f1, s, c = ipairs("abc")
out[#out + 1] = type(f1) .. " " .. s .. " " .. c
local cps = {}
for p, cp in utf8.codes("aé") do cps[#cps + 1] = p .. ":" .. cp end
for p, cp in utf8.codes("b", true) do cps[#cps + 1] = p .. ":" .. cp end
out[#out + 1] = table.concat(cps, ",")
out[#out + 1] = select(2, pcall(utf8.codes, "\x80"))
out[#out + 1] = tostring(select(2, pcall(function() for _ in utf8.codes("a\xff") do end end)))
return table.concat(out, "|")
"#;
    let stock = Sandbox::builder().build().unwrap();
    let expected = stock.run(SCRIPT, &Json::Null).result.unwrap();
    let text = expected.as_str().unwrap_or_default();
    assert!(
        text.starts_with(
            "yielded|1=one|1:10,2:20|true|bad argument #1 to 'pairs' (value expected)|\
             bad argument #1 to 'ipairs' (value expected)|function abc 0|1:97,2:233,1:98|\
             bad argument #1 to 'utf8.codes' (invalid UTF-8 code)|"
        ),
        "{text}"
    );
    for (mode, sb) in both(|| Sandbox::builder().deterministic(Some(DET))) {
        let got = sb.run(SCRIPT, &Json::Null).result.unwrap();
        assert_eq!(got, expected, "{mode}");
    }
}
