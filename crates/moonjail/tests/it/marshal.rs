//! Marshaling between JSON and Lua (`src/marshal.rs`): property tests and exact rules.
//!
//! Rules under test (from the module docs): JSON objects ⇄ tables with string keys;
//! arrays ⇄ sequences; integers stay integers; `null` ⇄ `json.null`; a table whose keys
//! are exactly `1..n` (n ≥ 1) becomes an array, any other table an object with integer
//! and float keys written as strings; `{}` is an object unless it came from a JSON array;
//! values JSON cannot hold are `result` errors naming their path; input nested deeper
//! than the limit is an `input` error.
//!
//! Rule-based exceptions to "any JSON value round-trips unchanged" found here:
//! - integral floats (`3.0`) stay floats: they round-trip as `3.0`, not `3` (tested);
//! - integers above `i64::MAX` (only `u64` can hold them) become floats (tested). The
//!   generator produces `i64` integers, so the property holds as stated.
//!

use std::time::Duration;

use crate::support::without_null_fields;
use moonjail::{ErrorKind, Outcome, Profile, Sandbox};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Map, Value as Json};

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .profile(Profile::Standard)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a valid configuration")
}

fn run(sb: &Sandbox, src: &str, input: &Json) -> Outcome {
    sb.run(src, input)
}

fn ok(src: &str) -> Json {
    ok_with(src, &Json::Null)
}

fn ok_with(src: &str, input: &Json) -> Json {
    match run(&sandbox(), src, input).result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}\nsource: {src}"),
    }
}

fn err_kind(sb: &Sandbox, src: &str, input: &Json, kind: ErrorKind) -> moonjail::Error {
    match run(sb, src, input).result {
        Ok(v) => panic!("expected a {kind} error, got Ok({v})\nsource: {src}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "wrong kind: {e:?}\nsource: {src}");
            e
        }
    }
}

/// A `result` error; returns its message (`PATH: what`).
fn result_err(src: &str) -> String {
    err_kind(&sandbox(), src, &Json::Null, ErrorKind::Result).message
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// JSON → Lua → JSON round trip.
// ---------------------------------------------------------------------------------------

fn finite_fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000, 1u32..64).prop_map(|(a, b)| a as f64 + 1.0 / f64::from(b) / 2.0),
    ]
    .prop_filter("finite and not integral", |f| {
        f.is_finite() && f.fract() != 0.0
    })
}

/// Fractions with a short exact decimal form (k/16), which every JSON parser reads back
/// exactly.
fn short_fraction() -> impl Strategy<Value = f64> {
    (-1_000_000i64..1_000_000, 1i64..16).prop_map(|(a, k)| a as f64 + k as f64 / 16.0)
}

fn json_value() -> impl Strategy<Value = Json> {
    json_value_with(finite_fraction().boxed())
}

