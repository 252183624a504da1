//! What every invocation returns and logs.

use std::collections::BTreeMap;

use geoprov_shared::device::RegionName;
use route53_answer::RecordSet;
use serde::Serialize;

use crate::health::Status;
use crate::tree::ZoneChange;

/// Why an invocation could not do all it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The event is neither a known EventBridge event nor a valid command.
    InvalidEvent,
    /// An alarm event for an alarm no region is configured with.
    UnknownAlarm,
    /// A command for a region that is not configured.
    UnknownRegion,
    /// An alarm event older than `maxEventAgeSeconds`, or older than a
    /// signal already applied to its region: dropped.
    StaleEvent,
    /// A region's health alarm could not be read; its signal is UNKNOWN.
    HealthReadFailed,
    /// The health state or change ledger in DynamoDB could not be read or written.
    StateUnavailable,
    /// Route 53 refused or failed a call, after retries, or did not answer in time.
    Route53Failed,
    /// Every region of a location is held out by the control plane: its chain
    /// keeps the whole preference and the health checks alone decide.
    NoHealthyRegion,
    /// A record that is not geoprov's stands where a location's tree goes:
    /// that location is left as it is.
    Conflict,
    /// Another invocation held the change lease for longer than the wait bound.
    LockTimeout,
    /// The change lease lapsed or passed to another invocation: nothing more
    /// was written.
    LeaseLost,
    /// The change was applied but was not INSYNC within the wait bound.
    NotInsync,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    /// The record name a conflict is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One change to the zone, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    /// UPSERT, DELETE, or REPLACE (a DELETE and an UPSERT in one request).
    pub action: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    /// The alias target or CNAME value the record gets (or had, for a delete).
    pub to: String,
    /// The location the record belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl ChangeSummary {
    pub fn of(change: &ZoneChange, location: Option<String>) -> Self {
        let record: &RecordSet = change.record();
        ChangeSummary {
            action: match change {
                ZoneChange::Upsert(_) => "UPSERT",
                ZoneChange::Delete(_) => "DELETE",
                ZoneChange::Replace { .. } => "REPLACE",
            },
            name: route53_answer::normalize_name(&record.name),
            set_identifier: record.set_identifier.clone(),
            to: match &record.alias_target {
                Some(target) => route53_answer::normalize_name(&target.dns_name),
                None => record.values().collect::<Vec<_>>().join(", "),
            },
            location,
        }
    }
}

/// One region of a location's preference as the tree holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainStep {
    pub region: RegionName,
    pub status: Status,
    /// In the chain (else held out by the control plane).
    pub in_chain: bool,
    /// Held out until then (epoch seconds): it recovered recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<i64>,
}

/// A location's tree after this invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationState {
    pub set_identifier: String,
    /// The location's preference, in order, each region with its status.
    pub steps: Vec<ChainStep>,
    /// The region a resolver in the location gets under the health the
    /// control plane knows (Route 53's answer model over the records).
    pub answer: Option<RegionName>,
}

/// A recovered region waiting out the failback interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deferred {
    pub region: RegionName,
    /// Epoch seconds from which the chains take it back.
    pub not_before: i64,
}

/// The outcome of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub trigger: &'static str,
    pub dry_run: bool,
    pub health: BTreeMap<RegionName, Status>,
    /// The changes planned, and applied when `applied` is true.
    pub changes: Vec<ChangeSummary>,
    /// Recovered regions the chains take back later.
    pub deferred: Vec<Deferred>,
    /// Each location's chain and answer after this invocation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationState>,
    pub applied: bool,
    /// The Route 53 change id (the first, when Route 53's limits split the batch).
    pub change_id: Option<String>,
    /// Every Route 53 change id of this invocation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub change_ids: Vec<String>,
    /// Whether the applied changes were INSYNC within the wait bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insync: Option<bool>,
    pub errors: Vec<ReportError>,
}

impl Report {
    pub fn new(trigger: &'static str, dry_run: bool) -> Self {
        Report {
            trigger,
            dry_run,
            health: BTreeMap::new(),
            changes: Vec::new(),
            deferred: Vec::new(),
            locations: Vec::new(),
            applied: false,
            change_id: None,
            change_ids: Vec::new(),
            insync: None,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, code: ErrorCode, message: impl Into<String>) -> &mut ReportError {
        self.errors.push(ReportError {
            code,
            message: message.into(),
            region: None,
            set_identifier: None,
            name: None,
        });
        self.errors.last_mut().expect("just pushed")
    }

    pub fn region_error(&mut self, code: ErrorCode, region: &str, message: impl Into<String>) {
        self.error(code, message).region = Some(region.to_owned());
    }

    pub fn count(&self, code: ErrorCode) -> usize {
        self.errors.iter().filter(|e| e.code == code).count()
    }
}
