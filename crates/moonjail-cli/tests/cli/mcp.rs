//! `moonjail mcp` through a real MCP client session: rmcp's client starts the built
//! binary as its child process and speaks MCP over its stdin and stdout (so anything
//! else written to stdout would break the session). Tools listed with their generated
//! descriptions, run_lua's outcomes, the session tools and their refusals.

use std::future::Future;

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, Tool};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value as Json};

use crate::support::*;

type Client = RunningService<RoleClient, ()>;

/// Runs a test's client on a runtime of its own.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// A client connected to `moonjail mcp ARGS` run in `dir` (initialized).
async fn connect(dir: &TempDir, args: &[&str]) -> Client {
    connect_with(dir, args, ()).await
}

/// A client with `handler` (what it answers the server's requests with) connected to
/// `moonjail mcp ARGS` run in `dir`.
async fn connect_with<H: rmcp::ClientHandler>(
    dir: &TempDir,
    args: &[&str],
    handler: H,
) -> RunningService<RoleClient, H> {
    let cmd = tokio::process::Command::new(MOONJAIL).configure(|cmd| {
        cmd.arg("mcp")
            .args(args)
            .current_dir(dir.path())
            .env("MOONJAIL_WORKER", MOONJAIL);
    });
    let transport = {
        let _lock = spawn_lock();
        TokioChildProcess::new(cmd).expect("start moonjail mcp")
    };
    handler.serve(transport).await.expect("the MCP handshake")
}

/// Calls the tool `name` with `args` (an object); a protocol error fails the test.
async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, H>,
    name: &str,
    args: Json,
) -> CallToolResult {
    let Json::Object(args) = args else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {name}: {e}"))
}

/// The structured content: the outcome document (or a session's id).
fn doc(result: &CallToolResult) -> &Json {
    result
        .structured_content
        .as_ref()
        .unwrap_or_else(|| panic!("no structured content: {result:?}"))
}

/// The text content, joined.
fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tool<'a>(tools: &'a [Tool], name: &str) -> &'a Tool {
    tools
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

