//! The MQTT canary of one region. Every run connects to this region's IoT
//! endpoint with SNI = the global name and a canary device certificate,
//! exactly as a device that the global name led here would; does a publish
//! and subscribe round trip on `canary/<region>/<run id>`; optionally
//! provisions by claim with the reserved canary serial and deletes what
//! that made; records the run's verdict in its window; and emits
//! `CanarySuccess` (0/1), `CanaryFailuresInWindow` and the latencies,
//! dimension `Region`. The region's health alarm reads
//! `CanaryFailuresInWindow`, and the global stack's Route 53 health check
//! reads the alarm's data stream.
//!
//! - [`config`]: the environment;
//! - [`material`]: the canary's certificate, keys and trusted CA from SSM
//!   SecureString parameters, cached;
//! - [`probe`]: the steps within one budget, and their report;
//! - [`cleanup`]: deleting the probe's thing and certificates in IoT;
//! - [`window`]: the verdicts of the last N minutes, kept in the geoprov
//!   table, and `CanaryFailuresInWindow`, the datapoint the health alarm
//!   (1 of 1, which Route 53 can evaluate) reads;
//! - [`canary`]: one scheduled run, as the function makes it.

pub mod canary;
pub mod cleanup;
pub mod config;
pub mod material;
pub mod probe;
pub mod window;

/// The `service` field of every log line and metric.
pub const SERVICE: &str = "region-canary";

/// The canary's IoT policy, made by `geoprov setup canary` in each region.
pub const POLICY_NAME: &str = "geoprov-canary";

/// The canary's thing in `region`.
pub fn thing_name(region: &str) -> String {
    format!("geoprov-canary-{region}")
}

/// The canary's MQTT client id for one run: the thing name and the run id,
/// which its policy allows (`client/geoprov-canary-<region>-*`).
pub fn client_id(region: &str, run_id: &str) -> String {
    format!("geoprov-canary-{region}-{run_id}")
}

/// The reserved serial the canary provisions in `region`: the hook's
/// `CANARY_SERIAL` there.
pub fn provisioning_serial(region: &str) -> String {
    geoprov_shared::device::canary_serial(region)
}

/// Where `geoprov setup canary` keeps the canary's material for `region`.
pub fn parameter_path(region: &str) -> String {
    format!("/geoprov/canary/{region}")
}

/// The topic of one run's round trip.
pub fn topic(region: &str, run_id: &str) -> String {
    format!("canary/{region}/{run_id}")
}
