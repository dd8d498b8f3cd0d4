//! The crate's error type.

use std::io;

use crate::config::Layer;
use crate::{credentials, fds, landlock, namespaces, pidns, rlimits, seccomp};

/// Why [`lockdown`](crate::lockdown) failed. The process may then be partly confined and
/// must not go on to run untrusted code: report the error and exit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process has more than one thread. Namespaces, credentials and Landlock apply to
    /// the calling thread only, so lockdown must run before any thread is started.
    #[error("lockdown must run in a single-threaded process, but this one has {0} threads")]
    NotSingleThreaded(usize),
    /// The number of threads could not be read from `/proc/self/status`.
    #[error("could not count this process's threads in /proc/self/status")]
    CountThreads(#[source] io::Error),
    /// A layer could not be applied and was not allowed to be missing.
    #[error("the {layer} layer could not be applied")]
    Layer {
        /// The layer.
        layer: Layer,
        /// What failed.
        #[source]
        source: LayerError,
    },
}

impl Error {
    /// The layer that failed, if the error is about one.
    pub fn layer(&self) -> Option<Layer> {
        match self {
            Error::Layer { layer, .. } => Some(*layer),
            _ => None,
        }
    }
}

/// What failed inside one layer: the module's own error, naming the OS call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Closing file descriptors.
    #[error(transparent)]
    Fds(#[from] fds::Error),
    /// Entering a namespace.
    #[error(transparent)]
    Namespace(#[from] namespaces::Error),
    /// Entering the PID namespace.
    #[error(transparent)]
    PidNamespace(#[from] pidns::Error),
    /// Setting resource limits.
    #[error(transparent)]
    Rlimits(#[from] rlimits::Error),
    /// Dropping privileges, or setting `no_new_privs`.
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    /// Landlock.
    #[error(transparent)]
    Landlock(#[from] landlock::Error),
    /// Seccomp.
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
}

/// `error` and all its sources, joined by ": ".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn layer_errors_keep_the_os_error_as_source() {
        let error = Error::Layer {
            layer: Layer::NetworkNamespace,
            source: LayerError::Namespace(namespaces::Error::Unshare {
                flag: "CLONE_NEWNET",
                source: io::Error::from_raw_os_error(libc::EPERM),
            }),
        };
        assert_eq!(error.layer(), Some(Layer::NetworkNamespace));
        let text = chain(&error);
        assert!(
            text.starts_with(
                "the network-namespace layer could not be applied: unshare(CLONE_NEWNET) failed: "
            ),
            "{text}"
        );
        let os = error
            .source()
            .and_then(|e| e.source())
            .and_then(|e| e.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(os, Some(libc::EPERM));
    }
}
