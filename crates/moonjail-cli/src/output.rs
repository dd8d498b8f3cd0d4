//! Every byte moonjail prints goes through here.
//!
//! A reader that goes away early (`moonjail profile show standard | head -1`) is normal
//! use, not an error: the first write that meets the closed pipe marks stdout closed, the
//! command unwinds with that write's error, and `main` then exits quietly with status 0,
//! as ripgrep does. (`println!` would panic, status 101.)

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use moonjail::{ErrorKind, Outcome};

static CLOSED: AtomicBool = AtomicBool::new(false);
static WROTE: AtomicBool = AtomicBool::new(false);

/// Standard output, locked: write with `write!`/`writeln!` and `?`.
pub struct Stdout(io::StdoutLock<'static>);

/// Standard output, locked for the caller.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

impl Stdout {
    fn note<T>(result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if e.kind() == io::ErrorKind::BrokenPipe {
                CLOSED.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        WROTE.store(true, Ordering::Relaxed);
        Self::note(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::note(self.0.flush())
    }
}

/// True once a write found stdout's reader gone: the command's error is then not worth
/// reporting, and the exit is quiet.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// True once anything was written to stdout: a `--json` misuse document would then be
/// a second document.
pub fn wrote() -> bool {
    WROTE.load(Ordering::Relaxed)
}

/// The `--json` document of a misuse: the shape of `run --json` (built from an
/// [`Outcome`], so the two cannot drift), error kind `input`, no output, zero stats.
pub fn misuse_document(message: &str) -> serde_json::Value {
    Outcome::from_error(moonjail::Error::new(ErrorKind::Input, message)).to_json()
}

/// A message on stderr. A failure to write it is ignored: there is nowhere left to say
/// anything (`eprintln!` would panic).
pub fn warn(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}
