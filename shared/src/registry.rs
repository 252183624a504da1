//! The device registry: what the functions read about a device, the one
//! write that consumes a provisioning, and the audit log beside them.
//!
//! Decision code sees only the traits; [`DynamoRegistry`] is the DynamoDB
//! adapter (tested against moto), `memory::MemoryRegistry` an in-process
//! copy with the same semantics for unit tests of the handlers: a test
//! double, compiled only for this crate's tests and behind the `test-util`
//! feature, never into a function.

pub mod dynamo;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;

use std::future::Future;

pub use dynamo::DynamoRegistry;

use crate::audit::AuditEvent;
use crate::claims::TrustedClaim;
use crate::device::{DeviceRecord, RegionName, SerialNumber};

/// The registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        operation: &'static str,
        message: String,
    },
    #[error("stored item {key} is malformed: {message}")]
    MalformedItem { key: String, message: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0} is not in the registry")]
    UnknownDevice(String),
}

impl RegistryError {
    /// An item under `key` that cannot be read or written as geoprov expects.
    pub fn malformed(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        RegistryError::MalformedItem {
            key: key.into(),
            message: message.to_string(),
        }
    }

    pub fn dynamo<E>(operation: &'static str, err: E) -> Self
    where
        E: std::error::Error + 'static,
    {
        RegistryError::Dynamo {
            operation,
            message: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
        }
    }
}

/// One provisioning to record: the quota check and this region's count are
/// a single conditional write, together with the decision's audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningCommit {
    pub serial: SerialNumber,
    pub certificate_id: String,
    pub region: RegionName,
    /// The write holds only while this region's count is below it: the quota
    /// less the provisionings read in the other regions.
    pub region_limit: u32,
    /// The profile's version as read; the write holds only if it is still
    /// the same (no import, block or unblock since).
    pub profile_version: Option<String>,
    /// The commit guard's version as read; the write holds only if no other
    /// commit, in any region, changed it since.
    pub guard: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// How a conditional provisioning write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// State updated and audit event written, atomically.
    Committed,
    /// The device changed since it was read (another provisioning, a status
    /// change, a concurrent transaction): nothing was written; read again.
    Conflict,
}

/// Reads devices and records provisionings.
pub trait DeviceRegistry: Send + Sync {
    /// The device's profile and state, read consistently; `None` when the
    /// device is not registered.
    fn device(
        &self,
        serial: &SerialNumber,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, RegistryError>> + Send;

    /// Consumes one provisioning in `commit.region` if, at write time, the
    /// profile is still the version read and ALLOWED, no operator block
    /// exists, the region's count is below `commit.region_limit`, and
    /// `commit.certificate_id` has not been provisioned in the region;
    /// appends `audit` in the same transaction.
    fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<CommitOutcome, RegistryError>> + Send;

    /// The claim certificates in the table, whatever their window (the
    /// caller decides what is trusted now).
    fn trusted_claims(
        &self,
    ) -> impl Future<Output = Result<Vec<TrustedClaim>, RegistryError>> + Send;

    /// Settles a commit whose answer was lost (a timeout, a dropped
    /// connection): if it applied, nothing is written and the answer is
    /// [`Settled::Committed`]; if not, one transaction fences the
    /// certificate in the region, so the lost commit can never apply, and
    /// appends `denial`: [`Settled::Fenced`]. Either way the decision has
    /// exactly one audit outcome.
    fn settle_lost_commit(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> impl Future<Output = Result<Settled, RegistryError>> + Send;

    /// Appends `denial` for a lost commit that could not be settled, in one
    /// transaction with the check that the commit did not apply (its
    /// certificate is not provisioned in the region): `Ok(true)` when
    /// appended, `Ok(false)` when the commit applied (its own event is the
    /// decision's outcome) or the settlement's denial is already there.
    /// Either way the decision has exactly one audit outcome.
    fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;
}

/// How a lost commit was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The commit had applied (with its ALLOWED audit event).
    Committed,
    /// The certificate is provisioned in the region, but by another
    /// decision (device activation's commit of the same certificate): this
    /// decision's commit never applied, and has no event yet.
    CommittedElsewhere,
    /// The commit had not applied, and now never will; the denial is audited.
    Fenced,
}

/// The append-only audit log.
pub trait AuditLog: Send + Sync {
    fn append(&self, event: &AuditEvent) -> impl Future<Output = Result<(), RegistryError>> + Send;
}
