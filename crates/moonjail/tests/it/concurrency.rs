//! Many runs at once on one shared `Sandbox`: every run's result, output, globals and
//! limits are its own, whatever its neighbours do (loop into their deadline, exhaust
//! memory, flood output, burn their instruction budget).

use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;
use std::time::Instant;

use moonjail::{ErrorKind, Outcome, Profile, Sandbox};
use serde_json::{json, Value as Json};

const THREADS: usize = 64;
const MEMORY: usize = 8 << 20;
const OUTPUT: usize = 4096;

/// Long enough that every run that is not meant to time out finishes its work whatever
/// the load (64 threads on two cores, debug build, CI neighbours): no outcome here may
/// depend on how fast the machine is.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The deadline of the runs that are meant to time out (they run on their own sandbox,
/// at the same time as the others).
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn short() -> &'static Sandbox {
    static S: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        Sandbox::builder()
            .memory_limit(MEMORY)
            .timeout(SHORT_TIMEOUT)
            .output_limit(OUTPUT)
            .build()
            .expect("a valid configuration")
    })
}
const HANG_GUARD: Duration = Duration::from_secs(180);

fn shared() -> Sandbox {
    Sandbox::builder()
        .profile(Profile::Standard)
        .memory_limit(MEMORY)
        .timeout(TIMEOUT)
        .output_limit(OUTPUT)
        .build()
        .expect("a valid configuration")
}

/// Runs a whole test body on its own thread and fails the test if it has not finished in
/// [`HANG_GUARD`] (a hang detector only; nothing here asserts how long runs take).
fn guarded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(()) => handle.join().expect("the test body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(handle.join().expect_err("the body ended without reporting"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the host hung: the test did not finish within {HANG_GUARD:?}")
        }
    }
}

const NORMAL: &str = r#"
local input = ...
assert(rawget(_G, "owner") == nil, "a global leaked in from another run")
owner = input.id
string.owner = input.id
local acc = 0
for i = 1, 20000 do acc = acc + i % 7 end
local co = coroutine.wrap(function(n) for i = 1, 3 do n = coroutine.yield(n + i) end return n end)
local c = co(input.id) + co(0) + co(0)
print("run " .. input.id)
return {id = owner, acc = acc, tag = input.tag, co = c, s = string.owner}
"#;

fn expected_acc() -> i64 {
    (1..=20000i64).map(|i| i % 7).sum()
}

fn check_normal(id: usize, out: &Outcome) {
    let tag = format!("tag-{id}");
    assert_eq!(
        out.result,
        Ok(json!({"id": id, "acc": expected_acc(), "tag": tag, "co": id + 1 + 2 + 3, "s": id})),
        "run {id}: {out:?}"
    );
    assert_eq!(out.output, format!("run {id}\n"), "run {id}");
}

fn input(id: usize) -> Json {
    json!({"id": id, "tag": format!("tag-{id}")})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Normal,
    Timeout,
    Memory,
    Output,
    Runtime,
}

const JOBS: [Job; 5] = [
    Job::Normal,
    Job::Timeout,
    Job::Memory,
    Job::Output,
    Job::Runtime,
];

fn source(job: Job) -> &'static str {
    match job {
        Job::Normal => NORMAL,
        Job::Timeout => r#"local id = (...).id print("t " .. id) owner = id while true do end"#,
        Job::Memory => {
            r#"local id = (...).id print("m " .. id) owner = id local s = "x" while true do s = s .. s end"#
        }
        Job::Output => r#"local line = "o " .. (...).id while true do print(line) end"#,
        Job::Runtime => r#"local id = (...).id print("e " .. id) error("failed " .. id, 0)"#,
    }
}

/// Runs `job` as run `id` on `sb` and asserts its exact outcome.
fn run_and_check(sb: &Sandbox, job: Job, id: usize) {
    let sb = if job == Job::Timeout { short() } else { sb };
    let out = sb.run(source(job), &input(id));
    let kind = out.result.as_ref().err().map(|e| e.kind);
    match job {
        Job::Normal => check_normal(id, &out),
        Job::Timeout => {
            assert_eq!(kind, Some(ErrorKind::Timeout), "run {id}: {out:?}");
            // On a loaded machine the short deadline can pass before the script reaches
            // its print; what matters is that the output is never another run's.
            assert!(
                out.output.is_empty() || out.output == format!("t {id}\n"),
                "run {id}: {:?}",
                out.output
            );
        }
        Job::Memory => {
            assert_eq!(kind, Some(ErrorKind::MemoryLimit), "run {id}: {out:?}");
            assert_eq!(out.output, format!("m {id}\n"));
            assert!(
                out.stats.peak_memory_bytes <= MEMORY,
                "run {id} peak {}",
                out.stats.peak_memory_bytes
            );
        }
        Job::Output => {
            assert_eq!(kind, Some(ErrorKind::OutputLimit), "run {id}: {out:?}");
            let line = format!("o {id}\n");
            let want: String = line.repeat(OUTPUT / line.len() + 1)[..OUTPUT].to_string();
            assert_eq!(
                out.output, want,
                "run {id}: output is exactly its own lines, cut at the limit"
            );
        }
        Job::Runtime => {
            let e = out.result.as_ref().expect_err("an error");
            assert_eq!(e.kind, ErrorKind::Runtime, "run {id}: {e:?}");
            assert_eq!(e.message, format!("failed {id}"));
            assert_eq!(out.output, format!("e {id}\n"));
        }
    }
}

