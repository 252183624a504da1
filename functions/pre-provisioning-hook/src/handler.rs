//! One invocation of the hook: parse, decide within the deadline, record the
//! provisioning and its audit event, emit the log line and the metric.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use geoprov_shared::audit::{AuditEvent, Decision, bounded_field};
use geoprov_shared::claims::{ClaimsRead, TrustedClaim, effective_trust, is_certificate_id};
use geoprov_shared::clock::now_rfc3339;
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError, Settled,
};
use geoprov_shared::telemetry::{MetricLine, Unit, take_cold_start};
use serde_json::Value;

use crate::SERVICE;
use crate::request::{HookResponse, ProvisioningClaim, RequestIdentifiers, parse_claim};
use crate::rules::{Denial, Grant, GrantKind, Policy, Reason, Verdict};
use geoprov_shared::device::{DeviceRecord, SerialNumber};

/// How long a denial's audit write may take once the decision is made; it
/// keeps the answer to IoT within its 5 s even at the longest deadline.
pub const AUDIT_WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long settling a commit whose answer the deadline cut off may take.
pub const SETTLE_TIMEOUT: Duration = Duration::from_millis(300);

/// The pause between attempts to settle, within [`SETTLE_TIMEOUT`].
const SETTLE_RETRY: Duration = Duration::from_millis(25);

/// The audit kind of a device seen with more provisionings than its quota
/// (possible only across regions, within the replication lag).
pub const OVERSHOOT_KIND: &str = "QUOTA_OVERSHOOT";

/// Reads and conditional writes before the hook gives up on a device whose
/// state keeps changing under it (each conflict is another writer's success).
const MAX_COMMIT_ATTEMPTS: usize = 16;

const AUDIT_KIND: &str = "PROVISIONING_DECISION";

/// How long the hook keeps the table's trusted claim certificates before it
/// reads them again: a retired claim is refused within this, no restart.
pub const CLAIM_CACHE_TTL: Duration = Duration::from_secs(60);

/// The hook, built once at cold start and lent to every invocation.
pub struct ProvisioningHook<R> {
    policy: Policy,
    registry: R,
    deadline: Duration,
    claim_cache_ttl: Duration,
    /// The table's claim certificates, and when they were read.
    claims: Mutex<Option<(Instant, Vec<TrustedClaim>)>>,
    /// The region canary's reserved serial: allowed by the same rules, with
    /// a factory key required, but never committed (no quota) nor audited
    /// as a device.
    canary_serial: Option<SerialNumber>,
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

/// The audit detail of a provisioning whose commit answer was lost, found
/// applied when settled.
const SETTLED_COMMITTED: &str =
    "every rule passed; the commit's answer was lost, and it had applied";
/// The log and audit detail of a lost commit whose certificate another
/// decision provisioned in the region meanwhile.
const SETTLED_ELSEWHERE: &str = "the commit's answer was lost; the certificate was provisioned here by another decision (device activation), no quota used";

/// The audit detail of an allowed new provisioning.
const NEW_PROVISIONING: &str = "every rule passed";
/// The audit detail of an allowed IoT retry.
const RETRY: &str = "retry of a provisioned certificate";
/// The log detail of the region canary's provisioning.
const CANARY: &str = "the region canary's probe: every rule passed; not committed, not audited";

/// A commit sent and not answered yet: what the deadline must settle.
struct PendingCommit {
    commit: ProvisioningCommit,
    overrides: BTreeMap<String, String>,
}

/// What one invocation decided, before it is reported.
struct Outcome {
    /// The parameter overrides of an allow; `None` for a denial.
    overrides: Option<BTreeMap<String, String>>,
    reason: Reason,
    detail: String,
    /// The audit event already went in with the provisioning write.
    audited: bool,
    /// The device had more provisionings than its quota, as read:
    /// (provisionings, quota).
    overshoot: Option<(u32, u32)>,
    /// The commit's outcome is unknown (it failed without an answer): settle
    /// it, outside the deadline, as a denial for this reason and cause.
    settle: Option<(Reason, String)>,
    /// The region canary's allowed probe: no audit event, its own metric.
    canary: bool,
    /// The audit event to append, when it was made already (a settlement's
    /// denial: appended again under the same key, it cannot be a second
    /// event).
    event: Option<AuditEvent>,
    /// A lost commit that could not be settled: the denial is appended only
    /// if this commit did not apply, in one transaction, so the decision
    /// keeps one outcome either way.
    unsettled: Option<ProvisioningCommit>,
}

impl Outcome {
    fn denied(denial: Denial) -> Self {
        Outcome {
            overrides: None,
            reason: denial.reason,
            detail: denial.detail,
            audited: false,
            overshoot: None,
            settle: None,
            event: None,
            unsettled: None,
            canary: false,
        }
    }

