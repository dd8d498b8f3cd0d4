//! Host calls, the supervisor's side: what a worker may ask for in the middle of a
//! request, and the budget that bounds how much it may ask.
//!
//! A locked-down worker cannot open a file, so `require` of a host module and `io.open`
//! of a listed file travel to the supervisor as `HostCall` frames. The supervisor answers
//! them from the sandbox's own [`FileSource`] — the [`crate::HostFiles`] the host
//! configured, with the same module-name validation and the same allowlist as in
//! process — so the worker never touches the file system and cannot widen what it
//! reads. Host tools will use the same channel (the `Tool` request).
//!
//! Each request the supervisor sends (a run, a session call) gets a fresh [`Budget`]: a
//! cap on the number of host calls and on the bytes they move both ways. A worker that
//! goes over it is killed and the request fails as `forbidden`, so a script that calls
//! `require` in a loop costs its own run and nothing else.

use super::protocol::{
    self, Frame, FrameError, HostAnswer, HostCall, HostReply, HostRequest, Kind,
};
use crate::host::FileSource;

/// What a tool call is answered with until host tools reach worker processes.
pub(crate) const NO_TOOLS: &str = "tools are not available in isolated mode yet";

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
                "the script made more than {} host calls (require of a host module, io.open) \
                 in one request, the most a worker process may make \
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
                "the host calls of one request (require of a host module, io.open) moved more \
                 than {} bytes, the most a worker process may move \
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
    /// The request went over its budget.
    Budget(String),
}

/// Answers the `HostCall` in `frame` from `files`, charging `budget`: the encoded
/// `HostReply` to send back.
pub(crate) fn answer(
    frame: &Frame,
    files: &dyn FileSource,
    budget: &mut Budget,
) -> Result<Vec<u8>, Refusal> {
    budget.charge_call().map_err(Refusal::Budget)?;
    budget
        .charge_bytes(frame.encoded_len())
        .map_err(Refusal::Budget)?;
    let call: HostCall = frame.json(0).map_err(Refusal::Frame)?;
    let (answer, data) = serve(call.request, files);
    let meta = serde_json::to_vec(&HostReply {
        id: call.id,
        answer,
    })
    .map_err(|e| Refusal::Frame(FrameError::Malformed(format!("encoding a HostReply: {e}"))))?;
    budget
        .charge_bytes(meta.len() + data.len())
        .map_err(Refusal::Budget)?;
    protocol::encode(Kind::HostReply, &[&meta, &data]).map_err(Refusal::Frame)
}

/// The answer to one request, and its bytes.
fn serve(request: HostRequest, files: &dyn FileSource) -> (HostAnswer, Vec<u8>) {
    match request {
        HostRequest::ReadModule { name } => match files.module(&name) {
            Ok((source, path)) => (HostAnswer::Module { path }, source),
            Err(tried) => (HostAnswer::NoModule { tried }, Vec::new()),
        },
        HostRequest::ReadFile { path } => match files.read(&path) {
            Some(Ok(bytes)) => (HostAnswer::File, bytes),
            Some(Err(message)) => (HostAnswer::Failed { message }, Vec::new()),
            None => (HostAnswer::NotListed, Vec::new()),
        },
        // TOOL CALLS: dispatch `name` with `args` to the sandbox's tool registry here and
        // answer `HostAnswer::Value { value }` or `HostAnswer::Failed { message }` (the
        // budget above already counts tool calls and their bytes).
        HostRequest::Tool { name, args } => {
            let _ = (name, args);
            (
                HostAnswer::Failed {
                    message: NO_TOOLS.to_string(),
                },
                Vec::new(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostFiles;
    use protocol::Decoded;

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

    #[test]
    fn answers_come_from_the_host_files_rules() {
        let files = HostFiles::default().allow_read("/nonexistent/listed");
        let mut budget = Budget::new(100, 1 << 20);
        let ask =
            |request, budget: &mut Budget| reply(&answer(&call(request), &files, budget).unwrap());
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
        let (r, _) = ask(
            HostRequest::Tool {
                name: "t".into(),
                args: serde_json::Value::Null,
            },
            &mut budget,
        );
        assert_eq!(
            r.answer,
            HostAnswer::Failed {
                message: NO_TOOLS.into()
            }
        );
    }

    #[test]
    fn the_budget_caps_calls_and_bytes() {
        let files = HostFiles::default();
        let request = || HostRequest::ReadModule { name: "m".into() };
        let mut budget = Budget::new(2, 1 << 20);
        assert!(answer(&call(request()), &files, &mut budget).is_ok());
        assert!(answer(&call(request()), &files, &mut budget).is_ok());
        assert!(matches!(
            answer(&call(request()), &files, &mut budget),
            Err(Refusal::Budget(m)) if m.contains("more than 2 host calls")
        ));
        let mut budget = Budget::new(100, 10);
        assert!(matches!(
            answer(&call(request()), &files, &mut budget),
            Err(Refusal::Budget(m)) if m.contains("more than 10 bytes")
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
        assert!(matches!(
            answer(&frame, &HostFiles::default(), &mut budget),
            Err(Refusal::Frame(FrameError::Malformed(_)))
        ));
    }
}