fn json_value_with(fraction: BoxedStrategy<f64>) -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            i64::MAX,
            i64::MIN,
            1 << 53,
            (1 << 53) + 1
        ])
        .prop_map(Json::from),
        fraction.prop_map(Json::from),
        any::<String>().prop_map(Json::String),
        "[a-z0-9 \u{e9}\u{4e2d}\u{1f600}\\\\\"\n\u{0}]{0,12}".prop_map(Json::String),
    ];
    leaf.prop_recursive(8, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((any::<String>(), inner.clone()), 0..6)
                .prop_map(|kv| Json::Object(kv.into_iter().collect::<Map<_, _>>())),
            prop::collection::vec(("[a-z1-9]{0,3}", inner), 0..6)
                .prop_map(|kv| Json::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn depth(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Json::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_json_value_round_trips(v in json_value()) {
        prop_assume!(depth(&v) <= 8);
        let sb = sandbox();
        // Null object fields are absent in Lua (JSON null is nil there); everything
        // else comes back exactly.
        let seen = without_null_fields(&v);
        let out = run(&sb, "return ...", &v);
        prop_assert_eq!(out.result, Ok(seen.clone()));
        // Through `run(input)` too.
        let out = run(&sb, "function run(input) return input end", &v);
        prop_assert_eq!(out.result, Ok(seen));
    }

    #[test]
    fn json_library_round_trips_the_same_values(v in json_value_with(short_fraction().boxed())) {
        prop_assume!(depth(&v) <= 8);
        let out = run(&sandbox(), "return json.decode(json.encode(...))", &v);
        prop_assert_eq!(out.result, Ok(without_null_fields(&v)));
    }

    #[test]
    fn json_library_round_trips_any_float(v in json_value()) {
        prop_assume!(depth(&v) <= 8);
        let out = run(&sandbox(), "return json.decode(json.encode(...))", &v);
        prop_assert_eq!(out.result, Ok(without_null_fields(&v)));
    }
}

// ---------------------------------------------------------------------------------------
// Random Lua values built by generated Lua source.
// ---------------------------------------------------------------------------------------

/// A Lua value, renderable as a Lua expression, with a model of its JSON form.
#[derive(Debug, Clone)]
enum Lv {
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    Null,
    Nan,
    Inf(bool),
    Func,
    Thread,
    Table(Vec<Lv>, Vec<(Key, Lv)>),
}

#[derive(Debug, Clone)]
enum Key {
    Str(String),
    Float(f64),
    Int(i64),
    Bool,
    Table,
}

impl Key {
    /// The key as Lua normalizes it, for deduplication; None for keys with no JSON form.
    fn id(&self) -> Option<String> {
        match self {
            Key::Str(s) => Some(format!("s{s}")),
            Key::Float(f) => Some(format!("f{f:?}")),
            Key::Int(i) => Some(format!("i{i}")),
            Key::Bool | Key::Table => None,
        }
    }

    /// The JSON object key the marshaler writes.
    fn json_key(&self) -> Option<String> {
        match self {
            Key::Str(s) => Some(s.clone()),
            Key::Float(f) => Some(f.to_string()),
            Key::Int(i) => Some(i.to_string()),
            Key::Bool | Key::Table => None,
        }
    }

    fn lua(&self) -> String {
        match self {
            Key::Str(s) => lua_string(s.as_bytes()),
            Key::Float(f) => lua_float(*f),
            Key::Int(i) => lua_int(*i),
            Key::Bool => "true".into(),
            Key::Table => "{}".into(),
        }
    }
}

fn lua_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.push_str(&format!("\\{b:03}"));
    }
    s.push('"');
    s
}

fn lua_int(i: i64) -> String {
    if i == i64::MIN {
        "math.mininteger".into()
    } else if i < 0 {
        format!("(-{})", -i)
    } else {
        i.to_string()
    }
}

fn lua_float(f: f64) -> String {
    let text = format!("{:?}", f.abs());
    if f < 0.0 {
        format!("(-{text})")
    } else {
        text
    }
}

impl Lv {
    fn lua(&self) -> String {
        match self {
            Lv::Int(i) => lua_int(*i),
            Lv::Float(f) => lua_float(*f),
            Lv::Str(s) => lua_string(s.as_bytes()),
            Lv::Bytes(b) => lua_string(b),
            Lv::Bool(b) => b.to_string(),
            Lv::Null => "json.null".into(),
            Lv::Nan => "(0/0)".into(),
            Lv::Inf(neg) => {
                if *neg {
                    "(-math.huge)".into()
                } else {
                    "math.huge".into()
                }
            }
            Lv::Func => "print".into(),
            Lv::Thread => "coroutine.create(print)".into(),
            Lv::Table(seq, keyed) => {
                let mut parts: Vec<String> = keyed
                    .iter()
                    .map(|(k, v)| format!("[{}] = {}", k.lua(), v.lua()))
                    .collect();
                parts.extend(seq.iter().map(Lv::lua));
                format!("{{{}}}", parts.join(", "))
            }
        }
    }