    fn allowed(overrides: BTreeMap<String, String>, detail: &str, audited: bool) -> Self {
        Outcome {
            overrides: Some(overrides),
            reason: Reason::Allowed,
            detail: detail.to_owned(),
            audited,
            overshoot: None,
            settle: None,
            event: None,
            unsettled: None,
            canary: false,
        }
    }
}

impl<R: DeviceRegistry + AuditLog> ProvisioningHook<R> {
    pub fn new(policy: Policy, registry: R, deadline: Duration) -> Self {
        ProvisioningHook {
            policy,
            registry,
            deadline,
            claim_cache_ttl: CLAIM_CACHE_TTL,
            claims: Mutex::new(None),
            canary_serial: None,
        }
    }

    /// The region canary's reserved serial (`CANARY_SERIAL`), if any.
    pub fn with_canary_serial(mut self, serial: Option<SerialNumber>) -> Self {
        self.canary_serial = serial;
        self
    }

    /// Another time to keep the table's claim certificates (tests).
    pub fn with_claim_cache_ttl(mut self, ttl: Duration) -> Self {
        self.claim_cache_ttl = ttl;
        self
    }

    /// The policy with the trust the table holds now
    /// ([`effective_trust`]): the bootstrap list as the table has it (an id
    /// it retires, holds outside its window, or cannot parse is not
    /// trusted), and the table's own. The table is read at most once per
    /// cache period. When it cannot be read, the last list read keeps its
    /// retirements and windows but adds nothing; before any read has
    /// succeeded, nothing is trusted: the denial is `INTERNAL_ERROR`,
    /// audited and counted, and IoT's retry may find the table.
    async fn policy_now(&self) -> Result<std::borrow::Cow<'_, Policy>, Denial> {
        let cached = self.claims.lock().expect("claims cache lock").clone();
        let (claims, fresh) = match cached {
            Some((read_at, claims)) if read_at.elapsed() < self.claim_cache_ttl => {
                (Some(claims), true)
            }
            stale => match self.registry.trusted_claims().await {
                Ok(claims) => {
                    *self.claims.lock().expect("claims cache lock") =
                        Some((Instant::now(), claims.clone()));
                    (Some(claims), true)
                }
                Err(e) => {
                    tracing::error!(error = %e, "trusted claim certificates not read");
                    (stale.map(|(_, claims)| claims), false)
                }
            },
        };
        let read = match (&claims, fresh) {
            (None, _) => ClaimsRead::Never,
            (Some(claims), true) => ClaimsRead::Fresh(claims),
            (Some(claims), false) => ClaimsRead::Stale(claims),
        };
        let Some(trusted) = effective_trust(
            &self.policy.trusted_claim_certificate_ids,
            read,
            time::OffsetDateTime::now_utc(),
        ) else {
            return Err(Denial::new(
                Reason::InternalError,
                "the trusted claim certificates could not be read; none is trusted before they are",
            ));
        };
        if trusted == self.policy.trusted_claim_certificate_ids {
            return Ok(std::borrow::Cow::Borrowed(&self.policy));
        }
        let mut policy = self.policy.clone();
        policy.trusted_claim_certificate_ids = trusted;
        Ok(std::borrow::Cow::Owned(policy))
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
        let outcome = self.decide_in_time(payload, &ids, request_id).await;
        let reason = outcome.reason;
        let audit_written = self.write_audit(&outcome, &ids, request_id).await;
        self.report(
            &outcome,
            &ids,
            request_id,
            started,
            cold_start,
            audit_written,
        );
        HookDecision {
            response: match outcome.overrides {
                Some(overrides) => HookResponse::allow(overrides),
                None => HookResponse::deny(),
            },
            reason,
            audit_written,
        }
    }

    /// The decision within the deadline, and a commit it left in flight
    /// settled after it.
    async fn decide_in_time(
        &self,
        payload: Value,
        ids: &RequestIdentifiers,
        request_id: &str,
    ) -> Outcome {
        let pending = Mutex::new(None);
        match tokio::time::timeout(
            self.deadline,
            self.decide(payload, ids, request_id, &pending),
        )
        .await
        {
            Ok(mut outcome) => match outcome.settle.take() {
                // Settled outside the deadline, so a settlement cannot itself
                // be cut off and leave a second outcome.
                Some((reason, cause)) => {
                    let pending = pending.lock().expect("pending commit lock").take();
                    self.settle_because(pending, ids, request_id, reason, cause)
                        .await
                }
                None => outcome,
            },
            Err(_) => {
                let pending = pending.lock().expect("pending commit lock").take();
                self.settle(pending, ids, request_id).await
            }
        }
    }

