//! Arbitrary bytes as JSON text given to `json.decode` and re-encoded: decoding must
//! agree with serde_json on validity and never crash.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moonjail::{ErrorKind, Sandbox};

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::builder().memory_limit(8 << 20).build().expect("valid"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let out = sandbox().run(
        "local ok, v = pcall(json.decode, ...) if not ok then return false end return json.encode(v)",
        &serde_json::Value::String(text.to_string()),
    );
    match &out.result {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(e.kind, ErrorKind::MemoryLimit | ErrorKind::Runtime),
            "unexpected {}: {}",
            e.kind,
            e.message
        ),
    }
});
