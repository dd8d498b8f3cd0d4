//! The wire protocol between a supervisor and its worker process.
//!
//! One stream socket carries frames both ways:
//!
//! ```text
//! frame   = length:u32le  version:u8  type:u8  section*     (length counts from `version`)
//! section = length:u32le  bytes
//! ```
//!
//! Metadata sections are JSON (serde); bulk data travels as raw sections so that Lua
//! source and output may hold any byte and a result is never escaped twice. A reader
//! checks the length against its maximum *before* it allocates, and the version before it
//! reads the body, so an oversized or foreign frame is refused at once.
//!
//! | type | direction | sections |
//! | --- | --- | --- |
//! | `Configure` | supervisor → worker | lockdown settings (JSON) |
//! | `Ready` | worker → supervisor | lockdown report (JSON) |
//! | `StartFailed` | worker → supervisor | why lockdown failed (JSON) |
//! | `Run` | supervisor → worker | run settings (JSON, with the tool names), input (JSON), source (raw) |
//! | `Done` | worker → supervisor | error and stats (JSON), result (JSON, empty on error), output (raw) |
//! | `HostCall` | worker → supervisor | a request to the host in the middle of a request (JSON) |
//! | `HostReply` | supervisor → worker | the answer (JSON), its bytes (raw: a module, a file, a tool's result as JSON text; empty when none) |
//! | `Probe` | supervisor → worker | test hook request (JSON), honoured only by test workers |
//! | `ProbeReply` | worker → supervisor | what the probe found (JSON) |
//! | `Refused` | worker → supervisor | the request was not acceptable (JSON) |
//! | `SessionOpen` | supervisor → worker | session settings (JSON, with the tool names); answered by `Done` |
//! | `Exec` | supervisor → worker | source (raw); answered by `Done` |
//! | `Call` | supervisor → worker | function name (JSON), arguments (JSON array); answered by `Done` |
//! | `HasFunction` | supervisor → worker | function name (JSON); answered by `Done` with a boolean |
//! | `Close` | supervisor → worker | none; the worker ends the session and exits, unanswered |
//!
//! **Requests and host calls.** The supervisor sends one request (`Run`, a session
//! request, `Probe`) at a time and reads until its answer. While it waits, the worker may
//! send `HostCall` frames (a module for `require`, a listed file for `io.open`, a host
//! tool call) and block until the `HostReply` with the same id. The supervisor answers
//! them from the sandbox's own configuration, under the request's deadline and a budget
//! of calls and bytes per request; a worker that breaks either is killed.
//!
//! **Tools.** `Run` and `SessionOpen` carry the names of the sandbox's tools and their
//! quotas — data only, never anything callable — so that the worker can build the Lua
//! namespaces and refuse what the host would refuse without asking. A tool call is a
//! `HostCall` naming the tool; the supervisor runs it only if the sandbox registered that
//! name, and kills a worker that asks for any other.
//!
//! **Sessions.** After `SessionOpen` a worker holds one persistent Lua state and serves
//! `Exec`, `Call` and `HasFunction` against it until `Close` (or until it is killed). A
//! session's worker is dedicated to it and is never handed another sandbox's requests.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::engine::Host;
use crate::error::Error;
use crate::outcome::Stats;
use crate::spec::Spec;

/// The protocol version both sides must speak; bump it on any incompatible change.
/// (3: host tools — a worker of version 2 would silently run without them; 4: one
/// `RequestMeta` carrying the `Spec` for runs and sessions; 5: requests are numbered for
/// the interrupt signal, which a worker of version 4 would ignore, and `Done` may carry
/// the kind `interrupted`; 6: a tool error may `suspend` the run, which a worker of
/// version 5 would let the script catch and go on; 7: an `Exec` or `Call` may carry the
/// time its script reads (`CallOptions::time`, chosen by the supervisor), which a worker
/// of version 6 would ignore, running the request at the session's fixed timestamp; 8:
/// the tools name the deferred ones, at which the worker stops its deadline's clock while
/// the host may hold the call (`Sandbox::start`), which a worker of version 7 would not,
/// timing out while a person decides.)
pub(crate) const VERSION: u8 = 8;

