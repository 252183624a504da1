//! One invocation: every request is checked (request, CSR policy, registry)
//! before anything is sent to ACM PCA; checked requests are issued through
//! the ledger, at most `issue_concurrency` at a time, and answered in order.
//!
//! Deadlines: an item is started only while the invocation has more than
//! `issue_deadline + FINISH_MARGIN` left (from the Lambda context), and a
//! started item's ACM PCA calls end by the earlier of its own deadline and
//! the invocation's; items not started are answered `RETRY_LATER`, which is
//! no decision about the device and is not audited. What was issued is in the
//! ledger, so the retry returns it.
//!
//! Errors: the caller gets a code and a short reason; SDK messages, ARNs of
//! the CA and the table's name go to the log only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use geoprov_device_rules::rules::{self, Denial};
use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::claims::{effective_trust, is_certificate_id, ClaimsRead};
use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use geoprov_shared::telemetry::{MetricLine, Unit};
use serde_json::Value;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use crate::config::IssuerConfig;
use crate::csr::{self, CheckedCsr};
use crate::ledger::{Begun, IssuanceLedger, IssuanceStatus, LedgerEntry, Quota};
use crate::pca::{CertificateAuthority, CertificatePem};
use crate::provider::{self, ProviderAnswer, ProviderEvent, ProviderRefusal};
use crate::request::{self, IssueRequest, Parsed};
use crate::response::{error_code, ErrorCode, Issued, ItemResponse, Response};
use crate::SERVICE;

/// The first wait between two GetCertificate polls; it doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

/// What a batch item needs after its deadline: the audit event (one
/// DynamoDB operation, at most [`crate::DYNAMODB_OPERATION_TIMEOUT`]) and
/// the answer.
pub const FINISH_MARGIN: Duration = Duration::from_secs(6);

/// The longest an audit write may hold a certificate-provider answer, which
/// IoT waits 5 s for.
pub const PROVIDER_AUDIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Who asks, beyond the request. IoT's certificate-provider event says which
/// connection (its client id and claim certificate), which the audit
/// records; a claim holder must show a factory key where one is required.
#[derive(Debug, Clone, Default)]
struct Caller {
    client_id: Option<String>,
    claim_certificate_id: Option<String>,
    require_factory_key: bool,
    /// A bound of the audit write tighter than the DynamoDB client's.
    audit_limit: Option<Duration>,
    /// The region the device connected to, whose `allowedRegions` it must
    /// be in (the certificate provider); `None` for the issuer's own
    /// requests, whose certificates serve every region the device may use.
    connected_in: Option<String>,
}

/// What a certificate-provider answer may take of IoT's 5 s for everything
/// but the audit event: the trusted claims, the registry, the ledger, ACM
/// PCA; the audit event ([`PROVIDER_AUDIT_TIMEOUT`]) and the runtime take
/// the rest.
pub const PROVIDER_ISSUE_BUDGET: Duration = Duration::from_millis(3500);

