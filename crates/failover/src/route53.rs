//! The Route 53 adapter: the record sets at and below the global name,
//! record changes and their status.
//!
//! Every call is retried on Throttling, PriorRequestNotComplete and transport
//! failures with full-jitter exponential backoff, within `Retry`'s bounds. The
//! client itself is built with the SDK's retries off so the bound is one.
//! The handler bounds each call's whole time again (`Bounds::call_timeout`).

use std::future::Future;
use std::time::Duration;

use aws_sdk_route53::Client;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    AliasTarget as SdkAliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus,
    GeoLocation as SdkGeoLocation, ResourceRecord as SdkResourceRecord, ResourceRecordSet,
    ResourceRecordSetFailover, RrType,
};
use route53_answer::{
    AliasTarget, FailoverRole, GeoLocation, RecordSet, ResourceRecord, normalize_name,
};

use crate::tree::ZoneChange;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Route 53 {operation} failed after {attempts} attempt(s): {message}")]
pub struct Route53Error {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub attempts: u32,
}

/// What the failover needs from Route 53.
pub trait Route53 {
    /// Every record set named `name` or a name below it, as Route 53 lists them.
    fn records(
        &self,
        zone: &str,
        name: &str,
    ) -> impl Future<Output = Result<Vec<RecordSet>, Route53Error>> + Send;

    /// One ChangeResourceRecordSets request (applied by Route 53 as one
    /// transaction); returns the change id.
    fn change(
        &self,
        zone: &str,
        changes: &[ZoneChange],
    ) -> impl Future<Output = Result<String, Route53Error>> + Send;

    /// Whether the change has reached every Route 53 name server.
    fn is_insync(&self, change_id: &str)
    -> impl Future<Output = Result<bool, Route53Error>> + Send;
}

/// Bounds of the retries of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Retry {
    /// Full jitter: a random wait up to `base * 2^attempt`, at most `cap`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Error codes worth another attempt.
const RETRYABLE_CODES: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "PriorRequestNotComplete",
    "RequestLimitExceeded",
];

/// Whether another attempt is safe and may help. A change batch is retried
/// only when Route 53 said it refused it (throttled, or a prior change still
/// in progress): after a timeout or a lost answer the batch may have been
/// applied, and sending it again could fail on its own DELETEs. The next
/// invocation lists the records and plans afresh instead.
fn is_retryable<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>, repeatable: bool) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            repeatable
        }
        _ => err.code().is_some_and(|c| RETRYABLE_CODES.contains(&c)),
    }
}

/// The Route 53 adapter on the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkRoute53 {
    client: Client,
    retry: Retry,
}

/// A Route 53 client whose retries are the adapter's alone.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let config = aws_sdk_route53::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

impl SdkRoute53 {
    pub fn new(client: Client, retry: Retry) -> Self {
        SdkRoute53 { client, retry }
    }

    /// One call with bounded retries; `repeatable` when sending it twice has
    /// the effect of sending it once (every read).
    async fn call<T, E, R, F, Fut>(
        &self,
        operation: &'static str,
        repeatable: bool,
        f: F,
    ) -> Result<T, Route53Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < self.retry.attempts && is_retryable(&err, repeatable) => {
                    let wait = self.retry.backoff(attempt - 1);
                    tracing::warn!(
                        operation,
                        attempt,
                        code = err.code().unwrap_or("-"),
                        wait_ms = wait.as_millis() as u64,
                        "Route 53 call will be retried"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    return Err(Route53Error {
                        operation,
                        code: err.code().map(str::to_owned),
                        message: aws_sdk_route53::error::DisplayErrorContext(&err).to_string(),
                        attempts: attempt,
                    });
                }
            }
        }
    }
}

fn malformed(operation: &'static str, message: impl Into<String>) -> Route53Error {
    Route53Error {
        operation,
        code: None,
        message: message.into(),
        attempts: 1,
    }
}

/// A listed record set in the answer model's terms.
pub fn from_sdk(set: &ResourceRecordSet) -> RecordSet {
    RecordSet {
        name: set.name().to_owned(),
        record_type: set.r#type().as_str().to_owned(),
        set_identifier: set.set_identifier().map(str::to_owned),
        geo_location: set.geo_location().map(|g| GeoLocation {
            continent_code: g.continent_code().map(str::to_owned),
            country_code: g.country_code().map(str::to_owned),
            subdivision_code: g.subdivision_code().map(str::to_owned),
        }),
        failover: set.failover().and_then(|f| match f {
            ResourceRecordSetFailover::Primary => Some(FailoverRole::Primary),
            ResourceRecordSetFailover::Secondary => Some(FailoverRole::Secondary),
            _ => None,
        }),
        health_check_id: set.health_check_id().map(str::to_owned),
        alias_target: set.alias_target().map(|a| AliasTarget {
            hosted_zone_id: a.hosted_zone_id().to_owned(),
            dns_name: a.dns_name().to_owned(),
            evaluate_target_health: a.evaluate_target_health(),
        }),
        ttl: set.ttl(),
        resource_records: set
            .resource_records()
            .iter()
            .map(|r| ResourceRecord {
                value: r.value().to_owned(),
            })
            .collect(),
        weight: set.weight(),
        region: set.region().map(|r| r.as_str().to_owned()),
        multi_value_answer: set.multi_value_answer(),
    }
}

