//! The tool set shared by the in-process and isolated tool suites, so both prove the
//! same behaviour against the same tools.

use std::time::Duration;

use moonjail::{Sandbox, SandboxBuilder, ToolError};
use serde_json::{json, Value as Json};

pub fn echo(args: Vec<Json>) -> Result<Json, ToolError> {
    Ok(Json::Array(args))
}

/// A sandbox with `weather.lookup`, `weather.fail`, `weather.boom` (panics), `echo`, and
/// `deep.er.tool`.
pub fn builder() -> SandboxBuilder {
    Sandbox::builder()
        .timeout(Duration::from_secs(5))
        .tool("weather.lookup", |args| {
            match args.first().and_then(|a| a["city"].as_str()) {
                Some("Lyon") => Ok(json!({"forecast": "sunny", "temperature_c": 21})),
                Some(city) => Err(ToolError::new(format!("no forecast for {city}"))),
                None => Err(ToolError::new("expected {city = NAME}")),
            }
        })
        .tool("weather.fail", |_| {
            Err(ToolError::new("the service is down"))
        })
        .tool("weather.boom", |_| panic!("the tool's own bug"))
        .tool("echo", echo)
        .tool("deep.er.tool", |_| Ok(json!("deep")))
}
