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

mod approval;
mod audit;
mod certificate_provider;
mod deadline;
mod issuance;

use std::time::{Duration, Instant};

use geoprov_shared::registry::{AuditLog, DeviceRegistry};
use serde_json::Value;

use crate::config::IssuerConfig;
use crate::ledger::IssuanceLedger;
use crate::pca::CertificateAuthority;
use crate::request::{self, IssueRequest, Parsed};
use crate::response::{ErrorCode, ItemResponse, Response};

pub use audit::certificate_id;
pub use certificate_provider::{PROVIDER_AUDIT_TIMEOUT, PROVIDER_ISSUE_BUDGET};
pub use deadline::{Deadline, FINISH_MARGIN};
pub use issuance::{IDEMPOTENCY_WINDOW, certificate_facts, idempotency_token};

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

    /// `ISSUANCE_FAILED` with a short `reason` for the caller; the detail
    /// (SDK messages, ARNs, table names) goes to the log only.
    fn failed(&self, serial: &str, reason: &str, detail: impl std::fmt::Display) -> ItemResponse {
        tracing::error!(serial_number = %serial, reason, detail = %detail, "issuance failed");
        ItemResponse::refused(Some(serial), ErrorCode::IssuanceFailed, reason)
    }
}
