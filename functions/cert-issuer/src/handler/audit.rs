//! Audit events and metric lines.

use std::collections::BTreeMap;
use std::time::Duration;

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use geoprov_shared::telemetry::{MetricLine, Unit};
use sha2::{Digest, Sha256};

use super::{Caller, CertIssuer};
use crate::SERVICE;
use crate::ledger::IssuanceLedger;
use crate::pca::CertificateAuthority;
use crate::response::{Issued, ItemResponse};

impl<P, L, R> CertIssuer<P, L, R>
where
    P: CertificateAuthority + Sync,
    L: IssuanceLedger + Sync,
    R: DeviceRegistry + AuditLog + Sync,
{
    pub(super) async fn audit_issued(&self, issued: &Issued, caller: &Caller, at: (&str, usize)) {
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

    pub(super) async fn audit_refusal(
        &self,
        refusal: &ItemResponse,
        caller: &Caller,
        at: (&str, usize),
    ) {
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

    pub(super) fn emit_metrics(&self, items: &[&ItemResponse], elapsed: Duration) {
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

/// One `ClaimDenials` for the claim certificate `claim`.
pub(super) fn emit_claim_denial(claim: &str) {
    MetricLine::new(SERVICE)
        .dimension("ClaimCertificateId", claim)
        .metric("ClaimDenials", 1.0, Unit::Count)
        .emit();
}

/// The AWS IoT certificate id of a PEM certificate: SHA-256 of its DER, hex.
pub fn certificate_id(certificate_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()).ok()?;
    Some(hex::encode(Sha256::digest(&pem.contents)))
}
