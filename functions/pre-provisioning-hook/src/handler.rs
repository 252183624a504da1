//! One invocation of the hook: parse, decide within the deadline, record the
//! provisioning and its audit event, emit the log line and the metric.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::clock::now_rfc3339;
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError,
};
use geoprov_shared::telemetry::{take_cold_start, MetricLine, Unit};
use serde_json::Value;

use crate::request::{parse_claim, HookResponse, ProvisioningClaim, RequestIdentifiers};
use crate::rules::{Denial, GrantKind, Policy, Reason, Verdict};
use crate::SERVICE;

/// How long a denial's audit write may take once the decision is made; it
/// keeps the answer to IoT within its 5 s even at the longest deadline.
pub const AUDIT_WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// Reads and conditional writes before the hook gives up on a device whose
/// state keeps changing under it (each conflict is another writer's success).
const MAX_COMMIT_ATTEMPTS: usize = 16;

const AUDIT_KIND: &str = "PROVISIONING_DECISION";

/// The hook, built once at cold start and lent to every invocation.
pub struct ProvisioningHook<R> {
    policy: Policy,
    registry: R,
    deadline: Duration,
}

/// What one invocation answered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDecision {
    /// The answer to IoT.
    pub response: HookResponse,
    pub reason: Reason,
    /// The audit event reached the table (it is in the log line either way).
    pub audit_written: bool,
}

/// The audit detail of an allowed new provisioning.
const NEW_PROVISIONING: &str = "every rule passed";
/// The audit detail of an allowed IoT retry.
const RETRY: &str = "retry of a provisioned certificate";

/// What one invocation decided, before it is reported.
struct Outcome {
    /// The parameter overrides of an allow; `None` for a denial.
    overrides: Option<BTreeMap<String, String>>,
    reason: Reason,
    detail: String,
    /// The audit event already went in with the provisioning write.
    audited: bool,
}

impl Outcome {
    fn denied(denial: Denial) -> Self {
        Outcome {
            overrides: None,
            reason: denial.reason,
            detail: denial.detail,
            audited: false,
        }
    }

    fn allowed(overrides: BTreeMap<String, String>, detail: &str, audited: bool) -> Self {
        Outcome {
            overrides: Some(overrides),
            reason: Reason::Allowed,
            detail: detail.to_owned(),
            audited,
        }
    }
}

impl<R: DeviceRegistry + AuditLog> ProvisioningHook<R> {
    pub fn new(policy: Policy, registry: R, deadline: Duration) -> Self {
        ProvisioningHook {
            policy,
            registry,
            deadline,
        }
    }

    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// Answers one hook request. Never fails: whatever goes wrong is a
    /// denial with a reason, audited and counted.
    pub async fn handle(&self, payload: Value, request_id: &str) -> HookDecision {
        let started = Instant::now();
        let cold_start = take_cold_start();
        let ids = RequestIdentifiers::of(&payload);

        let outcome =
            match tokio::time::timeout(self.deadline, self.decide(payload, &ids, request_id)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome::denied(Denial::new(
                    Reason::DeadlineExceeded,
                    format!("no decision within {} ms", self.deadline.as_millis()),
                )),
            };

        let reason = outcome.reason;
        let audit_written = outcome.audited
            || self
                .append_audit(&self.audit_event(&ids, reason, &outcome.detail, request_id))
                .await;

        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            service = SERVICE,
            cold_start,
            serial_number = ids.serial_number.as_deref().unwrap_or(""),
            certificate_id = ids.certificate_id.as_deref().unwrap_or(""),
            decision = if outcome.overrides.is_some() {
                "ALLOW"
            } else {
                "DENY"
            },
            reason = reason.code(),
            detail = outcome.detail,
            audit_written,
            latency_ms,
            "provisioning decision"
        );
        let mut metric = MetricLine::new(SERVICE)
            .dimension("Reason", reason.code())
            .metric("ProvisioningDecision", 1.0, Unit::Count)
            .metric("DecisionLatency", latency_ms, Unit::Milliseconds)
            .property("requestId", request_id)
            .property("coldStart", cold_start);
        if !audit_written {
            metric = metric.metric("AuditWriteFailed", 1.0, Unit::Count);
        }
        metric.emit();

