//! The geoprov table: one DynamoDB table, keys `pk` and `sk` (both strings).
//!
//! | item                   | pk                       | sk                          |
//! |------------------------|--------------------------|-----------------------------|
//! | device profile         | `DEVICE#<serial>`        | `PROFILE`                   |
//! | operator block         | `DEVICE#<serial>`        | `BLOCK`                     |
//! | provisionings in a region | `PROVISIONING#<serial>` | `REGION#<region>`         |
//! | commit guard           | `PROVISIONING#<serial>`  | `GUARD`                     |
//! | audit event            | `AUDIT#DEVICE#<serial>`  | `AUDIT#<time>#<request id>` |
//! | audit, no valid serial | `AUDIT#UNATTRIBUTED#<0-15>` | `AUDIT#<time>#<request id>` |
//! | failover state         | `FAILOVER#<record>`      | `REGION#..`, `RECORD#..`, `LOCK` |
//! | issuance ledger        | `CSR#<sha256>`           | `ISSUANCE`                  |
//! | trusted claim certificate | `CLAIMS`              | `CLAIM#<certificate id>`    |
//!
//! Each item family has a partition key prefix of its own, so that IAM can
//! scope every function to the families it owns with `dynamodb:LeadingKeys`
//! (which matches the partition key only): the hook may update provisioning
//! state but not a profile (where an operator's block lives), and no function
//! may update or delete an audit event.
//!
//! The profile is what the factory manifest says and is replaced on import;
//! an operator's block is an item of its own that no import touches; the
//! provisionings are what the hook writes, one item per region so that a
//! global table's replication (last writer wins per item) cannot lose an
//! increment. Keeping them apart lets a manifest be imported again without
//! resetting anyone's quota or lifting anyone's block. Audit events without a
//! valid serial spread over 16 partitions, so a flood of malformed requests
//! makes no hot partition. The
//! failover's items are described in `geoprov_failover::state`, the
//! issuance ledger in `cert_issuer::ledger`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};

use crate::registry::RegistryError;

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const PROFILE_SK: &str = "PROFILE";
pub const BLOCK_SK: &str = "BLOCK";
pub const REGION_SK_PREFIX: &str = "REGION#";
/// The device's commit guard, beside its per-region counts.
pub const GUARD_SK: &str = "GUARD";
pub const AUDIT_SK_PREFIX: &str = "AUDIT#";
pub const UNATTRIBUTED_AUDIT_PK: &str = "AUDIT#UNATTRIBUTED";
/// How many partitions audit events without a valid serial spread over.
pub const UNATTRIBUTED_AUDIT_SHARDS: u32 = 16;

/// The partition key prefix of each item family, as IAM's
/// `dynamodb:LeadingKeys` conditions in the templates name them.
pub const DEVICE_PK_PREFIX: &str = "DEVICE#";
pub const PROVISIONING_PK_PREFIX: &str = "PROVISIONING#";
pub const AUDIT_PK_PREFIX: &str = "AUDIT#";

/// Whether a DynamoDB call failed only because its condition expression did
/// not hold (the item was not in the state the write required), whatever the
/// operation.
pub fn is_condition_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
    matches!(err, aws_sdk_dynamodb::error::SdkError::ServiceError(_))
        && err.code() == Some("ConditionalCheckFailedException")
}

pub fn device_pk(serial: &str) -> String {
    format!("{DEVICE_PK_PREFIX}{serial}")
}

pub fn provisioning_pk(serial: &str) -> String {
    format!("{PROVISIONING_PK_PREFIX}{serial}")
}

/// The partition of a device's audit events: `AUDIT#DEVICE#<serial>`, which
/// no serial can make equal to [`UNATTRIBUTED_AUDIT_PK`].
pub fn audit_pk(serial: &str) -> String {
    format!("{AUDIT_PK_PREFIX}{DEVICE_PK_PREFIX}{serial}")
}

pub fn region_sk(region: &str) -> String {
    format!("{REGION_SK_PREFIX}{region}")
}

/// The partition of an audit event without a valid serial:
/// `AUDIT#UNATTRIBUTED#<0-15>`, chosen by the request id (FNV-1a, stable
/// across builds).
pub fn unattributed_audit_pk(request_id: &str) -> String {
    let hash = request_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!(
        "{UNATTRIBUTED_AUDIT_PK}#{}",
        hash % UNATTRIBUTED_AUDIT_SHARDS
    )
}

/// A new profile version: unique per write of a profile.
pub fn new_version() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn audit_sk(time: &str, request_id: &str) -> String {
    format!("{AUDIT_SK_PREFIX}{time}#{request_id}")
}

/// Creates the table with the deployed key schema (on-demand billing), and
/// waits until it is active. An existing table is left as it is.
pub async fn create_table(client: &Client, table: &str) -> Result<bool, RegistryError> {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema element has its required fields")
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition has its required fields")
    };
    let created = match client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PARTITION_KEY, KeyType::Hash))
        .key_schema(key(SORT_KEY, KeyType::Range))
        .attribute_definitions(attr(PARTITION_KEY))
        .attribute_definitions(attr(SORT_KEY))
        .send()
        .await
    {
        Ok(_) => true,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            false
        }
        Err(err) => return Err(RegistryError::dynamo("CreateTable", err)),
    };
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(created);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(RegistryError::Unavailable(format!(
        "table {table} did not become ACTIVE within 60 s"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattributed_audit_events_spread_over_every_shard_and_stay_put() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400 {
            let pk = unattributed_audit_pk(&format!("request-{i}"));
            let shard: u32 = pk
                .strip_prefix("AUDIT#UNATTRIBUTED#")
                .expect("the unattributed prefix")
                .parse()
                .expect("a shard number");
            assert!(shard < UNATTRIBUTED_AUDIT_SHARDS);
            seen.insert(shard);
            // The same request id always lands in the same shard.
            assert_eq!(pk, unattributed_audit_pk(&format!("request-{i}")));
        }
        assert_eq!(seen.len(), UNATTRIBUTED_AUDIT_SHARDS as usize);
    }

    #[test]
    fn no_serial_makes_a_device_audit_partition_an_unattributed_one() {
        assert_ne!(audit_pk("UNATTRIBUTED"), UNATTRIBUTED_AUDIT_PK);
        assert!(audit_pk("SN-1").starts_with(AUDIT_PK_PREFIX));
    }
}
