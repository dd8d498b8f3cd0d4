//! The `json` library inside scripts: `json.encode`, `json.decode`, `json.null`.
//!

use std::time::Duration;

use crate::support::without_null_fields;
use moonjail::{ErrorKind, Outcome, Profile, Sandbox};
use serde_json::{json, Value as Json};

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a valid configuration")
}

fn run(src: &str) -> Outcome {
    sandbox().run(src, &Json::Null)
}

fn ok(src: &str) -> Json {
    match run(src).result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}\nsource: {src}"),
    }
}

fn err(sb: &Sandbox, src: &str, kind: ErrorKind) -> moonjail::Error {
    match sb.run(src, &Json::Null).result {
        Ok(v) => panic!("expected a {kind} error, got Ok({v})\nsource: {src}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "wrong kind: {e:?}\nsource: {src}");
            e
        }
    }
}

/// Runs `call` (a json function call) under pcall; returns its error text, asserting that
/// it failed.
fn caught(call: &str) -> String {
    let src = format!("local ok, e = pcall(function() return {call} end) assert(not ok, 'no error') return tostring(e)");
    ok(&src)
        .as_str()
        .expect("tostring gives a string")
        .to_string()
}

#[test]
fn json_is_only_in_standard() {
    let minimal = Sandbox::builder()
        .profile(Profile::Minimal)
        .build()
        .unwrap();
    assert_eq!(
        minimal.run("return json == nil", &Json::Null).result,
        Ok(json!(true))
    );
    assert_eq!(
        ok("local n = {} for k in pairs(json) do n[#n + 1] = k end table.sort(n) return n"),
        json!(["decode", "encode", "null"])
    );
}

