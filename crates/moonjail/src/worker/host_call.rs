//! Host calls, the supervisor's side: what a worker may ask for in the middle of a
//! request, and the budget that bounds how much it may ask.
//!
//! A locked-down worker cannot open a file or a socket, so `require` of a host module,
//! `io.open` of a listed file and host tool calls travel to the supervisor as `HostCall`
//! frames. The supervisor answers them from the sandbox's own configuration ([`Host`]):
//! files from its [`FileSource`] — the [`crate::HostFiles`] the host configured, with the
//! same module-name validation and the same allowlist as in process — and tool calls
//! through the request's own [`ToolRun`], so the quotas, the deadline and the audit record
//! are the ones an in-process run has. The worker never touches the file system or the
//! network and cannot widen what it reaches: it chooses only the name, path or tool
//! arguments asked for.
//!
//! **Tools.** The supervisor runs a tool only if the sandbox registered its name. An
//! honest worker never asks for another name (its own registry holds exactly the names
//! it was sent and refuses the rest locally), so a worker that does is no longer running
//! moonjail's code as shipped: it is killed and the request fails as `forbidden`, without
//! anything being called. A tool runs on the thread serving the request, as in process:
//! it gets the request's deadline in its [`crate::ToolContext`] and must honour it (the
//! built-in ones do); the caller ([`super::supervisor`]) kills the worker if a tool returns
//! past the kill deadline. The answer tells the worker when the deadline passed during
//! the call, so the run ends as a timeout there too.
//!
//! Each request the supervisor sends (a run, a session call) gets a fresh [`Budget`]: a
//! cap on the number of host calls and on the bytes they move both ways. A worker that
//! goes over it is killed and the request fails as `forbidden`, so a script that calls
//! `require` or a tool in a loop costs its own run and nothing else. Tool calls count
//! against the budget and against the tool quotas (which the worker also applies
//! itself, without asking).

use std::time::Instant;

use serde_json::Value as Json;

use super::protocol::{
    self, Frame, FrameError, HostAnswer, HostCall, HostReply, HostRequest, Kind,
};
use crate::host::FileSource;
use crate::tools::{ToolError, ToolRun};

/// What a supervisor answers host calls from, for one request.
#[derive(Clone, Copy)]
pub(crate) struct Host<'a> {
    /// Modules and listed files.
    pub(crate) files: &'a dyn FileSource,
    /// The request's tool calls (`None`: the request may call no tool).
    pub(crate) tools: Option<&'a ToolRun>,
    /// The deepest JSON a host call may hold (tool arguments nest as deep as results).
    pub(crate) max_depth: usize,
    /// The most memory a host call's JSON may take once parsed (see `input.rs`).
    pub(crate) max_host_bytes: u64,
}

/// How much deeper than the arguments themselves a `HostCall` nests (the call, its
/// request, the tool request, the argument list).
pub(crate) const CALL_DEPTH: usize = 8;

/// How many host calls one request may still make, and how many bytes they may move.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    calls: u64,
    bytes: u64,
    max_calls: u64,
    max_bytes: u64,
}

impl Budget {
    /// A budget of `max_calls` calls moving at most `max_bytes` bytes (requests and
    /// replies together).
    pub(crate) fn new(max_calls: u64, max_bytes: u64) -> Budget {
        Budget {
            calls: 0,
            bytes: 0,
            max_calls,
            max_bytes,
        }
    }

    fn charge_call(&mut self) -> Result<(), String> {
        self.calls += 1;
        if self.calls > self.max_calls {
            return Err(format!(
                "the script made more than {} host calls (require of a host module, io.open, \
                 tool calls) in one request, the most a worker process may make \
                 (ProcessConfigBuilder::max_host_calls)",
                self.max_calls
            ));
        }
        Ok(())
    }