#[test]
fn the_tools_are_listed_with_generated_descriptions_and_schemas() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(
            &dir,
            &[
                "--timeout",
                "2s",
                "--memory",
                "32MiB",
                "--tool",
                "calc.add=sh add.sh",
                "--tool-description",
                "calc.add=Adds two numbers.",
                "--max-sessions",
                "3",
            ],
        )
        .await;
        let tools = client.list_all_tools().await.expect("tools/list");
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "lint_lua",
                "run_lua",
                "session_call",
                "session_close",
                "session_eval",
                "session_exec",
                "session_open"
            ]
        );
        let run_lua = tool(&tools, "run_lua");
        let description = run_lua.description.as_deref().unwrap_or_default();
        for needle in [
            "Profile: standard",
            "timeout 2 s per run",
            "memory 32 MiB",
            "output 1 MiB",
            "calc.add(",
            "Adds two numbers.",
            "json.encode",
        ] {
            assert!(description.contains(needle), "{needle:?} in {description}");
        }
        let schema = Json::Object((*run_lua.input_schema).clone());
        assert_eq!(schema["type"], json!("object"), "{schema}");
        for field in ["code", "input", "expression"] {
            assert!(
                schema["properties"].get(field).is_some(),
                "{field} in {schema}"
            );
        }
        assert_eq!(schema["required"], json!(["code"]), "{schema}");
        let open = tool(&tools, "session_open");
        let description = open.description.as_deref().unwrap_or_default();
        assert!(description.contains("at most 3 sessions"), "{description}");
        assert!(description.contains("calc.add("), "{description}");
        let call_schema = Json::Object((*tool(&tools, "session_call").input_schema).clone());
        assert_eq!(
            call_schema["required"],
            json!(["session_id", "function"]),
            "{call_schema}"
        );
        let info = client.peer_info().expect("the server's info");
        let instructions = info.instructions.as_deref().unwrap_or_default();
        assert!(instructions.contains("timeout 2 s"), "{instructions}");
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn run_lua_returns_the_outcome_document() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &[]).await;
        let result = call(
            &client,
            "run_lua",
            json!({"code": "local input = ... print('adding') return {sum = input.a + input.b}",
                   "input": {"a": 1, "b": 2}}),
        )
        .await;
        assert_eq!(result.is_error, Some(false), "{result:?}");
        let outcome = doc(&result);
        assert_eq!(outcome["ok"], json!(true));
        assert_eq!(outcome["result"], json!({"sum": 3}));
        assert_eq!(outcome["results"], json!([{"sum": 3}]));
        assert_eq!(outcome["output"], json!("adding\n"));
        assert_eq!(outcome["error"], Json::Null);
        assert_eq!(outcome["stats"]["limits"]["wall_ms"], json!(5000.0));
        let rendered = text(&result);
        assert!(rendered.contains("result: {\"sum\":3}"), "{rendered}");
        assert!(rendered.contains("output:\nadding"), "{rendered}");

        let result = call(
            &client,
            "run_lua",
            json!({"code": "1 + 1", "expression": true}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(2), "{result:?}");

        let result = call(
            &client,
            "run_lua",
            json!({"code": "return nil, 'not found'"}),
        )
        .await;
        assert_eq!(doc(&result)["results"], json!([null, "not found"]));
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_runtime_error_is_a_tool_error_with_line_and_traceback() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &[]).await;
        let code = "local function f(t)\n  return t.x.y\nend\nlocal v = f({})\nreturn v";
        let result = call(&client, "run_lua", json!({ "code": code })).await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        let error = &doc(&result)["error"];
        assert_eq!(error["kind"], json!("runtime"), "{error}");
        assert_eq!(error["line"], json!(2), "{error}");
        assert_eq!(
            error["traceback"][0],
            json!({"function": "f", "source": "script", "line": 2}),
            "{error}"
        );
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("index"),
            "{error}"
        );
        let rendered = text(&result);
        assert!(
            rendered.starts_with("error: runtime\nmessage: "),
            "{rendered}"
        );
        assert!(rendered.contains("line: 2\n"), "{rendered}");
        assert!(rendered.contains("script:2 in function 'f'"), "{rendered}");

        // A syntax error from another language's habit carries its hint.
        let result = call(&client, "run_lua", json!({"code": "if 1 != 2 then end"})).await;
        let error = &doc(&result)["error"];
        assert_eq!(error["kind"], json!("syntax"), "{error}");
        assert!(error["hint"].is_string(), "{error}");
        assert!(text(&result).contains("hint: "));

        // lint_lua checks without running: findings with rule ids and lines, a tool error
        // when one is an error; a clean script is not an error.
        let result = call(
            &client,
            "lint_lua",
            json!({"code": "print('ran')\nlocal x = string.spilt('a,b', ',')"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true));
        let report = doc(&result);
        let finding = &report["findings"][1];
        assert_eq!(
            (finding["rule"].as_str(), finding["line"].as_u64()),
            (Some("unknown-member"), Some(2)),
            "{report}"
        );
        assert!(
            text(&result).contains("2:11: error[unknown-member]"),
            "{}",
            text(&result)
        );
        let result = call(&client, "lint_lua", json!({"code": "return 1 + 1"})).await;
        assert_eq!(result.is_error, Some(false), "{}", text(&result));
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_timeout_is_reported_and_closes_a_session() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &["--timeout", "100ms"]).await;
        let result = call(&client, "run_lua", json!({"code": "while true do end"})).await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        assert_eq!(doc(&result)["error"]["kind"], json!("timeout"));
        assert!(text(&result).starts_with("error: timeout\n"));

        let opened = call(&client, "session_open", json!({})).await;
        let id = doc(&opened)["session_id"].clone();
        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "while true do end"}),
        )
        .await;
        assert_eq!(doc(&result)["error"]["kind"], json!("timeout"));
        // The state may be half-updated: the session refuses from now on, saying why.
        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "return 1"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true));
        let error = &doc(&result)["error"];
        assert_eq!(error["kind"], json!("timeout"), "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("the session was closed"),
            "{error}"
        );
        client.cancel().await.expect("close the connection");
    });
}

