//! endpoint-failover: the control plane of the global IoT endpoint. It owns
//! the Route 53 record tree under the global name, whose health-checked
//! records let Route 53 itself move devices off a failed region, and keeps
//! that tree true to region health, drains and failback hysteresis.
//!
//! `tree` and `health` are pure decision code; `route53`, `alarms`, `state`
//! and `config_store` are the adapters (Route 53, CloudWatch alarms, the
//! state and lease in DynamoDB, the configuration in S3 or SSM) behind small
//! traits; `handler` ties an event to them and returns a report.

pub mod alarms;
pub mod config;
pub mod config_store;
pub mod event;
pub mod handler;
pub mod health;
pub mod report;
pub mod route53;
pub mod state;
pub mod tree;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "endpoint-failover";
