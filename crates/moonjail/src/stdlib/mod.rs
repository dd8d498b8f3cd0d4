//! moonjail's own versions of library functions: guarded base functions, the metered
//! pattern matcher and the `json` library.

pub(crate) mod aos;
pub(crate) mod base;
pub(crate) mod json;
pub(crate) mod strmatch;
