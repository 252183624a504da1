//! Empty: Cargo resolves `[build-dependencies]` only for a package with a
//! build script, and the proc-macro features this crate unifies are host
//! (build) features.

fn main() {}
