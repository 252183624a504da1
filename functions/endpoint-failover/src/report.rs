//! What every invocation returns and logs.

use std::collections::BTreeMap;

use geoprov_shared::device::RegionName;
use serde::Serialize;

use crate::health::Status;
use crate::planner::{Change, Deferred, Plan};

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
    /// A health check could not be read; that region got no signal.
    HealthCheckFailed,
    /// The health state or change ledger in DynamoDB could not be read or written.
    StateUnavailable,
    /// Route 53 refused or failed a call, after retries.
    Route53Failed,
    /// Every region of a location is unavailable: its record is left as it is.
    NoHealthyRegion,
    /// Another invocation held the change lock for longer than the wait bound.
    LockTimeout,
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
}

/// The outcome of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub trigger: &'static str,
    pub dry_run: bool,
    pub health: BTreeMap<RegionName, Status>,
    /// The changes planned, and applied when `applied` is true.
    pub changes: Vec<Change>,
    /// Moves back to a more preferred region that wait for the minimum interval.
    pub deferred: Vec<Deferred>,
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
        });
        self.errors.last_mut().expect("just pushed")
    }

    pub fn region_error(&mut self, code: ErrorCode, region: &str, message: impl Into<String>) {
        self.error(code, message).region = Some(region.to_owned());
    }

    /// Takes the planned changes and deferrals, and reports every stranded
    /// location as NO_HEALTHY_REGION (replacing what an earlier plan said).
    pub fn set_plan(&mut self, plan: Plan) {
        self.errors.retain(|e| e.code != ErrorCode::NoHealthyRegion);
        for stranded in plan.stranded {
            let message = format!(
                "no region of its preference is available; the record stays on {}",
                stranded.current.as_deref().unwrap_or("(no record)")
            );
            self.error(ErrorCode::NoHealthyRegion, message)
                .set_identifier = Some(stranded.set_identifier);
        }
        self.changes = plan.changes;
        self.deferred = plan.deferred;
    }

    pub fn count(&self, code: ErrorCode) -> usize {
        self.errors.iter().filter(|e| e.code == code).count()
    }
}