    /// The decision's audit event (unless the decision wrote it) and any
    /// overshoot report, written side by side: whether the decision's event
    /// is in the log.
    async fn write_audit(
        &self,
        outcome: &Outcome,
        ids: &RequestIdentifiers,
        request_id: &str,
    ) -> bool {
        // The overshoot report is written beside the decision's event, not
        // before it: it must not stretch the answer's time budget.
        let overshoot = outcome.overshoot.map(|(provisionings, quota)| {
            let detail = format!("{provisionings} provisionings in all regions, quota {quota}");
            tracing::warn!(service = SERVICE, detail, "quota overshoot across regions");
            MetricLine::new(SERVICE)
                .metric("QuotaOvershoot", 1.0, Unit::Count)
                .emit();
            let mut event = self.audit_event(ids, Reason::QuotaExceeded, &detail, request_id);
            event.kind = OVERSHOOT_KIND.into();
            event
        });

        let reason = outcome.reason;
        let decision_event = (!outcome.audited).then(|| {
            outcome
                .event
                .clone()
                .unwrap_or_else(|| self.audit_event(ids, reason, &outcome.detail, request_id))
        });
        let (decision_written, _) = tokio::join!(
            async {
                match (&decision_event, &outcome.unsettled) {
                    (Some(event), Some(commit)) => {
                        self.append_unless_committed(commit, event).await
                    }
                    (Some(event), None) => self.append_audit(event).await,
                    (None, _) => true,
                }
            },
            async {
                if let Some(event) = &overshoot {
                    self.append_audit(event).await;
                }
            },
        );
        // The canary's probe has no audit event to have written.
        !outcome.canary && (outcome.audited || decision_written)
    }

