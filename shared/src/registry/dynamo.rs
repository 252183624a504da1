//! DynamoDB adapter of the registry and the audit log (key layout in [`crate::table`]).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Put, PutRequest, TransactWriteItem, Update,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;

use super::{AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError};
use crate::audit::AuditEvent;
use crate::device::{is_thing_name, DeviceProfile, DeviceRecord, ProvisioningState, SerialNumber};
use crate::table::{
    audit_pk, audit_sk, device_pk, provisioning_pk, AUDIT_SK_PREFIX, PARTITION_KEY, PROFILE_SK,
    SORT_KEY, STATE_SK, UNATTRIBUTED_AUDIT_PK,
};

type Item = HashMap<String, AttributeValue>;

/// Most items one BatchWriteItem call takes.
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of resending unprocessed items before an import gives up.
const UNPROCESSED_RETRIES: u32 = 8;

/// The registry in the geoprov DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    table: String,
}

impl DynamoRegistry {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoRegistry {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes profiles (a manifest), replacing earlier profiles of the same
    /// serials and never touching provisioning state. Unprocessed items are
    /// sent again with backoff. Returns how many profiles were written.
    pub async fn put_profiles(&self, profiles: &[DeviceProfile]) -> Result<usize, RegistryError> {
        for chunk in profiles.chunks(BATCH_WRITE_LIMIT) {
            let mut requests = chunk
                .iter()
                .map(|profile| {
                    let item = profile_item(profile)?;
                    let put = PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map_err(|e| RegistryError::dynamo("BatchWriteItem", e))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, RegistryError>>()?;
            let mut attempt = 0;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| RegistryError::dynamo("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                attempt += 1;
                if attempt > UNPROCESSED_RETRIES {
                    return Err(RegistryError::Unavailable(format!(
                        "{} items still unprocessed after {UNPROCESSED_RETRIES} retries",
                        requests.len()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
        }
        Ok(profiles.len())
    }

    /// The audit events of one serial, oldest first.
    pub async fn audit_events(
        &self,
        serial: &SerialNumber,
    ) -> Result<Vec<AuditEvent>, RegistryError> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", s(audit_pk(serial.as_str())))
            .expression_attribute_values(":prefix", s(AUDIT_SK_PREFIX))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| RegistryError::dynamo("Query", e))?;
        items.into_iter().map(from_item).collect()
    }
}

impl DeviceRegistry for DynamoRegistry {
    async fn device(&self, serial: &SerialNumber) -> Result<Option<DeviceRecord>, RegistryError> {
        // The profile and the state live in partitions of their own (so IAM
        // can let the hook write one and not the other); two consistent reads
        // at once cost one round trip. The commit re-checks both anyway.
        // Boxed: two SDK futures side by side nest too deep for rustc's
        // layout queries in the hook's async stack.
        let (profile, state) = tokio::try_join!(
            Box::pin(self.get(device_pk(serial.as_str()), PROFILE_SK)),
            Box::pin(self.get(provisioning_pk(serial.as_str()), STATE_SK)),
        )?;
        let Some(profile) = profile else {
            return Ok(None);
        };
        Ok(Some(DeviceRecord {
            profile: from_item::<DeviceProfile>(profile)?,
            provisioning: match state {
                Some(item) => from_item::<ProvisioningState>(item)?,
                None => ProvisioningState::default(),
            },
        }))
    }

    async fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        let still_allowed = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(device_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(PROFILE_SK))
            .condition_expression("attribute_exists(#pk) AND #status = :allowed")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":allowed", s("ALLOWED"))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        let consume = Update::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(provisioning_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(STATE_SK))
            .update_expression(
                "SET #count = if_not_exists(#count, :zero) + :one, #serial = :serial, \
                 #lastRegion = :region, #lastCert = :cert, #lastAt = :at \
                 ADD #certs :certSet",
            )
            .condition_expression(
                "(attribute_not_exists(#count) OR #count < :quota) AND NOT contains(#certs, :cert)",
            )
            .expression_attribute_names("#count", "provisionCount")
            .expression_attribute_names("#serial", "serialNumber")
            .expression_attribute_names("#lastRegion", "lastRegion")
            .expression_attribute_names("#lastCert", "lastCertificateId")
            .expression_attribute_names("#lastAt", "lastProvisionedAt")
            .expression_attribute_names("#certs", "provisionedCertificateIds")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":quota", n(commit.quota))
            .expression_attribute_values(":serial", s(commit.serial.as_str()))
            .expression_attribute_values(":region", s(commit.region.as_str()))
            .expression_attribute_values(":cert", s(&commit.certificate_id))
            .expression_attribute_values(
                ":certSet",
                AttributeValue::Ss(vec![commit.certificate_id.clone()]),
            )
            .expression_attribute_values(":at", s(&commit.at))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        let audit_put = self.audit_put(audit)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(still_allowed)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(consume).build())
            .transact_items(TransactWriteItem::builder().put(audit_put).build())
            .send()
            .await;
        let Err(err) = result else {
            return Ok(CommitOutcome::Committed);
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            let reasons = cancelled.cancellation_reasons();
            // No reasons: the cause is unknown, and a fresh read decides again.
            if reasons.is_empty() || reasons.iter().any(is_retryable_cancellation) {
                return Ok(CommitOutcome::Conflict);
            }
        }
        Err(RegistryError::dynamo("TransactWriteItems", err))
    }
}

impl AuditLog for DynamoRegistry {
    async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(event)?))
            .condition_expression(APPEND_ONLY)
            .expression_attribute_names("#sk", SORT_KEY)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("PutItem", e))?;
        Ok(())
    }
}