#[test]
fn encode_produces_compact_json() {
    assert_eq!(
        ok(r#"return json.encode({a = {1, 2, 3}})"#),
        json!(r#"{"a":[1,2,3]}"#)
    );
    assert_eq!(ok("return json.encode(3)"), json!("3"));
    assert_eq!(ok("return json.encode(1.5)"), json!("1.5"));
    assert_eq!(ok("return json.encode(3.0)"), json!("3.0"));
    assert_eq!(ok("return json.encode(true)"), json!("true"));
    assert_eq!(ok("return json.encode(json.null)"), json!("null"));
    assert_eq!(ok("return json.encode(nil)"), json!("null"));
    assert_eq!(ok("return json.encode({})"), json!("{}"));
    assert_eq!(ok("return json.encode({json.null, 1})"), json!("[null,1]"));
    assert_eq!(
        ok(r#"return json.encode("a\"b\\c\n\0\1")"#),
        json!(r#""a\"b\\c\n\u0000\u0001""#)
    );
    assert_eq!(ok(r#"return json.encode("\u{e9}")"#), json!("\"\u{e9}\""));
    // Sparse tables are objects with string keys, as in results.
    assert_eq!(
        ok("return json.encode({[1] = 1, [3] = 3})"),
        json!(r#"{"1":1,"3":3}"#)
    );
    assert_eq!(
        ok("return json.encode(math.mininteger)"),
        json!("-9223372036854775808")
    );
}

#[test]
fn decode_produces_lua_values() {
    assert_eq!(
        ok(
            r#"local v = json.decode('{"a": [1, 2.5, "x", true, null], "b": {}}')
              return {math.type(v.a[1]), math.type(v.a[2]), v.a[3], v.a[4], v.a[5] == json.null,
                      #v.a, next(v.b) == nil}"#
        ),
        json!(["integer", "float", "x", true, true, 5, true])
    );
    // The document `null` is nil (as is an object's null field); with the option, the
    // sentinel.
    assert_eq!(ok(r#"return json.decode("null") == nil"#), json!(true));
    assert_eq!(
        ok(r#"return json.decode("null", {null = json.null}) == json.null"#),
        json!(true)
    );
    assert_eq!(
        ok(r#"return math.type(json.decode("9223372036854775807"))"#),
        json!("integer")
    );
    assert_eq!(
        ok(r#"return json.decode("-9223372036854775808") == math.mininteger"#),
        json!(true)
    );
    assert_eq!(
        ok(r#"return math.type(json.decode("9223372036854775808"))"#),
        json!("float")
    );
    assert_eq!(
        ok(r#"return math.type(json.decode("3.0"))"#),
        json!("float")
    );
    assert_eq!(
        ok(r#"return json.decode('"\\u00e9\\ud83d\\ude00"')"#),
        json!("\u{e9}\u{1F600}")
    );
    assert_eq!(ok(r#"return json.decode(' [ 1 , 2 ] ')"#), json!([1, 2]));
    // Duplicate keys: the last wins, as in most decoders.
    assert_eq!(ok(r#"return json.decode('{"a": 1, "a": 2}').a"#), json!(2));
}

#[test]
fn round_trips() {
    for v in [
        json!({"a": {"b": [1, 2, {"c": null}]}, "d": "text\u{e9}", "e": 1.5, "f": -7, "g": true}),
        json!([]),
        json!([[]]),
        json!({}),
        json!([null, null]),
        json!({"": {"": []}}),
        json!(["\u{0}", "\u{1F600}", "\"\\"]),
        json!([i64::MAX, i64::MIN, 0.25, -0.5, 1e300]),
    ] {
        let text = serde_json::to_string(&v).unwrap();
        // With `{null = json.null}`, exactly; without, null fields are absent.
        let src = format!(
            "return json.decode({}, {{null = json.null}})",
            lua_long_string(&text)
        );
        assert_eq!(ok(&src), v, "decode {text}");
        let src = format!("return json.decode({})", lua_long_string(&text));
        assert_eq!(ok(&src), without_null_fields(&v), "decode {text}");
        let src = format!(
            "return json.decode(json.encode(json.decode({})))",
            lua_long_string(&text)
        );
        assert_eq!(ok(&src), without_null_fields(&v), "round trip {text}");
        // Encoded text parses back to the same value on the host.
        let src = format!(
            "return json.encode(json.decode({}, {{null = json.null}}))",
            lua_long_string(&text)
        );
        let back: Json = serde_json::from_str(ok(&src).as_str().unwrap()).unwrap();
        assert_eq!(back, v);
    }
    // Script-built values.
    assert_eq!(
        ok(
            "local t = {list = {1, 2, 3}, name = 'x', nested = {deep = {json.null}}}
            return json.decode(json.encode(t))"
        ),
        json!({"list": [1, 2, 3], "name": "x", "nested": {"deep": [null]}})
    );
    // Decoded empty arrays keep encoding as [].
    assert_eq!(
        ok(r#"return json.encode(json.decode('{"a":[],"b":{}}'))"#)
            .as_str()
            .map(|s| serde_json::from_str::<Json>(s).unwrap()),
        Some(json!({"a": [], "b": {}}))
    );
}

/// `text` as a Lua string literal (every byte a decimal escape).
fn lua_long_string(text: &str) -> String {
    let body: String = text.bytes().map(|b| format!("\\{b:03}")).collect();
    format!("\"{body}\"")
}

#[test]
fn json_null_is_one_value() {
    assert_eq!(
        ok(
            r#"return {json.null == json.null, type(json.null), json.decode("null") == nil,
                     json.decode("[null]")[1] == json.null, json.null ~= nil}"#
        ),
        json!([true, "userdata", true, true, true])
    );
    assert_eq!(ok("return {json.null}"), json!([null]));
    assert_eq!(ok("return getmetatable(json.null) == nil"), json!(true));
}

#[test]
fn decode_errors_are_catchable_and_named() {
    for (call, fragment) in [
        (r#"json.decode("{bad")"#, "key must be a string"),
        (r#"json.decode("")"#, "EOF while parsing"),
        (r#"json.decode("[1, 2")"#, "EOF while parsing"),
        (r#"json.decode("1 2")"#, "trailing characters"),
        (r#"json.decode("nul")"#, "EOF while parsing"),
        (r#"json.decode("nulx")"#, "expected ident"),
        (r#"json.decode("1e400")"#, "number out of range"),
        (r#"json.decode('"\\ud800"')"#, "hex escape"),
        (r#"json.decode("'single'")"#, "expected value"),
        (r#"json.decode("\255")"#, "json.decode"),
    ] {
        let e = caught(call);
        assert!(e.contains("json.decode"), "{call}: {e}");
        assert!(e.contains(fragment), "{call}: {e:?} lacks {fragment:?}");
    }
    // Bad argument types are errors too.
    assert!(caught("json.decode()").contains("json.decode: expected a string, got nil"));
    assert!(caught("json.decode({})").contains("json.decode: expected a string, got table"));
    assert!(caught("json.decode('1', 2)").contains("options table as argument 2"));
    // Uncaught, it is a runtime error naming the function.
    let e = err(&sandbox(), r#"json.decode("{bad")"#, ErrorKind::Runtime);
    assert!(
        e.message
            .starts_with("script:1: json.decode: key must be a string"),
        "{e:?}"
    );
}

#[test]
fn json_errors_are_plain_strings() {
    assert_eq!(
        ok(r#"local ok, e = pcall(json.decode, "{bad") return type(e)"#),
        json!("string")
    );
    let v = ok(r#"local ok, e = pcall(json.encode, print) return "failed: " .. e"#);
    assert!(v.as_str().unwrap().contains("json.encode"), "{v}");
}

#[test]
fn deeply_nested_decode_errors_rather_than_crashing() {
    for src in [
        r#"json.decode(("["):rep(1e5))"#,
        r#"json.decode(("["):rep(1e5) .. ("]"):rep(1e5))"#,
        r#"json.decode(('{"a":'):rep(1e5) .. "1" .. ("}"):rep(1e5))"#,
        r#"json.decode(("["):rep(200) .. ("]"):rep(200))"#,
    ] {
        let e = caught(src);
        assert!(e.contains("json.decode"), "{e}");
        assert!(
            e.contains("recursion limit exceeded") || e.contains("nested too deeply"),
            "{e}"
        );
    }
    // Reasonable nesting decodes.
    assert_eq!(
        ok(r#"local v = json.decode(("["):rep(100) .. ("]"):rep(100)) return type(v)"#),
        json!("table")
    );
    // The host is fine after the deepest one.
    assert_eq!(ok("return 1"), json!(1));
}

#[test]
fn encode_errors_are_catchable_and_name_the_path() {
    for (setup, fragment) in [
        (
            "local t = {} t.self = t",
            "json.encode: $.self: the table contains itself (a cycle)",
        ),
        (
            "local t = {a = {b = {}}} t.a.b.c = t.a",
            "json.encode: $.a.b.c: the table contains itself (a cycle)",
        ),
        (
            "local t = {f = print}",
            "json.encode: $.f: a function cannot be represented in JSON",
        ),
        (
            "local t = {1, 0/0}",
            "json.encode: $[2]: NaN cannot be represented in JSON",
        ),
        (
            "local t = {s = '\\255'}",
            "json.encode: $.s: string is not valid UTF-8",
        ),
        (
            "local t = {[true] = 1}",
            "json.encode: $: a table key of type boolean cannot be a JSON object key",
        ),
        (
            "local t = {} local c = t for i = 1, 200 do c[1] = {} c = c[1] end",
            "nested deeper than the limit of 128 levels",
        ),
    ] {
        let e = ok(&format!(
            "{setup} local ok, e = pcall(json.encode, t) assert(not ok) return tostring(e)"
        ));
        let e = e.as_str().unwrap();
        assert!(e.contains(fragment), "{e:?} lacks {fragment:?}");
    }
    let e = err(
        &sandbox(),
        "local t = {} t.self = t return json.encode(t)",
        ErrorKind::Runtime,
    );
    assert!(e.message.contains("json.encode: $.self"), "{e:?}");
}

#[test]
fn encode_never_runs_metamethods() {
    let v = ok(r#"local loop = function() while true do end end
        local t = setmetatable({a = 1}, {__index = loop, __pairs = loop, __len = loop,
                                         __tostring = loop, __name = "x"})
        return json.encode(t)"#);
    assert_eq!(v, json!(r#"{"a":1}"#));
}

#[test]
fn decode_is_counted_against_the_memory_limit() {
    let sb = Sandbox::builder()
        .memory_limit(1 << 20)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // 600 KB of text fits; the 300 001 integers it decodes to do not.
    let src = r#"local s = "[" .. ("1,"):rep(3e5) .. "1]" local t = json.decode(s) return #t"#;
    let e = err(&sb, src, ErrorKind::MemoryLimit);
    assert!(e.message.contains("memory limit"), "{e:?}");
    // Caught by pcall and followed by another error: still the memory limit.
    let src = r#"local s = "[" .. ("1,"):rep(3e5) .. "1]" pcall(json.decode, s) error("other")"#;
    err(&sb, src, ErrorKind::MemoryLimit);
    // Strings too.
    let src = r#"local s = '"' .. ("x"):rep(4e5) .. '"' local a, b, c = json.decode(s), json.decode(s), json.decode(s) return #a"#;
    err(&sb, src, ErrorKind::MemoryLimit);
    // And the peak is what the allocator saw: never above the limit.
    let out = sb.run(
        r#"local s = "[" .. ("1,"):rep(3e5) .. "1]" return #json.decode(s)"#,
        &Json::Null,
    );
    assert!(
        out.stats.peak_memory_bytes <= 1 << 20,
        "peak {}",
        out.stats.peak_memory_bytes
    );
    // Under the default limit the same decode works, and its cost shows in the peak.
    let out = sandbox().run(
        r#"local s = "[" .. ("1,"):rep(3e5) .. "1]" return #json.decode(s)"#,
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!(300_001)));
    assert!(
        out.stats.peak_memory_bytes > 4_000_000,
        "peak {}",
        out.stats.peak_memory_bytes
    );
}

#[test]
fn encode_is_bounded_by_the_memory_left() {
    let sb = Sandbox::builder()
        .memory_limit(2 << 20)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The JSON text would be larger than the memory left: json.encode refuses it, and
    // the run reports memory_limit (sticky, like an allocator refusal).
    let src = r#"local t = {} local s = ("x"):rep(1000) for i = 1, 3000 do t[i] = s end return #json.encode(t)"#;
    err(&sb, src, ErrorKind::MemoryLimit);
    // Text that fits is produced.
    let src = r#"local t = {} local s = ("x"):rep(1000) for i = 1, 1000 do t[i] = s end return #json.encode(t)"#;
    assert_eq!(sb.run(src, &Json::Null).result, Ok(json!(1_003_001)));
}

#[test]
fn decoded_arrays_share_a_marker_that_host_reads_raw() {
    // The marker keeps [] round-tripping; a script changing its own marker's metamethods
    // cannot make the host run them.
    let v = ok(r#"local a = json.decode("[]")
        local mt = getmetatable(a)
        if type(mt) == "table" then
          mt.__index = function() while true do end end
          mt.__len = function() while true do end end
          mt.__pairs = function() while true do end end
        end
        return {a, json.decode("[1]")}"#);
    assert_eq!(v, json!([[], [1]]));
}