    /// The decision's log line and metrics, and the abuse sentinel's count.
    fn report(
        &self,
        outcome: &Outcome,
        ids: &RequestIdentifiers,
        request_id: &str,
        started: Instant,
        cold_start: bool,
        audit_written: bool,
    ) {
        let reason = outcome.reason;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            service = SERVICE,
            cold_start,
            // Every request-derived field bounded, as in the audit.
            serial_number = bounded_field(ids.serial_number.as_deref().unwrap_or("")),
            certificate_id = bounded_field(ids.certificate_id.as_deref().unwrap_or("")),
            decision = if outcome.overrides.is_some() {
                "ALLOW"
            } else {
                "DENY"
            },
            reason = reason.code(),
            detail = bounded_field(&outcome.detail),
            canary = outcome.canary,
            audit_written,
            latency_ms,
            "provisioning decision"
        );
        // The canary's probes are counted apart, so device decisions stay
        // device decisions.
        let counted = if outcome.canary {
            "CanaryProvisioning"
        } else {
            "ProvisioningDecision"
        };
        let mut metric = MetricLine::new(SERVICE)
            .dimension("Reason", reason.code())
            .metric(counted, 1.0, Unit::Count)
            .metric("DecisionLatency", latency_ms, Unit::Milliseconds)
            .property("requestId", request_id)
            .property("coldStart", cold_start);
        if !audit_written && !outcome.canary {
            metric = metric.metric("AuditWriteFailed", 1.0, Unit::Count);
        }
        metric.emit();
        // The abuse sentinel: rule denials per claim certificate, which the
        // stack's alarm watches (a leaked claim key shows as a burst). Our
        // own failures (deadline, registry) are not the claim's doing.
        if !matches!(
            reason,
            Reason::Allowed | Reason::DeadlineExceeded | Reason::InternalError
        ) {
            // Only an IoT certificate id becomes a dimension, so a flood of
            // made-up ids cannot make unbounded metrics.
            if let Some(claim) = ids
                .claim_certificate_id
                .as_deref()
                .filter(|c| is_certificate_id(c))
            {
                MetricLine::new(SERVICE)
                    .dimension("ClaimCertificateId", claim)
                    .metric("ClaimDenials", 1.0, Unit::Count)
                    .emit();
            }
        }
    }

    /// The deadline cut the decision off. With no commit in flight it is a
    /// plain DEADLINE_EXCEEDED; with one, one bounded transaction settles
    /// whether it applied, so the answer and the audit log agree.
    async fn settle(
        &self,
        pending: Option<PendingCommit>,
        ids: &RequestIdentifiers,
        request_id: &str,
    ) -> Outcome {
        let cause = format!("no decision within {} ms", self.deadline.as_millis());
        self.settle_because(pending, ids, request_id, Reason::DeadlineExceeded, cause)
            .await
    }

    /// A commit whose answer never came (`cause`): if it applied, the
    /// provisioning stands (audited by the commit); if not, it is fenced and
    /// the denial for `reason` audited, in one transaction.
    async fn settle_because(
        &self,
        pending: Option<PendingCommit>,
        ids: &RequestIdentifiers,
        request_id: &str,
        reason: Reason,
        cause: String,
    ) -> Outcome {
        let Some(pending) = pending else {
            return Outcome::denied(Denial::new(reason, cause));
        };
        let detail = format!("{cause}; the commit did not apply");
        let denial = self.audit_event(ids, reason, &detail, request_id);
        // Retried until the budget ends: a TransactionConflict is what the
        // lost commit still in flight on the same item gives.
        let settled = tokio::time::timeout(SETTLE_TIMEOUT, async {
            loop {
                match self
                    .registry
                    .settle_lost_commit(&pending.commit, &denial)
                    .await
                {
                    Ok(settled) => return settled,
                    Err(e) => {
                        tracing::warn!(error = %e, "settling a lost commit; again");
                        tokio::time::sleep(SETTLE_RETRY).await;
                    }
                }
            }
        })
        .await;
        match settled {
            Ok(Settled::Committed) => Outcome::allowed(pending.overrides, SETTLED_COMMITTED, true),
            // Another decision (device activation) provisioned the same
            // certificate here: this one never committed, and is audited
            // now, as a retry is.
            Ok(Settled::CommittedElsewhere) => {
                Outcome::allowed(pending.overrides, SETTLED_ELSEWHERE, false)
            }
            Ok(Settled::Fenced) => Outcome {
                audited: true,
                ..Outcome::denied(Denial::new(reason, detail))
            },
            // Unsettled: the denial is appended under the fence's own key,
            // so if the fence did land, this append is refused and the
            // decision still has one audit event.
            Err(_) => Outcome {
                event: Some(denial),
                unsettled: Some(pending.commit),
                ..Outcome::denied(Denial::new(
                    reason,
                    format!(
                        "{cause}; the commit was not settled within {} ms",
                        SETTLE_TIMEOUT.as_millis()
                    ),
                ))
            },
        }
    }

    async fn decide(
        &self,
        payload: Value,
        ids: &RequestIdentifiers,
        request_id: &str,
        pending: &Mutex<Option<PendingCommit>>,
    ) -> Outcome {
        let claim = match parse_claim(payload) {
            Ok(claim) => claim,
            Err(e) => return Outcome::denied(Denial::new(Reason::BadParameters, e.to_string())),
        };
        let policy = match self.policy_now().await {
            Ok(policy) => policy,
            Err(denial) => return Outcome::denied(denial),
        };
        if let Err(denial) = policy.check_claim(&claim) {
            return Outcome::denied(denial);
        }
        match self
            .decide_and_commit(&policy, &claim, ids, request_id, pending)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => Outcome::denied(Denial::new(Reason::InternalError, e.to_string())),
        }
    }

    /// Read, decide, and for a new provisioning commit conditionally; a
    /// conflict means the device changed, so read and decide again.
    async fn decide_and_commit(
        &self,
        policy: &Policy,
        claim: &ProvisioningClaim,
        ids: &RequestIdentifiers,
        request_id: &str,
        pending: &Mutex<Option<PendingCommit>>,
    ) -> Result<Outcome, RegistryError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let mut device = self.registry.device(&claim.serial).await?;
            let canary = self.canary_serial.as_ref() == Some(&claim.serial);
            if canary {
                // The canary never commits: whatever provisionings its
                // serial shows (a probe run before the hook knew it) count
                // for nothing.
                if let Some(d) = device.as_mut() {
                    d.provisioning = Default::default();
                }
            }
            let overshoot = device.as_ref().and_then(|d| policy.overshoot(d));
            let grant = match policy.decide(claim, device.as_ref()) {
                Verdict::Deny(denial) => {
                    return Ok(Outcome {
                        overshoot,
                        ..Outcome::denied(denial)
                    });
                }
                Verdict::Allow(grant) => grant,
            };
            if canary {
                return Ok(self.canary_outcome(grant, device.as_ref(), policy));
            }
            let GrantKind::New { region_limit } = grant.kind else {
                return Ok(Outcome::allowed(grant.parameter_overrides, RETRY, false));
            };
            // IoT retrying a certificate whose commit was settled as not
            // applied: it never will be here.
            if device.as_ref().is_some_and(|d| {
                d.provisioning
                    .is_fenced(&policy.region, &claim.certificate_id)
            }) {
                return Ok(Outcome::denied(Denial::new(
                    Reason::DeadlineExceeded,
                    "this certificate's earlier commit was settled as not applied",
                )));
            }
            let audit = self.audit_event(ids, Reason::Allowed, NEW_PROVISIONING, request_id);
            let commit = ProvisioningCommit {
                serial: claim.serial.clone(),
                certificate_id: claim.certificate_id.clone(),
                region: self.policy.region.clone(),
                region_limit,
                profile_version: grant.profile_version.clone(),
                guard: device.as_ref().and_then(|d| d.provisioning.guard.clone()),
                at: audit.time.clone(),
            };
            *pending.lock().expect("pending commit lock") = Some(PendingCommit {
                commit: commit.clone(),
                overrides: grant.parameter_overrides.clone(),
            });
            let result = self.registry.record_provisioning(&commit, &audit).await;
            match result {
                Ok(CommitOutcome::Committed) => {
                    pending.lock().expect("pending commit lock").take();
                    return Ok(Outcome::allowed(
                        grant.parameter_overrides,
                        NEW_PROVISIONING,
                        true,
                    ));
                }
                Ok(CommitOutcome::Conflict) => {
                    pending.lock().expect("pending commit lock").take();
                    continue;
                }
                // An error may hide an applied commit (the answer lost on
                // the way back): leave it pending, so settling decides.
                // Left pending: the handler settles it outside the deadline.
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed; settling it");
                    return Ok(Outcome {
                        settle: Some((Reason::InternalError, format!("the commit failed: {e}"))),
                        ..Outcome::denied(Denial::new(Reason::InternalError, "unsettled"))
                    });
                }
            }
        }
        Err(RegistryError::Unavailable(format!(
            "device state changed on each of {MAX_COMMIT_ATTEMPTS} attempts"
        )))
    }

    /// The region canary's probe, allowed by every rule: it needs a factory
    /// key whatever `REQUIRE_FACTORY_KEY` says (the claim key is public, the
    /// canary's provisioning key is not), and is neither committed nor
    /// audited: the canary deletes its thing and certificate afterwards.
    /// Its profile must pin exactly this region, as `geoprov setup canary`
    /// writes it: a profile that lets the serial go anywhere else is not the
    /// canary's (a tampered manifest line), and is denied, audited.
    fn canary_outcome(
        &self,
        grant: Grant,
        device: Option<&DeviceRecord>,
        policy: &Policy,
    ) -> Outcome {
        let keyed = device.is_some_and(|d| d.profile.public_key_sha256.is_some());
        if !keyed {
            return Outcome::denied(Denial::new(
                Reason::NoFactoryKey,
                "the canary serial has no factory key (publicKeySha256) in the registry",
            ));
        }
        let pinned_here = device.is_some_and(|d| {
            d.profile
                .allowed_regions
                .as_ref()
                .is_some_and(|regions| regions.len() == 1 && regions.contains(&policy.region))
        });
        if !pinned_here {
            return Outcome::denied(Denial::new(
                Reason::RegionNotAllowed,
                format!(
                    "the canary serial's profile does not pin exactly {}; geoprov setup canary writes it",
                    policy.region
                ),
            ));
        }
        Outcome {
            canary: true,
            ..Outcome::allowed(grant.parameter_overrides, CANARY, true)
        }
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
    /// The denial of a commit that could not be settled, appended unless
    /// the commit applied; `true` when the decision has its one outcome.
    async fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        event: &AuditEvent,
    ) -> bool {
        let write = self.registry.append_unless_committed(commit, event);
        match tokio::time::timeout(AUDIT_WRITE_TIMEOUT, write).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                tracing::warn!(
                    service = SERVICE,
                    "the lost commit applied: its ALLOWED event is the decision's outcome; IoT was denied and its retry is a retry"
                );
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit write failed");
                false
            }
            Err(_) => {
                tracing::error!("audit write not done in time");
                false
            }
        }
    }

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
