//! A Landlock ruleset that handles every access right and grants none: no file can be
//! opened, created, removed, executed or listed, no TCP port bound or connected, no signal
//! sent and no abstract Unix socket reached outside the domain.
//!
//! Prepare, then enforce: [`Prepared::new`] builds the ruleset (pure bookkeeping, where an
//! error can still be reported cleanly) and [`Prepared::enforce`] creates it in the kernel
//! and restricts the calling thread.
//!
//! Rights are asked for up to the newest ABI this crate knows, best effort: a kernel that
//! knows fewer enforces what it knows and the status says "partially enforced".

use std::io;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, RestrictSelfAttr,
    Ruleset, RulesetAttr, RulesetError, RulesetStatus, Scope, ABI,
};

/// The newest Landlock ABI whose rights are requested.
const REQUESTED_ABI: ABI = ABI::V9;

/// Why Landlock could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building, creating or enforcing the ruleset failed.
    #[error("Landlock ruleset could not be built or enforced")]
    Ruleset(#[source] RulesetError),
    /// The kernel does not enforce Landlock.
    #[error("Landlock is not enforced: {0}")]
    NotEnforced(String),
}

/// A ruleset ready to be enforced.
#[derive(Debug)]
pub struct Prepared {
    ruleset: Ruleset,
}

impl Prepared {
    /// Builds the ruleset: every filesystem and network access right and every scope of
    /// the newest known ABI, handled and not granted.
    ///
    /// # Errors
    ///
    /// [`Error::Ruleset`] if the crate refuses the request.
    pub fn new() -> Result<Prepared, Error> {
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(REQUESTED_ABI))
            .and_then(|r| r.handle_access(AccessNet::from_all(REQUESTED_ABI)))
            .and_then(|r| r.scope(Scope::from_all(REQUESTED_ABI)))
            .map_err(Error::Ruleset)?;
        Ok(Prepared { ruleset })
    }

    /// Creates the ruleset and restricts the calling thread (and, on kernels with Landlock
    /// ABI 8 or later, every thread of the process) with it. Returns a description of what
    /// is enforced.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnforced`] when the kernel has no Landlock (or it is disabled at boot),
    /// [`Error::Ruleset`] when a Landlock call fails.
    pub fn enforce(self) -> Result<String, Error> {
        let status = self
            .ruleset
            .create()
            .and_then(|created| created.all_threads(true))
            .and_then(|created| created.restrict_self())
            .map_err(Error::Ruleset)?;
        let kernel = describe_status(status.landlock);
        match status.ruleset {
            RulesetStatus::FullyEnforced => Ok(format!(
                "fully enforced ({kernel}); every access right handled, none granted"
            )),
            RulesetStatus::PartiallyEnforced => Ok(format!(
                "partially enforced ({kernel}): every right this kernel knows is handled, \
                 none granted; rights of newer ABIs (up to {REQUESTED_ABI}) are not"
            )),
            RulesetStatus::NotEnforced => Err(Error::NotEnforced(kernel)),
        }
    }
}

fn describe_status(status: LandlockStatus) -> String {
    match status {
        LandlockStatus::NotEnabled => {
            "Landlock is built into this kernel but not enabled at boot (add it to lsm=)".into()
        }
        LandlockStatus::NotImplemented => "Landlock not supported by this kernel (ABI 0)".into(),
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => match kernel_abi {
            Some(kernel) => format!("kernel ABI {kernel}, used as ABI {effective_abi}"),
            None => format!("kernel ABI {effective_abi}"),
        },
    }
}

/// The kernel's Landlock ABI version, or the errno why there is none (`ENOSYS`: not built
/// in; `EOPNOTSUPP`: built in but disabled at boot). Allocates nothing.
pub(crate) fn kernel_abi() -> Result<i32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel only
    // returns the ABI version; nothing is read or written.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if version < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS))
    } else {
        Ok(i32::try_from(version).unwrap_or(i32::MAX))
    }
}

/// Explains a [`kernel_abi`] error.
pub(crate) fn describe_abi_error(errno: i32) -> String {
    match errno {
        libc::EOPNOTSUPP => {
            "Landlock is built into this kernel but disabled at boot (EOPNOTSUPP; add landlock to lsm=)"
                .into()
        }
        libc::ENOSYS => "Landlock not supported by this kernel (ABI 0: ENOSYS)".into(),
        other => format!(
            "Landlock ABI query failed: {}",
            io::Error::from_raw_os_error(other)
        ),
    }
}

/// How [`restrict_raw`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawOutcome {
    Full,
    Partial,
    NotEnforced,
}

impl Prepared {
    /// Creates the kernel ruleset now (in the probe's parent), so that the probe child only
    /// has to call [`restrict_raw`].
    pub(crate) fn create(self) -> Result<landlock::RulesetCreated, Error> {
        self.ruleset.create().map_err(Error::Ruleset)
    }
}

/// Restricts the calling thread with an already created ruleset. Allocates nothing: for the
/// probe child. Returns the errno on failure.
pub(crate) fn restrict_raw(created: landlock::RulesetCreated) -> Result<RawOutcome, i32> {
    match created.restrict_self() {
        Ok(status) => Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => RawOutcome::Full,
            RulesetStatus::PartiallyEnforced => RawOutcome::Partial,
            RulesetStatus::NotEnforced => RawOutcome::NotEnforced,
        }),
        Err(RulesetError::RestrictSelf(landlock::RestrictSelfError::RestrictSelfCall {
            source,
            ..
        })) => Err(source.raw_os_error().unwrap_or(libc::EIO)),
        Err(_) => Err(libc::EIO),
    }
}
