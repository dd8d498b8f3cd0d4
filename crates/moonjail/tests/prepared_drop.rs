//! Dropping a sandbox ends its state-preparing helper thread. (Its own test binary: the
//! count of helper threads is process-wide, so no other test may run beside it.)

use std::time::Duration;

use moonjail::Sandbox;
use serde_json::Value;

fn helper_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "mj-prepare")
        .count()
}

fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

fn prepared() -> Sandbox {
    Sandbox::builder().prepared_states(2).build().unwrap()
}

#[test]
fn dropping_the_sandbox_ends_its_helper() {
    let before = helper_threads();
    let sb = prepared();
    assert!(sb.run("return 1", &Value::Null).is_ok());
    settle();
    assert!(helper_threads() > before, "the first run starts the helper");
    drop(sb);
    // The helper notices within its wait interval.
    let mut gone = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        if helper_threads() <= before {
            gone = true;
            break;
        }
    }
    assert!(gone, "the helper thread outlived its sandbox");
}
