//! Closing every inherited file descriptor except the ones the worker needs.

use std::io;
use std::os::fd::RawFd;

/// Why descriptors could not be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A descriptor asked to be kept is not open.
    #[error("file descriptor {fd} was asked to be kept but is not open")]
    KeptFdNotOpen {
        /// The descriptor.
        fd: RawFd,
        /// `fcntl(F_GETFD)`'s error.
        #[source]
        source: io::Error,
    },
    /// `close_range(2)` failed.
    #[error("close_range({first}, {last}) failed")]
    CloseRange {
        /// First descriptor of the range.
        first: u32,
        /// Last descriptor of the range.
        last: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Listing `/proc/self/fd` (the fallback for kernels without `close_range`) failed.
    #[error("listing /proc/self/fd failed")]
    ListFds(#[source] io::Error),
}

/// Closes every descriptor of the calling process except `keep` (sorted, deduplicated).
///
/// # Errors
///
/// [`Error::KeptFdNotOpen`] when a descriptor of `keep` is not open (checked before anything
/// is closed), or the error of the call that failed.
pub fn close_all_except(keep: &[RawFd]) -> Result<(), Error> {
    for &fd in keep {
        // SAFETY: F_GETFD only reads the descriptor flags; an invalid fd yields EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(Error::KeptFdNotOpen {
                fd,
                source: io::Error::last_os_error(),
            });
        }
    }
    match close_gaps(keep) {
        Err(Error::CloseRange { source, .. }) if source.raw_os_error() == Some(libc::ENOSYS) => {
            close_listed(keep)
        }
        other => other,
    }
}

/// Closes the ranges between kept descriptors with `close_range(2)` (Linux 5.9+).
fn close_gaps(keep: &[RawFd]) -> Result<(), Error> {
    let mut first: u32 = 0;
    for &fd in keep {
        let fd = fd as u32; // `keep` holds no negative fd (checked by the config builder).
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd.saturating_add(1);
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), Error> {
    // SAFETY: close_range only closes descriptors; none of them is owned by Rust code that
    // runs afterwards (lockdown runs before the worker opens anything it keeps).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == -1 {
        return Err(Error::CloseRange {
            first,
            last,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Fallback for kernels before 5.9: closes what `/proc/self/fd` lists.
fn close_listed(keep: &[RawFd]) -> Result<(), Error> {
    let mut open = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").map_err(Error::ListFds)? {
        let entry = entry.map_err(Error::ListFds)?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        {
            open.push(fd);
        }
    }
    // The directory's own descriptor was closed when the iterator was dropped; closing it
    // again just fails with EBADF, which is ignored.
    for fd in open.into_iter().filter(|fd| !keep.contains(fd)) {
        // SAFETY: see `close_range`.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
