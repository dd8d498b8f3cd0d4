//! Tools an agent can be told about: `ToolSpec` (description, parameter and result
//! schemas), argument checks before the tool runs — in process and isolated, where the
//! supervisor checks — the catalogue (`Sandbox::tool_catalogue`, LuaLS stubs), and the
//! `*.example.com` allowlist entries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moonjail::{
    ConfigError, EntryKind, ErrorKind, Isolation, ProcessConfig, Profile, Sandbox, SandboxBuilder,
    ToolRegistry, ToolSpec, WorkerPath,
};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::support::{unusable, WORKER};

fn weather_spec() -> ToolSpec {
    ToolSpec::new()
        .description("The forecast for a city.")
        .parameters(json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city's name"},
                "days": {"type": "integer", "minimum": 1}
            },
            "required": ["city"]
        }))
        .returns(json!({"type": "object", "properties": {"forecast": {"type": "string"}}}))
}

/// A sandbox whose `weather.lookup` counts the calls that reached it.
fn counted(calls: &Arc<AtomicUsize>) -> SandboxBuilder {
    let seen = calls.clone();
    Sandbox::builder()
        .timeout(Duration::from_secs(5))
        .tool("weather.lookup", move |args| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"forecast": "sunny", "args": args}))
        })
        .describe_tool("weather.lookup", weather_spec())
}

fn isolated(builder: SandboxBuilder) -> Sandbox {
    let config = ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(0)
        .build()
        .expect("a process config");
    builder
        .isolation(Isolation::Process(config))
        .build()
        .expect("the sandbox builds")
}

const MESSAGE: &str = "weather.lookup: argument 1: at /city: expected string, got integer";

/// The same checks in both modes: a violation is caught by `pcall` with a readable
/// message, recorded as a failed call, and never reaches the tool; uncaught, it fails the
/// run as `runtime` with that message; a valid call runs.
fn violations_are_refused_before_the_tool_runs(sandbox: &Sandbox, calls: &AtomicUsize) {
    let out = sandbox.run(
        "local ok, err = pcall(weather.lookup, {city = 3}) return {ok, err}",
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!([false, MESSAGE])));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the tool ran");
    assert_eq!(out.tool_calls.len(), 1);
    assert!(!out.tool_calls[0].ok);
    assert_eq!(
        out.tool_calls[0].error.as_deref(),
        Some("argument 1: at /city: expected string, got integer")
    );

    let out = sandbox.run("return weather.lookup{city = 3}", &Json::Null);
    let error = out.error().expect("the run fails");
    assert_eq!(error.kind, ErrorKind::Runtime);
    assert!(error.message.ends_with(MESSAGE), "{}", error.message);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the tool ran");

    for (args, message) in [
        (
            "{}",
            r#"weather.lookup: argument 1: missing required property "city""#,
        ),
        (
            "{city = 'Lyon', days = 0}",
            "weather.lookup: argument 1: at /days: expected a number >= 1",
        ),
        (
            "'Lyon'",
            "weather.lookup: argument 1: expected object, got string",
        ),
        (
            "{city = 'Lyon'}, 2",
            "weather.lookup: takes 1 argument (described by its schema), got 2",
        ),
        (
            "",
            "weather.lookup: argument 1 is missing (expected object, got null)",
        ),
    ] {
        let script = if args.is_empty() {
            "return select(2, pcall(weather.lookup))".to_string()
        } else {
            format!("return select(2, pcall(weather.lookup, {args}))")
        };
        let out = sandbox.run(&script, &Json::Null);
        assert_eq!(out.result, Ok(json!(message)), "{script}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the tool ran");

    let out = sandbox.run(
        "return weather.lookup{city = 'Lyon', days = 2}.forecast",
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!("sunny")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(out.tool_calls[0].ok);
}

#[test]
fn in_process_a_schema_violation_is_a_catchable_error_and_the_tool_does_not_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let sandbox = counted(&calls).build().unwrap();
    violations_are_refused_before_the_tool_runs(&sandbox, &calls);
}

#[test]
fn isolated_the_supervisor_checks_before_the_tool_runs() {
    // The tool runs in the supervisor (this process), so the counter sees it.
    let calls = Arc::new(AtomicUsize::new(0));
    let sandbox = isolated(counted(&calls));
    violations_are_refused_before_the_tool_runs(&sandbox, &calls);
}

