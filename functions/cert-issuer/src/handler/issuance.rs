//! Issuing through the ledger: the ledger entry begun within the device's
//! quota (or another invocation's, followed), ACM PCA's IssueCertificate
//! under the entry's idempotency token, GetCertificate polled until the
//! certificate is there, and the entry completed.

use std::time::{Duration, Instant};

use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use geoprov_shared::telemetry::{MetricLine, Unit};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use super::approval::Approved;
use super::{CertIssuer, FINISH_MARGIN};
use crate::SERVICE;
use crate::ledger::{Begun, IssuanceLedger, IssuanceStatus, LedgerEntry, Quota};
use crate::pca::{CertificateAuthority, CertificatePem};
use crate::response::{ErrorCode, Issued, ItemResponse};

/// The first wait between two GetCertificate polls; it doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

/// ACM PCA's idempotency window: "Idempotency tokens for IssueCertificate
/// time out after five minutes" (AWS CLI reference, acm-pca
/// issue-certificate). Within it, the same token returns the same
/// certificate; after it, the same token would mint another.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(5 * 60);

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
    /// Issues through the ledger: the same CSR always gets the same
    /// certificate.
    pub(super) async fn issue(&self, approved: Approved, deadline: Instant) -> ItemResponse {
        let entry = match self.ledger_entry(&approved, deadline).await {
            Ok(entry) => entry,
            Err(refusal) => return refusal,
        };
        let arn = match entry.certificate_arn {
            Some(arn) => arn,
            None => match self
                .issue_with_pca(&approved, &entry.idempotency_token, deadline)
                .await
            {
                Ok(arn) => arn,
                Err(refusal) => return refusal,
            },
        };
        self.deliver(&approved, arn, entry.status, deadline).await
    }

    /// The request's ledger entry: begun here within the device's quota, or
    /// the one another invocation began, followed while it has no ARN.
    async fn ledger_entry(
        &self,
        approved: &Approved,
        deadline: Instant,
    ) -> Result<LedgerEntry, ItemResponse> {
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
                return Err(ItemResponse::refused(
                    Some(serial),
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{serial} has certificates for {used} CSRs, its limit is {}",
                        quota.max
                    ),
                ));
            }
            Err(e) => return Err(failed("the issuance ledger could not be written", &e)),
        };
        let mut entry = match started_here {
            true => pending,
            false => match self.ledger.get(sha).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return Err(failed("the issuance ledger lost the entry", &sha)),
                Err(e) => return Err(failed("the issuance ledger could not be read", &e)),
            },
        };
        if !started_here && entry.certificate_arn.is_none() {
            entry = match self.follow(sha, entry, deadline).await {
                Ok(entry) => entry,
                Err((reason, detail)) => return Err(failed(reason, &detail)),
            };
        }
        Ok(entry)
    }

    /// IssueCertificate with the entry's token by `deadline`, and the ARN
    /// recorded in the ledger.
    async fn issue_with_pca(
        &self,
        approved: &Approved,
        token: &str,
        deadline: Instant,
    ) -> Result<String, ItemResponse> {
        let serial = approved.serial.as_str();
        let failed =
            |reason: &str, detail: &dyn std::fmt::Display| self.failed(serial, reason, detail);
        let sha = &approved.csr.sha256;
        let issued = tokio::time::timeout_at(
            deadline.into(),
            self.pca
                .issue(&approved.csr.pem, serial, approved.validity_days, token),
        )
        .await;
        let arn = match issued {
            Ok(Ok(arn)) => arn,
            Ok(Err(e)) => return Err(failed("ACM PCA refused the request", &e)),
            Err(_) => return Err(self.timed_out(serial, "IssueCertificate")),
        };
        match self.ledger.set_arn(sha, &arn).await {
            Ok(recorded) => Ok(recorded),
            Err(e) => Err(failed(
                "issued, but not recorded; the same request later returns it",
                &format!("{arn}: {e}"),
            )),
        }
    }

    /// The certificate behind `arn`, fetched by `deadline`; the entry is
    /// marked ISSUED unless its `status` already is.
    async fn deliver(
        &self,
        approved: &Approved,
        arn: String,
        status: IssuanceStatus,
        deadline: Instant,
    ) -> ItemResponse {
        let serial = approved.serial.as_str();
        let failed =
            |reason: &str, detail: &dyn std::fmt::Display| self.failed(serial, reason, detail);
        let sha = &approved.csr.sha256;
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
                );
            }
        };
        if status != IssuanceStatus::Issued
            && let Err(e) = self
                .ledger
                .complete(sha, &certificate_serial, &not_after)
                .await
        {
            tracing::warn!(error = %e, certificate_arn = %arn, "issuance not marked ISSUED; a retry will");
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

    pub(super) fn timed_out(&self, serial: &str, operation: &str) -> ItemResponse {
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
