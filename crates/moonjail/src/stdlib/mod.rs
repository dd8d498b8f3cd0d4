//! moonjail's own versions of library functions: guarded base functions, the metered
//! pattern matcher, the metered table functions and
//! `string.rep`, opaque identities for
//! `tostring`/`print`/`string.format`, the `json` library, and the recipe that makes
//! library tables with only a profile's members.

pub(crate) mod aos;
pub(crate) mod base;
pub(crate) mod charged;
pub(crate) mod identity;
pub(crate) mod json;
pub(crate) mod recipe;
pub(crate) mod strmatch;
pub(crate) mod table;
