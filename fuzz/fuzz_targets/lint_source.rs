//! Arbitrary bytes linted against a sandbox with a tool, a schema and an allowlist: the
//! linter reads untrusted source (the CLI, `run --lint`, `POST /v1/lint`, the MCP
//! `lint_lua` tool), so it must never panic, and every finding must point inside the
//! source. (A backtick once reached an `unreachable!()` in full_moon's lexer.)
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moonjail::{Sandbox, ToolSpec};

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        Sandbox::builder()
            .tool("weather.lookup", |_| Ok(serde_json::Value::Null))
            .describe_tool(
                "weather.lookup",
                ToolSpec::new().parameters(serde_json::json!({
                    "type": "object",
                    "required": ["city"],
                    "properties": {"city": {"type": "string"}}
                })),
            )
            .allow_http("api.example.com")
            .require_run(true)
            .build()
            .expect("valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let report = sandbox().lint(data);
    let lines = lua_lines(data);
    for f in &report.findings {
        assert!(f.line >= 1 && f.line <= lines, "line {} of {lines}: {f:?}", f.line);
        assert!(!f.message.is_empty());
    }
});

/// Lines as Lua counts them (and the linter, since session 10): `\n` and `\r` each end
/// one, and `\r\n` or `\n\r` together end one.
fn lua_lines(data: &[u8]) -> u32 {
    let mut lines = 1;
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b == b'\n' || b == b'\r' {
            lines += 1;
            let next = data.get(i + 1).copied();
            i += if next.is_some_and(|n| (n == b'\n' || n == b'\r') && n != b) { 2 } else { 1 };
        } else {
            i += 1;
        }
    }
    lines
}
