//! One invocation: every request is checked (request, CSR policy, registry)
//! before anything is sent to ACM PCA; checked requests are issued through
//! the ledger, at most `issue_concurrency` at a time, and answered in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::device::{DeviceStatus, SerialNumber};
use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use geoprov_shared::telemetry::{MetricLine, Unit};
use serde_json::Value;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use crate::config::IssuerConfig;
use crate::csr::{self, CheckedCsr};
use crate::ledger::{IssuanceLedger, IssuanceStatus, LedgerEntry};
use crate::pca::{CertificateAuthority, CertificatePem};
use crate::request::{self, IssueRequest, Parsed};
use crate::response::{ErrorCode, Issued, ItemResponse, Response};
use crate::SERVICE;

/// The first wait between two GetCertificate polls; it doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

/// What the issuer needs of its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_validity_days: u32,
    pub default_validity_days: u32,
    pub issue_concurrency: usize,
    pub issue_deadline: Duration,
    /// The region recorded in audit events.
    pub region: String,
}

impl Limits {
    pub fn from_config(config: &IssuerConfig, region: &str) -> Self {
        Limits {
            max_validity_days: config.max_validity_days,
            default_validity_days: config.default_validity_days,
            issue_concurrency: config.issue_concurrency,
            issue_deadline: config.issue_deadline,
            region: region.to_owned(),
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

    /// Answers one invocation. Never fails: every problem is an error item.
    pub async fn handle(&self, payload: Value, request_id: &str) -> Response {
        let started = Instant::now();
        let response = match request::parse(payload) {
            Parsed::One(item) => Response::One(self.answer(item, request_id, 0).await),
            Parsed::Batch(items) => {
                use futures::StreamExt;
                let results = futures::stream::iter(items.into_iter().enumerate())
                    .map(|(index, item)| self.answer(item, request_id, index))
                    .buffered(self.limits.issue_concurrency)
                    .collect()
                    .await;
                Response::Batch { results }
            }
            Parsed::Invalid(refusal) => {
                self.audit_refusal(None, &refusal, request_id, 0).await;
                Response::One(refusal)
            }
        };
        self.emit_metrics(&response, started.elapsed());
        response
    }

    async fn answer(
        &self,
        item: Result<IssueRequest, ItemResponse>,
        request_id: &str,
        index: usize,
    ) -> ItemResponse {
        let request = match item {
            Ok(request) => request,
            Err(refusal) => {
                self.audit_refusal(None, &refusal, request_id, index).await;
                return refusal;
            }
        };
        let serial = request.serial_number.clone();
        let response = match self.approve(request).await {
            Ok(approved) => self.issue(approved).await,
            Err(refusal) => refusal,
        };
        match &response {
            ItemResponse::Issued(issued) => {
                self.audit_issued(issued, request_id, index).await;
                tracing::info!(
                    serial_number = %serial,
                    certificate_arn = %issued.certificate_arn,
                    not_after = %issued.not_after,
                    "certificate issued"
                );
            }
            refusal => {
                self.audit_refusal(Some(&serial), refusal, request_id, index)
                    .await;
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
    async fn approve(&self, request: IssueRequest) -> Result<Approved, ItemResponse> {
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
        match self.registry.device(&serial).await {
            Ok(None) => Err(refuse(
                ErrorCode::UnknownDevice,
                format!("{serial} is not in the device registry"),
            )),
            Ok(Some(record)) if record.profile.status != DeviceStatus::Allowed => Err(refuse(
                ErrorCode::DeviceBlocked,
                format!("{serial} is {}", record.profile.status.as_str()),
            )),
            Ok(Some(record)) if record.block.is_some() => Err(refuse(
                ErrorCode::DeviceBlocked,
                format!("{serial} is blocked by an operator"),
            )),
            Ok(Some(_)) => Ok(Approved {
                serial,
                csr,
                validity_days,
            }),
            // Fail closed: without the registry nothing is issued.
            Err(e) => Err(refuse(
                ErrorCode::IssuanceFailed,
                format!("the device registry could not be read: {e}"),
            )),
        }
    }

    /// Issues through the ledger: the same CSR always gets the same
    /// certificate.
    async fn issue(&self, approved: Approved) -> ItemResponse {
        let serial = approved.serial.as_str();
        let failed = |message: String| {
            ItemResponse::refused(Some(serial), ErrorCode::IssuanceFailed, message)
        };
        let sha = &approved.csr.sha256;
        let token = idempotency_token(serial, sha);
        let entry = match self.ledger.get(sha).await {
            Ok(entry) => entry,
            Err(e) => return failed(format!("the issuance ledger could not be read: {e}")),
        };
        let deadline = Instant::now() + self.limits.issue_deadline;
        let (mut entry, started_here) = match entry {
            Some(entry) => (entry, false),
            None => {
                let pending = LedgerEntry {
                    serial_number: serial.to_owned(),
                    status: IssuanceStatus::Pending,
                    idempotency_token: token.clone(),
                    certificate_arn: None,
                    certificate_serial: None,
                    not_after: None,
                    requested_at: geoprov_shared::clock::now_rfc3339(),
                    issued_at: None,
                };
                match self.ledger.begin(sha, &pending).await {
                    Ok(true) => (pending, true),
                    // Another invocation began this issuance first: follow it.
                    Ok(false) => match self.ledger.get(sha).await {
                        Ok(Some(entry)) => (entry, false),
                        Ok(None) => return failed("the issuance ledger lost the entry".into()),
                        Err(e) => return failed(format!("the issuance ledger: {e}")),
                    },
                    Err(e) => {
                        return failed(format!("the issuance ledger could not be written: {e}"))
                    }
                }
            }
        };
        if !started_here && entry.certificate_arn.is_none() && !self.is_stale(&entry) {
            // Another invocation is issuing this CSR: wait for its ARN rather
            // than ask ACM PCA a second time.
            entry = match self.wait_for_arn(sha, entry, deadline).await {
                Ok(entry) => entry,
                Err(message) => return failed(message),
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
                    Ok(Err(e)) => return failed(format!("ACM PCA refused: {e}")),
                    Err(_) => return failed(self.timed_out("IssueCertificate")),
                };
                match self.ledger.set_arn(sha, &arn).await {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        return failed(format!(
                            "issued {arn} but the ledger could not record it: {e}"
                        ))
                    }
                }
            }
        };
        let pem = match self.fetch_until(&arn, deadline).await {
            Ok(pem) => pem,
            Err(message) => return failed(message),
        };
        let (certificate_serial, not_after) = match certificate_facts(&pem.certificate) {
            Ok(facts) => facts,
            Err(message) => return failed(format!("ACM PCA returned {arn}: {message}")),
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

    /// A PENDING issuance older than the deadline: its invocation is gone.
    /// Issuing again with the same idempotency token gets the same
    /// certificate from ACM PCA.
    fn is_stale(&self, entry: &LedgerEntry) -> bool {
        use time::format_description::well_known::Rfc3339;
        time::OffsetDateTime::parse(&entry.requested_at, &Rfc3339)
            .map(|requested| {
                let age = time::OffsetDateTime::now_utc() - requested;
                age > self.limits.issue_deadline
            })
            .unwrap_or(true)
    }

    /// Reads the ledger until the issuance has its ARN, or until `deadline`
    /// (then the caller issues with the same token).
    async fn wait_for_arn(
        &self,
        sha: &str,
        mut entry: LedgerEntry,
        deadline: Instant,
    ) -> Result<LedgerEntry, String> {
        let mut wait = FIRST_POLL;
        while entry.certificate_arn.is_none() && Instant::now() + wait < deadline {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
            entry = match self.ledger.get(sha).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return Err("the issuance ledger lost the entry".into()),
                Err(e) => return Err(format!("the issuance ledger: {e}")),
            };
        }
        Ok(entry)
    }

    fn timed_out(&self, operation: &str) -> String {
        format!(
            "ACM PCA did not issue within {} ms ({operation}); the same request later returns the same certificate",
            self.limits.issue_deadline.as_millis()
        )
    }

    /// Polls GetCertificate with doubling waits while ACM PCA says
    /// RequestInProgress, until the deadline.
    async fn fetch_until(&self, arn: &str, deadline: Instant) -> Result<CertificatePem, String> {
        let mut wait = FIRST_POLL;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.pca.fetch(arn)).await {
                Ok(Ok(Some(pem))) => return Ok(pem),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(format!("ACM PCA refused: {e}")),
                Err(_) => return Err(self.timed_out("GetCertificate")),
            }
            let now = Instant::now();
            if now + wait >= deadline {
                return Err(self.timed_out("GetCertificate: RequestInProgress"));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
        }
    }

    async fn audit_issued(&self, issued: &Issued, request_id: &str, index: usize) {
        let certificate_id = certificate_id(&issued.certificate_pem);
        let event = AuditEvent {
            kind: "CERTIFICATE_ISSUANCE".into(),
            serial_number: Some(issued.serial_number.clone()),
            decision: Decision::Allow,
            reason: "ISSUED".into(),
            detail: format!("{} until {}", issued.certificate_arn, issued.not_after),
            region: self.limits.region.clone(),
            certificate_id,
            claim_certificate_id: None,
            client_id: None,
            request_id: format!("{request_id}/{index}"),
            time: geoprov_shared::clock::now_rfc3339(),
        };
        self.append(event).await;
    }

    async fn audit_refusal(
        &self,
        serial: Option<&str>,
        refusal: &ItemResponse,
        request_id: &str,
        index: usize,
    ) {
        let ItemResponse::Refused { error, .. } = refusal else {
            return;
        };
        // Only a well-formed serial is attributed to a device.
        let serial = serial.filter(|s| SerialNumber::try_from(*s).is_ok());
        let event = AuditEvent {
            kind: "CERTIFICATE_ISSUANCE".into(),
            serial_number: serial.map(str::to_owned),
            decision: Decision::Deny,
            reason: error.code.as_str().into(),
            detail: error.message.clone(),
            region: self.limits.region.clone(),
            certificate_id: None,
            claim_certificate_id: None,
            client_id: None,
            request_id: format!("{request_id}/{index}"),
            time: geoprov_shared::clock::now_rfc3339(),
        };
        self.append(event).await;
    }

    async fn append(&self, event: AuditEvent) {
        let event = event.bounded();
        if let Err(e) = self.registry.append(&event).await {
            tracing::error!(error = %e, reason = %event.reason, "audit event not written");
            MetricLine::new(SERVICE)
                .metric("AuditWriteFailed", 1.0, Unit::Count)
                .emit();
        }
    }

    fn emit_metrics(&self, response: &Response, elapsed: Duration) {
        let items: Vec<&ItemResponse> = match response {
            Response::One(item) => vec![item],
            Response::Batch { results } => results.iter().collect(),
        };
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