    fn charge_bytes(&mut self, bytes: usize) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        if self.bytes > self.max_bytes {
            return Err(format!(
                "the host calls of one request (require of a host module, io.open, tool \
                 calls) moved more than {} bytes, the most a worker process may move \
                 (ProcessConfigBuilder::max_host_call_bytes)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// Why a host call was not answered. Either way the worker is done for.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The frame is not a well-formed host call.
    Frame(FrameError),
    /// The request went over its budget, or asked for a tool that is not registered.
    Forbidden(String),
}

/// Answers the `HostCall` in `frame` from `host`, charging `budget`: the encoded
/// `HostReply` to send back.
pub(crate) fn answer(
    frame: &Frame,
    host: Host<'_>,
    budget: &mut Budget,
) -> Result<Vec<u8>, Refusal> {
    budget.charge_call().map_err(Refusal::Forbidden)?;
    budget
        .charge_bytes(frame.encoded_len())
        .map_err(Refusal::Forbidden)?;
    let call = parse(frame, host.max_depth, host.max_host_bytes).map_err(Refusal::Frame)?;
    let (answer, data) = serve(call.request, host)?;
    let meta = serde_json::to_vec(&HostReply {
        id: call.id,
        answer,
    })
    .map_err(|e| Refusal::Frame(FrameError::Malformed(format!("encoding a HostReply: {e}"))))?;
    budget
        .charge_bytes(meta.len() + data.len())
        .map_err(Refusal::Forbidden)?;
    protocol::encode(Kind::HostReply, &[&meta, &data]).map_err(Refusal::Frame)
}

/// The call in `frame`, its nesting checked before it is parsed (tool arguments may nest
/// deeper than serde's fixed limit).
fn parse(frame: &Frame, max_depth: usize, max_host_bytes: u64) -> Result<HostCall, FrameError> {
    let malformed = |what: String| FrameError::Malformed(format!("HostCall: {what}"));
    let bytes = frame
        .section(0)
        .ok_or_else(|| malformed("no section 0".into()))?;
    let value = protocol::parse_value(bytes, max_depth.saturating_add(CALL_DEPTH), max_host_bytes)
        .map_err(malformed)?;
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

/// The answer to one request, and its bytes.
fn serve(request: HostRequest, host: Host<'_>) -> Result<(HostAnswer, Vec<u8>), Refusal> {
    Ok(match request {
        HostRequest::ReadModule { name } => match host.files.module(&name) {
            Ok((source, path)) => (HostAnswer::Module { path }, source),
            Err(tried) => (HostAnswer::NoModule { tried }, Vec::new()),
        },
        HostRequest::ReadFile { path } => match host.files.read(&path) {
            Some(Ok(bytes)) => (HostAnswer::File, bytes),
            Some(Err(message)) => (HostAnswer::Failed { message }, Vec::new()),
            None => (HostAnswer::NotListed, Vec::new()),
        },
        HostRequest::Tool {
            name,
            args,
            args_error,
        } => tool(host.tools, &name, args, args_error)?,
    })
}

/// Runs tool `name` through `run`, if it is one of `run`'s tools.
fn tool(
    run: Option<&ToolRun>,
    name: &str,
    args: Json,
    args_error: Option<String>,
) -> Result<(HostAnswer, Vec<u8>), Refusal> {
    let Some(run) = run.filter(|run| run.registry().contains(name)) else {
        let mut shown: String = name.chars().take(64).collect();
        if shown.len() < name.len() {
            shown.push_str("...");
        }
        return Err(Refusal::Forbidden(format!(
            "the worker process asked the host to call {shown:?}, which is not a tool \
             this request may call; a worker only asks for the tools it was given, so it was killed"
        )));
    };
    let args = match (args_error, args) {
        (Some(message), _) => Err(ToolError::new(message)),
        (None, Json::Array(args)) => Ok(args),
        (None, _) => {
            return Err(Refusal::Frame(FrameError::Malformed(format!(
                "HostCall: the arguments of a call to {name:?} are not an array"
            ))))
        }
    };
    let result = run.call_prepared(name, || args);
    let expired = run.deadline().is_some_and(|d| Instant::now() >= d);
    let encoded = result.and_then(|value| {
        serde_json::to_vec(&value)
            .map_err(|e| ToolError::new(format!("the result could not be encoded: {e}")))
    });
    Ok(match encoded {
        Ok(bytes) => (HostAnswer::Value { expired }, bytes),
        Err(e) => (
            HostAnswer::ToolError {
                message: e.message().to_string(),
                expired,
                suspend: e.suspend,
            },
            Vec::new(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::host::HostFiles;
    use crate::tools::{ToolQuota, ToolRegistry};
    use protocol::Decoded;
    use serde_json::json;

    fn call(request: HostRequest) -> Frame {
        let bytes = protocol::encode_json(Kind::HostCall, &HostCall { id: 7, request }).unwrap();
        match protocol::decode(&bytes, 1 << 20).unwrap() {
            Decoded::Frame(frame, _) => frame,
            other => panic!("{other:?}"),
        }
    }

    fn reply(bytes: &[u8]) -> (HostReply, Vec<u8>) {
        match protocol::decode(bytes, 1 << 30).unwrap() {
            Decoded::Frame(frame, _) => {
                assert_eq!(frame.kind, Kind::HostReply);
                (frame.json(0).unwrap(), frame.section(1).unwrap().to_vec())
            }
            other => panic!("{other:?}"),
        }
    }

    fn files_only(files: &dyn FileSource) -> Host<'_> {
        Host {
            files,
            tools: None,
            max_depth: 64,
            max_host_bytes: u64::MAX,
        }
    }

    fn tool_call(name: &str, args: Json) -> HostRequest {
        HostRequest::Tool {
            name: name.into(),
            args,
            args_error: None,
        }
    }

    #[test]
    fn answers_come_from_the_host_files_rules() {
        let files = HostFiles::default().allow_read("/nonexistent/listed");
        let mut budget = Budget::new(100, 1 << 20);
        let ask = |request, budget: &mut Budget| {
            reply(&answer(&call(request), files_only(&files), budget).unwrap())
        };
        let (r, data) = ask(
            HostRequest::ReadFile {
                path: "/etc/passwd".into(),
            },
            &mut budget,
        );
        assert_eq!((r.id, r.answer, data.len()), (7, HostAnswer::NotListed, 0));
        let (r, _) = ask(
            HostRequest::ReadFile {
                path: "/nonexistent/listed".into(),
            },
            &mut budget,
        );
        assert!(matches!(r.answer, HostAnswer::Failed { .. }), "{r:?}");
        let (r, _) = ask(
            HostRequest::ReadModule {
                name: "../x".into(),
            },
            &mut budget,
        );
        assert!(
            matches!(&r.answer, HostAnswer::NoModule { tried } if tried.contains("no module directory")),
            "{r:?}"
        );
    }

    #[test]
    fn tools_run_through_the_requests_tool_run() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let mut registry = ToolRegistry::new();
        registry
            .register("ns.echo", move |args| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Json::Array(args))
            })
            .unwrap();
        registry.register("fail", |_| Err("nope".into())).unwrap();
        registry.set_quota(ToolQuota::default().tool("ns", 2));
        let run = Arc::new(registry).start_run(Some(Instant::now() + Duration::from_secs(60)));
        let files = HostFiles::default();
        let host = Host {
            files: &files,
            tools: Some(&run),
            max_depth: 64,
            max_host_bytes: u64::MAX,
        };
        let mut budget = Budget::new(100, 1 << 20);
        let mut ask = |request| reply(&answer(&call(request), host, &mut budget).unwrap());

        let (r, data) = ask(tool_call("ns.echo", json!([1, {"a": "b"}])));
        assert_eq!(r.answer, HostAnswer::Value { expired: false });
        assert_eq!(data, br#"[1,{"a":"b"}]"#);
        let (r, _) = ask(tool_call("fail", json!([])));
        assert_eq!(
            r.answer,
            HostAnswer::ToolError {
                message: "nope".into(),
                expired: false,
                suspend: false,
            }
        );
        // Arguments the worker could not marshal: recorded, not run.
        let (r, _) = ask(HostRequest::Tool {
            name: "ns.echo".into(),
            args: Json::Null,
            args_error: Some("argument 1: a function".into()),
        });
        assert!(
            matches!(&r.answer, HostAnswer::ToolError { message, .. } if message == "argument 1: a function")
        );
        // The quota is the run's: the namespace allowed two calls.
        let (r, _) = ask(tool_call("ns.echo", json!([])));
        assert!(
            matches!(&r.answer, HostAnswer::ToolError { message, .. } if message.contains("quota"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let audit: Vec<_> = run.calls().iter().map(|c| (c.name.clone(), c.ok)).collect();
        assert_eq!(
            audit,
            [
                ("ns.echo".to_string(), true),
                ("fail".to_string(), false),
                ("ns.echo".to_string(), false)
            ]
        );
    }

    #[test]
    fn a_tool_that_is_not_registered_is_refused_without_calling_anything() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let mut registry = ToolRegistry::new();
        registry
            .register("echo", move |args| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Json::Array(args))
            })
            .unwrap();
        let run = Arc::new(registry).start_run(None);
        let files = HostFiles::default();
        let mut budget = Budget::new(100, 1 << 20);
        for tools in [Some(&run), None] {
            let host = Host {
                files: &files,
                tools,
                max_depth: 64,
                max_host_bytes: u64::MAX,
            };
            for name in ["missing", "echo.x", "", "os.execute"] {
                let refused = answer(&call(tool_call(name, json!([]))), host, &mut budget);
                assert!(
                    matches!(&refused, Err(Refusal::Forbidden(m)) if m.contains("not a tool")),
                    "{refused:?}"
                );
            }
        }
        // Without tools for the request, even a registered name is refused.
        let host = Host {
            files: &files,
            tools: None,
            max_depth: 64,
            max_host_bytes: u64::MAX,
        };
        assert!(answer(&call(tool_call("echo", json!([]))), host, &mut budget).is_err());
        // Arguments that are not a list are malformed.
        let host = Host {
            tools: Some(&run),
            ..host
        };
        let refused = answer(&call(tool_call("echo", json!({"a": 1}))), host, &mut budget);
        assert!(matches!(refused, Err(Refusal::Frame(_))), "{refused:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(run.calls().is_empty());
    }

    #[test]
    fn a_call_past_the_deadline_says_the_run_expired() {
        let mut registry = ToolRegistry::new();
        registry
            .register("echo", |args| Ok(Json::Array(args)))
            .unwrap();
        let run = Arc::new(registry).start_run(Some(Instant::now()));
        let files = HostFiles::default();
        let host = Host {
            files: &files,
            tools: Some(&run),
            max_depth: 64,
            max_host_bytes: u64::MAX,
        };
        let mut budget = Budget::new(100, 1 << 20);
        let (r, _) =
            reply(&answer(&call(tool_call("echo", json!([]))), host, &mut budget).unwrap());
        assert!(
            matches!(&r.answer, HostAnswer::ToolError { expired: true, message, .. } if message.contains("deadline")),
            "{r:?}"
        );
    }

    #[test]
    fn tool_arguments_nest_as_deep_as_results() {
        let mut registry = ToolRegistry::new();
        registry
            .register("echo", |args| Ok(Json::Array(args)))
            .unwrap();
        let run = Arc::new(registry).start_run(None);
        let files = HostFiles::default();
        let host = Host {
            files: &files,
            tools: Some(&run),
            max_depth: 200,
            max_host_bytes: u64::MAX,
        };
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let mut budget = Budget::new(100, 1 << 20);
        let (r, data) =
            reply(&answer(&call(tool_call("echo", json!([deep]))), host, &mut budget).unwrap());
        assert_eq!(r.answer, HostAnswer::Value { expired: false });
        assert_eq!(data.len(), 403);
        // Deeper than allowed: refused before parsing.
        let host = Host {
            max_depth: 100,
            max_host_bytes: u64::MAX,
            ..host
        };
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let refused = answer(&call(tool_call("echo", json!([deep]))), host, &mut budget);
        assert!(matches!(refused, Err(Refusal::Frame(_))), "{refused:?}");
    }

    #[test]
    fn the_budget_caps_calls_and_bytes() {
        let files = HostFiles::default();
        let request = || HostRequest::ReadModule { name: "m".into() };
        let mut budget = Budget::new(2, 1 << 20);
        assert!(answer(&call(request()), files_only(&files), &mut budget).is_ok());
        assert!(answer(&call(request()), files_only(&files), &mut budget).is_ok());
        assert!(matches!(
            answer(&call(request()), files_only(&files), &mut budget),
            Err(Refusal::Forbidden(m)) if m.contains("more than 2 host calls")
        ));
        let mut budget = Budget::new(100, 10);
        assert!(matches!(
            answer(&call(request()), files_only(&files), &mut budget),
            Err(Refusal::Forbidden(m)) if m.contains("more than 10 bytes")
        ));
    }

    #[test]
    fn a_malformed_call_is_refused() {
        let bytes = protocol::encode(
            Kind::HostCall,
            &[br#"{"id": 1, "request": {"format_disk": {}}}"#],
        )
        .unwrap();
        let Ok(Decoded::Frame(frame, _)) = protocol::decode(&bytes, 1 << 20) else {
            panic!("no frame");
        };
        let mut budget = Budget::new(10, 1 << 20);
        let files = HostFiles::default();
        assert!(matches!(
            answer(&frame, files_only(&files), &mut budget),
            Err(Refusal::Frame(FrameError::Malformed(_)))
        ));
    }
}