/// A record set to write, in the SDK's terms.
pub fn to_sdk(record: &RecordSet) -> Result<ResourceRecordSet, aws_sdk_route53::error::BuildError> {
    let geo = record.geo_location.as_ref().map(|g| {
        SdkGeoLocation::builder()
            .set_continent_code(g.continent_code.clone())
            .set_country_code(g.country_code.clone())
            .set_subdivision_code(g.subdivision_code.clone())
            .build()
    });
    let alias = record
        .alias_target
        .as_ref()
        .map(|a| {
            SdkAliasTarget::builder()
                .hosted_zone_id(a.hosted_zone_id.trim_start_matches("/hostedzone/"))
                .dns_name(&a.dns_name)
                .evaluate_target_health(a.evaluate_target_health)
                .build()
        })
        .transpose()?;
    let values = record
        .values()
        .map(|v| SdkResourceRecord::builder().value(v).build())
        .collect::<Result<Vec<_>, _>>()?;
    ResourceRecordSet::builder()
        .name(&record.name)
        .r#type(RrType::from(record.record_type.as_str()))
        .set_set_identifier(record.set_identifier.clone())
        .set_geo_location(geo)
        .set_failover(record.failover.map(|f| match f {
            FailoverRole::Primary => ResourceRecordSetFailover::Primary,
            FailoverRole::Secondary => ResourceRecordSetFailover::Secondary,
        }))
        .set_health_check_id(record.health_check_id.clone())
        .set_alias_target(alias)
        .set_ttl(
            record
                .alias_target
                .is_none()
                .then_some(record.ttl)
                .flatten(),
        )
        .set_resource_records((!values.is_empty()).then_some(values))
        .build()
}

/// Route 53 lists names with their labels reversed (`com.example.global`),
/// so every name at or below `name` comes in one run.
fn reversed(name: &str) -> String {
    normalize_name(name)
        .rsplit('.')
        .collect::<Vec<_>>()
        .join(".")
}

impl Route53 for SdkRoute53 {
    async fn records(&self, zone: &str, name: &str) -> Result<Vec<RecordSet>, Route53Error> {
        const OP: &str = "ListResourceRecordSets";
        let name = normalize_name(name);
        let run = reversed(&name);
        let below = format!(".{name}");
        let mut records = Vec::new();
        let mut start: (String, Option<RrType>, Option<String>) = (name.clone(), None, None);
        loop {
            let page = self
                .call(OP, true, || {
                    self.client
                        .list_resource_record_sets()
                        .hosted_zone_id(zone)
                        .start_record_name(&start.0)
                        .set_start_record_type(start.1.clone())
                        .set_start_record_identifier(start.2.clone())
                        .send()
                })
                .await?;
            let mut past_the_run = false;
            for set in page.resource_record_sets() {
                let listed = normalize_name(set.name());
                if !reversed(&listed).starts_with(&run) {
                    past_the_run = true;
                    continue;
                }
                if listed == name || listed.ends_with(&below) {
                    records.push(from_sdk(set));
                }
            }
            if past_the_run || !page.is_truncated() {
                return Ok(records);
            }
            let next = (
                page.next_record_name()
                    .map(normalize_name)
                    .unwrap_or_default(),
                page.next_record_type().cloned(),
                page.next_record_identifier().map(str::to_owned),
            );
            if next == start {
                return Err(malformed(OP, "pagination did not advance"));
            }
            start = next;
        }
    }

    async fn change(&self, zone: &str, changes: &[ZoneChange]) -> Result<String, Route53Error> {
        const OP: &str = "ChangeResourceRecordSets";
        let build = |e: aws_sdk_route53::error::BuildError| malformed(OP, e.to_string());
        let one = |action: ChangeAction, record: &RecordSet| -> Result<Change, Route53Error> {
            Change::builder()
                .action(action)
                .resource_record_set(to_sdk(record).map_err(build)?)
                .build()
                .map_err(build)
        };
        let mut sdk_changes = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                ZoneChange::Upsert(r) => sdk_changes.push(one(ChangeAction::Upsert, r)?),
                ZoneChange::Delete(r) => sdk_changes.push(one(ChangeAction::Delete, r)?),
                ZoneChange::Replace { old, new } => {
                    // The guide's atomic pair: DELETE and CREATE in one batch.
                    sdk_changes.push(one(ChangeAction::Delete, old)?);
                    sdk_changes.push(one(ChangeAction::Create, new)?);
                }
            }
        }
        let batch = ChangeBatch::builder()
            .comment("geoprov endpoint-failover")
            .set_changes(Some(sdk_changes))
            .build()
            .map_err(build)?;
        let output = self
            .call(OP, false, || {
                self.client
                    .change_resource_record_sets()
                    .hosted_zone_id(zone)
                    .change_batch(batch.clone())
                    .send()
            })
            .await?;
        output
            .change_info()
            .map(|info| info.id().to_owned())
            .ok_or_else(|| malformed(OP, "the response has no ChangeInfo"))
    }

    async fn is_insync(&self, change_id: &str) -> Result<bool, Route53Error> {
        let output = self
            .call("GetChange", true, || {
                self.client.get_change().id(change_id).send()
            })
            .await?;
        Ok(output
            .change_info()
            .is_some_and(|info| info.status() == &ChangeStatus::Insync))
    }
}
