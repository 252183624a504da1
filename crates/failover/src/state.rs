//! Failover state in the geoprov table: the health of each region, the
//! ledger of what each location's chain was set to, and the fenced lease that
//! lets one invocation at a time change the records.
//!
//! | item            | pk                     | sk                       |
//! |-----------------|------------------------|--------------------------|
//! | region health   | `FAILOVER#<record>`    | `REGION#<region>`        |
//! | record ledger   | `FAILOVER#<record>`    | `RECORD#<setIdentifier>` |
//! | change lease    | `FAILOVER#<record>`    | `LOCK`                   |
//!
//! Health items carry a version and are written only if the version is still
//! the one read, so concurrent invocations never lose each other's signals.
//! The lease carries a fencing token that grows with every acquisition and is
//! never reset: a writer whose lease lapsed finds another token there, and
//! its ledger write (conditional on its token) fails.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem,
};
use geoprov_shared::device::RegionName;
use geoprov_shared::registry::RegistryError;
use geoprov_shared::table::{PARTITION_KEY, SORT_KEY, is_condition_failed};
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
/// A transaction holds at most 100 items: the lease check and 99 entries.
const LEDGER_ENTRIES_PER_TRANSACTION: usize = 99;

pub fn failover_pk(record_name: &str) -> String {
    format!("FAILOVER#{record_name}")
}

/// What the stored state says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    pub health: BTreeMap<RegionName, RegionHealth>,
}

/// A change to one region's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionUpdate {
    /// A signal true at `at` (epoch milliseconds), applied at `now` (epoch seconds).
    Observe {
        signal: Signal,
        thresholds: Thresholds,
        at: i64,
        now: i64,
    },
    Drain(bool),
}

impl RegionUpdate {
    pub fn apply(self, health: RegionHealth) -> RegionHealth {
        match self {
            RegionUpdate::Observe {
                signal,
                thresholds,
                at,
                now,
            } => health.observe(signal, thresholds, at, now),
            RegionUpdate::Drain(drained) => health.drained(drained),
        }
    }

    /// Whether the update is older than the newest signal already applied.
    pub fn is_stale_for(&self, health: &RegionHealth) -> bool {
        match self {
            RegionUpdate::Observe { at, .. } => health.is_stale(*at),
            RegionUpdate::Drain(_) => false,
        }
    }
}

/// What became of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Applied(RegionHealth),
    /// The event id was applied before (a redelivery): nothing changed.
    Duplicate(RegionHealth),
    /// A newer signal was applied before: nothing changed.
    Stale(RegionHealth),
}

impl UpdateOutcome {
    pub fn health(&self) -> RegionHealth {
        match self {
            UpdateOutcome::Applied(h) | UpdateOutcome::Duplicate(h) | UpdateOutcome::Stale(h) => *h,
        }
    }
}

/// The change lease an invocation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    /// The fencing token: greater than every earlier holder's.
    pub fence: u64,
    /// Epoch milliseconds.
    pub expires_at: i64,
}

/// What a location's chain was set to, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub set_identifier: String,
    pub chain: Vec<RegionName>,
}

/// A ledger write was refused.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the change lease (fence {0}) is no longer held")]
    LeaseLost(u64),
    #[error(transparent)]
    Store(#[from] RegistryError),
}

/// Where the failover keeps its state.
pub trait FailoverStore {
    fn load(&self) -> impl Future<Output = Result<StoredState, RegistryError>> + Send;

    /// Applies `update` to the region's stored health with a conditional
    /// write, reading again on conflict. An update from an event id already
    /// applied, or older than the newest signal applied, changes nothing.
    fn update_region(
        &self,
        region: &RegionName,
        update: RegionUpdate,
        event_id: Option<&str>,
    ) -> impl Future<Output = Result<UpdateOutcome, RegistryError>> + Send;

