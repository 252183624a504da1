//! geoprov-lambda-deps: no code, only dependencies (see its Cargo.toml).
//!
//! sam build runs `cargo lambda build --release --bin <function>` once per
//! function. Cargo unifies features per build, across the packages that
//! build selects, so each function used to resolve the SDK stack with its
//! own features and recompile it. Every function depends on this crate,
//! which names the union, and the five builds share one compilation of each
//! dependency; fat LTO then drops whatever a function does not call.
//!
//! Features are one half; the other is how Cargo builds a dependency for
//! LTO: as bitcode only, or also as object code when something above it is
//! a cdylib or staticlib (crc-fast is). Such a crate is named here too, so
//! that it is in every function's graph or in none.
//!
//! The `use … as _` lines tell `cargo shear` (make hygiene) that each
//! dependency is here on purpose.

use aws_runtime as _;
use aws_sigv4 as _;
use aws_smithy_http as _;
use aws_smithy_runtime_api as _;
use aws_smithy_types as _;
use crc_fast as _;
use crypto_common as _;
use digest as _;
use hashbrown as _;
use num_traits as _;
use serde_json as _;
use tokio_rustls as _;
use x509_parser as _;
