//! A reader that goes away (`moonjail ... | head -1`) ends the command quietly, status 0,
//! like ripgrep; it used to panic from `println!` with status 101.

use std::io::Write;
use std::process::Stdio;

use crate::support::*;

/// Runs `moonjail ARGS` with its stdout a pipe whose read end is closed before moonjail
/// starts, then `stdin` on its stdin: the exit status and stderr.
///
/// A shell waits for one line on stdin before it execs moonjail, so the read end is
/// surely closed before moonjail writes a byte (no race with a fast child), and no
/// child of another test holds a copy of it (see `support::spawn_lock`).
fn with_stdout_closed(args: &[&str], stdin: &[u8]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"read -r _ && exec "$0" "$@""#)
        .arg(MOONJAIL)
        .args(args)
        .env("MOONJAIL_WORKER", MOONJAIL)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No other test may start a child (which would hold a copy of the read end until
    // it execs) between this spawn and the close of the read end.
    let mut child = {
        let _lock = spawn_lock();
        let mut child = cmd.spawn().expect("start sh");
        drop(child.stdout.take());
        child
    };
    let mut pipe = child.stdin.take().expect("stdin");
    let mut bytes = b"go\n".to_vec();
    bytes.extend_from_slice(stdin);
    // moonjail may end before it reads it all.
    let _ = pipe.write_all(&bytes);
    drop(pipe);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_ends_quietly_when_stdout_is_closed() {
    let session = b"{\"id\":1,\"op\":\"exec\",\"code\":\"return 1\"}\n{\"id\":2,\"op\":\"exec\",\"code\":\"return 2\"}\n";
    let cases: &[(&[&str], &[u8])] = &[
        (&["profile", "show", "standard"], b""),
        (&["profile", "show", "aos", "--json"], b""),
        (&["profile", "list"], b""),
        (&["check"], b""),
        (&["check", "--json"], b""),
        (&["run", "-e", "print(('x'):rep(100000)) return 1"], b""),
        (&["run", "-e", "return {1, 2, 3}"], b""),
        (&["run", "-e", "return 1", "--json"], b""),
        (&["session"], session),
        (&["doctor"], b""),
        (&["doctor", "--json"], b""),
        (&["--help"], b""),
        (&["run", "--help"], b""),
    ];
    let failures: Vec<_> = cases
        .iter()
        .map(|(args, stdin)| (args, with_stdout_closed(args, stdin)))
        .filter(|(_, (code, stderr))| *code != Some(0) || !stderr.is_empty())
        .collect();
    assert!(failures.is_empty(), "not a quiet exit 0: {failures:#?}");
}

#[test]
fn a_failing_script_with_stdout_closed_still_ends_quietly() {
    // The reader is gone: there is no one to tell, and the status stays ripgrep's.
    let (code, stderr) = with_stdout_closed(&["run", "-e", "print('x') error('boom')"], b"");
    assert_eq!(code, Some(0), "{stderr}");
}