/// A session request may lower its own limits (never raise them): the outcome's
/// `stats.limits` and its error say the lowered value.
#[test]
fn a_session_request_lowers_its_own_limits() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &["--timeout", "5s"]).await;
        let opened = call(&client, "session_open", json!({})).await;
        let id = doc(&opened)["session_id"].clone();
        let result = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "1 + 1", "timeout": "250ms", "instructions": 1000}),
        )
        .await;
        let limits = &doc(&result)["stats"]["limits"];
        assert_eq!(
            (limits["wall_ms"].as_f64(), limits["instructions"].as_u64()),
            (Some(250.0), Some(1000)),
            "{limits}"
        );
        // Higher than the session's: the session's own.
        let result = call(
            &client,
            "session_call",
            json!({"session_id": id, "function": "tostring", "args": [1], "timeout": "1h"}),
        )
        .await;
        assert_eq!(doc(&result)["stats"]["limits"]["wall_ms"], json!(5000.0));
        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "while true do end", "instructions": 5000}),
        )
        .await;
        assert_eq!(doc(&result)["error"]["kind"], json!("instruction_limit"));
        // A timeout that does not parse is refused, naming the field.
        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "return 1", "timeout": "soon"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true));
        assert!(text(&result).contains("timeout:"), "{}", text(&result));
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_session_keeps_its_state_from_open_to_close() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &[]).await;
        let opened = call(&client, "session_open", json!({})).await;
        assert_eq!(opened.is_error, Some(false), "{opened:?}");
        let id = doc(&opened)["session_id"].clone();
        assert!(id.is_string(), "{opened:?}");
        assert!(text(&opened).contains(id.as_str().unwrap_or_default()));

        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id,
                   "code": "local start = ... n = start.n function bump(k) n = n + (k or 1) return n end",
                   "input": {"n": 10}}),
        )
        .await;
        assert_eq!(result.is_error, Some(false), "{result:?}");
        let result = call(
            &client,
            "session_call",
            json!({"session_id": id, "function": "bump", "args": [5]}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(15), "{result:?}");
        let result = call(
            &client,
            "session_call",
            json!({"session_id": id, "function": "bump"}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(16), "{result:?}");
        let result = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "n"}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(16), "{result:?}");

        // A script error leaves the session usable.
        let result = call(
            &client,
            "session_call",
            json!({"session_id": id, "function": "missing"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        let result = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "n"}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(16), "{result:?}");

        let closed = call(&client, "session_close", json!({"session_id": id})).await;
        assert_eq!(closed.is_error, Some(false), "{closed:?}");
        let result = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "n"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        assert_eq!(doc(&result)["error"]["kind"], json!("input"));
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn sessions_past_the_cap_are_refused_until_one_closes() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &["--max-sessions", "2"]).await;
        let first = call(&client, "session_open", json!({})).await;
        let second = call(&client, "session_open", json!({})).await;
        assert_eq!(second.is_error, Some(false), "{second:?}");
        let third = call(&client, "session_open", json!({})).await;
        assert_eq!(third.is_error, Some(true), "{third:?}");
        let error = &doc(&third)["error"];
        assert_eq!(error["kind"], json!("input"), "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("too many sessions"), "{message}");
        assert!(message.contains('2'), "{message}");
        assert!(text(&third).contains("too many sessions"));

        let id = doc(&first)["session_id"].clone();
        call(&client, "session_close", json!({"session_id": id})).await;
        let again = call(&client, "session_open", json!({})).await;
        assert_eq!(again.is_error, Some(false), "{again:?}");
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn an_unknown_session_or_malformed_arguments_are_tool_errors() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &[]).await;
        for (tool, args) in [
            (
                "session_exec",
                json!({"session_id": "s999", "code": "return 1"}),
            ),
            ("session_eval", json!({"session_id": "s999", "code": "1"})),
            (
                "session_call",
                json!({"session_id": "s999", "function": "f"}),
            ),
            ("session_close", json!({"session_id": "s999"})),
        ] {
            let result = call(&client, tool, args).await;
            assert_eq!(result.is_error, Some(true), "{tool}: {result:?}");
            let error = &doc(&result)["error"];
            assert_eq!(error["kind"], json!("input"), "{tool}: {error}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("s999"),
                "{tool}: {error}"
            );
        }
        // No code: the model gets an error it can read, naming the field.
        let result = call(&client, "run_lua", json!({"input": 1})).await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        assert!(text(&result).contains("code"), "{result:?}");
        let result = call(
            &client,
            "run_lua",
            json!({"code": "return 1", "timeout": "1s"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        assert!(text(&result).contains("timeout"), "{result:?}");
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_command_tool_is_called_from_run_lua() {
    let dir = TempDir::new();
    dir.write(
        "add.sh",
        "read -r args\nset -- $(echo \"$args\" | tr '[],' '   ')\necho $(($1 + $2))\n",
    );
    block_on(async {
        let client = connect(&dir, &["--tool", "calc.add=sh add.sh"]).await;
        let result = call(&client, "run_lua", json!({"code": "return calc.add(2, 3)"})).await;
        assert_eq!(result.is_error, Some(false), "{result:?}");
        let doc = doc(&result);
        assert_eq!(doc["result"], json!(5), "{doc}");
        assert_eq!(doc["tool_calls"][0]["name"], json!("calc.add"), "{doc}");
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn isolated_runs_and_sessions_keep_stdout_the_protocol_s() {
    let dir = TempDir::new();
    let flags = isolate_flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    block_on(async {
        let client = connect(&dir, &args).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        let description = tool(&tools, "run_lua")
            .description
            .clone()
            .unwrap_or_default();
        assert!(description.contains("worker process"), "{description}");
        // The worker's output is captured, never written to the protocol's stdout.
        let result = call(&client, "run_lua", json!({"code": "print('hi') return 7"})).await;
        assert_eq!(doc(&result)["result"], json!(7), "{result:?}");
        assert_eq!(doc(&result)["output"], json!("hi\n"), "{result:?}");
        let opened = call(&client, "session_open", json!({})).await;
        let id = doc(&opened)["session_id"].clone();
        let result = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "x = 6 print(x) return x * 7"}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(42), "{result:?}");
        let result = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "x"}),
        )
        .await;
        assert_eq!(doc(&result)["result"], json!(6), "{result:?}");
        client.cancel().await.expect("close the connection");
    });
}

/// The client going away (stdin's end) ends the server, and its sessions with it. (A
/// request still running then has rmcp's drain, 5 s, to answer before the process exits
/// and ends it: not waited for here, to keep the test fast.)
#[test]
fn the_server_ends_with_the_connection_and_its_sessions_with_it() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let dir = TempDir::new();
    let mut cmd = command(&dir, &["mcp", "--timeout", "60s"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut send = |line: Json| {
        writeln!(stdin, "{line}").expect("write a request");
        stdin.flush().expect("flush");
    };
    let mut answer = |id: u64| loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("read stdout");
        assert!(read > 0, "stdout ended before the answer to {id}");
        let message: Json = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC ({e}): {line:?}"));
        if message["id"] == json!(id) {
            return message;
        }
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}),
    );
    answer(1);
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "session_open", "arguments": {}}}));
    let opened = answer(2);
    let id = opened["result"]["structuredContent"]["session_id"].clone();
    assert!(id.is_string(), "{opened}");
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "session_exec",
                   "arguments": {"session_id": id, "code": "x = 1"}}}));
    answer(3);
    drop(stdin);
    let status = child.wait().expect("wait for moonjail mcp");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