        HookDecision {
            response: match outcome.overrides {
                Some(overrides) => HookResponse::allow(overrides),
                None => HookResponse::deny(),
            },
            reason,
            audit_written,
        }
    }

    async fn decide(&self, payload: Value, ids: &RequestIdentifiers, request_id: &str) -> Outcome {
        let claim = match parse_claim(payload) {
            Ok(claim) => claim,
            Err(e) => return Outcome::denied(Denial::new(Reason::BadParameters, e.to_string())),
        };
        if let Err(denial) = self.policy.check_claim(&claim) {
            return Outcome::denied(denial);
        }
        match self.decide_and_commit(&claim, ids, request_id).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::denied(Denial::new(Reason::InternalError, e.to_string())),
        }
    }

    /// Read, decide, and for a new provisioning commit conditionally; a
    /// conflict means the device changed, so read and decide again.
    async fn decide_and_commit(
        &self,
        claim: &ProvisioningClaim,
        ids: &RequestIdentifiers,
        request_id: &str,
    ) -> Result<Outcome, RegistryError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let device = self.registry.device(&claim.serial).await?;
            let grant = match self.policy.decide(claim, device.as_ref()) {
                Verdict::Deny(denial) => return Ok(Outcome::denied(denial)),
                Verdict::Allow(grant) => grant,
            };
            let GrantKind::New { quota } = grant.kind else {
                return Ok(Outcome::allowed(grant.parameter_overrides, RETRY, false));
            };
            let audit = self.audit_event(ids, Reason::Allowed, NEW_PROVISIONING, request_id);
            let commit = ProvisioningCommit {
                serial: claim.serial.clone(),
                certificate_id: claim.certificate_id.clone(),
                region: self.policy.region.clone(),
                quota,
                at: audit.time.clone(),
            };
            match self.registry.record_provisioning(&commit, &audit).await? {
                CommitOutcome::Committed => {
                    return Ok(Outcome::allowed(
                        grant.parameter_overrides,
                        NEW_PROVISIONING,
                        true,
                    ))
                }
                CommitOutcome::Conflict => continue,
            }
        }
        Err(RegistryError::Unavailable(format!(
            "device state changed on each of {MAX_COMMIT_ATTEMPTS} attempts"
        )))
    }

    fn audit_event(
        &self,
        ids: &RequestIdentifiers,
        reason: Reason,
        detail: &str,
        request_id: &str,
    ) -> AuditEvent {
        AuditEvent {
            kind: AUDIT_KIND.into(),
            serial_number: ids.serial_number.clone(),
            decision: if reason == Reason::Allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            reason: reason.code().into(),
            detail: detail.into(),
            region: self.policy.region.to_string(),
            certificate_id: ids.certificate_id.clone(),
            claim_certificate_id: ids.claim_certificate_id.clone(),
            client_id: ids.client_id.clone(),
            request_id: request_id.into(),
            time: now_rfc3339(),
        }
        .bounded()
    }

    /// Best effort within [`AUDIT_WRITE_TIMEOUT`]; the decision log line and
    /// the `AuditWriteFailed` metric stand in when the table does not answer.
    async fn append_audit(&self, event: &AuditEvent) -> bool {
        match tokio::time::timeout(AUDIT_WRITE_TIMEOUT, self.registry.append(event)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit write failed");
                false
            }
            Err(_) => {
                tracing::error!(
                    timeout_ms = AUDIT_WRITE_TIMEOUT.as_millis() as u64,
                    "audit write timed out"
                );
                false
            }
        }
    }
}
