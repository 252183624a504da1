//! geoprov-failover: the failover's core, shared by the endpoint-failover
//! Lambda and the `geoprov` CLI.
//!
//! Pure decision code: `config` (the failover configuration and its
//! validation), `health` (region health, drains and failback hysteresis),
//! `tree` (the Route 53 record tree and the plan that moves it), `report`
//! (what a run did), `coverage` (the regions each location may be
//! answered with, and what devices lack there) and `plan` (how long IoT's
//! quotas make onboarding, re-homing and failback take). Adapters behind small traits: `route53` (the record
//! tree in Route 53), `alarms` (the region alarms in CloudWatch), `state`
//! (the failover's state and lease in DynamoDB) and `config_store` (the
//! configuration in S3 or SSM).

pub mod alarms;
pub mod config;
pub mod config_store;
pub mod coverage;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod plan;
pub mod report;
pub mod route53;
pub mod state;
pub mod tree;