    /// The JSON the marshaler must produce, or `None` when it must refuse the value.
    fn model(&self) -> Option<Json> {
        Some(match self {
            Lv::Int(i) => json!(i),
            Lv::Float(f) => json!(f),
            Lv::Str(s) => json!(s),
            Lv::Bytes(b) => json!(std::str::from_utf8(b).ok()?),
            Lv::Bool(b) => json!(b),
            Lv::Null => Json::Null,
            Lv::Nan | Lv::Inf(_) | Lv::Func | Lv::Thread => return None,
            Lv::Table(seq, keyed) => {
                if keyed.is_empty() && seq.is_empty() {
                    return Some(json!({}));
                }
                if keyed.is_empty() {
                    return Some(Json::Array(
                        seq.iter().map(Lv::model).collect::<Option<_>>()?,
                    ));
                }
                let mut map = Map::new();
                for (i, v) in seq.iter().enumerate() {
                    map.insert((i + 1).to_string(), v.model()?);
                }
                for (k, v) in keyed {
                    map.insert(k.json_key()?, v.model()?);
                }
                Json::Object(map)
            }
        })
    }
}

fn good_leaf() -> impl Strategy<Value = Lv> {
    prop_oneof![
        any::<i64>().prop_map(Lv::Int),
        (-100i64..100).prop_map(Lv::Int),
        finite_fraction().prop_map(Lv::Float),
        any::<String>().prop_map(Lv::Str),
        "[a-z\u{e9}]{0,6}".prop_map(Lv::Str),
        any::<bool>().prop_map(Lv::Bool),
        Just(Lv::Null),
    ]
}

fn bad_leaf() -> impl Strategy<Value = Lv> {
    prop_oneof![
        Just(Lv::Nan),
        any::<bool>().prop_map(Lv::Inf),
        Just(Lv::Func),
        Just(Lv::Thread),
        prop::collection::vec(any::<u8>(), 1..6)
            .prop_filter("invalid UTF-8", |b| std::str::from_utf8(b).is_err())
            .prop_map(Lv::Bytes),
    ]
}

/// Keys that cannot collide with positional indices or with each other's JSON text:
/// strings start with a letter, integers are ≤ 0, floats are not integral.
fn safe_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        4 => "[a-zA-Z\u{e9}\u{4e2d}][a-z0-9 _]{0,5}".prop_map(Key::Str),
        1 => finite_fraction().prop_map(Key::Float),
        1 => (i64::MIN..=0).prop_map(Key::Int),
        1 => (-5i64..=0).prop_map(Key::Int),
    ]
}

fn dedup(keyed: Vec<(Key, Lv)>) -> Vec<(Key, Lv)> {
    let mut seen = std::collections::HashSet::new();
    keyed
        .into_iter()
        .filter(|(k, _)| k.id().is_none_or(|id| seen.insert(id)))
        .collect()
}

/// Values whose tables have no positive integer keys besides their positional items.
fn lua_value(bad_weight: u32, key: BoxedStrategy<Key>) -> impl Strategy<Value = Lv> {
    let leaf = prop_oneof![8 => good_leaf(), bad_weight => bad_leaf()];
    leaf.prop_recursive(6, 64, 6, move |inner| {
        (
            prop::collection::vec(inner.clone(), 0..6),
            prop::collection::vec((key.clone(), inner), 0..5),
        )
            .prop_map(|(seq, keyed)| Lv::Table(seq, dedup(keyed)))
    })
}

fn any_key() -> BoxedStrategy<Key> {
    prop_oneof![
        6 => safe_key(),
        2 => (1i64..12).prop_map(Key::Int),
        1 => Just(Key::Bool),
        1 => Just(Key::Table),
        1 => "[0-9]{1,2}".prop_map(Key::Str),
    ]
    .boxed()
}

/// Statements applied to the value (when it is a table) after it is built.
#[derive(Debug, Clone)]
enum Op {
    Set(Key, Lv),
    Delete(Key),
    Cycle(String),
    Deleted(i64),
    Metatable,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any_key(), lua_value(1, any_key())).prop_map(|(k, v)| Op::Set(k, v)),
        2 => any_key().prop_map(Op::Delete),
        1 => "[a-z]{1,3}".prop_map(Op::Cycle),
        2 => (1i64..10).prop_map(Op::Deleted),
        1 => Just(Op::Metatable),
    ]
}

