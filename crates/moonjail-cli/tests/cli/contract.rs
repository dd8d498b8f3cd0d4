//! The agent contract (issue 10), checked from the outside: scripts written the way
//! models write them, run through the binary (`run --json`, `run --raw`, `run -e`,
//! `session`), every named field asserted exactly: `error.line`, `error.traceback`,
//! `error.value`, `results`, `output_truncated`, the `stats` budgets. A representative
//! subset also runs with `--isolate`, where the same document crosses the worker
//! protocol. The library-level checks are `moonjail/tests/it/contract.rs`; the tool
//! catalogue's are `catalogue.rs`.

use serde_json::{json, Value as Json};

use crate::support::*;

/// The `stats.limits` of a run with every limit at its CLI default.
fn default_limits() -> Json {
    json!({"wall_ms": 5000.0, "memory_bytes": 67108864, "instructions": null,
           "output_bytes": 1048576, "tool_calls": null})
}

/// `moonjail ARGS --json` in `dir` (with the isolation flags when `isolate`): the exit
/// status and the document, whose shape is checked.
fn doc_in(dir: &TempDir, args: &[&str], isolate: bool) -> (Option<i32>, Json) {
    let flags = isolate_flags();
    let mut all = with_isolation(args, isolate, &flags);
    all.push("--json");
    let out = moonjail(dir, &all, None);
    let doc = out.json();
    assert_document_shape(&doc);
    (out.code, doc)
}

/// `moonjail run -e CODE EXTRA... --json` (isolated when `isolate`).
fn eval_doc(code: &str, extra: &[&str], isolate: bool) -> (Option<i32>, Json) {
    let mut args = vec!["run", "-e", code];
    args.extend_from_slice(extra);
    doc_in(&TempDir::new(), &args, isolate)
}

/// A failure's `error`, after checking the document says it failed with status 1.
fn failed(code: Option<i32>, doc: &Json) -> Json {
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["ok"], json!(false), "{doc}");
    assert_eq!(doc["results"], json!([]), "{doc}");
    doc["error"].clone()
}

fn frame(function: Option<&str>, source: &str, line: u32) -> Json {
    json!({"function": function, "source": source, "line": line})
}

/// An error document's `error`, exactly.
fn error(kind: &str, message: &str, line: Option<u32>, traceback: Vec<Json>, value: Json) -> Json {
    json!({"kind": kind, "message": message, "line": line, "traceback": traceback,
           "value": value, "hint": null})
}

// ---------------------------------------------------------------------------------------
// Errors a model can act on.
// ---------------------------------------------------------------------------------------

/// The agent of the issue: `require("json")` first, `run(ctx)` iterating a field the
/// context lacks, through a helper.
const AGENT: &str = r#"local json = require("json")

local function total(orders)
  local sum = 0
  for _, o in ipairs(orders) do
    sum = sum + o.amount
  end
  return sum
end

function run(ctx)
  local t = total(ctx.orders)
  return {total = t, echo = json.encode({n = t})}
end
"#;

#[test]
fn an_agent_iterating_a_missing_field_gets_the_line_and_the_call_chain() {
    for isolate in [false, true] {
        for profile in ["standard", "aos"] {
            let dir = TempDir::new();
            dir.write("agent.lua", AGENT);
            let (code, doc) = doc_in(
                &dir,
                &[
                    "run",
                    "agent.lua",
                    "--profile",
                    profile,
                    "--input",
                    r#"{"customer": "ada"}"#,
                ],
                isolate,
            );
            assert_eq!(
                failed(code, &doc),
                error(
                    "runtime",
                    "attempt to index a nil value",
                    Some(5),
                    vec![
                        frame(Some("total"), "agent.lua", 5),
                        frame(Some("run"), "agent.lua", 12)
                    ],
                    Json::Null
                ),
                "{profile} isolate={isolate}"
            );
            assert_eq!(doc["result"], Json::Null);
            assert_eq!(doc["output"], json!(""));
            assert_eq!(doc["output_truncated"], Json::Null);
            assert_eq!(doc["stats"]["limits"], default_limits());
            assert_eq!(doc["stats"]["tool_calls"], json!(0));
            assert_eq!(doc["stats"]["instructions"], Json::Null);

            // With the field there, the same agent works (and its require did).
            let (code, doc) = doc_in(
                &dir,
                &[
                    "run",
                    "agent.lua",
                    "--profile",
                    profile,
                    "--input",
                    r#"{"orders": [{"amount": 2}, {"amount": 40}]}"#,
                ],
                isolate,
            );
            assert_eq!(code, Some(0), "{doc}");
            assert_eq!(doc["results"], json!([{"total": 42, "echo": "{\"n\":42}"}]));
        }
    }
    // No input at all: ctx is nil, and Lua's own message names it.
    let dir = TempDir::new();
    dir.write("agent.lua", AGENT);
    let (code, doc) = doc_in(&dir, &["run", "agent.lua"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            "agent.lua:12: attempt to index a nil value (local 'ctx')",
            Some(12),
            vec![frame(Some("run"), "agent.lua", 12)],
            Json::Null
        )
    );
}