/// Bytes before a frame's sections: length, version, type.
pub(crate) const HEADER_BYTES: usize = 6;

/// The largest frame a worker accepts before it is configured.
pub(crate) const MAX_CONFIGURE_BYTES: usize = 64 << 10;

/// The type of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Configure = 1,
    Ready = 2,
    StartFailed = 3,
    Run = 4,
    Done = 5,
    /// A request to the host (module, file, tool) in the middle of a request.
    HostCall = 6,
    /// The answer to a `HostCall`.
    HostReply = 7,
    Probe = 8,
    ProbeReply = 9,
    Refused = 10,
    SessionOpen = 11,
    Exec = 12,
    Call = 13,
    HasFunction = 14,
    Close = 15,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Configure,
            2 => Kind::Ready,
            3 => Kind::StartFailed,
            4 => Kind::Run,
            5 => Kind::Done,
            6 => Kind::HostCall,
            7 => Kind::HostReply,
            8 => Kind::Probe,
            9 => Kind::ProbeReply,
            10 => Kind::Refused,
            11 => Kind::SessionOpen,
            12 => Kind::Exec,
            13 => Kind::Call,
            14 => Kind::HasFunction,
            15 => Kind::Close,
            _ => return None,
        })
    }
}

/// Why bytes on the channel are not an acceptable frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The announced length is over the reader's maximum.
    Oversized { length: usize, max: usize },
    /// The frame speaks another protocol version.
    Version(u8),
    /// The type byte names no message.
    UnknownType(u8),
    /// The body does not have the structure its type requires.
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized { length, max } => {
                write!(f, "a frame of {length} bytes, over the {max} byte maximum")
            }
            FrameError::Version(v) => write!(
                f,
                "protocol version {v}, but this moonjail speaks version {VERSION} \
                 (is the worker executable from another build?)"
            ),
            FrameError::UnknownType(t) => write!(f, "a frame of unknown type {t}"),
            FrameError::Malformed(what) => write!(f, "a malformed frame: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One decoded frame: its type and its sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    body: Vec<u8>,
    sections: Vec<(usize, usize)>,
}

impl Frame {
    /// The `index`th section, if present.
    pub(crate) fn section(&self, index: usize) -> Option<&[u8]> {
        self.sections
            .get(index)
            .map(|&(start, end)| &self.body[start..end])
    }

    /// Section `index` parsed as JSON metadata.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        index: usize,
    ) -> Result<T, FrameError> {
        let bytes = self.section(index).ok_or_else(|| {
            FrameError::Malformed(format!("{:?} has no section {index}", self.kind))
        })?;
        serde_json::from_slice(bytes)
            .map_err(|e| FrameError::Malformed(format!("{:?} section {index}: {e}", self.kind)))
    }

    /// The size of the frame on the wire.
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }

    /// The number of sections.
    #[cfg(test)]
    pub(crate) fn section_count(&self) -> usize {
        self.sections.len()
    }
}

