//! Empty: Cargo resolves `[build-dependencies]` only for a package with a
//! build script, and the proc-macro features this crate unifies are host
//! (build) features. The `use … as _` lines are for `cargo shear`.

use displaydoc as _;
use syn as _;

fn main() {}
