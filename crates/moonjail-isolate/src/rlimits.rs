//! Resource limits: CPU time, address space, open files, processes, file size, core dumps.

use std::fmt::Write as _;
use std::io;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::config::LockdownConfig;

/// Why a limit could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `setrlimit(2)` failed.
    #[error("setrlimit({resource}, {value}) failed")]
    Setrlimit {
        /// The `RLIMIT_*` name.
        resource: &'static str,
        /// The value asked for.
        value: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The limits to set, derived from a [`LockdownConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    entries: Vec<(Resource, &'static str, u64)>,
}

impl Limits {
    pub(crate) fn from_config(config: &LockdownConfig) -> Limits {
        let mut entries = Vec::new();
        if let Some(cpu) = config.cpu_time() {
            let seconds = cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0);
            entries.push((Resource::Cpu, "RLIMIT_CPU", seconds));
        }
        if let Some(bytes) = config.address_space_bytes() {
            entries.push((Resource::As, "RLIMIT_AS", bytes));
        }
        if let Some(files) = config.open_files() {
            entries.push((Resource::Nofile, "RLIMIT_NOFILE", files));
        }
        if let Some(processes) = config.processes() {
            entries.push((Resource::Nproc, "RLIMIT_NPROC", processes));
        }
        entries.push((Resource::Fsize, "RLIMIT_FSIZE", 0));
        entries.push((Resource::Core, "RLIMIT_CORE", 0));
        Limits { entries }
    }

    /// Sets every limit, soft and hard, to the configured value or to the current hard
    /// limit when that is lower (raising a hard limit needs `CAP_SYS_RESOURCE` and would
    /// loosen the confinement anyway). Returns what was set, for the report.
    pub(crate) fn apply(&self) -> Result<String, Error> {
        let mut detail = String::new();
        for &(resource, name, wanted) in &self.entries {
            let value = match getrlimit(resource).maximum {
                Some(hard) => wanted.min(hard),
                None => wanted,
            };
            setrlimit(
                resource,
                Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                },
            )
            .map_err(|errno| Error::Setrlimit {
                resource: name,
                value,
                source: errno.into(),
            })?;
            if !detail.is_empty() {
                detail.push_str(", ");
            }
            let _ = write!(detail, "{name}={value}");
        }
        Ok(detail)
    }
}

/// Lowers `RLIMIT_FSIZE` to 0 without allocating: for the probe child. Returns the errno.
pub(crate) fn probe_raw() -> Result<(), i32> {
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|errno| errno.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_time_rounds_up_and_file_size_and_core_are_always_zero() {
        let config = LockdownConfig::builder()
            .cpu_time(Some(Duration::from_millis(1500)))
            .address_space_bytes(None)
            .open_files(Some(16))
            .processes(None)
            .build()
            .unwrap();
        let limits = Limits::from_config(&config);
        let names: Vec<_> = limits
            .entries
            .iter()
            .map(|(_, name, value)| (*name, *value))
            .collect();
        assert_eq!(
            names,
            [
                ("RLIMIT_CPU", 2),
                ("RLIMIT_NOFILE", 16),
                ("RLIMIT_FSIZE", 0),
                ("RLIMIT_CORE", 0)
            ]
        );
    }
}