/// Encodes a frame of `kind` with `sections`.
///
/// # Errors
/// When the frame would not fit the 32-bit length field.
pub(crate) fn encode(kind: Kind, sections: &[&[u8]]) -> Result<Vec<u8>, FrameError> {
    let body: usize = 2 + sections.iter().map(|s| 4 + s.len()).sum::<usize>();
    let length = u32::try_from(body).map_err(|_| FrameError::Oversized {
        length: body,
        max: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(4 + body);
    out.extend_from_slice(&length.to_le_bytes());
    out.push(VERSION);
    out.push(kind as u8);
    for section in sections {
        // Each section is shorter than the whole body, which fits in a u32.
        out.extend_from_slice(&(section.len() as u32).to_le_bytes());
        out.extend_from_slice(section);
    }
    Ok(out)
}

/// Encodes a frame whose only section is `meta` as JSON.
pub(crate) fn encode_json(kind: Kind, meta: &impl Serialize) -> Result<Vec<u8>, FrameError> {
    let meta = serde_json::to_vec(meta).map_err(|e| FrameError::Malformed(e.to_string()))?;
    encode(kind, &[&meta])
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Not enough bytes yet; at least this many are needed in total.
    Need(usize),
    /// A whole frame, which used this many bytes.
    Frame(Frame, usize),
}

/// Decodes the frame at the start of `buffer`, refusing lengths over `max` as soon as the
/// length is known and another version as soon as the version byte is.
pub(crate) fn decode(buffer: &[u8], max: usize) -> Result<Decoded, FrameError> {
    let Some(prefix) = buffer.get(..4) else {
        return Ok(Decoded::Need(4));
    };
    let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length > max {
        return Err(FrameError::Oversized { length, max });
    }
    if length < 2 {
        return Err(FrameError::Malformed(format!(
            "a length of {length} leaves no room for the version and type"
        )));
    }
    if let Some(&version) = buffer.get(4) {
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
    }
    let total = 4 + length;
    if buffer.len() < total {
        return Ok(Decoded::Need(total));
    }
    let kind = Kind::from_u8(buffer[5]).ok_or(FrameError::UnknownType(buffer[5]))?;
    let body = buffer[HEADER_BYTES..total].to_vec();
    let mut sections = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some(len) = body.get(at..at + 4) else {
            return Err(FrameError::Malformed(format!(
                "{kind:?}: a section length cut off at byte {at}"
            )));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| {
                FrameError::Malformed(format!(
                    "{kind:?}: a section of {len} bytes at byte {at} runs past the frame"
                ))
            })?;
        sections.push((start, end));
        at = end;
    }
    Ok(Decoded::Frame(
        Frame {
            kind,
            body,
            sections,
        },
        total,
    ))
}

/// Parses JSON that came over the channel, nesting at most `max_depth` levels and
/// taking at most about `host_bytes` once parsed (see `input.rs`).
pub(crate) fn parse_value(bytes: &[u8], max_depth: usize, host_bytes: u64) -> Result<Json, String> {
    crate::input::parse_bounded(bytes, max_depth, host_bytes)
}

/// `Configure`: how the worker locks itself down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Configure {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) cpu_time: Option<Duration>,
    pub(crate) address_space_bytes: Option<u64>,
    /// Names of the layers that may be missing (`moonjail_isolate::Layer::name`).
    pub(crate) allow_missing: Vec<String>,
}

/// One line of the lockdown report in `Ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerLine {
    pub(crate) layer: String,
    /// `applied`, `skipped`, `not_applicable` or `disabled`.
    pub(crate) status: String,
    pub(crate) detail: String,
}

/// `Ready`: the worker is locked down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub(crate) layers: Vec<LayerLine>,
}

/// `StartFailed` and `Refused`: a message for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) message: String,
}

/// `Run` and `SessionOpen`, section 0 (a `Run`'s section 1 is the input JSON, section 2
/// the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestMeta {
    /// The run's configuration, exactly as the sandbox holds it.
    pub(crate) spec: Spec,
    pub(crate) chunk_name: String,
    /// Whether the host provides modules or files: when not, the worker refuses
    /// `require` of a host module and `io.open` itself, without asking.
    pub(crate) host_files: bool,
    /// The host tools the script may call (none: no tool globals).
    pub(crate) tools: Option<WireTools>,
    /// A `Run` whose source may be an expression (see `engine::load_code`).
    #[serde(default)]
    pub(crate) expression: bool,
}

impl RequestMeta {
    pub(crate) fn new(spec: &Spec, host: &Host, chunk_name: &str) -> RequestMeta {
        RequestMeta {
            spec: spec.clone(),
            chunk_name: chunk_name.to_string(),
            host_files: !host.files.is_empty(),
            tools: host.tools.as_deref().map(WireTools::from),
            expression: false,
        }
    }
}

/// `Exec`, section 1 (section 0 is the code; section 2, when present, the input JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecMeta {
    #[serde(default)]
    pub(crate) expression: bool,
    #[serde(default)]
    pub(crate) options: crate::CallOptions,
}