impl DynamoRegistry {
    /// One item, read consistently.
    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, RegistryError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .key(PARTITION_KEY, s(pk))
            .key(SORT_KEY, s(sk))
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("GetItem", e))?;
        Ok(out.item)
    }

    fn audit_put(&self, event: &AuditEvent) -> Result<Put, RegistryError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(audit_item(event)?))
            .condition_expression(APPEND_ONLY)
            .expression_attribute_names("#sk", SORT_KEY)
            .build()
            .map_err(|e| RegistryError::dynamo("PutItem", e))
    }
}

/// Audit events are append-only: never overwrite an earlier one.
const APPEND_ONLY: &str = "attribute_not_exists(#sk)";

fn audit_item(event: &AuditEvent) -> Result<Item, RegistryError> {
    let pk = match event.serial_number.as_deref() {
        Some(serial) if is_thing_name(serial) => audit_pk(serial),
        _ => UNATTRIBUTED_AUDIT_PK.to_owned(),
    };
    let mut item: Item = to_item(event)?;
    item.insert(PARTITION_KEY.into(), s(pk));
    item.insert(SORT_KEY.into(), s(audit_sk(&event.time, &event.request_id)));
    Ok(item)
}

/// A cancellation caused by the device's state (or a concurrent writer),
/// which a fresh read and a new decision resolve.
fn is_retryable_cancellation(reason: &CancellationReason) -> bool {
    matches!(
        reason.code(),
        Some("ConditionalCheckFailed") | Some("TransactionConflict")
    )
}

fn profile_item(profile: &DeviceProfile) -> Result<Item, RegistryError> {
    let mut item: Item = to_item(profile)?;
    item.insert(
        PARTITION_KEY.into(),
        s(device_pk(profile.serial_number.as_str())),
    );
    item.insert(SORT_KEY.into(), s(PROFILE_SK));
    Ok(item)
}

fn to_item<T: serde::Serialize>(value: &T) -> Result<Item, RegistryError> {
    serde_dynamo::to_item(value).map_err(|e| RegistryError::malformed("(new item)", e))
}

fn from_item<T: serde::de::DeserializeOwned>(mut item: Item) -> Result<T, RegistryError> {
    let key = format!(
        "{}/{}",
        item.get(PARTITION_KEY)
            .and_then(|v| v.as_s().ok())
            .map_or("?", |v| v),
        item.get(SORT_KEY)
            .and_then(|v| v.as_s().ok())
            .map_or("?", |v| v)
    );
    item.remove(PARTITION_KEY);
    item.remove(SORT_KEY);
    serde_dynamo::from_item(item).map_err(|e| RegistryError::malformed(key, e))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u32) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
