//! The issuance ledger: one item per CSR, keyed by the SHA-256 of its DER,
//! in the geoprov table (`pk = CSR#<sha256>`, `sk = ISSUANCE`).
//!
//! An issuance is recorded as PENDING before IssueCertificate is called (a
//! conditional put, so two invocations with the same CSR cannot both start
//! one), gets its certificate ARN as soon as ACM PCA answers, and turns ISSUED
//! with the certificate's serial and notAfter once fetched. A repeat of the
//! same request finds the ARN here and returns the same certificate.
//!
//! Each device's issuances are counted per region (`pk = ISSUANCE#<serial>`,
//! `sk = REGION#<region>`), like the hook's provisioning counters: in a
//! global table, two regions writing one counter would lose increments (last
//! writer wins), while each region writing only its own item and the quota
//! comparing the sum loses none. A new CSR's PENDING entry and its region's
//! increment are one transaction, the increment conditional on the count
//! that was read, so concurrent issuances in a region cannot both take the
//! last unit of quota. A repeat of a recorded CSR is not counted.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use geoprov_shared::registry::RegistryError;
use geoprov_shared::table::{PARTITION_KEY, SORT_KEY, is_condition_failed, region_sk};
use serde::{Deserialize, Serialize};

pub const ISSUANCE_SK: &str = "ISSUANCE";

pub fn csr_pk(csr_sha256: &str) -> String {
    format!("CSR#{csr_sha256}")
}

/// The partition of a device's issuance counters, one item per region.
pub fn issuance_count_pk(serial: &str) -> String {
    format!("ISSUANCE#{serial}")
}

/// Attempts of a counted begin when another issuance of the device in the
/// same region commits between the read and the write.
const BEGIN_ATTEMPTS: usize = 4;

/// The device's issuance quota in this region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota<'a> {
    pub serial: &'a str,
    pub region: &'a str,
    /// Distinct CSRs the device may have certificates for, over every region.
    pub max: u32,
}

/// What a counted begin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// This call recorded the PENDING entry and counted it.
    Started,
    /// The CSR has an entry already: follow it, nothing counted.
    Recorded,
    /// The device has `used` issuances of `max`: nothing written.
    QuotaExceeded { used: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IssuanceStatus {
    Pending,
    Issued,
}

/// One CSR's issuance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub serial_number: String,
    pub status: IssuanceStatus,
    pub idempotency_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// Hex serial of the issued certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// The region whose issuer began the issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The device's `allowedRegions` when the certificate was asked for
    /// (absent: any region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<Vec<String>>,
}

pub trait IssuanceLedger {
    fn get(
        &self,
        csr_sha256: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, RegistryError>> + Send;

    /// Records a PENDING issuance and counts it against the device's quota,
    /// unless the CSR has an entry already or the quota is used up.
    fn begin(
        &self,
        csr_sha256: &str,
        entry: &LedgerEntry,
        quota: &Quota<'_>,
    ) -> impl Future<Output = Result<Begun, RegistryError>> + Send;

    /// Records the certificate ARN unless one is recorded already; returns
    /// the ARN the ledger holds afterwards.
    fn set_arn(
        &self,
        csr_sha256: &str,
        certificate_arn: &str,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send;

    /// Replaces the PENDING entry's token `old` by `new`, if it still has
    /// `old` and no ARN; `true` when this call did.
    fn renew_token(
        &self,
        csr_sha256: &str,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    fn complete(
        &self,
        csr_sha256: &str,
        certificate_serial: &str,
        not_after: &str,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
}

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    fn key(csr_sha256: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                PARTITION_KEY.to_owned(),
                AttributeValue::S(csr_pk(csr_sha256)),
            ),
            (
                SORT_KEY.to_owned(),
                AttributeValue::S(ISSUANCE_SK.to_owned()),
            ),
        ])
    }
}

impl DynamoLedger {
    /// The device's issuance count per region.
    async fn issuance_counts(&self, serial: &str) -> Result<HashMap<String, u32>, RegistryError> {
        let pk = issuance_count_pk(serial);
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("Query", e))?
            .items
            .unwrap_or_default();
        items
            .iter()
            .map(|item| {
                let region = match item.get(SORT_KEY) {
                    Some(AttributeValue::S(sk)) => sk.trim_start_matches("REGION#").to_owned(),
                    _ => return Err(RegistryError::malformed(&pk, "no sort key")),
                };
                let count = match item.get("count") {
                    Some(AttributeValue::N(n)) => n
                        .parse::<u32>()
                        .map_err(|e| RegistryError::malformed(&pk, e))?,
                    _ => return Err(RegistryError::malformed(&pk, "no count")),
                };
                Ok((region, count))
            })
            .collect()
    }

    /// The PENDING entry and the region's increment from `own`, in one
    /// transaction. `None` when the count moved since it was read.
    async fn put_counted(
        &self,
        csr_sha256: &str,
        entry: &LedgerEntry,
        quota: &Quota<'_>,
        own: u32,
    ) -> Result<Option<Begun>, RegistryError> {
        const OP: &str = "TransactWriteItems";
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(entry).map_err(|e| malformed(csr_sha256, e))?;
        item.extend(Self::key(csr_sha256));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .build()
            .map_err(|e| RegistryError::dynamo(OP, e))?;
        let count = Update::builder()
            .table_name(&self.table)
            .key(
                PARTITION_KEY,
                AttributeValue::S(issuance_count_pk(quota.serial)),
            )
            .key(SORT_KEY, AttributeValue::S(region_sk(quota.region)))
            .update_expression("SET #count = :next")
            .condition_expression(match own {
                0 => "attribute_not_exists(#count)",
                _ => "#count = :own",
            })
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":next", AttributeValue::N((own + 1).to_string()));
        let count = match own {
            0 => count,
            _ => count.expression_attribute_values(":own", AttributeValue::N(own.to_string())),
        }
        .build()
        .map_err(|e| RegistryError::dynamo(OP, e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Some(Begun::Started)),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            let failed = |index: usize| {
                cancelled
                    .cancellation_reasons()
                    .get(index)
                    .and_then(|r| r.code())
                    == Some("ConditionalCheckFailed")
            };
            if failed(0) {
                return Ok(Some(Begun::Recorded));
            }
            // The count moved, or another transaction on these items was
            // in flight (TransactionConflict): read again.
            let conflict = cancelled
                .cancellation_reasons()
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"));
            if failed(1) || conflict {
                return Ok(None);
            }
        }
        Err(RegistryError::dynamo(OP, err))
    }
}