fn program(v: &Lv, ops: &[Op]) -> String {
    let mut src = format!("local t = {}\n", v.lua());
    src.push_str("if type(t) == 'table' then\n");
    for op in ops {
        match op {
            Op::Set(k, v) => src.push_str(&format!("  t[{}] = {}\n", k.lua(), v.lua())),
            Op::Delete(k) => src.push_str(&format!("  t[{}] = nil\n", k.lua())),
            Op::Cycle(name) => src.push_str(&format!("  t[\"{name}\"] = {{t}}\n")),
            Op::Deleted(i) => src.push_str(&format!("  t[{i}] = 1 t[{i}] = nil\n")),
            Op::Metatable => src.push_str(
                "  setmetatable(t, {__index = function() while true do end end, \
                 __pairs = function() while true do end end, __len = function() return 1e9 end})\n",
            ),
        }
    }
    src.push_str("end\nreturn t\n");
    src
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever the table, the marshaler either produces JSON or a `result` error: never a
    /// panic, a hang (host-side metamethods never run) or another kind.
    #[test]
    fn random_lua_values_marshal_or_fail_as_result(
        v in lua_value(2, any_key()),
        ops in prop::collection::vec(op(), 0..6),
    ) {
        let src = program(&v, &ops);
        let out = run(&sandbox(), &src, &Json::Null);
        if let Err(e) = &out.result {
            prop_assert_eq!(e.kind, ErrorKind::Result, "{:?}\n{}", e, src);
            prop_assert!(e.message.starts_with('$'), "the message names a path: {:?}", e.message);
        }
    }

    /// Tables without integer holes marshal exactly as the rules say.
    #[test]
    fn lua_tables_without_int_holes_match_the_rules(v in lua_value(1, safe_key().boxed())) {
        let src = format!("return {}", v.lua());
        let out = run(&sandbox(), &src, &Json::Null);
        match v.model() {
            Some(want) => prop_assert_eq!(out.result, Ok(want), "{}", src),
            None => {
                let e = out.result.expect_err("the model refuses this value");
                prop_assert_eq!(e.kind, ErrorKind::Result, "{:?}\n{}", e, src);
            }
        }
    }
}

/// A model of the final contents of a table after its statements ran.
fn table_after(seq: &[Lv], keyed: &[(Key, Lv)], ops: &[(i64, Option<i64>)]) -> Json {
    // Only integer keys and string keys are used here; values are integers.
    let mut ints = std::collections::BTreeMap::new();
    for (i, v) in seq.iter().enumerate() {
        if let Lv::Int(x) = v {
            ints.insert(i as i64 + 1, *x);
        }
    }
    let mut strs = Map::new();
    for (k, v) in keyed {
        if let (Key::Str(s), Lv::Int(x)) = (k, v) {
            strs.insert(s.clone(), json!(x));
        }
    }
    for (k, v) in ops {
        match v {
            Some(x) => {
                ints.insert(*k, *x);
            }
            None => {
                ints.remove(k);
            }
        }
    }
    let n = ints.len() as i64;
    let is_seq = n > 0 && strs.is_empty() && ints.keys().copied().eq(1..=n);
    if is_seq {
        return Json::Array(ints.values().map(|x| json!(x)).collect());
    }
    if ints.is_empty() && strs.is_empty() {
        return json!({});
    }
    let mut map = strs;
    for (k, x) in ints {
        map.insert(k.to_string(), json!(x));
    }
    Json::Object(map)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn lua_tables_with_int_holes_match_the_rules(
        seq in prop::collection::vec((-9i64..9).prop_map(Lv::Int), 0..8),
        keyed in prop::collection::vec(("[a-c]", (-9i64..9).prop_map(Lv::Int)).prop_map(|(k, v)| (Key::Str(k), v)), 0..2),
        ops in prop::collection::vec((1i64..10, prop::option::of(-9i64..9)), 0..10),
    ) {
        let keyed = dedup(keyed);
        let mut src = format!("local t = {}\n", Lv::Table(seq.clone(), keyed.clone()).lua());
        for (k, v) in &ops {
            match v {
                Some(x) => src.push_str(&format!("t[{k}] = {}\n", lua_int(*x))),
                None => src.push_str(&format!("t[{k}] = nil\n")),
            }
        }
        src.push_str("return t\n");
        let out = run(&sandbox(), &src, &Json::Null);
        prop_assert_eq!(out.result, Ok(table_after(&seq, &keyed, &ops)), "{}", src);
    }
}