/// ACM PCA's idempotency window: "Idempotency tokens for IssueCertificate
/// time out after five minutes" (AWS CLI reference, acm-pca
/// issue-certificate). Within it, the same token returns the same
/// certificate; after it, the same token would mint another.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// When the Lambda runtime ends the invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// From the context's deadline, in milliseconds since the epoch. A
    /// value that cannot be one (before 2001, such as the `600000` that
    /// cargo lambda's Runtime API emulator sends) is no deadline: logged,
    /// and the items keep only their own.
    pub fn from_epoch_millis(deadline_ms: u64) -> Option<Self> {
        const EPOCH_MS_2001: u64 = 1_000_000_000_000;
        if deadline_ms < EPOCH_MS_2001 {
            tracing::warn!(
                deadline_ms,
                "the invocation's deadline is not a time; ignored"
            );
            return None;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Some(Deadline::after(Duration::from_millis(
            deadline_ms.saturating_sub(now_ms),
        )))
    }

    pub fn after(left: Duration) -> Self {
        Deadline(Instant::now() + left)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// What the issuer needs of its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_validity_days: u32,
    pub default_validity_days: u32,
    pub issue_concurrency: usize,
    pub issue_deadline: Duration,
    /// Certificates per device when its profile sets no `maxCertificates`.
    pub default_max_certificates: u32,
    /// The hook's bootstrap trust, for certificate-provider requests.
    pub trusted_claim_certificate_ids: std::collections::BTreeSet<String>,
    /// The hook's `REQUIRE_FACTORY_KEY`, for certificate-provider requests.
    pub require_factory_key: bool,
    /// The region recorded in audit events and counted in.
    pub region: String,
    /// `PROVISIONING_CLIENT_ID_PREFIX`: how IoT's certificate-provider event
    /// names the serial.
    pub client_id_prefix: String,
}

impl Limits {
    pub fn from_config(config: &IssuerConfig, region: &str) -> Self {
        Limits {
            max_validity_days: config.max_validity_days,
            default_validity_days: config.default_validity_days,
            issue_concurrency: config.issue_concurrency,
            issue_deadline: config.issue_deadline,
            default_max_certificates: config.default_max_certificates,
            trusted_claim_certificate_ids: config.trusted_claim_certificate_ids.clone(),
            require_factory_key: config.require_factory_key,
            region: region.to_owned(),
            client_id_prefix: config.client_id_prefix.clone(),
        }
    }
}

/// The cert issuer with its adapters.
pub struct CertIssuer<P, L, R> {
    pca: P,
    ledger: L,
    registry: R,
    limits: Limits,
}

/// A request that passed every check, ready for ACM PCA.
struct Approved {
    serial: SerialNumber,
    csr: CheckedCsr,
    validity_days: u32,
    max_certificates: u32,
    allowed_regions: Option<Vec<String>>,
}

/// The idempotency token of an issuance: derived from the serial and the CSR,
/// so a retry of the same request is the same IssueCertificate call.
pub fn idempotency_token(serial: &str, csr_sha256: &str) -> String {
    let digest = Sha256::digest(format!("{serial}\n{csr_sha256}"));
    hex::encode(&digest[..16])
}

impl<P, L, R> CertIssuer<P, L, R>
where
    P: CertificateAuthority + Sync,
    L: IssuanceLedger + Sync,
    R: DeviceRegistry + AuditLog + Sync,
{
    pub fn new(pca: P, ledger: L, registry: R, limits: Limits) -> Self {
        CertIssuer {
            pca,
            ledger,
            registry,
            limits,
        }
    }

    /// Answers one invocation with no deadline of its own (a test, a
    /// one-shot): see [`Self::handle_until`].
    pub async fn handle(&self, payload: Value, request_id: &str) -> Response {
        self.handle_until(payload, request_id, None).await
    }

    /// Answers one invocation that ends at `deadline`. Never fails: every
    /// problem is an error item.
    pub async fn handle_until(
        &self,
        payload: Value,
        request_id: &str,
        deadline: Option<Deadline>,
    ) -> Response {
        let started = Instant::now();
        let response = match request::parse(payload) {
            Parsed::One(item) => {
                Response::One(Box::pin(self.answer_in_time(item, request_id, 0, deadline)).await)
            }
            Parsed::Batch(items) => {
                use futures::StreamExt;
                let results = futures::stream::iter(items.into_iter().enumerate())
                    // Boxed: one item's future is deep enough on its own.
                    .map(|(index, item)| {
                        Box::pin(self.answer_in_time(item, request_id, index, deadline))
                    })
                    .buffered(self.limits.issue_concurrency)
                    .collect()
                    .await;
                Response::Batch { results }
            }
            Parsed::Invalid(refusal) => {
                self.audit_refusal(&refusal, &Caller::default(), (request_id, 0))
                    .await;
                Response::One(refusal)
            }
        };
        let items: Vec<&ItemResponse> = match &response {
            Response::One(item) => vec![item],
            Response::Batch { results } => results.iter().collect(),
        };
        self.emit_metrics(&items, started.elapsed());
        response
    }

    /// Answers IoT's certificate-provider event: the issuer's checks, quota
    /// and ledger for the serial the client id names, for a connection of a
    /// claim certificate the hook trusts, within IoT's budget. Anyone may
    /// hold the claim key, so where `REQUIRE_FACTORY_KEY` holds the device
    /// must have a factory key on record, and the CSR's key must be it.
    pub async fn provide(
        &self,
        payload: Value,
        request_id: &str,
    ) -> Result<ProviderAnswer, ProviderRefusal> {
        let started = Instant::now();
        let deadline = started + self.limits.issue_deadline.min(PROVIDER_ISSUE_BUDGET);
        let mut caller = Caller {
            require_factory_key: self.limits.require_factory_key,
            audit_limit: Some(PROVIDER_AUDIT_TIMEOUT),
            connected_in: Some(self.limits.region.clone()),
            ..Caller::default()
        };
        let item = match serde_json::from_value::<ProviderEvent>(payload) {
            Err(e) => Err(ItemResponse::refused(
                None,
                ErrorCode::InvalidRequest,
                format!("not a certificate-provider event: {e}"),
            )),
            Ok(event) => {
                caller.client_id = Some(event.client_id.clone());
                caller.claim_certificate_id = Some(event.principal_id.clone());
                let serial = provider::serial_from_client_id(
                    &event.client_id,
                    &self.limits.client_id_prefix,
                );
                match serial {
                    None => Err(ItemResponse::refused(
                        None,
                        ErrorCode::InvalidRequest,
                        "the client id does not follow the provisioning client-id convention",
                    )),
                    Some(serial) => match self.claim_trusted(&event.principal_id, deadline).await {
                        Err(refusal) => {
                            Err(ItemResponse::refused(Some(serial), refusal.0, refusal.1))
                        }
                        Ok(()) => Ok(IssueRequest {
                            serial_number: serial.to_owned(),
                            csr_pem: event.certificate_signing_request,
                            validity_days: None,
                        }),
                    },
                }
            }
        };
        let item = Box::pin(self.answer(item, request_id, 0, deadline, &caller)).await;
        self.emit_metrics(&[&item], started.elapsed());
        match item {
            ItemResponse::Issued(issued) => Ok(ProviderAnswer {
                certificate_pem: issued.certificate_pem,
            }),
            ItemResponse::Refused { error, .. } => {
                let refusal = ProviderRefusal {
                    code: error.code.as_str(),
                    message: error.message,
                };
                // The hook's abuse sentinel, for this path too: a verdict
                // against the caller's claim certificate. Only an IoT
                // certificate id becomes a dimension, so made-up ids cannot
                // make unbounded metrics.
                if let Some(claim) = caller
                    .claim_certificate_id
                    .as_deref()
                    .filter(|c| is_certificate_id(c) && !refusal.retry_later())
                {
                    MetricLine::new(SERVICE)
                        .dimension("ClaimCertificateId", claim)
                        .metric("ClaimDenials", 1.0, Unit::Count)
                        .emit();
                }
                Err(refusal)
            }
        }
    }

    /// Whether the hook trusts the claim certificate now: the bootstrap list
    /// and the table's trusted claim certificates, as the hook reads them.
    /// Fail closed: without the table, nothing.
    async fn claim_trusted(
        &self,
        claim_certificate_id: &str,
        deadline: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        let claims = tokio::time::timeout_at(deadline.into(), self.registry.trusted_claims()).await;
        let claims = match claims {
            Ok(Ok(claims)) => claims,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "trusted claim certificates not read");
                return Err((
                    ErrorCode::IssuanceFailed,
                    "the trusted claim certificates could not be read".into(),
                ));
            }
            Err(_) => {
                return Err((
                    ErrorCode::IssuanceFailed,
                    "the trusted claim certificates could not be read in time".into(),
                ))
            }
        };
        // The hook's rule, on a read of now (this path never uses a stale one).
        let trusted = effective_trust(
            &self.limits.trusted_claim_certificate_ids,
            ClaimsRead::Fresh(&claims),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap_or_default();
        match trusted.contains(claim_certificate_id) {
            true => Ok(()),
            false => Err((
                ErrorCode::UntrustedClaim,
                "the connection's claim certificate is not trusted here".into(),
            )),
        }
    }

    /// Starts the item only if it can finish before the invocation's
    /// deadline; `RETRY_LATER` otherwise.
    async fn answer_in_time(
        &self,
        item: Result<IssueRequest, ItemResponse>,
        request_id: &str,
        index: usize,
        deadline: Option<Deadline>,
    ) -> ItemResponse {
        let needed = self.limits.issue_deadline + FINISH_MARGIN;
        let item_deadline = match deadline {
            None => Instant::now() + self.limits.issue_deadline,
            Some(deadline) if deadline.remaining() <= needed => {
                let serial = match &item {
                    Ok(request) => Some(request.serial_number.as_str()),
                    Err(_) => None,
                };
                return ItemResponse::refused(
                    serial,
                    ErrorCode::RetryLater,
                    "not started: the invocation's time ran out; send it again",
                );
            }
            Some(deadline) => (Instant::now() + self.limits.issue_deadline)
                .min(deadline.0.checked_sub(FINISH_MARGIN).unwrap_or(deadline.0)),
        };
        self.answer(item, request_id, index, item_deadline, &Caller::default())
            .await
    }

    /// Checks and issues one request, every step of it by `deadline`, then
    /// audits the answer.
    async fn answer(
        &self,
        item: Result<IssueRequest, ItemResponse>,
        request_id: &str,
        index: usize,
        deadline: Instant,
        caller: &Caller,
    ) -> ItemResponse {
        let at = (request_id, index);
        let request = match item {
            Ok(request) => request,
            Err(refusal) => {
                self.audit_refusal(&refusal, caller, at).await;
                return refusal;
            }
        };
        let serial = request.serial_number.clone();
        let work = async {
            match self.approve(request, caller).await {
                Ok(approved) => self.issue(approved, deadline).await,
                Err(refusal) => refusal,
            }
        };
        let response = match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(response) => response,
            Err(_) => self.timed_out(&serial, "the request's deadline"),
        };
        match &response {
            ItemResponse::Issued(issued) => {
                self.audit_issued(issued, caller, at).await;
                tracing::info!(
                    serial_number = %serial,
                    certificate_arn = %issued.certificate_arn,
                    not_after = %issued.not_after,
                    "certificate issued"
                );
            }
            refusal => {
                self.audit_refusal(refusal, caller, at).await;
                if let ItemResponse::Refused { error, .. } = refusal {
                    tracing::info!(
                        serial_number = %serial,
                        code = error.code.as_str(),
                        message = %error.message,
                        "certificate refused"
                    );
                }
            }
        }
        response
    }

    /// Every check that comes before ACM PCA.
    async fn approve(
        &self,
        request: IssueRequest,
        caller: &Caller,
    ) -> Result<Approved, ItemResponse> {
        let raw_serial = request.serial_number.as_str();
        let refuse = |code, message: String| ItemResponse::refused(Some(raw_serial), code, message);
        let serial = SerialNumber::try_from(raw_serial)
            .map_err(|e| refuse(ErrorCode::InvalidRequest, format!("serialNumber: {e}")))?;
        let validity_days = request
            .validity_days
            .unwrap_or(self.limits.default_validity_days);
        if validity_days == 0 {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "validityDays must be at least 1".into(),
            ));
        }
        if validity_days > self.limits.max_validity_days {
            return Err(refuse(
                ErrorCode::ValidityTooLong,
                format!(
                    "validityDays {validity_days} is over the maximum of {}",
                    self.limits.max_validity_days
                ),
            ));
        }
        let csr = csr::check(serial.as_str(), &request.csr_pem)
            .map_err(|refusal| refuse(refusal.code, refusal.message))?;
        let record = match self.registry.device(&serial).await {
            Ok(record) => record,
            // Fail closed: without the registry nothing is issued.
            Err(e) => {
                return Err(self.failed(raw_serial, "the device registry could not be read", e))
            }
        };
        // The device rules the hook and device activation apply too.
        let refused = |denial: Denial| refuse(error_code(denial.reason), denial.detail);
        let record = rules::standing(&serial, record.as_ref(), caller.connected_in.as_deref())
            .map_err(refused)?;
        rules::factory_key(
            &serial,
            record,
            || Ok(csr.public_key_sha256.clone()),
            caller.require_factory_key,
        )
        .map_err(refused)?;
        let profile = &record.profile;
        Ok(Approved {
            max_certificates: profile
                .max_certificates
                .unwrap_or(self.limits.default_max_certificates),
            allowed_regions: profile
                .allowed_regions
                .as_ref()
                .map(|regions| regions.iter().map(|r| r.as_str().to_owned()).collect()),
            serial,
            csr,
            validity_days,
        })
    }

    /// `ISSUANCE_FAILED` with a short `reason` for the caller; the detail
    /// (SDK messages, ARNs, table names) goes to the log only.
    fn failed(&self, serial: &str, reason: &str, detail: impl std::fmt::Display) -> ItemResponse {
        tracing::error!(serial_number = %serial, reason, detail = %detail, "issuance failed");
        ItemResponse::refused(Some(serial), ErrorCode::IssuanceFailed, reason)
    }

    /// Issues through the ledger: the same CSR always gets the same
    /// certificate.
    async fn issue(&self, approved: Approved, deadline: Instant) -> ItemResponse {
        let serial = approved.serial.as_str();
        let failed =
            |reason: &str, detail: &dyn std::fmt::Display| self.failed(serial, reason, detail);
        let sha = &approved.csr.sha256;
        let pending = LedgerEntry {
            serial_number: serial.to_owned(),
            status: IssuanceStatus::Pending,
            idempotency_token: idempotency_token(serial, sha),
            certificate_arn: None,
            certificate_serial: None,
            not_after: None,
            requested_at: geoprov_shared::clock::now_rfc3339(),
            issued_at: None,
            region: Some(self.limits.region.clone()),
            allowed_regions: approved.allowed_regions.clone(),
        };
        let quota = Quota {
            serial,
            region: &self.limits.region,
            max: approved.max_certificates,
        };
        let started_here = match self.ledger.begin(sha, &pending, &quota).await {
            Ok(Begun::Started) => true,
            Ok(Begun::Recorded) => false,
            Ok(Begun::QuotaExceeded { used }) => {
                return ItemResponse::refused(
                    Some(serial),
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{serial} has certificates for {used} CSRs, its limit is {}",
                        quota.max
                    ),
                )
            }
            Err(e) => return failed("the issuance ledger could not be written", &e),
        };
        let mut entry = match started_here {
            true => pending,
            false => match self.ledger.get(sha).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return failed("the issuance ledger lost the entry", &sha),
                Err(e) => return failed("the issuance ledger could not be read", &e),
            },
        };
        if !started_here && entry.certificate_arn.is_none() {
            entry = match self.follow(sha, entry, deadline).await {
                Ok(entry) => entry,
                Err((reason, detail)) => return failed(reason, &detail),
            };
        }
        let arn = match entry.certificate_arn {
            Some(arn) => arn,
            None => {
                let issued = tokio::time::timeout_at(
                    deadline.into(),
                    self.pca.issue(
                        &approved.csr.pem,
                        serial,
                        approved.validity_days,
                        &entry.idempotency_token,
                    ),
                )
                .await;
                let arn = match issued {
                    Ok(Ok(arn)) => arn,
                    Ok(Err(e)) => return failed("ACM PCA refused the request", &e),
                    Err(_) => return self.timed_out(serial, "IssueCertificate"),
                };
                match self.ledger.set_arn(sha, &arn).await {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        return failed(
                            "issued, but not recorded; the same request later returns it",
                            &format!("{arn}: {e}"),
                        )
                    }
                }
            }
        };
        let pem = match self.fetch_until(&arn, deadline).await {
            Ok(Some(pem)) => pem,
            Ok(None) => return self.timed_out(serial, "GetCertificate: RequestInProgress"),
            Err(e) => return failed("ACM PCA refused the request", &e),
        };
        let (certificate_serial, not_after) = match certificate_facts(&pem.certificate) {
            Ok(facts) => facts,
            Err(message) => {
                return failed(
                    "ACM PCA returned no usable certificate",
                    &format!("{arn}: {message}"),
                )
            }
        };
        if entry.status != IssuanceStatus::Issued {
            if let Err(e) = self
                .ledger
                .complete(sha, &certificate_serial, &not_after)
                .await
            {
                tracing::warn!(error = %e, certificate_arn = %arn, "issuance not marked ISSUED; a retry will");
            }
        }
        ItemResponse::Issued(Issued {
            serial_number: serial.to_owned(),
            certificate_pem: pem.certificate,
            certificate_chain_pem: pem.chain,
            certificate_arn: arn,
            not_after,
        })
    }

    /// An entry another invocation began, still without its ARN:
    /// - while that invocation may still be running, wait for its ARN;
    /// - once it must be gone but within ACM PCA's idempotency window, issue
    ///   with its token: ACM PCA returns the certificate it issued, if any
    ///   (the look-up);
    /// - after the window the token would mint another certificate, so the
    ///   entry takes a new token first (a conditional write: one invocation
    ///   wins, the others follow it), and a possibly issued, never recorded,
    ///   never delivered certificate is reported for the CA's audit report.
    async fn follow(
        &self,
        sha: &str,
        entry: LedgerEntry,
        deadline: Instant,
    ) -> Result<LedgerEntry, (&'static str, String)> {
        let age = age_of(&entry);
        if age <= self.limits.issue_deadline + FINISH_MARGIN {
            return self.wait_for_arn(sha, entry, deadline).await;
        }
        if age <= IDEMPOTENCY_WINDOW {
            return Ok(entry);
        }
        let token = fresh_token();
        match self
            .ledger
            .renew_token(sha, &entry.idempotency_token, &token)
            .await
        {
            Ok(true) => {
                tracing::warn!(
                    serial_number = %entry.serial_number,
                    csr_sha256 = %sha,
                    requested_at = %entry.requested_at,
                    "a PENDING issuance outlived ACM PCA's idempotency window; issuing under a new token (look for an unrecorded certificate of this subject in the CA's audit report)"
                );
                MetricLine::new(SERVICE)
                    .metric("StalePendingIssuance", 1.0, Unit::Count)
                    .emit();
                Ok(LedgerEntry {
                    idempotency_token: token,
                    requested_at: geoprov_shared::clock::now_rfc3339(),
                    ..entry
                })
            }
            Ok(false) => match self.ledger.get(sha).await {
                Ok(Some(entry)) => self.wait_for_arn(sha, entry, deadline).await,
                Ok(None) => Err(("the issuance ledger lost the entry", sha.to_owned())),
                Err(e) => Err(("the issuance ledger could not be read", e.to_string())),
            },
            Err(e) => Err(("the issuance ledger could not be written", e.to_string())),
        }
    }

    /// Reads the ledger until the issuance has its ARN, or until `deadline`
    /// (then the caller issues with the same token).
    async fn wait_for_arn(
        &self,
        sha: &str,
        mut entry: LedgerEntry,
        deadline: Instant,
    ) -> Result<LedgerEntry, (&'static str, String)> {
        let mut wait = FIRST_POLL;
        while entry.certificate_arn.is_none() && Instant::now() + wait < deadline {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
            entry = match self.ledger.get(sha).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return Err(("the issuance ledger lost the entry", sha.to_owned())),
                Err(e) => return Err(("the issuance ledger could not be read", e.to_string())),
            };
        }
        Ok(entry)
    }

    fn timed_out(&self, serial: &str, operation: &str) -> ItemResponse {
        let reason = format!(
            "ACM PCA did not issue in time ({operation}); the same request later returns the same certificate"
        );
        self.failed(serial, &reason, operation)
    }

    /// Polls GetCertificate with doubling waits while ACM PCA says
    /// RequestInProgress, until the deadline (then `None`).
    async fn fetch_until(
        &self,
        arn: &str,
        deadline: Instant,
    ) -> Result<Option<CertificatePem>, crate::pca::PcaError> {
        let mut wait = FIRST_POLL;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.pca.fetch(arn)).await {
                Ok(Ok(Some(pem))) => return Ok(Some(pem)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(None),
            }
            if Instant::now() + wait >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
        }
    }

    async fn audit_issued(&self, issued: &Issued, caller: &Caller, at: (&str, usize)) {
        let event = self.audit_event(
            Some(&issued.serial_number),
            Decision::Allow,
            "ISSUED",
            format!("{} until {}", issued.certificate_arn, issued.not_after),
            caller,
            at,
        );
        let event = AuditEvent {
            certificate_id: certificate_id(&issued.certificate_pem),
            ..event
        };
        self.append(event, caller.audit_limit).await;
    }

    async fn audit_refusal(&self, refusal: &ItemResponse, caller: &Caller, at: (&str, usize)) {
        let ItemResponse::Refused {
            error,
            serial_number,
        } = refusal
        else {
            return;
        };
        let event = self.audit_event(
            serial_number.as_deref(),
            Decision::Deny,
            error.code.as_str(),
            error.message.clone(),
            caller,
            at,
        );
        self.append(event, caller.audit_limit).await;
    }

    fn audit_event(
        &self,
        serial: Option<&str>,
        decision: Decision,
        reason: &str,
        detail: String,
        caller: &Caller,
        (request_id, index): (&str, usize),
    ) -> AuditEvent {
        // Only a well-formed serial is attributed to a device.
        let serial = serial.filter(|s| SerialNumber::try_from(*s).is_ok());
        AuditEvent {
            kind: "CERTIFICATE_ISSUANCE".into(),
            serial_number: serial.map(str::to_owned),
            decision,
            reason: reason.into(),
            detail,
            region: self.limits.region.clone(),
            certificate_id: None,
            claim_certificate_id: caller.claim_certificate_id.clone(),
            client_id: caller.client_id.clone(),
            request_id: format!("{request_id}/{index}"),
            time: geoprov_shared::clock::now_rfc3339(),
        }
    }

    /// Best effort within the caller's limit, if any (the DynamoDB client
    /// bounds it otherwise); the log line and the `AuditWriteFailed` metric
    /// stand in when the table does not answer.
    async fn append(&self, event: AuditEvent, limit: Option<Duration>) {
        let event = event.bounded();
        let limit = limit.unwrap_or(crate::DYNAMODB_OPERATION_TIMEOUT * 2);
        let written = tokio::time::timeout(limit, self.registry.append(&event)).await;
        let failure = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", limit.as_millis()),
        };
        tracing::error!(error = %failure, reason = %event.reason, "audit event not written");
        MetricLine::new(SERVICE)
            .metric("AuditWriteFailed", 1.0, Unit::Count)
            .emit();
    }

    fn emit_metrics(&self, items: &[&ItemResponse], elapsed: Duration) {
        let issued = items.iter().filter(|i| i.error_code().is_none()).count();
        MetricLine::new(SERVICE)
            .metric("CertificatesIssued", issued as f64, Unit::Count)
            .metric("RequestsPerInvocation", items.len() as f64, Unit::Count)
            .metric(
                "IssuerLatency",
                elapsed.as_secs_f64() * 1000.0,
                Unit::Milliseconds,
            )
            .emit();
        let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
        for code in items.iter().filter_map(|i| i.error_code()) {
            *refused.entry(code.as_str()).or_default() += 1;
        }
        for (code, count) in refused {
            MetricLine::new(SERVICE)
                .dimension("Code", code)
                .metric("CertificateRequestsRefused", count as f64, Unit::Count)
                .emit();
        }
    }
}