fn malformed(csr_sha256: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::malformed(csr_pk(csr_sha256), e)
}

impl IssuanceLedger for DynamoLedger {
    async fn get(&self, csr_sha256: &str) -> Result<Option<LedgerEntry>, RegistryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(csr_sha256)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("GetItem", e))?
            .item;
        item.map(|item| serde_dynamo::from_item(item).map_err(|e| malformed(csr_sha256, e)))
            .transpose()
    }

    async fn begin(
        &self,
        csr_sha256: &str,
        entry: &LedgerEntry,
        quota: &Quota<'_>,
    ) -> Result<Begun, RegistryError> {
        for _ in 0..BEGIN_ATTEMPTS {
            if self.get(csr_sha256).await?.is_some() {
                return Ok(Begun::Recorded);
            }
            let counts = self.issuance_counts(quota.serial).await?;
            let used: u32 = counts.values().sum();
            if used >= quota.max {
                return Ok(Begun::QuotaExceeded { used });
            }
            let own = counts.get(quota.region).copied().unwrap_or(0);
            match self.put_counted(csr_sha256, entry, quota, own).await? {
                Some(begun) => return Ok(begun),
                None => continue,
            }
        }
        Err(RegistryError::Dynamo {
            operation: "TransactWriteItems",
            message: format!(
                "the issuance count of {} kept changing over {BEGIN_ATTEMPTS} attempts",
                quota.serial
            ),
        })
    }

    async fn set_arn(
        &self,
        csr_sha256: &str,
        certificate_arn: &str,
    ) -> Result<String, RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(csr_sha256)))
            .update_expression("SET #arn = :arn")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#arn)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#arn", "certificateArn")
            .expression_attribute_values(":arn", AttributeValue::S(certificate_arn.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(certificate_arn.to_owned()),
            Err(err) if is_condition_failed(&err) => self
                .get(csr_sha256)
                .await?
                .and_then(|entry| entry.certificate_arn)
                .ok_or_else(|| malformed(csr_sha256, "the issuance disappeared")),
            Err(err) => Err(RegistryError::dynamo("UpdateItem", err)),
        }
    }

    async fn renew_token(
        &self,
        csr_sha256: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(csr_sha256)))
            .update_expression("SET #token = :new, #requestedAt = :now")
            .condition_expression("#token = :old AND attribute_not_exists(#arn)")
            .expression_attribute_names("#token", "idempotencyToken")
            .expression_attribute_names("#requestedAt", "requestedAt")
            .expression_attribute_names("#arn", "certificateArn")
            .expression_attribute_values(":new", AttributeValue::S(new.to_owned()))
            .expression_attribute_values(":old", AttributeValue::S(old.to_owned()))
            .expression_attribute_values(
                ":now",
                AttributeValue::S(geoprov_shared::clock::now_rfc3339()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(RegistryError::dynamo("UpdateItem", err)),
        }
    }

    async fn complete(
        &self,
        csr_sha256: &str,
        certificate_serial: &str,
        not_after: &str,
    ) -> Result<(), RegistryError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(csr_sha256)))
            .update_expression(
                "SET #status = :issued, #serial = :serial, #notAfter = :notAfter, #issuedAt = :now",
            )
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#serial", "certificateSerial")
            .expression_attribute_names("#notAfter", "notAfter")
            .expression_attribute_names("#issuedAt", "issuedAt")
            .expression_attribute_values(":issued", AttributeValue::S("ISSUED".into()))
            .expression_attribute_values(
                ":serial",
                AttributeValue::S(certificate_serial.to_owned()),
            )
            .expression_attribute_values(":notAfter", AttributeValue::S(not_after.to_owned()))
            .expression_attribute_values(
                ":now",
                AttributeValue::S(geoprov_shared::clock::now_rfc3339()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| RegistryError::dynamo("UpdateItem", e))
    }
}