// ---------------------------------------------------------------------------------------
// Exact rules.
// ---------------------------------------------------------------------------------------

#[test]
fn integers_stay_integers() {
    let v = ok("return 3");
    assert!(v.is_i64(), "{v}");
    assert_eq!(v, json!(3));
    assert_eq!(
        ok("return {math.maxinteger, math.mininteger, -0, 1 << 53}"),
        json!([i64::MAX, i64::MIN, 0, 1i64 << 53])
    );
    assert_eq!(
        ok_with("return math.type(...)", &json!(5)),
        json!("integer")
    );
    assert_eq!(
        ok_with("return math.type(...)", &json!(-9_007_199_254_740_993i64)),
        json!("integer")
    );
    assert_eq!(
        ok_with("return ... + 1", &json!(i64::MAX - 1)),
        json!(i64::MAX)
    );
    assert_eq!(
        ok_with("return math.type(...)", &json!(5.5)),
        json!("float")
    );
    // Integer arithmetic that overflows wraps, like Lua; it never turns into a float.
    assert_eq!(ok("return math.maxinteger + 1"), json!(i64::MIN));
}

#[test]
fn integral_floats_stay_floats() {
    // A documented exception to "integers stay integers": a float with an integral value
    // is still a float, both ways.
    let v = ok("return 3.0");
    assert!(v.is_f64(), "{v}");
    assert_eq!(v, json!(3.0));
    assert_eq!(
        ok_with("return math.type(...)", &json!(2.0)),
        json!("float")
    );
    assert_eq!(ok_with("return ...", &json!(2.0)), json!(2.0));
    assert_eq!(ok("return 2^63"), json!(9.223_372_036_854_776e18));
    assert_eq!(ok("return -0.0"), json!(-0.0));
}

#[test]
fn integers_above_i64_become_floats() {
    // JSON integers past i64::MAX have no Lua integer form; they arrive as floats.
    assert_eq!(
        ok_with("return math.type(...)", &json!(u64::MAX)),
        json!("float")
    );
    assert_eq!(
        ok_with("return ...", &json!(u64::MAX)),
        json!(u64::MAX as f64)
    );
}

#[test]
fn json_null_in_arrays_and_objects() {
    assert_eq!(ok("return {1, json.null, 3}"), json!([1, null, 3]));
    assert_eq!(ok("return {json.null}"), json!([null]));
    assert_eq!(ok("return {json.null, json.null}"), json!([null, null]));
    assert_eq!(ok("return {a = json.null}"), json!({"a": null}));
    assert_eq!(ok("return json.null"), Json::Null);
    assert_eq!(ok("return nil"), Json::Null);
    assert_eq!(ok("return"), Json::Null);
    let input = json!({"a": null, "b": [null, 1], "c": [null]});
    assert_eq!(
        ok_with("return ...", &input),
        json!({"b": [null, 1], "c": [null]})
    );
    assert_eq!(
        ok_with(
            "local i = ... return {i.a == nil, i.b[1] == json.null, #i.b, #i.c}",
            &input
        ),
        json!([true, true, 2, 1])
    );
}

