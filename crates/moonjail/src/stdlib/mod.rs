//! moonjail's own versions of library functions: guarded base functions, the metered
//! pattern matcher, the metered table functions and
//! `string.rep`, opaque identities for
//! `tostring`/`print`/`string.format`, and the `json` library.

pub(crate) mod aos;
pub(crate) mod base;
pub(crate) mod charged;
pub(crate) mod identity;
pub(crate) mod json;
pub(crate) mod strmatch;
pub(crate) mod table;
