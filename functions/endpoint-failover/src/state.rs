//! Failover state in the geoprov table: the health of each region, when each
//! record was last changed, and the lock that lets one invocation at a time
//! change the records.
//!
//! | item            | pk                     | sk                       |
//! |-----------------|------------------------|--------------------------|
//! | region health   | `FAILOVER#<record>`    | `REGION#<region>`        |
//! | record ledger   | `FAILOVER#<record>`    | `RECORD#<setIdentifier>` |
//! | change lock     | `FAILOVER#<record>`    | `LOCK`                   |
//!
//! Health items carry a version and are written only if the version is still
//! the one read, so concurrent invocations never lose each other's signals.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use geoprov_shared::device::RegionName;
use geoprov_shared::registry::RegistryError;
use geoprov_shared::table::{is_condition_failed, PARTITION_KEY, SORT_KEY};
use serde::{Deserialize, Serialize};

use crate::health::{RegionHealth, Signal, Thresholds};

const REGION_SK_PREFIX: &str = "REGION#";
const RECORD_SK_PREFIX: &str = "RECORD#";
const LOCK_SK: &str = "LOCK";
/// Attempts of a conditional health update before giving up.
const MAX_UPDATE_ATTEMPTS: u32 = 20;
/// How many event ids a region's health remembers, to count a redelivered
/// event once. EventBridge delivers at least once; redeliveries come soon.
const REMEMBERED_EVENTS: usize = 32;

pub fn failover_pk(record_name: &str) -> String {
    format!("FAILOVER#{record_name}")
}

/// What the stored state says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    pub health: BTreeMap<RegionName, RegionHealth>,
    /// Epoch seconds of each record's last change by geoprov.
    pub last_change: BTreeMap<String, i64>,
}

/// A change to one region's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionUpdate {
    Observe(Signal, Thresholds),
    Drain(bool),
}

impl RegionUpdate {
    pub fn apply(self, health: RegionHealth) -> RegionHealth {
        match self {
            RegionUpdate::Observe(signal, thresholds) => health.observe(signal, thresholds),
            RegionUpdate::Drain(drained) => health.drained(drained),
        }
    }
}

/// A record changed by an invocation, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    pub set_identifier: String,
    pub target: RegionName,
}

/// Where the failover keeps its state.
pub trait FailoverStore {
    fn load(&self) -> impl Future<Output = Result<StoredState, RegistryError>> + Send;

    /// Applies `update` to the region's stored health with a conditional
    /// write, reading again on conflict; returns the health written. An update
    /// from an event id already applied to this region is not applied again.
    fn update_region(
        &self,
        region: &RegionName,
        update: RegionUpdate,
        event_id: Option<&str>,
    ) -> impl Future<Output = Result<RegionHealth, RegistryError>> + Send;

    /// Takes the change lock for `lease` unless another owner holds an
    /// unexpired one.
    fn try_lock(
        &self,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    fn unlock(&self, owner: &str) -> impl Future<Output = Result<(), RegistryError>> + Send;

    fn record_changes(
        &self,
        changes: &[RecordChange],
        changed_at: i64,
        change_id: &str,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthItem {
    pk: String,
    sk: String,
    healthy: bool,
    consecutive_healthy: u32,
    consecutive_unhealthy: u32,
    drained: bool,
    version: u64,
    updated_at: String,
    /// Ids of the latest events applied, newest last.
    #[serde(default)]
    recent_events: Vec<String>,
}

impl HealthItem {
    fn health(&self) -> RegionHealth {
        RegionHealth {
            healthy: self.healthy,
            consecutive_healthy: self.consecutive_healthy,
            consecutive_unhealthy: self.consecutive_unhealthy,
            drained: self.drained,
        }
    }
}

/// The failover state in the geoprov DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoFailoverStore {
    client: Client,
    table: String,
    pk: String,
}

impl DynamoFailoverStore {
    pub fn new(client: Client, table: impl Into<String>, record_name: &str) -> Self {
        DynamoFailoverStore {
            client,
            table: table.into(),
            pk: failover_pk(record_name),
        }
    }

    fn key(&self, sk: String) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PARTITION_KEY.to_owned(), AttributeValue::S(self.pk.clone())),
            (SORT_KEY.to_owned(), AttributeValue::S(sk)),
        ])
    }

    async fn read_region(&self, region: &RegionName) -> Result<Option<HealthItem>, RegistryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(format!("{REGION_SK_PREFIX}{region}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("GetItem", e))?
            .item;
        item.map(|item| {
            serde_dynamo::from_item(item)
                .map_err(|e| RegistryError::malformed(format!("{REGION_SK_PREFIX}{region}"), e))
        })
        .transpose()
    }
}

