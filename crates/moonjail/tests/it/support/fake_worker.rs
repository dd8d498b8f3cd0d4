//! Fake workers for the supervisor's robustness tests: a shell script that speaks just
//! enough of the frame protocol (`worker/protocol.rs`) to reach the point under test.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The frame protocol version the supervisor speaks.
pub const VERSION: u8 = 8;
pub const READY: u8 = 2;
pub const HOST_CALL: u8 = 6;

/// One frame: `u32` length, version, type, then length-prefixed sections.
pub fn frame(kind: u8, sections: &[&[u8]]) -> Vec<u8> {
    let body: usize = 2 + sections.iter().map(|s| 4 + s.len()).sum::<usize>();
    let mut out = (body as u32).to_le_bytes().to_vec();
    out.extend([VERSION, kind]);
    for s in sections {
        out.extend((s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// A fake worker: a shell script that sends Ready, waits for a request (any byte), sends
/// `reply`, then sleeps.
pub struct Fake {
    pub dir: PathBuf,
}

impl Fake {
    pub fn new(name: &str, reply: Vec<u8>) -> Fake {
        Fake::with_tail(name, reply, "", "exec sleep 30")
    }

    /// A fake worker that writes its pid to `pid` in its directory, sends Ready, waits
    /// for a request, sends `reply`, then spins on the CPU without reading anything: a
    /// worker that no longer waits as an honest one does.
    pub fn spinning(name: &str, reply: Vec<u8>) -> Fake {
        Fake::with_tail(
            name,
            reply,
            "echo $$ > \"$(dirname \"$0\")/pid\"",
            "while :; do :; done",
        )
    }

    fn with_tail(name: &str, reply: Vec<u8>, first: &str, tail: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!(
            "moonjail-fake-host-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ready"), frame(READY, &[br#"{"layers":[]}"#])).unwrap();
        std::fs::write(dir.join("reply"), reply).unwrap();
        let script = format!(
            "#!/bin/sh\n{first}\ncat '{0}/ready'\ndd bs=1 count=1 of=/dev/null 2>/dev/null\n\
             cat '{0}/reply'\n{tail}\n",
            dir.display()
        );
        let path = dir.join("worker");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