// ---------------------------------------------------------------------------------------
// Deferred tools: a call put to the client's user (elicitation), or held for resume_lua.
// ---------------------------------------------------------------------------------------

/// A client whose user answers every elicitation with `answer` (`None`: declines), and
/// remembers what they were asked.
#[derive(Clone, Default)]
struct User {
    answer: Option<String>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Never answers the first question (a person who walked away): it waits until the
    /// server withdraws it.
    away_first: bool,
    /// How many questions the server withdrew (`notifications/cancelled`).
    withdrawn: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rmcp::ClientHandler for User {
    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        use rmcp::model::{ElicitRequestParams, ElicitResult, ElicitationAction};
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = request
        else {
            panic!("a form elicitation is expected")
        };
        let schema = serde_json::to_value(&requested_schema).expect("a schema");
        assert_eq!(schema["required"], json!(["answer"]), "{schema}");
        let first = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(message);
            asked.len() == 1
        };
        if first && self.away_first {
            context.ct.cancelled().await;
            self.withdrawn
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(rmcp::ErrorData::internal_error("withdrawn", None));
        }
        Ok(match &self.answer {
            Some(answer) => ElicitResult::new(ElicitationAction::Accept)
                .with_content(json!({ "answer": answer })),
            None => ElicitResult::new(ElicitationAction::Decline),
        })
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder()
                .enable_elicitation()
                .build(),
            rmcp::model::Implementation::new("moonjail-test", "0"),
        )
    }
}

const PAYMENT: &str = r#"
local ok, receipt = pcall(payments.send, {to = "bob", amount = 5})
if not ok then return "refused: " .. tostring(receipt) end
return receipt.id .. "!"
"#;

