//! The issuance ledger: one item per CSR, keyed by the SHA-256 of its DER,
//! in the geoprov table (`pk = CSR#<sha256>`, `sk = ISSUANCE`).
//!
//! An issuance is recorded as PENDING before IssueCertificate is called (a
//! conditional put, so two invocations with the same CSR cannot both start
//! one), gets its certificate ARN as soon as ACM PCA answers, and turns ISSUED
//! with the certificate's serial and notAfter once fetched. A repeat of the
//! same request finds the ARN here and returns the same certificate.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use geoprov_shared::registry::RegistryError;
use geoprov_shared::table::{is_condition_failed, PARTITION_KEY, SORT_KEY};
use serde::{Deserialize, Serialize};

pub const ISSUANCE_SK: &str = "ISSUANCE";

pub fn csr_pk(csr_sha256: &str) -> String {
    format!("CSR#{csr_sha256}")
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
}

pub trait IssuanceLedger {
    fn get(
        &self,
        csr_sha256: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, RegistryError>> + Send;

    /// Records a PENDING issuance unless the CSR has one already; `true` when
    /// this call created it.
    fn begin(
        &self,
        csr_sha256: &str,
        entry: &LedgerEntry,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Records the certificate ARN unless one is recorded already; returns
    /// the ARN the ledger holds afterwards.
    fn set_arn(
        &self,
        csr_sha256: &str,
        certificate_arn: &str,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send;

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

    async fn begin(&self, csr_sha256: &str, entry: &LedgerEntry) -> Result<bool, RegistryError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(entry).map_err(|e| malformed(csr_sha256, e))?;
        item.extend(Self::key(csr_sha256));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(RegistryError::dynamo("PutItem", err)),
        }
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