    /// Takes the change lease for `duration` unless another owner holds an
    /// unexpired one; the lease gets a new fencing token.
    fn try_lock(
        &self,
        owner: &str,
        duration: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, RegistryError>> + Send;

    /// Whether `lease` is still the lease, unexpired.
    fn holds(&self, lease: &Lease) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Ends the lease early (it keeps its token).
    fn unlock(&self, lease: &Lease) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Records the chains written, only while `lease` holds.
    fn record_changes(
        &self,
        lease: &Lease,
        entries: &[LedgerEntry],
        changed_at: i64,
        change_id: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    health: RegionHealth,
    version: u64,
    updated_at: String,
    /// Ids of the latest events applied, newest last.
    #[serde(default)]
    recent_events: Vec<String>,
}

/// The failover state in the geoprov DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoFailoverStore {
    client: Client,
    table: String,
    pk: String,
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl DynamoFailoverStore {
    pub fn new(client: Client, table: impl Into<String>, record_name: &str) -> Self {
        DynamoFailoverStore {
            client,
            table: table.into(),
            pk: failover_pk(record_name),
        }
    }

    /// The table the state is in.
    pub fn table(&self) -> &str {
        &self.table
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

    /// The lease condition: this owner, this token, not expired.
    fn lease_check(&self, lease: &Lease, now: i64) -> Result<ConditionCheck, RegistryError> {
        ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(LOCK_SK.to_owned())))
            .condition_expression("#owner = :owner AND #fence = :fence AND #expires > :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#expires", "expiresAt")
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
            .expression_attribute_values(":fence", n(lease.fence))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(|e| RegistryError::Unavailable(e.to_string()))
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
                    state.health.insert(region, parsed.health);
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
    ) -> Result<UpdateOutcome, RegistryError> {
        let sk = format!("{REGION_SK_PREFIX}{region}");
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let stored = self.read_region(region).await?;
            let current = stored.as_ref().map(|item| item.health).unwrap_or_default();
            let version = stored.as_ref().map(|item| item.version);
            let mut recent_events = stored.map(|item| item.recent_events).unwrap_or_default();
            if let Some(id) = event_id {
                if recent_events.iter().any(|seen| seen == id) {
                    return Ok(UpdateOutcome::Duplicate(current));
                }
                recent_events.push(id.to_owned());
                let excess = recent_events.len().saturating_sub(REMEMBERED_EVENTS);
                recent_events.drain(..excess);
            }
            if update.is_stale_for(&current) {
                return Ok(UpdateOutcome::Stale(current));
            }
            let next = update.apply(current);
            let item = HealthItem {
                pk: self.pk.clone(),
                sk: sk.clone(),
                health: next,
                version: version.map_or(1, |v| v + 1),
                updated_at: geoprov_shared::clock::now_rfc3339(),
                recent_events,
            };
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(
                    serde_dynamo::to_item(&item).map_err(|e| RegistryError::malformed(&sk, e))?,
                ));
            let request = match version {
                None => request
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PARTITION_KEY),
                Some(v) => request
                    .condition_expression("#version = :version")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":version", n(v)),
            };
            match request.send().await {
                Ok(_) => return Ok(UpdateOutcome::Applied(next)),
                Err(err) if is_condition_failed(&err) => continue,
                Err(err) => return Err(RegistryError::dynamo("PutItem", err)),
            }
        }
        Err(RegistryError::Unavailable(format!(
            "health of {region}: {MAX_UPDATE_ATTEMPTS} conflicting writes in a row"
        )))
    }

    async fn try_lock(
        &self,
        owner: &str,
        duration: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let now = geoprov_shared::clock::now_epoch_millis();
        let expires_at = now + duration.as_millis() as i64;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(LOCK_SK.to_owned())))
            .update_expression("SET #owner = :owner, #expires = :expires ADD #fence :one")
            .condition_expression("attribute_not_exists(#pk) OR #expires < :now OR #owner = :owner")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#expires", "expiresAt")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", n(expires_at))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let fence = match output.attributes().and_then(|a| a.get("fence")) {
                    Some(AttributeValue::N(v)) => v.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| RegistryError::malformed(LOCK_SK, "fence is not a number"))?;
                Ok(Some(Lease {
                    owner: owner.to_owned(),
                    fence,
                    expires_at,
                }))
            }
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(RegistryError::dynamo("UpdateItem", err)),
        }
    }

    async fn holds(&self, lease: &Lease) -> Result<bool, RegistryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(LOCK_SK.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RegistryError::dynamo("GetItem", e))?
            .item
            .unwrap_or_default();
        let number = |name: &str| match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
            _ => None,
        };
        let now = geoprov_shared::clock::now_epoch_millis();
        Ok(
            item.get("owner") == Some(&AttributeValue::S(lease.owner.clone()))
                && number("fence") == Some(lease.fence as i64)
                && number("expiresAt").is_some_and(|at| at > now),
        )
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(LOCK_SK.to_owned())))
            .update_expression("SET #expires = :zero")
            .condition_expression("#owner = :owner AND #fence = :fence")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#expires", "expiresAt")
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
            .expression_attribute_values(":fence", n(lease.fence))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone took over an expired lease: it is theirs now.
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(RegistryError::dynamo("UpdateItem", err)),
        }
    }

    async fn record_changes(
        &self,
        lease: &Lease,
        entries: &[LedgerEntry],
        changed_at: i64,
        change_id: &str,
    ) -> Result<(), LedgerError> {
        for chunk in entries.chunks(LEDGER_ENTRIES_PER_TRANSACTION) {
            let now = geoprov_shared::clock::now_epoch_millis();
            let mut items = vec![
                TransactWriteItem::builder()
                    .condition_check(self.lease_check(lease, now)?)
                    .build(),
            ];
            for entry in chunk {
                let mut item = self.key(format!("{RECORD_SK_PREFIX}{}", entry.set_identifier));
                item.insert(
                    "chain".into(),
                    AttributeValue::L(
                        entry
                            .chain
                            .iter()
                            .map(|r| AttributeValue::S(r.to_string()))
                            .collect(),
                    ),
                );
                item.insert("changedAt".into(), n(changed_at));
                item.insert("changeId".into(), AttributeValue::S(change_id.to_owned()));
                item.insert("fence".into(), n(lease.fence));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            if let Err(err) = result {
                let lease_lost = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(c))
                        if c.cancellation_reasons().first().and_then(|r| r.code()) == Some("ConditionalCheckFailed")
                );
                return Err(match lease_lost {
                    true => LedgerError::LeaseLost(lease.fence),
                    false => RegistryError::dynamo("TransactWriteItems", err).into(),
                });
            }
        }
        Ok(())
    }
}