#[test]
fn errors_raised_in_callbacks_and_at_level_2_keep_every_frame() {
    let dir = TempDir::new();
    dir.write(
        "sort.lua",
        "function run(ctx)\n  table.sort(ctx.items, function(a, b)\n    return a.n < b.n\n  end)\n  return ctx.items\nend\n",
    );
    let (code, doc) = doc_in(
        &dir,
        &["run", "sort.lua", "--input", r#"{"items": [{"n": 1}, {}]}"#],
        false,
    );
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            "sort.lua:3: attempt to compare nil with number",
            Some(3),
            vec![
                frame(None, "sort.lua", 3),
                frame(Some("run"), "sort.lua", 2)
            ],
            Json::Null
        )
    );
    // `error(msg, 2)` blames the caller: `line` is the line the message names, the
    // traceback still starts where `error` was called.
    dir.write(
        "check.lua",
        "local function check(x)\n  if not x then error(\"bad arg\", 2) end\nend\nlocal function f()\n  check(nil)\nend\nf()\n",
    );
    let (code, doc) = doc_in(&dir, &["run", "check.lua"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            "check.lua:5: bad arg",
            Some(5),
            vec![
                frame(Some("check"), "check.lua", 2),
                frame(Some("f"), "check.lua", 5),
                frame(None, "check.lua", 7)
            ],
            Json::Null
        )
    );
}

#[test]
fn a_raised_table_is_the_value_and_tostring_its_message() {
    for isolate in [false, true] {
        let dir = TempDir::new();
        dir.write(
            "lookup.lua",
            "local function lookup(id)\n  if id ~= 1 then\n    error({code = 42, id = id})\n  end\nend\nlookup(7)\n",
        );
        let (code, doc) = doc_in(&dir, &["run", "lookup.lua"], isolate);
        assert_eq!(
            failed(code, &doc),
            error(
                "runtime",
                r#"error object: {"code":42,"id":7}"#,
                Some(3),
                vec![
                    frame(Some("lookup"), "lookup.lua", 3),
                    frame(None, "lookup.lua", 6)
                ],
                json!({"code": 42, "id": 7})
            ),
            "isolate={isolate}"
        );
        dir.write(
            "typed.lua",
            "local NotFound = {__tostring = function(e) return \"not found: \" .. e.key end}\n\
             local function fail(key)\n  error(setmetatable({key = key}, NotFound))\nend\nfail(\"users/7\")\n",
        );
        let (code, doc) = doc_in(&dir, &["run", "typed.lua"], isolate);
        assert_eq!(
            failed(code, &doc),
            error(
                "runtime",
                "not found: users/7",
                Some(3),
                vec![
                    frame(Some("fail"), "typed.lua", 3),
                    frame(None, "typed.lua", 5)
                ],
                json!({"key": "users/7"})
            ),
            "isolate={isolate}"
        );
    }
    // Caught by the script, the table is still the script's own.
    let (code, doc) = eval_doc(
        "local ok, e = pcall(error, {code = 42}) return ok, e.code",
        &[],
        false,
    );
    assert_eq!(code, Some(0));
    assert_eq!(doc["results"], json!([false, 42]));
    // `error({code = 42})` on the command line: the chunk is `(command line)`.
    let (code, doc) = eval_doc("error({code = 42})", &[], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            r#"error object: {"code":42}"#,
            Some(1),
            vec![frame(None, "(command line)", 1)],
            json!({"code": 42})
        )
    );
}