#[test]
fn sequences_become_arrays() {
    assert_eq!(
        ok(r#"return {1, "a", true, {}, {2}}"#),
        json!([1, "a", true, {}, [2]])
    );
    assert_eq!(
        ok("local t = {} for i = 1, 100 do t[i] = i end return t"),
        json!((1..=100).collect::<Vec<_>>())
    );
    assert_eq!(
        ok("local t = {} t[3] = 3 t[1] = 1 t[2] = 2 return t"),
        json!([1, 2, 3])
    );
    assert_eq!(ok("return {[1] = 'a', [2] = 'b'}"), json!(["a", "b"]));
    assert_eq!(ok("return {[1.0] = 'a', [2.0] = 'b'}"), json!(["a", "b"]));
}

#[test]
fn sparse_tables_become_objects_with_string_keys() {
    assert_eq!(
        ok(r#"return {[1] = "a", [3] = "c"}"#),
        json!({"1": "a", "3": "c"})
    );
    assert_eq!(ok("return {1, 2, nil, 4}"), json!({"1": 1, "2": 2, "4": 4}));
    assert_eq!(
        ok(r#"return {[0] = "z", "a"}"#),
        json!({"0": "z", "1": "a"})
    );
    assert_eq!(
        ok(r#"return {[-1] = "m", [2] = "b"}"#),
        json!({"-1": "m", "2": "b"})
    );
    assert_eq!(
        ok("return {[1.5] = 1, [-0.25] = 2}"),
        json!({"1.5": 1, "-0.25": 2})
    );
    assert_eq!(ok("return {[2^53] = 1}"), json!({"9007199254740992": 1}));
    assert_eq!(
        ok(r#"return {1, 2, x = "y"}"#),
        json!({"1": 1, "2": 2, "x": "y"})
    );
    assert_eq!(
        ok("local t = {1, 2, 3} t[2] = nil return t"),
        json!({"1": 1, "3": 3})
    );
}

#[test]
fn tables_with_holes_are_never_arrays_with_dropped_keys() {
    assert_eq!(
        ok("return {nil, 2, 3, a = 1}"),
        json!({"2": 2, "3": 3, "a": 1})
    );
    assert_eq!(
        ok("return {nil, nil, 3, a = 1, b = 2}"),
        json!({"3": 3, "a": 1, "b": 2})
    );
    assert_eq!(
        ok("local t = {} t[2] = 2 t[3] = 3 t[4] = 4 t.a = 'dropped' return t"),
        json!({"2": 2, "3": 3, "4": 4, "a": "dropped"})
    );
}

#[test]
fn colliding_keys_are_an_error_not_a_silent_drop() {
    for src in [
        r#"return {"first", ["1"] = "str"}"#,
        r#"return {[-1] = "int", ["-1"] = "str"}"#,
        r#"return {[1.5] = "float", ["1.5"] = "str"}"#,
    ] {
        let e = err_kind(&sandbox(), src, &Json::Null, ErrorKind::Result);
        assert!(e.message.starts_with("$: "), "{e:?}");
    }
}

#[test]
fn empty_tables() {
    assert_eq!(ok("return {}"), json!({}));
    assert_eq!(ok("return {{}, {a = {}}}"), json!([{}, {"a": {}}]));
    // A table emptied by the script is an object.
    assert_eq!(ok("local t = {1} t[1] = nil return t"), json!({}));
}

#[test]
fn empty_decoded_arrays_stay_arrays() {
    assert_eq!(ok_with("return ...", &json!([])), json!([]));
    assert_eq!(
        ok_with("return ...", &json!({"a": [], "b": {}, "c": [[]]})),
        json!({"a": [], "b": {}, "c": [[]]})
    );
    assert_eq!(ok_with("return (...).a", &json!({"a": []})), json!([]));
    assert_eq!(ok(r#"return json.decode("[]")"#), json!([]));
    assert_eq!(ok(r#"return json.decode('{"x": []}')"#), json!({"x": []}));
    // Filled, it is a plain array.
    assert_eq!(
        ok_with("local t = ... t[1] = 5 return t", &json!([])),
        json!([5])
    );
    // Only tables made from JSON arrays are marked.
    assert_eq!(
        ok_with("local t = ... return {t, {}}", &json!([])),
        json!([[], {}])
    );
}

#[test]
fn decoded_arrays_emptied_by_the_script_stay_arrays() {
    assert_eq!(
        ok_with("local t = ... t[1] = nil return t", &json!([1])),
        json!([])
    );
    assert_eq!(
        ok_with(
            "local i = ... table.remove(i.items) return i",
            &json!({"items": [1]})
        ),
        json!({"items": []})
    );
    assert_eq!(
        ok(r#"local t = json.decode("[1, 2]") t[2] = nil t[1] = nil return t"#),
        json!([])
    );
}

#[test]
fn cycles_are_named_by_path() {
    assert_eq!(
        result_err("local t = {a = {}} t.a.b = t return t"),
        "$.a.b: the table contains itself (a cycle)"
    );
    assert_eq!(
        result_err("local t = {a = {}} t.a.b = t.a return t"),
        "$.a.b: the table contains itself (a cycle)"
    );
    assert_eq!(
        result_err("local t = {} t[1] = t return t"),
        "$[1]: the table contains itself (a cycle)"
    );
    assert_eq!(
        result_err("local t = {{}} t[1][1] = t return t"),
        "$[1][1]: the table contains itself (a cycle)"
    );
    assert_eq!(
        result_err(r#"local t = {["a b"] = {}} t["a b"]["1x"] = t return t"#),
        r#"$["a b"]["1x"]: the table contains itself (a cycle)"#
    );
    // A table reachable twice without a cycle is fine.
    assert_eq!(
        ok("local s = {1} return {a = s, b = s, c = {s}}"),
        json!({"a": [1], "b": [1], "c": [[1]]})
    );
}

#[test]
fn values_without_json_form_are_result_errors_with_their_path() {
    assert_eq!(
        result_err("return print"),
        "$: a function cannot be represented in JSON"
    );
    assert_eq!(
        result_err("return {1, {f = print}}"),
        "$[2].f: a function cannot be represented in JSON"
    );
    assert_eq!(
        result_err("return {x = {coroutine.create(print)}}"),
        "$.x[1]: a thread cannot be represented in JSON"
    );
    assert_eq!(
        result_err("return {function() end}"),
        "$[1]: a function cannot be represented in JSON"
    );
    // A full userdata: a file handle of the aos profile's io.open.
    let path = env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml";
    let sb = moonjail::Sandbox::builder()
        .profile(moonjail::Profile::Aos)
        .host_files(moonjail::HostFiles::default().allow_read(path.clone()))
        .build()
        .unwrap();
    let out = sb.run("return {f = io.open((...))}", &json!(path));
    let e = out.result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Result);
    assert!(
        e.message.starts_with("$.f: ") && e.message.contains("userdata cannot be represented"),
        "{e:?}"
    );
    assert_eq!(
        result_err("return {n = 0/0}"),
        "$.n: NaN cannot be represented in JSON (NaN and infinities have no JSON form)"
    );
    assert!(result_err("return {math.huge}").starts_with("$[1]: inf cannot"));
    assert!(result_err("return {a = {-math.huge}}").starts_with("$.a[1]: -inf cannot"));
    assert_eq!(
        result_err("return {[true] = 1}"),
        "$: a table key of type boolean cannot be a JSON object key"
    );
    assert_eq!(
        result_err("return {a = {[{}] = 1}}"),
        "$.a: a table key of type table cannot be a JSON object key"
    );
    assert_eq!(
        result_err("return {[print] = 1}"),
        "$: a table key of type function cannot be a JSON object key"
    );
}

#[test]
fn invalid_utf8_is_a_result_error() {
    assert_eq!(
        result_err(r#"return "\255""#),
        "$: string is not valid UTF-8 (invalid byte at offset 0)"
    );
    assert_eq!(
        result_err(r#"return {a = {"ok", "ab\192"}}"#),
        "$.a[2]: string is not valid UTF-8 (invalid byte at offset 2)"
    );
    assert_eq!(
        result_err(r#"return {["\255"] = 1}"#),
        "$: a table key is not valid UTF-8"
    );
    // Valid multi-byte text and NUL bytes are fine.
    assert_eq!(
        ok(r#"return "\u{e9}\u{1F600}\0x""#),
        json!("\u{e9}\u{1F600}\u{0}x")
    );
}

#[test]
fn results_deeper_than_the_limit_are_result_errors() {
    let sb = Sandbox::builder().result_depth(4).build().unwrap();
    assert_eq!(
        run(&sb, "return {{{{1}}}}", &Json::Null).result,
        Ok(json!([[[[1]]]]))
    );
    let e = err_kind(&sb, "return {{{{{1}}}}}", &Json::Null, ErrorKind::Result);
    assert_eq!(
        e.message,
        "$[1][1][1][1]: nested deeper than the limit of 4 levels"
    );
    let e = err_kind(
        &sb,
        "return {a = {b = {c = {d = {}}}}}",
        &Json::Null,
        ErrorKind::Result,
    );
    assert_eq!(
        e.message,
        "$.a.b.c.d: nested deeper than the limit of 4 levels"
    );
    // The default limit is 64.
    let deep = "local t = {} for i = 1, 100 do t = {t} end return t";
    let e = err_kind(&sandbox(), deep, &Json::Null, ErrorKind::Result);
    assert!(
        e.message
            .ends_with("nested deeper than the limit of 64 levels"),
        "{e:?}"
    );
}

#[test]
fn input_deeper_than_the_limit_is_an_input_error() {
    let sb = Sandbox::builder().result_depth(3).build().unwrap();
    assert_eq!(
        run(&sb, "return ...", &json!([[[1]]])).result,
        Ok(json!([[[1]]]))
    );
    assert_eq!(
        run(&sb, "return ...", &json!({"a": {"b": {"c": 1}}})).result,
        Ok(json!({"a": {"b": {"c": 1}}}))
    );
    let e = err_kind(&sb, "return ...", &json!([[[[1]]]]), ErrorKind::Input);
    assert_eq!(e.message, "JSON nested too deeply");
    err_kind(
        &sb,
        "return 1",
        &json!({"a": {"b": {"c": {"d": 1}}}}),
        ErrorKind::Input,
    );
    // The script never ran: nothing was printed.
    let out = run(&sb, "print('ran')", &json!([[[[1]]]]));
    assert_eq!(out.output, "");
}

#[test]
fn results_larger_than_the_limit_are_result_errors() {
    let sb = Sandbox::builder().result_limit(100).build().unwrap();
    assert!(run(&sb, r#"return ("x"):rep(50)"#, &Json::Null)
        .result
        .is_ok());
    let e = err_kind(
        &sb,
        r#"return ("x"):rep(200)"#,
        &Json::Null,
        ErrorKind::Result,
    );
    assert_eq!(
        e.message,
        "$: the JSON would be larger than the 100 byte limit"
    );
    err_kind(
        &sb,
        "local t = {} for i = 1, 100 do t[i] = i end return t",
        &Json::Null,
        ErrorKind::Result,
    );
}

#[test]
fn require_table_result() {
    let sb = Sandbox::builder()
        .require_table_result(true)
        .build()
        .unwrap();
    assert_eq!(run(&sb, "return {}", &Json::Null).result, Ok(json!({})));
    let e = err_kind(&sb, "return 1", &Json::Null, ErrorKind::Result);
    assert_eq!(e.message, "the result must be a table, got a integer");
    err_kind(&sb, "return nil", &Json::Null, ErrorKind::Result);
}

#[test]
fn run_convention() {
    // `run(input)`'s first return value wins over the chunk's.
    assert_eq!(
        ok_with(
            "function run(x) return x.n * 2, 'ignored' end return 'chunk'",
            &json!({"n": 21})
        ),
        json!(42)
    );
    // A chunk's first return value otherwise.
    assert_eq!(
        ok_with("local x = ... return x, 'ignored'", &json!([1])),
        json!([1])
    );
    let sb = Sandbox::builder().require_run(true).build().unwrap();
    let e = err_kind(&sb, "return 1", &Json::Null, ErrorKind::Runtime);
    assert!(e.message.contains("no global function `run`"), "{e:?}");
}