/// How long ago the entry was requested; an unreadable time counts as old.
fn age_of(entry: &LedgerEntry) -> Duration {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(&entry.requested_at, &Rfc3339)
        .ok()
        .and_then(|requested| Duration::try_from(time::OffsetDateTime::now_utc() - requested).ok())
        .unwrap_or(Duration::MAX)
}

/// A random idempotency token, for an issuance past ACM PCA's window.
fn fresh_token() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect()
}

/// The AWS IoT certificate id of a PEM certificate: SHA-256 of its DER, hex.
pub fn certificate_id(certificate_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()).ok()?;
    Some(hex::encode(Sha256::digest(&pem.contents)))
}

/// The certificate's hex serial and notAfter (RFC 3339).
pub fn certificate_facts(certificate_pem: &str) -> Result<(String, String), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| format!("not PEM: {e}"))?;
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(&pem.contents)
        .map_err(|e| format!("not a certificate: {e}"))?;
    let not_after = certificate
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("notAfter: {e}"))?;
    Ok((certificate.raw_serial_as_string(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_tokens_are_stable_short_and_distinct() {
        let a = idempotency_token("SN-1", &"ab".repeat(32));
        assert_eq!(a, idempotency_token("SN-1", &"ab".repeat(32)));
        assert_eq!(a.len(), 32, "ACM PCA takes at most 36 characters");
        assert_ne!(a, idempotency_token("SN-2", &"ab".repeat(32)));
        assert_ne!(a, idempotency_token("SN-1", &"cd".repeat(32)));
    }
}
