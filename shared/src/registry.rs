//! The device registry: what the functions read about a device, the one
//! write that consumes a provisioning, and the audit log beside them.
//!
//! Decision code sees only the traits; [`DynamoRegistry`] is the DynamoDB
//! adapter (tested against moto), [`memory::MemoryRegistry`] an in-process
//! copy with the same semantics for unit tests of the handlers.

pub mod dynamo;
pub mod memory;

use std::future::Future;

pub use dynamo::DynamoRegistry;

use crate::audit::AuditEvent;
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

/// One provisioning to record: the quota check and the state update are a
/// single conditional write, together with the decision's audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningCommit {
    pub serial: SerialNumber,
    pub certificate_id: String,
    pub region: RegionName,
    /// The quota in force: the write succeeds only below it.
    pub quota: u32,
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

    /// Consumes one provisioning if, at write time, the device is still
    /// ALLOWED, under `commit.quota`, and `commit.certificate_id` has not been
    /// provisioned already; appends `audit` in the same transaction.
    fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<CommitOutcome, RegistryError>> + Send;
}

/// The append-only audit log.
pub trait AuditLog: Send + Sync {
    fn append(&self, event: &AuditEvent) -> impl Future<Output = Result<(), RegistryError>> + Send;
}