/// The host tools, as a worker learns of them: names and quotas, nothing callable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireTools {
    pub(crate) names: Vec<String>,
    pub(crate) quota: crate::ToolQuota,
    /// The deferred tools among `names`: a call to one may be held by the host for as
    /// long as it takes a person to answer, so the worker stops its clock meanwhile (the
    /// supervisor's deadline, the one enforced, moves only by the time it held the call).
    #[serde(default)]
    pub(crate) deferred: Vec<String>,
}

impl From<&crate::ToolRegistry> for WireTools {
    fn from(registry: &crate::ToolRegistry) -> Self {
        WireTools {
            names: registry.names().map(str::to_string).collect(),
            quota: registry.quota().clone(),
            deferred: registry.deferred().map(str::to_string).collect(),
        }
    }
}

/// `Call` and `HasFunction`, section 0 (section 1 of `Call` is the arguments, a JSON
/// array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FunctionName {
    pub(crate) name: String,
    /// A `Call`'s lowered limits.
    #[serde(default)]
    pub(crate) options: crate::CallOptions,
}

/// `HostCall`, section 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HostCall {
    /// Chosen by the worker; the reply carries it back.
    pub(crate) id: u64,
    pub(crate) request: HostRequest,
}

/// What a worker asks its host for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HostRequest {
    /// The source of module `name`, for `require` (validated and resolved by the host).
    ReadModule { name: String },
    /// A file the host listed, for `io.open` (exactly as the script spelled the path).
    ReadFile { path: String },
    /// A call of host tool `name` with `args` (a JSON array) — or, when `args_error` is
    /// set, a call whose arguments could not be marshaled, reported so that the host
    /// records it (the tool does not run).
    Tool {
        name: String,
        args: Json,
        #[serde(default)]
        args_error: Option<String>,
    },
}

/// `HostReply`, section 0 (section 1 is the bytes of a found module or a read file, and
/// empty otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HostReply {
    pub(crate) id: u64,
    pub(crate) answer: HostAnswer,
}

/// The host's answer to a [`HostRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HostAnswer {
    /// `ReadModule`: found at `path` (relative to the module directory); the source is
    /// section 1.
    Module { path: String },
    /// `ReadModule`: not found; `tried` is the "no file" lines of the error message.
    NoModule { tried: String },
    /// `ReadFile`: the file's bytes are section 1.
    File,
    /// `ReadFile`: the path is not on the host's list.
    NotListed,
    /// The request failed: reading a listed file failed, or the host refused it.
    Failed { message: String },
    /// `Tool`: the tool's result is section 1 (JSON text). `expired`: the run's deadline
    /// passed during the call, so the run is over.
    Value {
        #[serde(default)]
        expired: bool,
    },
    /// `Tool`: the tool failed, or the host refused the call (quota, deadline); `message`
    /// is what the script sees.
    ToolError {
        message: String,
        #[serde(default)]
        expired: bool,
        /// The tool is deferred: the run stops here, suspended.
        #[serde(default)]
        suspend: bool,
    },
}

/// `Done`, section 0 (section 1 is the result JSON, empty on error; section 2 the output;
/// section 3, when the script returned more than one value, the JSON array of the
/// values after the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DoneMeta {
    pub(crate) error: Option<Error>,
    pub(crate) stats: Stats,
    #[serde(default)]
    pub(crate) diagnostics: Option<crate::Diagnostics>,
    /// How many values the script returned (see [`crate::Outcome::result_count`]).
    #[serde(default = "one")]
    pub(crate) result_count: usize,
    #[serde(default)]
    pub(crate) output_truncated: Option<crate::Truncation>,
    // No tool calls: the supervisor keeps the audit record of the calls it served itself,
    // and never takes a worker's word for it.
}

fn one() -> usize {
    1
}

