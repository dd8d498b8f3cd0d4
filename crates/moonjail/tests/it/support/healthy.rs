//! The run every escape test makes after its attack: the same script and the same
//! expectations in process and isolated.

use moonjail::Outcome;
use serde_json::{json, Value as Json};

/// A normal script touching strings, tables, pcall and the input.
pub const HEALTHY: &str = r#"
local input = ...
local t = {}
for i = 1, 10 do t[#t + 1] = string.format("%d", i * i) end
print("healthy")
local ok, e = pcall(error, "caught")
return {joined = table.concat(t, ","), upper = ("ok"):upper(), caught = e, ok = ok,
        n = input.n, pi = math.floor(math.pi * 100)}
"#;

/// The input [`HEALTHY`] runs with.
pub fn healthy_input() -> Json {
    json!({"n": 7})
}

/// Asserts that `out` is [`HEALTHY`]'s exact result and output.
pub fn check_healthy(out: &Outcome) {
    assert_eq!(
        out.result,
        Ok(json!({
            "joined": "1,4,9,16,25,36,49,64,81,100", "upper": "OK", "caught": "caught",
            "ok": false, "n": 7, "pi": 314
        })),
        "the sandbox is not healthy after the escape attempt"
    );
    assert_eq!(out.output, "healthy\n");
}
