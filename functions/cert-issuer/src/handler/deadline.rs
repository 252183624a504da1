//! The invocation's time budget: an item is started only while it can
//! finish before the invocation's deadline; the others are `RETRY_LATER`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use geoprov_shared::registry::{AuditLog, DeviceRegistry};

use super::{Caller, CertIssuer};
use crate::ledger::IssuanceLedger;
use crate::pca::CertificateAuthority;
use crate::request::IssueRequest;
use crate::response::{ErrorCode, ItemResponse};

/// What a batch item needs after its deadline: the audit event (one
/// DynamoDB operation, at most [`crate::DYNAMODB_OPERATION_TIMEOUT`]) and
/// the answer.
pub const FINISH_MARGIN: Duration = Duration::from_secs(6);

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

impl<P, L, R> CertIssuer<P, L, R>
where
    P: CertificateAuthority + Sync,
    L: IssuanceLedger + Sync,
    R: DeviceRegistry + AuditLog + Sync,
{
    /// Starts the item only if it can finish before the invocation's
    /// deadline; `RETRY_LATER` otherwise.
    pub(super) async fn answer_in_time(
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
}
