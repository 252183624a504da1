//! geoprov's integration tests: one test binary, one module per topic, so
//! that the AWS SDK and the harness (`geoprov_tests`) are linked once.
//!
//! Run one module with `cargo test -p geoprov-tests --test integration
//! <module>::`. Tests run against moto (started by `geoprov_tests`), the
//! functions' real binaries under the Runtime API emulator, and
//! geoprov-iot-emu; `make build` (or `make test`) builds those binaries
//! first. A test that must change the process environment runs in a child
//! process of its own (`geoprov_tests::child`).

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

mod activation_against_moto;
mod activation_binary;
mod canary;
mod certificate_provider_against_moto;
mod cli;
mod crate_graph;
mod demo_e2e;
mod docs;
mod emulator;
mod failover_against_moto;
mod failover_binary;
mod failover_route53_sdk_boundary;
mod gameday;
mod health_checks;
mod hook_against_moto;
mod hook_binary;
mod https_client;
mod https_proxy;
mod iam_coverage;
mod identity;
mod issuer_against_moto;
mod issuer_binary;
mod issuer_pca_sdk_boundary;
mod quotas;
mod registry_dynamodb;
mod samconfig;
mod setup;
mod template;