/// A runaway loop in a function, stopped by each limit: the limit, its value and the
/// place, in the message, `line` and `traceback`; `stats.limits` has the flags' values.
const SPIN: &str = "local x = 0\nfunction spin()\n  while true do x = x + 1 end\nend\nspin()\n";

#[test]
fn a_runaway_loop_is_stopped_with_the_limit_its_value_and_the_place() {
    let dir = TempDir::new();
    dir.write("spin.lua", SPIN);
    let where_ = vec![
        frame(Some("spin"), "spin.lua", 3),
        frame(None, "spin.lua", 5),
    ];
    let (code, doc) = doc_in(&dir, &["run", "spin.lua", "--timeout", "200ms"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "timeout",
            "timeout: the script ran past its 200 ms deadline (stopped at line 3 in function 'spin')",
            Some(3),
            where_.clone(),
            Json::Null
        )
    );
    assert_eq!(
        doc["stats"]["limits"],
        json!({"wall_ms": 200.0, "memory_bytes": 67108864, "instructions": null,
               "output_bytes": 1048576, "tool_calls": null})
    );
    assert_eq!(doc["stats"]["instructions"], Json::Null);

    for isolate in [false, true] {
        let (code, doc) = doc_in(
            &dir,
            &[
                "run",
                "spin.lua",
                "--instructions",
                "5000",
                "--memory",
                "8MiB",
                "--output-limit",
                "2KiB",
            ],
            isolate,
        );
        assert_eq!(
            failed(code, &doc),
            error(
                "instruction_limit",
                "instruction_limit: the script used up its budget of 5000 instructions (stopped at line 3 in function 'spin')",
                Some(3),
                where_.clone(),
                Json::Null
            ),
            "isolate={isolate}"
        );
        assert_eq!(doc["stats"]["instructions"], json!(5000));
        assert_eq!(
            doc["stats"]["limits"],
            json!({"wall_ms": 5000.0, "memory_bytes": 8388608, "instructions": 5000,
                   "output_bytes": 2048, "tool_calls": null})
        );
    }
}

/// `stats.instructions` is exact: the least `--instructions` under which the run
/// succeeds (one less fails, with the budget reported as used).
#[test]
fn stats_instructions_is_the_least_budget_that_succeeds() {
    let script = "function run(ctx)\n  local out = {}\n  for i, v in ipairs(ctx.items) do out[i] = v * 2 end\n  return out, #out\nend";
    let input = r#"{"items": [1, 2, 3, 4, 5]}"#;
    let (code, doc) = eval_doc(
        script,
        &["--input", input, "--instructions", "1000000"],
        false,
    );
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["results"], json!([[2, 4, 6, 8, 10], 5]));
    let used = doc["stats"]["instructions"].as_u64().expect("counted");
    assert!(used > 0);
    let exact = used.to_string();
    let (code, doc) = eval_doc(script, &["--input", input, "--instructions", &exact], false);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["stats"]["instructions"], json!(used));
    assert_eq!(doc["stats"]["limits"]["instructions"], json!(used));
    let less = (used - 1).to_string();
    let (code, doc) = eval_doc(script, &["--input", input, "--instructions", &less], false);
    assert_eq!(failed(code, &doc)["kind"], json!("instruction_limit"));
    assert_eq!(doc["stats"]["instructions"], json!(used - 1));
}

// ---------------------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------------------

#[test]
fn every_return_value_is_kept() {
    for isolate in [false, true] {
        let (code, doc) = eval_doc(
            "local function find(id) return nil, \"not found\" end\nreturn find(7)",
            &[],
            isolate,
        );
        assert_eq!(code, Some(0), "{doc}");
        assert_eq!(doc["result"], Json::Null);
        assert_eq!(
            doc["results"],
            json!([null, "not found"]),
            "isolate={isolate}"
        );
        let (_, doc) = eval_doc(
            "function run() return 1, {2}, 'three', nil end",
            &[],
            isolate,
        );
        assert_eq!(doc["results"], json!([1, [2], "three", null]));
        let (_, doc) = eval_doc("return", &[], isolate);
        assert_eq!((&doc["result"], &doc["results"]), (&Json::Null, &json!([])));
    }
    // Human output: one value per line, nil as null.
    let out = mj(&["run", "-e", "return nil, \"not found\""]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout, "null\n\"not found\"\n");
}

