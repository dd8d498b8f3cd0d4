//! Human approval through the command line: `run --defer-tool NAME --journal FILE`
//! suspends at the deferred call (exit status 3), `resume FILE --answer JSON` finishes the
//! run in a new process, in process and with `--isolate`.

use crate::support::*;

/// A command tool answering a random number, appending each call to calls.log: a side
/// effect that resuming must not repeat for the calls before the suspension.
const RNG: &str = r#"read -r args
echo "$args" >> calls.log
n=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
printf '{"n": %s}\n' "$n"
"#;

const PAY: &str = r#"
function run(order)
  local quote = rng.next("quote")
  print("plan", order.to, order.amount)
  local receipt = payments.send({to = order.to, amount = order.amount, quote = quote.n})
  print("receipt", receipt.id)
  local after = rng.next("after")
  return {receipt = receipt.id, quote = quote.n, after = after.n ~= nil}
end
"#;

fn calls(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn setup() -> TempDir {
    let dir = TempDir::new();
    dir.write("rng.sh", RNG);
    dir.write("pay.lua", PAY);
    dir
}

const RUN: [&str; 10] = [
    "run",
    "pay.lua",
    "--input",
    r#"{"to": "alice", "amount": 10}"#,
    "--tool",
    "rng.next=sh rng.sh",
    "--defer-tool",
    "payments.send",
    "--journal",
    "pay.jsonl",
];

#[test]
fn suspend_then_resume_in_a_new_process_finishes_with_the_answer() {
    let flags = isolate_flags();
    for isolate in [false, true] {
        let dir = setup();
        let mut run = RUN.to_vec();
        run.push("--json");
        let out = moonjail(dir.path(), &with_isolation(&run, isolate, &flags), None);
        assert_eq!(out.code, Some(3), "isolate {isolate}: {out:?}");
        let doc = out.json();
        assert_eq!(kind(&doc), "suspended", "{doc}");
        let pending = &doc["error"]["value"];
        assert_eq!(pending["name"], "payments.send", "{doc}");
        assert_eq!(pending["args"][0]["to"], "alice", "{doc}");
        assert_eq!(pending["journal"], "pay.jsonl", "{doc}");
        assert_eq!(doc["output"], "plan\talice\t10\n");
        assert_eq!(calls(&dir), 1);
        let quote = pending["args"][0]["quote"].clone();

        let resume = [
            "resume",
            "pay.jsonl",
            "--answer",
            r#"{"id": "tx-42"}"#,
            "--tool",
            "rng.next=sh rng.sh",
            "--defer-tool",
            "payments.send",
            "--json",
        ];
        let out = moonjail(dir.path(), &with_isolation(&resume, isolate, &flags), None);
        assert_eq!(out.code, Some(0), "isolate {isolate}: {out:?}");
        let doc = out.json();
        assert_eq!(doc["result"]["receipt"], "tx-42", "{doc}");
        assert_eq!(
            doc["result"]["quote"], quote,
            "the recorded answer, not a new one"
        );
        assert_eq!(doc["result"]["after"], true);
        assert_eq!(doc["output"], "plan\talice\t10\nreceipt\ttx-42\n");
        // One call before the suspension (not repeated), one after it.
        assert_eq!(calls(&dir), 2, "isolate {isolate}");
        assert_eq!(doc["stats"]["tool_calls"], 3);

        // The journal is a whole run's now: it replays without calling anything, and is
        // not suspended any more.
        let replay = moonjail(dir.path(), &["replay", "pay.jsonl", "--json"], None);
        assert_eq!(replay.code, Some(0), "{replay:?}");
        assert_eq!(replay.json()["result"], doc["result"]);
        assert_eq!(calls(&dir), 2);
        let again = moonjail(dir.path(), &resume, None);
        assert_eq!(again.code, Some(2), "{again:?}");
        assert!(again.stdout.contains("not suspended"), "{again:?}");
    }
}

#[test]
fn suspend_an_error_answer_reaches_the_script_as_the_tools_error() {
    let dir = setup();
    let out = moonjail(dir.path(), &RUN, None);
    assert_eq!(out.code, Some(3), "{out:?}");
    // Human mode says what is pending and how to resume.
    assert!(
        out.stderr.contains("deferred tool payments.send(")
            && out.stderr.contains("moonjail resume pay.jsonl"),
        "{out:?}"
    );
    let out = moonjail(
        dir.path(),
        &[
            "resume",
            "pay.jsonl",
            "--error",
            "declined by the approver",
            "--tool",
            "rng.next=sh rng.sh",
            "--defer-tool",
            "payments.send",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let doc = out.json();
    assert_eq!(kind(&doc), "runtime");
    assert_eq!(
        doc["error"]["message"], "pay.lua:5: payments.send: declined by the approver",
        "{doc}"
    );
    assert_eq!(doc["error"]["line"], 5);
}

#[test]
fn suspend_resume_takes_the_deferred_tools_from_the_journal() {
    // A run whose only tool is deferred resumes with the command `run` prints, no flag
    // repeated: a deferred tool is a name, nothing to trust. A live tool is never taken
    // from the journal.
    let dir = setup();
    dir.write(
        "ask.lua",
        "local ok = ask.human('pay 10?') return ok and 'paid' or 'refused'",
    );
    let run = [
        "run",
        "ask.lua",
        "--defer-tool",
        "ask.human",
        "--journal",
        "ask.jsonl",
    ];
    let out = moonjail(dir.path(), &run, None);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr
            .contains("resume it with: moonjail resume ask.jsonl --answer JSON"),
        "{out:?}"
    );
    let resume = ["resume", "ask.jsonl", "--answer", "true", "--json"];
    let out = moonjail(dir.path(), &resume, None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json()["result"], "paid");
    // With a live tool recorded, leaving out its --tool is refused, naming the tools.
    let out = moonjail(dir.path(), &RUN, None);
    assert_eq!(out.code, Some(3), "{out:?}");
    let out = moonjail(
        dir.path(),
        &["resume", "pay.jsonl", "--answer", r#"{"id": "tx-1"}"#],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("\"rng.next\"]"), "{out:?}");
    assert_eq!(calls(&dir), 1);
}

#[test]
fn suspend_misuse_is_status_2() {
    let dir = setup();
    // No journal to resume from.
    let out = moonjail(
        dir.path(),
        &["run", "-e", "return ask()", "--defer-tool", "ask"],
        None,
    );
    assert_misuse(&out, "--journal");
    // No answer.
    let out = moonjail(dir.path(), &["resume", "pay.jsonl"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    // An answer that is not JSON.
    let out = moonjail(dir.path(), &RUN, None);
    assert_eq!(out.code, Some(3), "{out:?}");
    let out = moonjail(
        dir.path(),
        &["resume", "pay.jsonl", "--answer", "{nope"],
        None,
    );
    assert_misuse(&out, "--answer");
    // Another sandbox than the run's (its live tool left out): refused, naming the
    // difference.
    let out = moonjail(
        dir.path(),
        &[
            "resume",
            "pay.jsonl",
            "--answer",
            r#"{"id": 1}"#,
            "--defer-tool",
            "payments.send",
        ],
        None,
    );
    assert_misuse(&out, "tools: recorded");
    // The journal was left as it was: still resumable, with the run's own flags.
    let out = moonjail(
        dir.path(),
        &[
            "resume",
            "pay.jsonl",
            "--answer",
            r#"{"id": 1}"#,
            "--tool",
            "rng.next=sh rng.sh",
            "--defer-tool",
            "payments.send",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// The README's human-approval example, run as written (with `moonjail` this binary):
/// the run suspends, the resume finishes it, and the rate tool ran once.
#[test]
fn suspend_the_readme_example_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("### Human approval")
        .nth(1)
        .expect("the README's human approval section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its shell block");
    let dir = TempDir::new();
    let bin = std::path::Path::new(MOONJAIL).parent().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -x\n{block}\necho \"suspended=$?\"; cat fx.log | wc -l"
        ))
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MOONJAIL_WORKER", MOONJAIL)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON document"))
        .collect();
    assert_eq!(docs.len(), 2, "{stdout}\n{stderr}");
    assert_eq!(kind(&docs[0]), "suspended", "{}", docs[0]);
    assert_eq!(
        docs[0]["error"]["value"],
        serde_json::json!({"name": "payments.send", "args": [{"amount": 92.0, "to": "alice"}],
                           "journal": "pay.jsonl"})
    );
    assert_eq!(docs[0]["error"]["line"], 5);
    assert_eq!(
        docs[1]["result"],
        serde_json::json!({"paid": 92.0, "receipt": "tx-7"})
    );
    assert!(stdout.trim_end().ends_with('1'), "fx.sh ran once: {stdout}");
}