#[test]
fn in_a_session_too() {
    let calls = Arc::new(AtomicUsize::new(0));
    let sandbox = counted(&calls).build().unwrap();
    let mut session = sandbox.session().unwrap();
    let out = session.exec("return select(2, pcall(weather.lookup, {city = 3}))");
    assert_eq!(out.result, Ok(json!(MESSAGE)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn an_array_schema_describes_the_whole_argument_list() {
    let sandbox = Sandbox::builder()
        .tool("calc.add", |args| {
            Ok(json!(args.iter().filter_map(Json::as_i64).sum::<i64>()))
        })
        .describe_tool(
            "calc.add",
            ToolSpec::new().parameters(json!({
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "integer"}],
                "minItems": 2,
                "maxItems": 2
            })),
        )
        .build()
        .unwrap();
    let check = |script: &str| sandbox.run(script, &Json::Null).result;
    assert_eq!(check("return calc.add(2, 3)"), Ok(json!(5)));
    // Trailing nils are dropped, as Lua drops them.
    assert_eq!(check("return calc.add(2, 3, nil)"), Ok(json!(5)));
    assert_eq!(
        check("return select(2, pcall(calc.add, 2, 'x'))"),
        Ok(json!("calc.add: argument 2: expected integer, got string"))
    );
    assert_eq!(
        check("return select(2, pcall(calc.add, 2))"),
        Ok(json!("calc.add: the arguments: expected at least 2, got 1"))
    );
    assert_eq!(
        check("return select(2, pcall(calc.add, 1, 2, 3))"),
        Ok(json!("calc.add: the arguments: expected at most 2, got 3"))
    );
}

#[test]
fn a_long_message_is_bounded() {
    let options: Vec<String> = (0..2000).map(|i| format!("option-{i}")).collect();
    let sandbox = Sandbox::builder()
        .tool("pick", |_| Ok(Json::Null))
        .describe_tool("pick", ToolSpec::new().parameters(json!({"enum": options})))
        .build()
        .unwrap();
    let out = sandbox.run("return select(2, pcall(pick, 'nope'))", &Json::Null);
    let message = out.result.unwrap();
    let message = message.as_str().unwrap();
    assert!(
        message.starts_with("pick: argument 1: expected one of"),
        "{message}"
    );
    assert!(message.len() <= 600, "{} bytes", message.len());
}

#[test]
fn registration_problems_are_config_errors() {
    let tool_error = |builder: SandboxBuilder| match builder.build() {
        Err(ConfigError::Tool { name, reason }) => (name, reason),
        other => panic!("expected ConfigError::Tool, got {other:?}"),
    };
    let (name, reason) =
        tool_error(Sandbox::builder().describe_tool("nope", ToolSpec::new().description("x")));
    assert_eq!(name, "nope");
    assert!(reason.contains("no tool of that name"), "{reason}");
    let with = |schema: Json| {
        Sandbox::builder()
            .tool("t", |_| Ok(Json::Null))
            .describe_tool("t", ToolSpec::new().parameters(schema))
    };
    let (_, reason) = tool_error(with(json!({"type": "strin"})));
    assert!(reason.contains("not a valid JSON Schema"), "{reason}");
    let (_, reason) = tool_error(with(json!(["not", "a", "schema"])));
    assert!(reason.contains("must be a JSON object"), "{reason}");
    // Nothing outside the schema is ever fetched.
    tool_error(with(json!({"$ref": "https://example.com/schema.json"})));
    tool_error(with(json!({"$ref": "file:///etc/passwd"})));
    // A returns schema is checked too.
    let bad_returns = Sandbox::builder()
        .tool("t", |_| Ok(Json::Null))
        .describe_tool("t", ToolSpec::new().returns(json!({"type": 3})));
    tool_error(bad_returns);
}

#[test]
fn the_registry_describes_and_lists() {
    let mut tools = ToolRegistry::new();
    tools.register("b.tool", |_| Ok(Json::Null)).unwrap();
    tools.register("a", |_| Ok(Json::Null)).unwrap();
    tools.describe("b.tool", weather_spec()).unwrap();
    assert_eq!(tools.spec("b.tool"), Some(&weather_spec()));
    assert_eq!(tools.spec("a"), None);
    let catalogue = tools.catalogue();
    let names: Vec<&str> = catalogue.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b.tool"]);
    assert_eq!(catalogue.tools[0].description, None);
    assert_eq!(
        catalogue.get("b.tool").unwrap().parameters,
        weather_spec().parameters
    );
}

#[test]
fn the_catalogue_has_json_where_the_profile_has_it_and_http_with_its_allowlist() {
    let sandbox = Sandbox::builder()
        .allow_http("api.example.com")
        .allow_http("*.example.org:8443")
        .build()
        .unwrap();
    let catalogue = sandbox.tool_catalogue();
    let names: Vec<&str> = catalogue.tools.iter().map(|t| t.name.as_str()).collect();
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
    let get = catalogue.get("http.get").unwrap();
    let description = get.description.as_deref().unwrap();
    assert!(
        description.ends_with(
            "Allowed destinations: api.example.com (ports 80, 443), *.example.org:8443."
        ),
        "{description}"
    );
    assert_eq!(
        get.parameters.as_ref().unwrap()["prefixItems"][0]["title"],
        "url"
    );
    assert_eq!(catalogue.get("json.null").unwrap().kind, EntryKind::Value);

    for profile in [Profile::Minimal, Profile::Aos] {
        let sandbox = Sandbox::builder().profile(profile).build().unwrap();
        assert!(sandbox.tool_catalogue().tools.is_empty(), "{profile:?}");
    }
    // The catalogue is the one document front ends print.
    let doc = serde_json::to_value(Sandbox::builder().build().unwrap().tool_catalogue()).unwrap();
    assert_eq!(doc["tools"][2]["name"], "json.null");
    assert_eq!(doc["tools"][2]["kind"], "value");
    assert_eq!(doc["tools"][2]["parameters"], Json::Null);
}

#[test]
fn lua_stubs_of_a_described_tool() {
    let sandbox = Sandbox::builder()
        .profile(Profile::Minimal)
        .tool("weather.lookup", |_| Ok(Json::Null))
        .describe_tool("weather.lookup", weather_spec())
        .tool("log", |_| Ok(Json::Null))
        .build()
        .unwrap();
    let stubs = sandbox.tool_catalogue().lua_stubs();
    let expected = "---@meta
-- The tools of this sandbox (moonjail tools --lua-stubs). Arguments and results cross as JSON.

weather = {}

---@param ... any
---@return any
function log(...) end

---@class weather.lookup.Args
---@field city string the city's name
---@field days? integer

---@class weather.lookup.Result
---@field forecast? string

---The forecast for a city.
---@param args weather.lookup.Args
---@return weather.lookup.Result
function weather.lookup(args) end
";
    assert_eq!(stubs, expected);
}

// ---------------------------------------------------------------------------------------
// Allowlist wildcards.
// ---------------------------------------------------------------------------------------

#[test]
fn a_star_or_a_top_level_wildcard_is_refused_when_the_sandbox_is_built() {
    for bad in [
        "*",
        "*:443",
        "*.com",
        "a.*.example.com",
        "*x.example.com",
        "*.*.example.com",
    ] {
        match Sandbox::builder().allow_http(bad).build() {
            Err(ConfigError::Tool { name, reason }) => {
                assert_eq!(name, "http");
                assert!(reason.contains('*'), "{bad}: {reason}");
            }
            other => panic!("{bad}: expected ConfigError::Tool, got {other:?}"),
        }
    }
    for good in ["*.example.com", "*.example.com:8443", "*.a.b.example.co.uk"] {
        Sandbox::builder()
            .allow_http(good)
            .build()
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

/// The regression: `*.example.com` used to be accepted, and then every request was
/// refused as "not an allowed destination". Now a subdomain passes the allowlist (and
/// fails later, here, at resolution: this machine has no network), while the domain
/// itself and other names are still refused by it.
#[test]
fn a_wildcard_entry_lets_subdomains_through_the_allowlist() {
    let sandbox = Sandbox::builder()
        .timeout(Duration::from_secs(3))
        .allow_http("*.example.com:1")
        .build()
        .unwrap();
    let attempt = |url: &str| {
        let script = format!("return select(2, pcall(http.get, {url:?}))");
        match sandbox.run(script, &Json::Null).result {
            Ok(Json::String(message)) => message,
            other => panic!("{url}: {other:?}"),
        }
    };
    for refused in [
        "http://example.com:1/",
        "http://badexample.com:1/",
        "http://api.example.com:2/",
        "http://api.example.com.evil.test:1/",
    ] {
        let message = attempt(refused);
        assert!(
            message.contains("is not an allowed destination"),
            "{refused}: {message}"
        );
    }
    for allowed in ["http://api.example.com:1/", "http://a.b.example.com:1/"] {
        let message = attempt(allowed);
        assert!(
            !message.contains("is not an allowed destination"),
            "{allowed}: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Stubs: whatever the host writes in a description, each line stays a comment.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn descriptions_never_escape_their_annotation_lines(
        tool in "[a-z][a-z0-9_]{0,8}",
        description in any::<String>(),
        field in any::<String>(),
        field_description in any::<String>(),
    ) {
        prop_assume!(!["and", "do", "end", "for", "if", "in", "nil", "not", "or"].contains(&tool.as_str()));
        let spec = ToolSpec::new().description(description).parameters(json!({
            "type": "object",
            "properties": {field: {"type": "string", "description": field_description}},
        }));
        let sandbox = Sandbox::builder()
            .profile(Profile::Minimal)
            .tool(&format!("ns.{tool}"), |_| Ok(Json::Null))
            .describe_tool(&format!("ns.{tool}"), spec)
            .build()
            .unwrap();
        let stubs = sandbox.tool_catalogue().lua_stubs();
        let function = format!("function ns.{tool}(args) end");
        for line in stubs.lines().skip(2) {
            prop_assert!(
                line.is_empty() || line.starts_with("---") || line == "ns = {}" || line == function,
                "{:?} in\n{}", line, stubs
            );
        }
    }
}
