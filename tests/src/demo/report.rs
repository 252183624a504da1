//! The JSON report (target/demo-report.json), as `make demo` writes it.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Every device's decision, by serial.
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Every failover invocation and what resolvers got after it.
    pub dns: Vec<DnsRecord>,
    pub certificates: Certificates,
    pub canary: Canary,
    pub attacker: Vec<Attempt>,
    pub jitr_connections: Vec<JitrConnection>,
    /// The devices' things moto's IoT holds, by region.
    pub things: BTreeMap<String, usize>,
    /// Every expectation not met.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub kind: String,
    pub country: String,
    pub region: String,
    pub csr: bool,
    pub allowed: bool,
    /// Whether it used its topics with its new certificate (when allowed).
    pub connected: Option<bool>,
    pub reason: String,
    pub expected: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    pub event: String,
    pub via: String,
    pub changes: usize,
    pub applied: bool,
    pub errors: Vec<String>,
    pub held: Vec<String>,
    pub north_america: String,
    pub europe: String,
    pub seconds: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificates {
    pub requested: usize,
    pub issued: usize,
    pub verified: usize,
    pub batch_seconds: f64,
}

/// The canaries' minutes, by phase.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    pub stand_up: Vec<CanaryMinute>,
    pub outage: Vec<CanaryMinute>,
    pub recovery: Vec<CanaryMinute>,
}

/// One simulated minute: each region's canary run, its alarm and its health
/// check; what North America and Europe resolve to once the tree is built.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMinute {
    pub minute: i64,
    pub regions: BTreeMap<String, MinuteRegion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub north_america: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub europe: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteRegion {
    pub success: bool,
    pub failed_step: Option<String>,
    pub failures_in_window: Option<u64>,
    pub alarm: String,
    pub health: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: String,
    pub allowed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JitrConnection {
    pub serial: String,
    pub region: String,
    pub connected: bool,
    pub attempts: Option<u64>,
}