#[test]
fn json_null_fields_and_a_missing_input_are_nil() {
    let script = "function run(ctx)\n  return {\n    x_is_nil = ctx.x == nil,\n    x_or = ctx.x or \"default\",\n    n = #ctx.list,\n    second_is_null = ctx.list[2] == json.null,\n    third = ctx.list[3],\n  }, tostring(ctx.x)\nend";
    for isolate in [false, true] {
        let (code, doc) = eval_doc(
            script,
            &["--input", r#"{"x": null, "list": [1, null, 3]}"#],
            isolate,
        );
        assert_eq!(code, Some(0), "{doc}");
        assert_eq!(
            doc["results"],
            json!([{"x_is_nil": true, "x_or": "default", "n": 3, "second_is_null": true,
                    "third": 3}, "nil"]),
            "isolate={isolate}"
        );
        // Returned as is, the input comes back without the null field, the array whole.
        let (_, doc) = eval_doc(
            "return ...",
            &["--input", r#"{"x": null, "list": [1, null, 3]}"#],
            isolate,
        );
        assert_eq!(doc["results"], json!([{"list": [1, null, 3]}]));
    }
    // No --input: the vararg is nil, so `... or {}` and `run(ctx)` see nil.
    let (code, doc) = eval_doc(
        "local input = ... or {default = true}\nreturn input, (...) == nil",
        &[],
        false,
    );
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["results"], json!([{"default": true}, true]));
    let (_, doc) = eval_doc("function run(ctx) return ctx == nil end", &[], false);
    assert_eq!(doc["results"], json!([true]));
    let (_, doc) = eval_doc("return (...) == nil", &["--input", "null"], false);
    assert_eq!(doc["results"], json!([true]));
}

// ---------------------------------------------------------------------------------------
// Lua as people write it.
// ---------------------------------------------------------------------------------------

#[test]
fn require_json_as_the_first_line_in_standard_and_aos() {
    let script = "local json = require(\"json\")\nlocal t = json.decode('{\"a\": [1, 2]}')\nreturn json.encode(t), rawget(_G, \"json\") ~= nil";
    for (profile, global) in [("standard", true), ("aos", false)] {
        let (code, doc) = eval_doc(script, &["--profile", profile], false);
        assert_eq!(code, Some(0), "{profile}: {doc}");
        assert_eq!(
            doc["results"],
            json!([r#"{"a":[1,2]}"#, global]),
            "{profile}"
        );
    }
}

#[test]
fn shebang_and_bom_files_run_with_the_file_lines() {
    let dir = TempDir::new();
    dir.write(
        "tool.lua",
        "#!/usr/bin/env lua\nlocal x = 1\nerror(\"boom\")\n",
    );
    let (code, doc) = doc_in(&dir, &["run", "tool.lua"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            "tool.lua:3: boom",
            Some(3),
            vec![frame(None, "tool.lua", 3)],
            Json::Null
        )
    );
    dir.write("ok.lua", "#!/usr/bin/env lua\nreturn 1 + 1\n");
    let (code, doc) = doc_in(&dir, &["run", "ok.lua"], true);
    assert_eq!((code, &doc["results"]), (Some(0), &json!([2])), "{doc}");

    dir.write("bom.lua", b"\xef\xbb\xbfreturn \"bom\"\n");
    let (code, doc) = doc_in(&dir, &["run", "bom.lua"], false);
    assert_eq!((code, &doc["results"]), (Some(0), &json!(["bom"])), "{doc}");
    // Both, and the error line is still the file's.
    dir.write(
        "both.lua",
        b"\xef\xbb\xbf#!/usr/bin/env lua\nlocal t = {}\nreturn t.a.b\n",
    );
    let (code, doc) = doc_in(&dir, &["run", "both.lua"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "runtime",
            "both.lua:3: attempt to index a nil value (field 'a')",
            Some(3),
            vec![frame(None, "both.lua", 3)],
            Json::Null
        )
    );
    // From standard input too.
    let out = moonjail(
        &dir,
        &["run", "-", "--json"],
        Some(b"#!/usr/bin/env lua\nreturn 'piped'\n"),
    );
    assert_eq!(out.json()["results"], json!(["piped"]), "{out:?}");
}

#[test]
fn load_of_a_binary_chunk_returns_nil_and_a_message() {
    for isolate in [false, true] {
        let (code, doc) = eval_doc(
            "local f, err = load(string.char(27) .. \"Lua\")\nreturn f, err",
            &[],
            isolate,
        );
        assert_eq!(code, Some(0), "{doc}");
        assert_eq!(
            doc["results"],
            json!([
                null,
                "attempt to load a binary chunk (the sandbox loads text only)"
            ])
        );
    }
    // With a name and mode "b", as a model copying from the manual writes it.
    let (_, doc) = eval_doc(
        "local f, err = load(string.char(27) .. \"LuaT\", \"=bin\", \"b\")\nreturn f == nil, type(err)",
        &[],
        false,
    );
    assert_eq!(doc["results"], json!([true, "string"]));
}

#[test]
fn eval_is_repl_like_and_raw_prints_the_bare_result() {
    let out = mj(&["run", "-e", "1 + 1"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "2\n"), "{out:?}");
    let (code, doc) = eval_doc("1 + 1", &[], false);
    assert_eq!((code, &doc["results"]), (Some(0), &json!([2])));
    let (_, doc) = eval_doc("(...).n * 2", &["--input", r#"{"n": 21}"#], true);
    assert_eq!(doc["results"], json!([42]));
    // A statement still runs as one.
    let (code, doc) = eval_doc("x = 1", &[], false);
    assert_eq!((code, &doc["results"]), (Some(0), &json!([])));

    let out = mj(&["run", "-e", "print('noise') return 'hello world'", "--raw"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "hello world\n", ""),
        "{out:?}"
    );
    let out = mj(&["run", "-e", "return 'a\\nb'", "--raw"]);
    assert_eq!(out.stdout, "a\nb\n");
    let out = mj(&["run", "-e", "return {a = 1}", "--raw"]);
    assert_eq!(out.stdout, "{\"a\":1}\n");
    let out = mj(&["run", "-e", "return nil", "--raw"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""));
    let out = mj(&["run", "-e", "error('bad')", "--raw"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), ""), "{out:?}");
    assert!(out.stderr.contains("runtime error at line 1"), "{out:?}");
    // --raw and --json do not go together.
    let out = mj(&["run", "-e", "return 1", "--raw", "--json"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------------

/// What `for i = 1, 1000 do print("line " .. i) end` prints.
fn flood() -> String {
    (1..=1000).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn a_print_flood_is_truncated_to_its_head_and_tail() {
    let script = "for i = 1, 1000 do print(\"line \" .. i) end\nreturn \"done\"";
    let all = flood();
    for isolate in [false, true] {
        let (code, doc) = eval_doc(
            script,
            &["--output-limit", "1KiB", "--output-overflow", "truncate"],
            isolate,
        );
        assert_eq!(code, Some(0), "isolate={isolate}: {doc}");
        assert_eq!(doc["results"], json!(["done"]));
        let dropped = all.len() - 1024;
        assert_eq!(
            doc["output_truncated"],
            json!({"kept_bytes": 1024, "dropped_bytes": dropped})
        );
        let kept = &doc["output_truncated"];
        assert_eq!(
            kept["kept_bytes"].as_u64().unwrap() + kept["dropped_bytes"].as_u64().unwrap(),
            doc["stats"]["output_bytes"].as_u64().unwrap()
        );
        assert_eq!(doc["stats"]["output_bytes"], json!(all.len()));
        assert_eq!(doc["stats"]["limits"]["output_bytes"], json!(1024));
        // The first and the last 512 bytes, the marker on a line of its own between.
        let expected = format!(
            "{}\n[... {dropped} bytes of output dropped ...]\n{}",
            &all[..512],
            &all[all.len() - 512..]
        );
        assert_eq!(doc["output"], json!(expected));
    }
    // The default still fails the run, keeping the output up to the limit.
    let (code, doc) = eval_doc(script, &["--output-limit", "1KiB"], false);
    assert_eq!(
        failed(code, &doc),
        error(
            "output_limit",
            "output_limit: the script printed more than its 1 KiB output limit (stopped at line 1)",
            Some(1),
            vec![frame(None, "(command line)", 1)],
            Json::Null
        )
    );
    assert_eq!(doc["output"], json!(&all[..1024]));
    assert_eq!(doc["output_truncated"], Json::Null);
}

// ---------------------------------------------------------------------------------------
// Sessions.
// ---------------------------------------------------------------------------------------

/// `moonjail session ARGS` (isolated when `isolate`) answering `lines`, each response
/// checked for the document's shape plus `id`.
fn session_docs(args: &[&str], isolate: bool, lines: &[&str]) -> Vec<Json> {
    let flags = isolate_flags();
    let all = with_isolation(args, isolate, &flags);
    let (docs, code) = session(&all, lines);
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), lines.len(), "{docs:?}");
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(doc["id"], json!(i + 1), "{doc}");
    }
    docs
}

/// An exec/eval/call response without its `id`, checked as a `run --json` document.
fn response(doc: &Json) -> Json {
    let mut doc = doc.clone();
    doc.as_object_mut().unwrap().remove("id");
    assert_document_shape(&doc);
    doc
}

#[test]
fn a_session_calls_dotted_names_and_callable_tables() {
    let define = json!({"id": 1, "op": "exec", "code": "M = {}\nfunction M.f(a, b)\n  return a + b, 'sum'\nend\nfunction M.fail(order)\n  return order.items[1]\nend\nCounter = setmetatable({n = 10}, {__call = function(self, k)\n  self.n = self.n + k\n  return self.n\nend})"}).to_string();
    let lines = [
        define.as_str(),
        r#"{"id":2,"op":"call","function":"M.f","args":[2,3]}"#,
        r#"{"id":3,"op":"call","function":"Counter","args":[5]}"#,
        r#"{"id":4,"op":"has_function","name":"M.f"}"#,
        r#"{"id":5,"op":"has_function","name":"Counter"}"#,
        r#"{"id":6,"op":"has_function","name":"M.nope"}"#,
        r#"{"id":7,"op":"call","function":"M.fail","args":[{}]}"#,
        r#"{"id":8,"op":"call","function":"M.nope"}"#,
        r#"{"id":9,"op":"exec","code":"local order = ...\nreturn order.qty * 2, order.note == nil","input":{"qty":21,"note":null}}"#,
        r#"{"id":10,"op":"exec","code":"return ... == nil"}"#,
        r#"{"id":11,"op":"eval","code":"M.f(Counter(0), 1)"}"#,
        r#"{"id":12,"op":"exec","code":"error({code = 42})"}"#,
    ];
    for isolate in [false, true] {
        let docs = session_docs(&["--timeout", "2s"], isolate, &lines);
        let results: Vec<&Json> = docs.iter().map(|d| &d["results"]).collect();
        assert_eq!(results[0], &json!([]), "{}", docs[0]);
        assert_eq!(results[1], &json!([5, "sum"]), "isolate={isolate}");
        assert_eq!(results[2], &json!([15]));
        for (doc, has) in docs[3..6].iter().zip([true, true, false]) {
            assert_eq!(
                (&doc["ok"], &doc["result"], &doc["results"]),
                (&json!(true), &json!(has), &json!([has])),
                "{doc}"
            );
            assert_eq!((&doc["error"], &doc["stats"]), (&Json::Null, &Json::Null));
        }
        let e = &docs[6]["error"];
        assert_eq!(
            e,
            &error(
                "runtime",
                "session:6: attempt to index a nil value (field 'items')",
                Some(6),
                vec![frame(None, "session", 6)],
                Json::Null
            ),
            "isolate={isolate}"
        );
        assert_eq!(
            docs[7]["error"],
            error(
                "runtime",
                "no function `M.nope` in the session",
                None,
                vec![],
                Json::Null
            )
        );
        assert_eq!(results[8], &json!([42, true]));
        assert_eq!(results[9], &json!([true]));
        assert_eq!(results[10], &json!([16, "sum"]));
        assert_eq!(
            docs[11]["error"],
            error(
                "runtime",
                r#"error object: {"code":42}"#,
                Some(1),
                vec![frame(None, "session", 1)],
                json!({"code": 42})
            )
        );
        for i in [0, 1, 2, 6, 7, 8, 9, 10, 11] {
            let doc = response(&docs[i]);
            assert_eq!(
                doc["stats"]["limits"],
                json!({"wall_ms": 2000.0, "memory_bytes": 67108864, "instructions": null,
                       "output_bytes": 1048576, "tool_calls": null}),
                "{doc}"
            );
            // Both are numbers (not merely absent), and the call's peak is at least what
            // the state holds after it.
            let (peak, kept) = (
                doc["stats"]["peak_memory_bytes"].as_u64().expect("a peak"),
                doc["stats"]["memory_bytes"]
                    .as_u64()
                    .expect("memory in use"),
            );
            assert!(kept > 0 && peak >= kept, "{doc}");
        }
    }
}

#[test]
fn a_request_lowers_the_session_limits_and_never_raises_them() {
    let lines = [
        r#"{"id":1,"op":"exec","code":"function spin()\n  while true do end\nend"}"#,
        r#"{"id":2,"op":"eval","code":"1 + 1","timeout":"10s","instructions":5000000000}"#,
        r#"{"id":3,"op":"eval","code":"1 + 1","timeout":"1s","instructions":500}"#,
        r#"{"id":4,"op":"call","function":"spin","timeout":"150ms"}"#,
        r#"{"id":5,"op":"eval","code":"1"}"#,
    ];
    let docs = session_docs(
        &["--timeout", "2s", "--instructions", "1000000000"],
        false,
        &lines,
    );
    let limits = |doc: &Json| response(doc)["stats"]["limits"].clone();
    assert_eq!(docs[1]["results"], json!([2]));
    assert_eq!(
        limits(&docs[1]),
        json!({"wall_ms": 2000.0, "memory_bytes": 67108864, "instructions": 1000000000,
               "output_bytes": 1048576, "tool_calls": null})
    );
    assert_eq!(docs[2]["results"], json!([2]));
    assert_eq!(
        limits(&docs[2]),
        json!({"wall_ms": 1000.0, "memory_bytes": 67108864, "instructions": 500,
               "output_bytes": 1048576, "tool_calls": null})
    );
    assert_eq!(
        docs[3]["error"],
        error(
            "timeout",
            "timeout: the script ran past its 150 ms deadline (stopped at line 2 in function 'spin')",
            Some(2),
            vec![frame(Some("spin"), "session", 2)],
            Json::Null
        )
    );
    assert_eq!(limits(&docs[3])["wall_ms"], json!(150.0));
    // A timeout closes the session; later requests say why.
    assert_eq!(docs[4]["error"]["kind"], json!("timeout"));
    assert!(docs[4]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("the session was closed: timeout:"));
}

// ---------------------------------------------------------------------------------------
// Help.
// ---------------------------------------------------------------------------------------

#[test]
fn help_documents_the_contract() {
    let out = mj(&["run", "--help"]);
    assert_eq!(out.code, Some(0));
    for fragment in [
        "results",
        "output_truncated",
        "traceback",
        "\"value\"",
        "\"hint\"",
        "peak_memory_bytes",
        "limits",
        "--output-overflow",
        "--raw",
        "--eval",
        "shebang",
    ] {
        assert!(
            out.stdout.contains(fragment),
            "run --help lacks {fragment:?}:\n{}",
            out.stdout
        );
    }
    let out = mj(&["session", "--help"]);
    assert_eq!(out.code, Some(0));
    for fragment in [
        "\"eval\"",
        "\"input\"",
        "\"timeout\"",
        "\"instructions\"",
        "M.f",
        "results",
        "traceback",
        "peak_memory_bytes",
    ] {
        assert!(
            out.stdout.contains(fragment),
            "session --help lacks {fragment:?}:\n{}",
            out.stdout
        );
    }
}
