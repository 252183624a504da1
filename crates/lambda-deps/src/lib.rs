//! geoprov-lambda-deps: no code, only dependencies (see its Cargo.toml).
//!
//! sam build runs `cargo lambda build --release --bin <function>` once per
//! function. Cargo unifies features per build, across the packages that
//! build selects, so each function used to resolve the SDK stack with its
//! own features and recompile it. Every function depends on this crate,
//! which names the union, and the five builds share one compilation of each
//! dependency; fat LTO then drops whatever a function does not call.