#[test]
fn a_deferred_call_is_put_to_the_user_and_the_run_goes_on_with_the_answer() {
    let dir = TempDir::new();
    for isolate in [false, true] {
        let mut args = vec!["--defer-tool", "payments.send"];
        if isolate {
            args.push("--isolate");
        }
        block_on(async {
            let user = User {
                answer: Some(r#"{"id": "tx-1"}"#.to_string()),
                ..User::default()
            };
            let client = connect_with(&dir, &args, user.clone()).await;
            // Two deferred calls in one run: each is put to the user.
            let code =
                format!("local first = payments.send({{to = 'eve', amount = 1}})\n{PAYMENT}");
            let result = call(&client, "run_lua", json!({ "code": code })).await;
            assert_eq!(
                result.is_error,
                Some(false),
                "isolate {isolate}: {result:?}"
            );
            assert_eq!(doc(&result)["result"], json!("tx-1!"), "{result:?}");
            let asked = user.asked.lock().unwrap().clone();
            assert_eq!(asked.len(), 2, "{asked:?}");
            assert!(
                asked[0].contains(r#"payments.send({"amount":1,"to":"eve"})"#),
                "{asked:?}"
            );
            assert!(
                asked[1].contains(r#"payments.send({"amount":5,"to":"bob"})"#),
                "{asked:?}"
            );
            client.cancel().await.expect("close the connection");
        });
    }
}

#[test]
fn a_plain_text_answer_reaches_the_script_as_a_string() {
    let dir = TempDir::new();
    block_on(async {
        let user = User {
            answer: Some("approved by Ann".to_string()),
            ..User::default()
        };
        let client = connect_with(&dir, &["--defer-tool", "approve"], user).await;
        let result = call(&client, "run_lua", json!({"code": "return approve()"})).await;
        assert_eq!(
            doc(&result)["result"],
            json!("approved by Ann"),
            "{result:?}"
        );
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_cancelled_call_withdraws_its_question_gives_its_run_up_and_frees_its_place() {
    // --max-suspended 1: the one place is taken while the user is asked. The client
    // cancels that call; the next run must get the place back (its user is asked and
    // answers), not be refused as one too many.
    let dir = TempDir::new();
    block_on(async {
        let user = User {
            answer: Some("ok".to_string()),
            away_first: true,
            ..User::default()
        };
        let client = connect_with(
            &dir,
            &["--defer-tool", "approve", "--max-suspended", "1"],
            user.clone(),
        )
        .await;
        let Json::Object(args) = json!({"code": "return approve()"}) else {
            unreachable!()
        };
        let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(
            CallToolRequestParams::new("run_lua").with_arguments(args),
        ));
        let handle = client
            .send_cancellable_request(request, Default::default())
            .await
            .expect("send run_lua");
        for _ in 0..500 {
            if !user.asked.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(user.asked.lock().unwrap().len(), 1, "the user was asked");
        handle.cancel(None).await.expect("cancel run_lua");
        // The cancellation reaches the server before the next call; its run may take a
        // moment to give up its place.
        let mut last = None;
        for _ in 0..50 {
            let result = call(&client, "run_lua", json!({"code": "return approve()"})).await;
            if doc(&result)["result"] == json!("ok") {
                last = None;
                break;
            }
            last = Some(result);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(last.is_none(), "the place was never given back: {last:?}");
        // And the question the cancelled call had put to the user was withdrawn.
        for _ in 0..500 {
            if user.withdrawn.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            user.withdrawn.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the question was not withdrawn"
        );
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn a_declined_call_is_the_tool_s_error_in_the_script() {
    let dir = TempDir::new();
    block_on(async {
        let user = User::default();
        let client = connect_with(&dir, &["--defer-tool", "payments.send"], user.clone()).await;
        let result = call(&client, "run_lua", json!({ "code": PAYMENT })).await;
        assert_eq!(result.is_error, Some(false), "{result:?}");
        let refused = doc(&result)["result"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            refused.starts_with("refused: ")
                && refused.contains("the user declined the call to payments.send"),
            "{refused}"
        );
        assert_eq!(user.asked.lock().unwrap().len(), 1);
        client.cancel().await.expect("close the connection");
    });
}

#[test]
fn without_elicitation_a_deferred_call_is_held_for_resume_lua() {
    let dir = TempDir::new();
    for isolate in [false, true] {
        let mut args = vec!["--defer-tool", "payments.send", "--max-suspended", "1"];
        if isolate {
            args.push("--isolate");
        }
        block_on(async {
            let client = connect(&dir, &args).await;
            let tools = client.list_all_tools().await.expect("tools/list");
            let description = tool(&tools, "run_lua")
                .description
                .clone()
                .unwrap_or_default();
            assert!(
                description
                    .contains("Deferred (answered by a person, not by the sandbox): payments.send"),
                "{description}"
            );
            let result = call(&client, "run_lua", json!({ "code": PAYMENT })).await;
            // Not a failure: the run waits.
            assert_eq!(
                result.is_error,
                Some(false),
                "isolate {isolate}: {result:?}"
            );
            let outcome = doc(&result);
            assert_eq!(outcome["error"]["kind"], json!("suspended"), "{outcome}");
            assert_eq!(outcome["error"]["value"]["name"], json!("payments.send"));
            assert_eq!(
                outcome["error"]["value"]["args"],
                json!([{"to": "bob", "amount": 5}])
            );
            let id = outcome["error"]["value"]["run"]
                .as_str()
                .expect("a run id")
                .to_string();
            assert!(text(&result).contains("resume_lua"), "{}", text(&result));

            // Past --max-suspended 1, a second run stops for good: a tool error.
            let second = call(&client, "run_lua", json!({ "code": PAYMENT })).await;
            assert_eq!(second.is_error, Some(true), "{second:?}");
            assert_eq!(doc(&second)["error"]["kind"], json!("suspended"));
            assert_eq!(doc(&second)["error"]["value"]["run"], Json::Null);
            assert!(
                text(&second).contains("cannot be resumed"),
                "{}",
                text(&second)
            );
            // Given up, it has ended: its outcome is the run's own, statistics included.
            assert!(
                doc(&second)["stats"]["wall_ms"].as_f64() > Some(0.0),
                "{second:?}"
            );

            let both = call(
                &client,
                "resume_lua",
                json!({"run_id": id, "answer": {"id": "tx-2"}, "error": "no"}),
            )
            .await;
            assert_eq!(doc(&both)["error"]["kind"], json!("input"), "{both:?}");

            let resumed = call(
                &client,
                "resume_lua",
                json!({"run_id": id, "answer": {"id": "tx-2"}}),
            )
            .await;
            assert_eq!(resumed.is_error, Some(false), "{resumed:?}");
            assert_eq!(doc(&resumed)["result"], json!("tx-2!"), "{resumed:?}");
            // An id answers one call.
            let again = call(&client, "resume_lua", json!({"run_id": id, "answer": 1})).await;
            assert_eq!(again.is_error, Some(true));
            assert!(
                text(&again).contains("no suspended run"),
                "{}",
                text(&again)
            );

            // A refusal is the tool's error in the script.
            let result = call(&client, "run_lua", json!({ "code": PAYMENT })).await;
            let id = doc(&result)["error"]["value"]["run"]
                .as_str()
                .expect("an id")
                .to_string();
            let refused = call(
                &client,
                "resume_lua",
                json!({"run_id": id, "error": "over budget"}),
            )
            .await;
            assert_eq!(
                doc(&refused)["result"],
                json!("refused: payments.send: over budget"),
                "{refused:?}"
            );
            client.cancel().await.expect("close the connection");
        });
    }
}

#[test]
fn resume_lua_is_listed_only_with_deferred_tools() {
    let dir = TempDir::new();
    block_on(async {
        let client = connect(&dir, &[]).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().all(|t| t.name != "resume_lua"));
        client.cancel().await.expect("close the connection");
        let client = connect(&dir, &["--defer-tool", "approve"]).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        let resume = tool(&tools, "resume_lua");
        let schema = Json::Object((*resume.input_schema).clone());
        assert_eq!(schema["required"], json!(["run_id"]), "{schema}");
        // In a session, a deferred call ends the request as suspended (no id: a
        // session cannot be resumed), and the session goes on.
        let open = call(&client, "session_open", json!({})).await;
        let id = doc(&open)["session_id"]
            .as_str()
            .expect("an id")
            .to_string();
        let exec = call(
            &client,
            "session_exec",
            json!({"session_id": id, "code": "n = 1 return approve()"}),
        )
        .await;
        assert_eq!(doc(&exec)["error"]["kind"], json!("suspended"), "{exec:?}");
        assert_eq!(doc(&exec)["error"]["value"]["run"], Json::Null);
        let eval = call(
            &client,
            "session_eval",
            json!({"session_id": id, "code": "n"}),
        )
        .await;
        assert_eq!(doc(&eval)["result"], json!(1), "{eval:?}");
        client.cancel().await.expect("close the connection");
    });
}
