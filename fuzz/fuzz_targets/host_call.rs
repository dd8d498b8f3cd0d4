//! `HostCall` frames from a (compromised) worker through the supervisor's
//! `host_call::answer`, answered from a fixed host (one listed file that does not exist,
//! no module directory, tools `echo` and `fail`): requests well-formed or not, tool
//! arguments nested around the depth limit, unknown tools, raw bytes, sections missing or
//! extra.
//!
//! Must hold: no panic and no stack overflow; the reply is a `HostReply` that decodes and
//! carries the call's id; a tool that is not registered is never run (the worker is
//! killed, `forbidden`); `echo` gives back exactly its arguments; a path that is not
//! listed is `not_listed`, whatever it spells.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moonjail::fuzzing::{decode_host_call, LISTED_FILE};
use serde_json::{json, Value as Json};

#[derive(Arbitrary, Debug)]
enum Args {
    Raw(String),
    Scalars(Vec<i64>),
    Nested { levels: u16, leaf: String },
    NotArray(i64),
}

#[derive(Arbitrary, Debug)]
enum Request {
    Module(String),
    File(String),
    Listed,
    Tool {
        name: u8,
        other: String,
        args: Args,
        args_error: Option<String>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    id: u64,
    request: Request,
    sections: u8,
    depth: u8,
}

fn args_json(args: &Args) -> Option<Json> {
    Some(match args {
        Args::Raw(text) => serde_json::from_str(text).ok()?,
        Args::Scalars(items) => json!(items),
        Args::Nested { levels, leaf } => {
            let mut v = json!(leaf);
            for _ in 0..usize::from(*levels) % 1100 {
                v = json!([v]);
            }
            v
        }
        Args::NotArray(n) => json!(n),
    })
}

fn nested_text(levels: usize, leaf: &str) -> String {
    format!(
        "{}{}{}",
        "[".repeat(levels),
        serde_json::to_string(leaf).unwrap(),
        "]".repeat(levels)
    )
}

fuzz_target!(|input: Input| {
    let max_depth = match input.depth % 4 {
        0 => 0,
        1 => 8,
        2 => 64,
        _ => 1024,
    };
    let id = input.id;
    let (meta, tool): (Vec<u8>, Option<String>) = match &input.request {
        Request::Module(name) => (
            serde_json::to_vec(&json!({"id": id, "request": {"read_module": {"name": name}}}))
                .unwrap(),
            None,
        ),
        Request::File(path) => (
            serde_json::to_vec(&json!({"id": id, "request": {"read_file": {"path": path}}}))
                .unwrap(),
            None,
        ),
        Request::Listed => (
            serde_json::to_vec(&json!({"id": id, "request": {"read_file": {"path": LISTED_FILE}}}))
                .unwrap(),
            None,
        ),
        Request::Tool {
            name,
            other,
            args,
            args_error,
        } => {
            let name = match name % 3 {
                0 => "echo".to_string(),
                1 => "fail".to_string(),
                _ => other.clone(),
            };
            // Deep arguments are written as text: building them as a `Value` and
            // serialising it would recurse in this harness, not in the supervisor.
            let args_text = match args {
                Args::Nested { levels, leaf } => nested_text(usize::from(*levels) % 1100, leaf),
                other => match args_json(other) {
                    Some(v) => serde_json::to_string(&v).unwrap(),
                    None => "null".to_string(),
                },
            };
            let error = serde_json::to_string(args_error).unwrap();
            let text = format!(
                "{{\"id\":{id},\"request\":{{\"tool\":{{\"name\":{},\"args\":{args_text},\"args_error\":{error}}}}}}}",
                serde_json::to_string(&name).unwrap()
            );
            (text.into_bytes(), Some(name))
        }
        Request::Raw(bytes) => (bytes.clone(), None),
    };
    let all: [&[u8]; 3] = [&meta, b"", b"extra"];
    let sections = &all[..usize::from(input.sections % 4)];
    match decode_host_call(sections, max_depth) {
        Err(message) => {
            assert!(!message.is_empty());
        }
        Ok(answer) => {
            assert!(!sections.is_empty());
            if let Some(tool) = &tool {
                assert!(
                    tool == "echo" || tool == "fail",
                    "the unregistered tool {tool:?} was answered: {}",
                    answer.reply
                );
            }
            let reply: Json = serde_json::from_str(&answer.reply).expect("reply is JSON");
            if !matches!(input.request, Request::Raw(_)) {
                assert_eq!(reply["id"], json!(id), "{}", answer.reply);
            }
            match &input.request {
                Request::File(path) if path != LISTED_FILE => {
                    assert_eq!(reply["answer"], json!("not_listed"), "{}", answer.reply);
                    assert!(answer.data.is_empty());
                }
                Request::Listed => {
                    assert!(reply["answer"].get("failed").is_some(), "{}", answer.reply);
                }
                Request::Module(_) => {
                    assert!(
                        reply["answer"].get("no_module").is_some(),
                        "{}",
                        answer.reply
                    );
                }
                Request::Tool {
                    args: Args::Scalars(items),
                    args_error: None,
                    ..
                } if tool.as_deref() == Some("echo") => {
                    assert_eq!(answer.data, serde_json::to_vec(items).unwrap());
                }
                _ => {}
            }
        }
    }
});
