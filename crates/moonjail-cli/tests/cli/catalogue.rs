//! `moonjail tools` (the catalogue: text, `--json`, `--lua-stubs`), `--tool-schema` and
//! `--tool-description` (arguments checked before the program runs, in process and with
//! `--isolate`), and `--allow-http` wildcards.

use serde_json::{json, Value as Json};

use crate::support::*;

/// A command tool that appends each call's arguments to `calls.log`: the log says
/// whether the program ran.
const WEATHER: &str = r#"read -r args
echo "$args" >> calls.log
echo '{"forecast": "sunny"}'
"#;

/// A tool document: description, parameters, returns.
const DOCUMENT: &str = r#"{
  "description": "The forecast for a city.",
  "parameters": {
    "type": "object",
    "properties": {
      "city": {"type": "string", "description": "the city's name"},
      "days": {"type": "integer", "minimum": 1}
    },
    "required": ["city"]
  },
  "returns": {"type": "object", "properties": {"forecast": {"type": "string"}}}
}"#;

fn dir() -> TempDir {
    let dir = TempDir::new();
    dir.write("weather.sh", WEATHER);
    dir.write("weather.json", DOCUMENT);
    dir
}

const TOOL: [&str; 4] = [
    "--tool",
    "weather.lookup=sh weather.sh",
    "--tool-schema",
    "weather.lookup=weather.json",
];

fn calls(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("calls.log")).unwrap_or_default()
}

#[test]
fn tools_json_for_a_command_tool_with_a_schema() {
    let dir = dir();
    let mut args = vec!["tools", "--json", "--profile", "minimal"];
    args.extend(TOOL);
    let out = moonjail(dir.path(), &args, None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.json(),
        json!({"tools": [{
            "name": "weather.lookup",
            "kind": "function",
            "description": "The forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name"},
                    "days": {"type": "integer", "minimum": 1}
                },
                "required": ["city"]
            },
            "returns": {"type": "object", "properties": {"forecast": {"type": "string"}}}
        }]})
    );

    // A bare schema is the parameters; --tool-description gives the description.
    dir.write(
        "bare.json",
        r#"{"type": "array", "prefixItems": [{"type": "integer"}]}"#,
    );
    let out = moonjail(
        dir.path(),
        &[
            "tools",
            "--json",
            "--profile",
            "minimal",
            "--tool",
            "calc.inc=sh weather.sh",
            "--tool-schema",
            "calc.inc=bare.json",
            "--tool-description",
            "calc.inc=Adds one.",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.json(),
        json!({"tools": [{
            "name": "calc.inc", "kind": "function", "description": "Adds one.",
            "parameters": {"type": "array", "prefixItems": [{"type": "integer"}]},
            "returns": null
        }]})
    );
}

