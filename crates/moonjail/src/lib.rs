//! moonjail