/// `Probe`: one test-hook request (see `serve.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeRequest {
    pub(crate) probe: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, sections: &[&[u8]]) -> Vec<u8> {
        encode(kind, sections).unwrap()
    }

    #[test]
    fn round_trip_with_any_bytes() {
        let source: &[u8] = b"return '\x00\xff\x1b'";
        let bytes = frame(Kind::Run, &[b"{}", b"null", source]);
        match decode(&bytes, 1 << 20).unwrap() {
            Decoded::Frame(f, used) => {
                assert_eq!(used, bytes.len());
                assert_eq!(f.kind, Kind::Run);
                assert_eq!(f.section_count(), 3);
                assert_eq!(f.section(2), Some(source));
                assert_eq!(f.section(3), None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let bytes = frame(Kind::Ready, &[b"{}"]);
        assert_eq!(decode(&bytes[..2], 1 << 20), Ok(Decoded::Need(4)));
        assert_eq!(decode(&bytes[..7], 1 << 20), Ok(Decoded::Need(bytes.len())));
    }

    #[test]
    fn oversized_is_refused_from_the_length_alone() {
        let mut bytes = (100u32).to_le_bytes().to_vec();
        assert_eq!(
            decode(&bytes, 50),
            Err(FrameError::Oversized {
                length: 100,
                max: 50
            })
        );
        bytes.push(VERSION + 1);
        assert_eq!(decode(&bytes, 1000), Err(FrameError::Version(VERSION + 1)));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            decode(b"\x01\x00\x00\x00\x01", 100),
            Err(FrameError::Malformed(_))
        ));
        let mut bytes = frame(Kind::Done, &[b"abc"]);
        bytes[5] = 200;
        assert_eq!(decode(&bytes, 100), Err(FrameError::UnknownType(200)));
        // A section length that runs past the end.
        let mut bytes = frame(Kind::Done, &[b"abc"]);
        bytes[6] = 9;
        assert!(matches!(decode(&bytes, 100), Err(FrameError::Malformed(_))));
        // Text that is not a frame at all.
        assert!(decode(b"garbage from a shell script\n", 1 << 20).is_err());
    }

    #[test]
    fn tools_cross_as_names_and_quotas_only() {
        let mut registry = crate::ToolRegistry::new();
        registry
            .register("weather.lookup", |_| Ok(Json::Null))
            .unwrap();
        registry.register("log", |_| Ok(Json::Null)).unwrap();
        registry.register_deferred("ask").unwrap();
        registry.set_quota(crate::ToolQuota::default().tool("weather", 3));
        let wire = WireTools::from(&registry);
        let text = serde_json::to_value(&wire).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"names": ["ask", "log", "weather.lookup"],
                               "quota": {"per_run": 1000, "per_tool": {"weather": 3}},
                               "deferred": ["ask"]})
        );
        assert_eq!(serde_json::from_value::<WireTools>(text).unwrap(), wire);
        // A tool request without `args_error` (as an older or hand-written peer sends it).
        let call: HostCall =
            serde_json::from_str(r#"{"id": 1, "request": {"tool": {"name": "log", "args": []}}}"#)
                .unwrap();
        assert!(matches!(
            call.request,
            HostRequest::Tool {
                args_error: None,
                ..
            }
        ));
    }

    #[test]
    fn a_request_time_crosses_with_the_request_and_is_absent_without_one() {
        // The supervisor chooses a request's time; the worker only reads it back.
        let meta = ExecMeta {
            expression: false,
            options: crate::CallOptions::default().time(1_764_250_000),
        };
        let text = serde_json::to_value(&meta).unwrap();
        assert_eq!(text["options"]["time"], serde_json::json!(1_764_250_000));
        assert_eq!(serde_json::from_value::<ExecMeta>(text).unwrap(), meta);
        let plain = serde_json::to_value(FunctionName {
            name: "f".into(),
            options: crate::CallOptions::default(),
        })
        .unwrap();
        assert!(plain["options"].get("time").is_none(), "{plain}");
    }

    #[test]
    fn depth_is_checked_before_parsing() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(parse_value(deep.as_bytes(), 299, u64::MAX).is_err());
        assert!(parse_value(deep.as_bytes(), 300, u64::MAX).is_ok());
        assert!(parse_value(br#"{"a": "[[[[", "b": [1, {"c": "\"]"}]}"#, 3, u64::MAX).is_ok());
        assert!(parse_value(b"[1] x", 10, u64::MAX).is_err());
    }
}