#[test]
fn tools_lists_json_and_http_with_their_allowlist() {
    let out = mj(&[
        "tools",
        "--json",
        "--allow-http",
        "api.example.com",
        "--allow-http",
        "*.example.org",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = out.json();
    let names: Vec<&str> = doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "http.get",
            "http.post",
            "json.decode",
            "json.encode",
            "json.null"
        ]
    );
    let description = doc["tools"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("api.example.com (ports 80, 443), *.example.org (ports 80, 443)"),
        "{description}"
    );
    // The readable list.
    let out = mj(&["tools"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("json.encode(value: any) -> string\n"),
        "{}",
        out.stdout
    );
    let out = mj(&["tools", "--profile", "minimal"]);
    assert!(out.stdout.starts_with("no tools"), "{}", out.stdout);
}

#[test]
fn lua_stubs_carry_the_annotations() {
    let dir = dir();
    let mut args = vec!["tools", "--lua-stubs"];
    args.extend(TOOL);
    let out = moonjail(dir.path(), &args, None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let stubs = out.stdout;
    for expected in [
        "---@meta\n",
        "weather = {}\n",
        "json = {}\n",
        "---@class weather.lookup.Args\n---@field city string the city's name\n---@field days? integer\n",
        "---The forecast for a city.\n---@param args weather.lookup.Args\n---@return weather.lookup.Result\nfunction weather.lookup(args) end\n",
        "---@param text string JSON text\n---@param options? json.decode.options {null = json.null} keeps every null as json.null\n---@return any\nfunction json.decode(text, options) end\n",
    ] {
        assert!(stubs.contains(expected), "missing {expected:?} in\n{stubs}");
    }
}

#[test]
fn a_schema_violation_is_catchable_and_the_program_never_runs() {
    let flags = isolate_flags();
    for isolate in [false, true] {
        let dir = dir();
        let mut base = vec!["run", "--json", "-e"];
        let caught = "local ok, err = pcall(weather.lookup, {city = 3}) return {ok, err}";
        base.push(caught);
        base.extend(TOOL);
        let out = moonjail(dir.path(), &with_isolation(&base, isolate, &flags), None);
        assert_eq!(out.code, Some(0), "{out:?}");
        let doc = out.json();
        let message = "weather.lookup: argument 1: at /city: expected string, got integer";
        assert_eq!(doc["result"], json!([false, message]), "isolate: {isolate}");
        assert_eq!(doc["tool_calls"][0]["ok"], Json::Bool(false));
        assert_eq!(calls(&dir), "", "the program ran (isolate: {isolate})");

        // Uncaught: the run fails as `runtime`, with the message.
        let mut base = vec!["run", "--json", "-e", "return weather.lookup{city = 3}"];
        base.extend(TOOL);
        let out = moonjail(dir.path(), &with_isolation(&base, isolate, &flags), None);
        assert_eq!(out.code, Some(1), "{out:?}");
        let doc = out.json();
        assert_eq!(doc["error"]["kind"], "runtime");
        let got = doc["error"]["message"].as_str().unwrap();
        assert!(got.ends_with(message), "{got}");
        assert_eq!(calls(&dir), "", "the program ran (isolate: {isolate})");

        // A valid call reaches the program.
        let mut base = vec![
            "run",
            "--json",
            "-e",
            "return weather.lookup{city = 'Lyon'}",
        ];
        base.extend(TOOL);
        let out = moonjail(dir.path(), &with_isolation(&base, isolate, &flags), None);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.json()["result"], json!({"forecast": "sunny"}));
        assert_eq!(calls(&dir), "[{\"city\":\"Lyon\"}]\n");
    }
}

#[test]
fn bad_schemas_and_names_are_usage_errors() {
    let dir = dir();
    dir.write("invalid.json", r#"{"type": "strin"}"#);
    dir.write("remote.json", r#"{"$ref": "https://example.com/s.json"}"#);
    dir.write("notjson.json", "{type: string}");
    dir.write("extra.json", r#"{"parameters": {}, "params": {}}"#);
    for (schema, fragment) in [
        ("weather.lookup=invalid.json", "not a valid JSON Schema"),
        ("weather.lookup=remote.json", "not a valid JSON Schema"),
        ("weather.lookup=notjson.json", "notjson.json"),
        ("weather.lookup=extra.json", "unknown field `params`"),
        ("weather.lookup=missing.json", "missing.json"),
        (
            "other=weather.json",
            "no --tool or --defer-tool of that name",
        ),
        ("weather.lookup", "expected NAME=FILE"),
    ] {
        let args = [
            "tools",
            "--tool",
            "weather.lookup=sh weather.sh",
            "--tool-schema",
            schema,
        ];
        let out = moonjail(dir.path(), &args, None);
        assert_misuse(&out, fragment);
        // Under --json, one document of kind `input`.
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let out = moonjail(dir.path(), &json_args, None);
        assert_eq!(out.code, Some(2), "{out:?}");
        assert_eq!(kind(&out.json()), "input");
    }
    let out = mj(&["tools", "--tool-schema", "w=x.json"]);
    assert_misuse(&out, "no --tool NAME=COMMAND");
}

#[test]
fn allow_http_wildcards() {
    for bad in ["*", "*.com", "a.*.example.com", "*.*.example.com"] {
        let out = mj(&["run", "-e", "return 1", "--allow-http", bad]);
        assert_misuse(&out, "tool http: ");
        let out = mj(&["tools", "--allow-http", bad, "--json"]);
        assert_eq!(out.code, Some(2), "{out:?}");
    }
    let out = mj(&[
        "run",
        "-e",
        "return select(2, pcall(http.get, 'http://example.com:1/'))",
        "--allow-http",
        "*.example.com:1",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let message = out.json()["result"].as_str().unwrap().to_string();
    assert!(
        message.contains("is not an allowed destination"),
        "{message}"
    );
}

#[test]
fn help_teaches_with_examples() {
    let out = mj(&["tools", "--help"]);
    assert_eq!(out.code, Some(0));
    for fragment in ["--lua-stubs", "--tool-schema", "Examples:", "*.example.com"] {
        assert!(
            out.stdout.contains(fragment),
            "{fragment:?} in\n{}",
            out.stdout
        );
    }
}
