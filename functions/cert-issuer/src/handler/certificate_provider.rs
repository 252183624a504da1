//! IoT's certificate-provider event, answered by the issuer's checks, quota
//! and ledger within IoT's budget (the event's format is `crate::provider`).

use std::time::{Duration, Instant};

use geoprov_shared::claims::{ClaimsRead, effective_trust, is_certificate_id};
use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use serde_json::Value;

use super::audit::emit_claim_denial;
use super::{Caller, CertIssuer};
use crate::ledger::IssuanceLedger;
use crate::pca::CertificateAuthority;
use crate::provider::{self, ProviderAnswer, ProviderEvent, ProviderRefusal};
use crate::request::IssueRequest;
use crate::response::{ErrorCode, ItemResponse};

/// The longest an audit write may hold a certificate-provider answer, which
/// IoT waits 5 s for.
pub const PROVIDER_AUDIT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a certificate-provider answer may take of IoT's 5 s for everything
/// but the audit event: the trusted claims, the registry, the ledger, ACM
/// PCA; the audit event ([`PROVIDER_AUDIT_TIMEOUT`]) and the runtime take
/// the rest.
pub const PROVIDER_ISSUE_BUDGET: Duration = Duration::from_millis(3500);

impl<P, L, R> CertIssuer<P, L, R>
where
    P: CertificateAuthority + Sync,
    L: IssuanceLedger + Sync,
    R: DeviceRegistry + AuditLog + Sync,
{
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
        let item = self.provider_request(payload, &mut caller, deadline).await;
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
                    emit_claim_denial(claim);
                }
                Err(refusal)
            }
        }
    }

    /// The issuer request in IoT's event: the serial its client id names,
    /// for a connection of a claim certificate trusted now; `caller` learns
    /// the connection's client id and claim certificate.
    async fn provider_request(
        &self,
        payload: Value,
        caller: &mut Caller,
        deadline: Instant,
    ) -> Result<IssueRequest, ItemResponse> {
        match serde_json::from_value::<ProviderEvent>(payload) {
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
                ));
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
}
