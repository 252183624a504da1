//! endpoint-failover: the Lambda adapter of the control plane of the global
//! IoT endpoint. It owns the Route 53 record tree under the global name,
//! whose health-checked records let Route 53 itself move devices off a
//! failed region, and keeps that tree true to region health, drains and
//! failback hysteresis.
//!
//! The decisions and the adapters are in `geoprov_failover` (the core crate
//! that the CLI uses too); this crate is the function: `event` reads what
//! invoked it, `handler` ties an event to the adapters and returns a report,
//! and `main` wires the SDK clients.

pub mod event;
pub mod handler;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "endpoint-failover";
