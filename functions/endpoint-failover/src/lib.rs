//! endpoint-failover: keeps the Route 53 geolocation records of the global
//! IoT endpoint pointed at healthy regions.
//!
//! `planner` and `health` are pure decision code; `route53` and `state` are the
//! adapters (Route 53, and the health and change ledger in DynamoDB) behind
//! small traits; `handler` ties an event to them and returns a report.

pub mod config;
pub mod health;
pub mod planner;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "endpoint-failover";