impl FailoverStore for DynamoFailoverStore {
    async fn load(&self) -> Result<StoredState, RegistryError> {
        let mut state = StoredState::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", AttributeValue::S(self.pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| RegistryError::dynamo("Query", e))?;
            for item in page.items() {
                let Some(AttributeValue::S(sk)) = item.get(SORT_KEY) else {
                    continue;
                };
                if let Some(region) = sk.strip_prefix(REGION_SK_PREFIX) {
                    let region = RegionName::try_from(region)
                        .map_err(|e| RegistryError::malformed(sk, e))?;
                    let parsed: HealthItem = serde_dynamo::from_item(item.clone())
                        .map_err(|e| RegistryError::malformed(sk, e))?;
                    state.health.insert(region, parsed.health());
                } else if let Some(id) = sk.strip_prefix(RECORD_SK_PREFIX) {
                    let changed_at = match item.get("changedAt") {
                        Some(AttributeValue::N(n)) => n.parse().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| RegistryError::malformed(sk, "changedAt is not a number"))?;
                    state.last_change.insert(id.to_owned(), changed_at);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(state),
            }
        }
    }

    async fn update_region(
        &self,
        region: &RegionName,
        update: RegionUpdate,
        event_id: Option<&str>,
    ) -> Result<RegionHealth, RegistryError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let stored = self.read_region(region).await?;
            let current = stored.as_ref().map(HealthItem::health).unwrap_or_default();
            let version = stored.as_ref().map(|item| item.version);
            let mut recent_events = stored.map(|item| item.recent_events).unwrap_or_default();
            if let Some(id) = event_id {
                if recent_events.iter().any(|seen| seen == id) {
                    return Ok(current);
                }
                recent_events.push(id.to_owned());
                let excess = recent_events.len().saturating_sub(REMEMBERED_EVENTS);
                recent_events.drain(..excess);
            }
            let next = update.apply(current);
            let item = HealthItem {
                pk: self.pk.clone(),
                sk: format!("{REGION_SK_PREFIX}{region}"),
                healthy: next.healthy,
                consecutive_healthy: next.consecutive_healthy,
                consecutive_unhealthy: next.consecutive_unhealthy,
                drained: next.drained,
                version: version.map_or(1, |v| v + 1),
                updated_at: geoprov_shared::clock::now_rfc3339(),
                recent_events,
            };
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(serde_dynamo::to_item(&item).map_err(|e| {
                    RegistryError::malformed(format!("{REGION_SK_PREFIX}{region}"), e)
                })?));
            let request = match version {
                None => request.condition_expression("attribute_not_exists(#pk)"),
                Some(v) => request
                    .condition_expression("#version = :version")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":version", AttributeValue::N(v.to_string())),
            };
            let request = match version {
                None => request.expression_attribute_names("#pk", PARTITION_KEY),
                Some(_) => request,
            };
            match request.send().await {
                Ok(_) => return Ok(next),
                Err(err) if is_condition_failed(&err) => continue,
                Err(err) => return Err(RegistryError::dynamo("PutItem", err)),
            }
        }
        Err(RegistryError::Unavailable(format!(
            "health of {region}: {MAX_UPDATE_ATTEMPTS} conflicting writes in a row"
        )))
    }

    async fn try_lock(&self, owner: &str, lease: Duration) -> Result<bool, RegistryError> {
        let now = geoprov_shared::clock::now_epoch_millis();
        let mut item = self.key(LOCK_SK.to_owned());
        item.insert("owner".into(), AttributeValue::S(owner.to_owned()));
        item.insert(
            "expiresAt".into(),
            AttributeValue::N((now + lease.as_millis() as i64).to_string()),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #expires < :now OR #owner = :owner")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#expires", "expiresAt")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(RegistryError::dynamo("PutItem", err)),
        }
    }

    async fn unlock(&self, owner: &str) -> Result<(), RegistryError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(LOCK_SK.to_owned())))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone took over an expired lease: it is theirs now.
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(RegistryError::dynamo("DeleteItem", err)),
        }
    }

    async fn record_changes(
        &self,
        changes: &[RecordChange],
        changed_at: i64,
        change_id: &str,
    ) -> Result<(), RegistryError> {
        use futures::{StreamExt, TryStreamExt};
        let items: Vec<HashMap<String, AttributeValue>> = changes
            .iter()
            .map(|change| {
                let mut item = self.key(format!("{RECORD_SK_PREFIX}{}", change.set_identifier));
                item.insert(
                    "target".into(),
                    AttributeValue::S(change.target.to_string()),
                );
                item.insert(
                    "changedAt".into(),
                    AttributeValue::N(changed_at.to_string()),
                );
                item.insert("changeId".into(), AttributeValue::S(change_id.to_owned()));
                item
            })
            .collect();
        futures::stream::iter(items)
            .map(|item| {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .send()
            })
            .buffer_unordered(8)
            .map_err(|e| RegistryError::dynamo("PutItem", e))
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
    }
}
