//! Run limits: every one on by default, every one settable.

use std::time::Duration;

/// The quotas of one run (or one session call, for time and instructions).
///
/// `None` means "no limit". Defaults: 64 MiB memory, 5 s timeout, no instruction limit,
/// 1 MiB output, 1 MiB source, results 64 levels deep and 16 MiB of JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Lua heap, counted exactly by the allocator.
    pub memory_bytes: Option<usize>,
    /// Wall-clock deadline, from the start of the run.
    pub timeout: Option<Duration>,
    /// VM instructions plus native work in the same units, one budget shared by every
    /// coroutine of the run.
    pub instructions: Option<u64>,
    /// Bytes of captured `print` output.
    pub output_bytes: Option<usize>,
    /// What passing `output_bytes` does: fail the run (the default) or keep the head
    /// and tail of the output and go on.
    #[serde(default)]
    pub output_overflow: crate::OutputOverflow,
    /// Bytes of source, checked before parsing (also for `load`).
    pub source_bytes: Option<usize>,
    /// Nesting of the input and of the result.
    pub result_depth: usize,
    /// Approximate bytes of the result's JSON text.
    pub result_bytes: Option<usize>,
}

impl Limits {
    /// The deepest `result_depth` a sandbox accepts: marshaling recurses once per level,
    /// and a host thread's stack must hold every level of it.
    pub const MAX_RESULT_DEPTH: usize = 1024;

    /// The bounds results (and tool arguments) are marshaled under.
    pub(crate) fn result_bounds(&self) -> crate::marshal::Bounds {
        crate::marshal::Bounds {
            depth: self.result_depth,
            bytes: self.result_bytes.unwrap_or(usize::MAX),
            // The converted value lives on the host: it may take as much as the script's
            // own heap may, no more.
            host_bytes: self.memory_bytes.unwrap_or(usize::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(64 << 20),
            timeout: Some(Duration::from_secs(5)),
            instructions: None,
            output_bytes: Some(1 << 20),
            output_overflow: crate::OutputOverflow::Fail,
            source_bytes: Some(1 << 20),
            result_depth: 64,
            result_bytes: Some(16 << 20),
        }
    }
}
