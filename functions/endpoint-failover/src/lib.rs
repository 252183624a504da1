//! endpoint-failover: keeps the Route 53 geolocation records of the global
//! IoT endpoint pointed at healthy regions.
//!
//! `planner` and `health` are pure decision code; `route53` and `state` are the
//! adapters (Route 53, and the health and change ledger in DynamoDB) behind
//! small traits; `handler` ties an event to them and returns a report.

pub mod config;
pub mod event;
pub mod handler;
pub mod health;
pub mod planner;
pub mod report;
pub mod route53;
pub mod state;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "endpoint-failover";