#[test]
fn sixty_four_scoped_threads_mix_normal_runs_with_limits() {
    guarded(|| {
        let sb = shared();
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let sb = &sb;
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let job = JOBS[t % JOBS.len()];
                    run_and_check(sb, job, t);
                    // And a normal run right after, on the same thread.
                    run_and_check(sb, Job::Normal, 1000 + t);
                });
            }
        });
    });
}

#[test]
fn arc_shared_sandbox_many_rounds() {
    guarded(|| {
        let sb = Arc::new(shared());
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let sb = Arc::clone(&sb);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Each thread walks the jobs from a different starting point, so at any
                    // moment every kind of run is in flight somewhere.
                    for round in 0..3 {
                        let job = JOBS[(t + round) % JOBS.len()];
                        run_and_check(&sb, job, t * 10 + round);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no run panicked");
        }
    });
}

#[test]
fn instruction_budgets_are_per_run() {
    guarded(|| {
        let limit = 200_000u64;
        let sb = Sandbox::builder()
            .instruction_limit(limit)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let sb = &sb;
                s.spawn(move || {
                    if t % 2 == 0 {
                        // Exhausts its budget, through coroutines.
                        let out = sb.run(
                            "while true do coroutine.wrap(function() for i = 1, 100 do end end)() end",
                            &Json::Null,
                        );
                        assert_eq!(
                            out.result.as_ref().map_err(|e| e.kind),
                            Err(ErrorKind::InstructionLimit),
                            "{out:?}"
                        );
                        assert!(out.stats.instructions.unwrap() <= limit);
                    } else {
                        // Costs about a quarter of the budget: must succeed whatever the others
                        // spent.
                        let out = sb.run(
                            "local n = 0 for i = 1, 20000 do n = n + 1 end return n",
                            &Json::Null,
                        );
                        assert_eq!(out.result, Ok(json!(20000)), "thread {t}: {out:?}");
                        let used = out.stats.instructions.unwrap();
                        assert!(used > 0 && used <= limit, "thread {t} charged {used}");
                    }
                });
            }
        });
    });
}

#[test]
fn deadlines_firing_together_hit_only_their_own_runs() {
    guarded(|| {
        // Short deadlines expire all the time on some threads while others run normal work
        // under a long deadline: a deadline signal must only ever stop its own run. (Short,
        // but not so short that it can pass before the script starts: see
        // `deadline_expiring_before_the_script_starts_still_stops_it`.)
        let fast = Sandbox::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let slow = shared();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (fast, slow) = (&fast, &slow);
                s.spawn(move || {
                    for round in 0..4 {
                        if (t + round) % 2 == 0 {
                            let out = fast.run("while true do end", &Json::Null);
                            assert_eq!(out.result.map_err(|e| e.kind), Err(ErrorKind::Timeout));
                        } else {
                            run_and_check(slow, Job::Normal, t * 100 + round);
                        }
                    }
                });
            }
        });
    });
}

#[test]
fn profiles_do_not_mix_across_threads() {
    guarded(|| {
        let minimal = Sandbox::builder()
            .profile(Profile::Minimal)
            .build()
            .unwrap();
        let standard = Sandbox::builder()
            .profile(Profile::Standard)
            .build()
            .unwrap();
        let probe = "return {type(json), type(coroutine), type(setmetatable), type(string.format)}";
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (minimal, standard) = (&minimal, &standard);
                s.spawn(move || {
                    for _ in 0..5 {
                        if t % 2 == 0 {
                            let out = minimal.run(probe, &Json::Null);
                            assert_eq!(out.result, Ok(json!(["nil", "nil", "nil", "function"])));
                        } else {
                            let out = standard.run(probe, &Json::Null);
                            assert_eq!(
                                out.result,
                                Ok(json!(["table", "table", "function", "function"]))
                            );
                        }
                    }
                });
            }
        });
    });
}

#[test]
fn deadline_expiring_before_the_script_starts_still_stops_it() {
    // With a 1 µs timeout the deadline has passed when it is armed; the watchdog fires at
    // once, racing the VM thread's begin_call. On a busy machine the VM thread loses now
    // and then, and that run never ends.
    let sb = Arc::new(
        Sandbox::builder()
            .timeout(Duration::from_micros(1))
            .build()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    for _ in 0..THREADS {
        let sb = Arc::clone(&sb);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                let out = sb.run("while true do end", &Json::Null);
                assert_eq!(out.result.map_err(|e| e.kind), Err(ErrorKind::Timeout));
            }
            let _ = tx.send(());
        });
    }
    let give_up = Instant::now() + Duration::from_secs(120);
    for _ in 0..THREADS {
        let left = give_up.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .expect("a run whose deadline had passed never stopped: the host hung");
    }
}
