//! DynamoDB adapter of the registry and the audit log (key layout in [`crate::table`]).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Put, PutRequest, TransactWriteItem, Update,
    WriteRequest,
};

use super::{AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError, Settled};
use crate::audit::{AuditEvent, bounded_field};
use crate::claims::{CLAIM_SK_PREFIX, CLAIMS_PK, TrustedClaim, claim_sk};
use crate::device::{
    DeviceProfile, DeviceRecord, OperatorBlock, ProvisioningState, Provisionings, RegionName,
    SerialNumber, commit_token, is_thing_name,
};
use crate::table::{
    AUDIT_SK_PREFIX, BLOCK_SK, GUARD_SK, PARTITION_KEY, PROFILE_SK, REGION_SK_PREFIX, SORT_KEY,
    audit_pk, audit_sk, device_pk, new_version, provisioning_pk, region_sk, unattributed_audit_pk,
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

    /// Blocks a device by an operator: the block is an item of its own,
    /// which no import touches, written with a new profile version in one
    /// transaction, so a provisioning decided before it cannot commit. A
    /// serial not in the registry is refused and nothing is written.
    pub async fn block(
        &self,
        serial: &SerialNumber,
        block: &OperatorBlock,
    ) -> Result<(), RegistryError> {
        let mut item: Item = to_item(block)?;
        item.insert(PARTITION_KEY.into(), s(device_pk(serial.as_str())));
        item.insert(SORT_KEY.into(), s(BLOCK_SK));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        self.with_new_version(serial, TransactWriteItem::builder().put(put).build())
            .await
    }

    /// Lifts an operator's block (nothing to lift is not an error), with a
    /// new profile version.
    pub async fn unblock(&self, serial: &SerialNumber) -> Result<(), RegistryError> {
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(device_pk(serial.as_str())))
            .key(SORT_KEY, s(BLOCK_SK))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        self.with_new_version(serial, TransactWriteItem::builder().delete(delete).build())
            .await
    }

    /// `change`, and a new version of the device's profile, which must
    /// exist, in one transaction.
    async fn with_new_version(
        &self,
        serial: &SerialNumber,
        change: TransactWriteItem,
    ) -> Result<(), RegistryError> {
        let bump = Update::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(device_pk(serial.as_str())))
            .key(SORT_KEY, s(PROFILE_SK))
            .update_expression("SET #version = :version")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", s(new_version()))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(change)
            .transact_items(TransactWriteItem::builder().update(bump).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                    err.as_service_error()
                {
                    let profile_missing = cancelled
                        .cancellation_reasons()
                        .get(1)
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed");
                    if profile_missing {
                        return Err(RegistryError::UnknownDevice(serial.to_string()));
                    }
                }
                Err(RegistryError::dynamo("TransactWriteItems", err))
            }
        }
    }

    /// Adds a trusted claim certificate; `false` when it is there already
    /// (left as it is: retire it and add another to change it).
    pub async fn add_claim(&self, claim: &TrustedClaim) -> Result<bool, RegistryError> {
        let mut item: Item = to_item(claim)?;
        item.insert(PARTITION_KEY.into(), s(CLAIMS_PK));
        item.insert(SORT_KEY.into(), s(claim_sk(&claim.certificate_id)));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if crate::table::is_condition_failed(&err) => Ok(false),
            Err(err) => Err(RegistryError::dynamo("PutItem", err)),
        }
    }

    /// Retires a claim certificate for good; `false` when it was retired
    /// already. An id not in the table gets a retired entry of its own, so
    /// that retirement overrides the hook's bootstrap list too.
    pub async fn retire_claim(
        &self,
        certificate_id: &str,
        at: &str,
    ) -> Result<bool, RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(CLAIMS_PK))
            .key(SORT_KEY, s(claim_sk(certificate_id)))
            .update_expression(
                "SET #retired = :at, #id = if_not_exists(#id, :id), \
                 #from = if_not_exists(#from, :at), #until = if_not_exists(#until, :at), \
                 #added = if_not_exists(#added, :at)",
            )
            .condition_expression("attribute_not_exists(#retired)")
            .expression_attribute_names("#retired", "retiredAt")
            .expression_attribute_names("#id", "certificateId")
            .expression_attribute_names("#from", "notBefore")
            .expression_attribute_names("#until", "notAfter")
            .expression_attribute_names("#added", "addedAt")
            .expression_attribute_values(":at", s(at))
            .expression_attribute_values(":id", s(certificate_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if crate::table::is_condition_failed(&err) => Ok(false),
            Err(err) => Err(RegistryError::dynamo("UpdateItem", err)),
        }
    }

    /// Every device's profile, and whether an operator's block stands on
    /// it: a Scan of the table for profile and block items (an operator's
    /// fleet-wide report, not a device's path).
    pub async fn profiles(&self) -> Result<Vec<(DeviceProfile, bool)>, RegistryError> {
        let items = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .filter_expression("#sk = :profile OR #sk = :block")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":profile", s(PROFILE_SK))
            .expression_attribute_values(":block", s(BLOCK_SK))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| RegistryError::dynamo("Scan", e))?;
        let partition = |item: &Item| {
            item.get(PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let blocked: std::collections::HashSet<String> = items
            .iter()
            .filter(|item| {
                item.get(SORT_KEY)
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(BLOCK_SK)
            })
            .map(partition)
            .collect();
        items
            .into_iter()
            .filter(|item| {
                item.get(SORT_KEY)
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(PROFILE_SK)
            })
            .map(|item| {
                let block = blocked.contains(&partition(&item));
                from_item::<DeviceProfile>(item).map(|profile| (profile, block))
            })
            .collect()
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
        // The profile and its block, and the provisionings of every region,
        // live in partitions of their own (so IAM can let the hook write one
        // and not the other); two consistent queries at once cost one round
        // trip. The commit re-checks what it depends on anyway. Boxed: two
        // SDK futures side by side nest too deep for rustc's layout queries
        // in the hook's async stack.
        let (device_items, provisioning_items) = tokio::try_join!(
            Box::pin(self.partition(device_pk(serial.as_str()))),
            Box::pin(self.partition(provisioning_pk(serial.as_str()))),
        )?;
        let mut profile = None;
        let mut block = None;
        for item in device_items {
            match sort_key(&item) {
                Some(PROFILE_SK) => profile = Some(from_item::<DeviceProfile>(item)?),
                Some(BLOCK_SK) => block = Some(from_item::<OperatorBlock>(item)?),
                _ => {}
            }
        }
        let Some(profile) = profile else {
            return Ok(None);
        };
        let mut provisioning = Provisionings::default();
        for item in provisioning_items {
            if sort_key(&item) == Some(GUARD_SK) {
                provisioning.guard = item.get("guard").and_then(|v| v.as_s().ok()).cloned();
                continue;
            }
            let Some(region) = sort_key(&item).and_then(|sk| sk.strip_prefix(REGION_SK_PREFIX))
            else {
                continue;
            };
            let region = RegionName::try_from(region)
                .map_err(|e| RegistryError::malformed(region_sk(region), e.0))?;
            provisioning
                .regions
                .insert(region, from_item::<ProvisioningState>(item)?);
        }
        Ok(Some(DeviceRecord {
            profile,
            block,
            provisioning,
        }))
    }

    async fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        let still_allowed = self.still_allowed(commit)?;
        let not_blocked = self.not_blocked(commit)?;
        let consume = self.consume(commit, audit)?;
        let guard = self.guard(commit)?;
        let audit_put = self.audit_put(audit)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(still_allowed)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(not_blocked)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(consume).build())
            .transact_items(TransactWriteItem::builder().update(guard).build())
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

    /// Every `CLAIM#<id>` item, parsed one by one: an item that does not
    /// parse stands for its id retired (logged), so one bad item neither
    /// fails every read nor widens trust.
    async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
        let mut claims = Vec::new();
        for item in self.partition(CLAIMS_PK.to_owned()).await? {
            let Some(id) = sort_key(&item)
                .and_then(|sk| sk.strip_prefix(CLAIM_SK_PREFIX))
                .map(str::to_owned)
            else {
                continue;
            };
            match from_item::<TrustedClaim>(item) {
                Ok(claim) if claim.certificate_id == id => claims.push(claim),
                Ok(_) => {
                    tracing::error!(certificate_id = %bounded_field(&id), "a trusted claim item names another id; it counts as retired");
                    claims.push(crate::claims::unreadable_claim(&id));
                }
                Err(e) => {
                    tracing::error!(certificate_id = %bounded_field(&id), error = %e, "a trusted claim item does not parse; it counts as retired");
                    claims.push(crate::claims::unreadable_claim(&id));
                }
            }
        }
        Ok(claims)
    }

    async fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<bool, RegistryError> {
        let not_committed = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(provisioning_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(region_sk(commit.region.as_str())))
            .condition_expression("attribute_not_exists(#pk) OR NOT contains(#certs, :cert)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#certs", "provisionedCertificateIds")
            .expression_attribute_values(":cert", s(&commit.certificate_id))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(not_committed)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.audit_put(denial)?)
                    .build(),
            )
            .send()
            .await;
        let Err(err) = result else {
            return Ok(true);
        };
        // Either condition failing is an outcome already recorded: the
        // commit applied (its own event), or this denial is there.
        let refused = err
            .as_service_error()
            .and_then(|e| match e {
                TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                _ => None,
            })
            .is_some_and(|c| {
                c.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
            });
        match refused {
            true => Ok(false),
            false => Err(RegistryError::dynamo("TransactWriteItems", err)),
        }
    }

    async fn settle_lost_commit(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<Settled, RegistryError> {
        let fence = Update::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(provisioning_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(region_sk(commit.region.as_str())))
            .update_expression("ADD #fenced :certSet")
            .condition_expression("NOT contains(#certs, :cert)")
            .expression_attribute_names("#fenced", "fencedCertificateIds")
            .expression_attribute_names("#certs", "provisionedCertificateIds")
            .expression_attribute_values(":cert", s(&commit.certificate_id))
            .expression_attribute_values(
                ":certSet",
                AttributeValue::Ss(vec![commit.certificate_id.clone()]),
            )
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(fence).build())
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.audit_put(denial)?)
                    .build(),
            )
            .send()
            .await;
        let Err(err) = result else {
            return Ok(Settled::Fenced);
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            // The certificate is in the region's provisioned set: the commit
            // applied, with its own audit event, if the set of commits names
            // this decision; else another decision committed it.
            if cancelled
                .cancellation_reasons()
                .first()
                .and_then(|r| r.code())
                == Some("ConditionalCheckFailed")
            {
                let record = self.device(&commit.serial).await?;
                let ours = record.is_some_and(|d| {
                    d.provisioning.committed_by(
                        &commit.region,
                        &commit.certificate_id,
                        &denial.request_id,
                    )
                });
                return Ok(match ours {
                    true => Settled::Committed,
                    false => Settled::CommittedElsewhere,
                });
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
    /// The transaction's check that the device's profile is still ALLOWED
    /// and of the version the decision read.
    fn still_allowed(&self, commit: &ProvisioningCommit) -> Result<ConditionCheck, RegistryError> {
        let pk = device_pk(commit.serial.as_str());
        let profile_unchanged = match &commit.profile_version {
            Some(_) => "attribute_exists(#pk) AND #status = :allowed AND #version = :version",
            None => {
                "attribute_exists(#pk) AND #status = :allowed AND attribute_not_exists(#version)"
            }
        };
        let mut still_allowed = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(&pk))
            .key(SORT_KEY, s(PROFILE_SK))
            .condition_expression(profile_unchanged)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":allowed", s("ALLOWED"));
        if let Some(version) = &commit.profile_version {
            still_allowed = still_allowed.expression_attribute_values(":version", s(version));
        }
        still_allowed
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))
    }

    /// The transaction's check that no operator block exists.
    fn not_blocked(&self, commit: &ProvisioningCommit) -> Result<ConditionCheck, RegistryError> {
        let pk = device_pk(commit.serial.as_str());
        ConditionCheck::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(&pk))
            .key(SORT_KEY, s(BLOCK_SK))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))
    }

    /// The transaction's update that consumes one provisioning in the
    /// commit's region, under its limit, once per certificate.
    fn consume(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<Update, RegistryError> {
        Update::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(provisioning_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(region_sk(commit.region.as_str())))
            .update_expression(
                "SET #count = if_not_exists(#count, :zero) + :one, \
             #lastCert = :cert, #lastAt = :at \
             ADD #certs :certSet, #committedBy :token",
            )
            .condition_expression(
                "(attribute_not_exists(#count) OR #count < :limit) \
             AND NOT contains(#certs, :cert) AND NOT contains(#fenced, :cert)",
            )
            .expression_attribute_names("#fenced", "fencedCertificateIds")
            .expression_attribute_names("#count", "provisionCount")
            .expression_attribute_names("#lastCert", "lastCertificateId")
            .expression_attribute_names("#lastAt", "lastProvisionedAt")
            .expression_attribute_names("#certs", "provisionedCertificateIds")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(commit.region_limit))
            .expression_attribute_values(":cert", s(&commit.certificate_id))
            .expression_attribute_values(
                ":certSet",
                AttributeValue::Ss(vec![commit.certificate_id.clone()]),
            )
            .expression_attribute_values(":at", s(&commit.at))
            .expression_attribute_names("#committedBy", "committedBy")
            .expression_attribute_values(
                ":token",
                AttributeValue::Ss(vec![commit_token(
                    &commit.certificate_id,
                    &audit.request_id,
                )]),
            )
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))
    }

    /// The transaction's update of the device's guard, from the version the
    /// decision saw.
    fn guard(&self, commit: &ProvisioningCommit) -> Result<Update, RegistryError> {
        Update::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(provisioning_pk(commit.serial.as_str())))
            .key(SORT_KEY, s(GUARD_SK))
            .update_expression("SET #guard = :next")
            .condition_expression(match commit.guard {
                Some(_) => "#guard = :seen",
                None => "attribute_not_exists(#guard)",
            })
            .expression_attribute_names("#guard", "guard")
            .set_expression_attribute_values(Some(
                [
                    Some((":next".to_owned(), s(new_version()))),
                    commit
                        .guard
                        .as_ref()
                        .map(|seen| (":seen".to_owned(), s(seen))),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ))
            .build()
            .map_err(|e| RegistryError::dynamo("TransactWriteItems", e))
    }

    /// Every item of a partition, read consistently.
    async fn partition(&self, pk: String) -> Result<Vec<Item>, RegistryError> {
        self.client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(pk))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| RegistryError::dynamo("Query", e))
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
        _ => unattributed_audit_pk(&event.request_id),
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

fn sort_key(item: &Item) -> Option<&str> {
    item.get(SORT_KEY)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A profile as an import writes it: with a new version, so that a
/// provisioning decided on the profile as it was cannot commit.
fn profile_item(profile: &DeviceProfile) -> Result<Item, RegistryError> {
    let mut item: Item = to_item(profile)?;
    item.insert("version".into(), s(new_version()));
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
