//! Arbitrary bytes as Lua source under small limits: any outcome is fine, a crash, a
//! hang past the timeout or an `internal` error kind is not.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use moonjail::{ErrorKind, Sandbox};

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        Sandbox::builder()
            .memory_limit(4 << 20)
            .timeout(Duration::from_millis(200))
            .instruction_limit(2_000_000)
            .output_limit(64 << 10)
            .build()
            .expect("valid limits")
    })
}

fuzz_target!(|data: &[u8]| {
    let out = sandbox().run(data, &serde_json::json!({"fuzz": true}));
    if let Err(e) = &out.result {
        assert_ne!(e.kind, ErrorKind::Internal, "internal error: {}", e.message);
    }
});
