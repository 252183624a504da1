//! The Route 53 adapter: the geolocation records of the global name, record
//! changes and their status, and health checker observations.
//!
//! Every call is retried on Throttling, PriorRequestNotComplete and transport
//! failures with full-jitter exponential backoff, within `Retry`'s bounds. The
//! client itself is built with the SDK's retries off so the bound is one.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, GeoLocation as SdkGeoLocation, ResourceRecord,
    ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;

use crate::config::{normalize_dns_name, GeoLocation};
use crate::health;

/// A geolocation CNAME of the global name, as Route 53 holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoRecord {
    pub set_identifier: String,
    pub geo_location: GeoLocation,
    pub value: String,
    pub ttl: Option<i64>,
}

/// One record to write: the location's own GeoLocation and SetIdentifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub set_identifier: String,
    pub geo_location: GeoLocation,
    pub value: String,
}

/// How many health checkers observed the endpoint, and how many saw it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observations {
    pub checkers: usize,
    pub successes: usize,
}

impl Observations {
    pub fn signal(&self) -> Option<health::Signal> {
        health::signal_from_observations(self.checkers, self.successes)
    }
}

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
    /// Every geolocation CNAME record set of `name`, by set identifier.
    fn geo_records(
        &self,
        zone: &str,
        name: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, GeoRecord>, Route53Error>> + Send;

    /// One ChangeResourceRecordSets of UPSERTs; returns the change id.
    fn upsert(
        &self,
        zone: &str,
        name: &str,
        ttl: u32,
        records: &[Upsert],
    ) -> impl Future<Output = Result<String, Route53Error>> + Send;

    /// Whether the change has reached every Route 53 name server.
    fn is_insync(&self, change_id: &str)
        -> impl Future<Output = Result<bool, Route53Error>> + Send;

    fn observations(
        &self,
        health_check_id: &str,
    ) -> impl Future<Output = Result<Observations, Route53Error>> + Send;
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

fn is_retryable<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ResponseError(_) => true,
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

    async fn call<T, E, R, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, Route53Error>
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
                Err(err) if attempt < self.retry.attempts && is_retryable(&err) => {
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
                    })
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

fn from_sdk_geo(geo: &SdkGeoLocation) -> GeoLocation {
    GeoLocation {
        continent_code: geo.continent_code().map(str::to_owned),
        country_code: geo.country_code().map(str::to_owned),
        subdivision_code: geo.subdivision_code().map(str::to_owned),
    }
}

fn to_sdk_geo(geo: &GeoLocation) -> SdkGeoLocation {
    SdkGeoLocation::builder()
        .set_continent_code(geo.continent_code.clone())
        .set_country_code(geo.country_code.clone())
        .set_subdivision_code(geo.subdivision_code.clone())
        .build()
}

impl Route53 for SdkRoute53 {
    async fn geo_records(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<BTreeMap<String, GeoRecord>, Route53Error> {
        const OP: &str = "ListResourceRecordSets";
        let name = normalize_dns_name(name);
        let mut records = BTreeMap::new();
        let mut start: (String, RrType, Option<String>) = (name.clone(), RrType::Cname, None);
        loop {
            let page = self
                .call(OP, || {
                    self.client
                        .list_resource_record_sets()
                        .hosted_zone_id(zone)
                        .start_record_name(&start.0)
                        .start_record_type(start.1.clone())
                        .set_start_record_identifier(start.2.clone())
                        .send()
                })
                .await?;
            let mut past_the_name = false;
            for set in page.resource_record_sets() {
                if normalize_dns_name(set.name()) != name || set.r#type() != &RrType::Cname {
                    past_the_name = true;
                    continue;
                }
                let (Some(id), Some(geo)) = (set.set_identifier(), set.geo_location()) else {
                    continue;
                };
                let value = match set.resource_records() {
                    [one] => one.value().to_owned(),
                    _ => {
                        return Err(malformed(
                            OP,
                            format!("CNAME {id:?} does not have exactly one value"),
                        ))
                    }
                };
                records.insert(
                    id.to_owned(),
                    GeoRecord {
                        set_identifier: id.to_owned(),
                        geo_location: from_sdk_geo(geo),
                        value,
                        ttl: set.ttl(),
                    },
                );
            }
            if past_the_name || !page.is_truncated() {
                return Ok(records);
            }
            let next = (
                page.next_record_name()
                    .map(normalize_dns_name)
                    .unwrap_or_default(),
                page.next_record_type().cloned().unwrap_or(RrType::Cname),
                page.next_record_identifier().map(str::to_owned),
            );
            if next == start {
                return Err(malformed(OP, "pagination did not advance"));
            }
            start = next;
        }
    }

    async fn upsert(
        &self,
        zone: &str,
        name: &str,
        ttl: u32,
        records: &[Upsert],
    ) -> Result<String, Route53Error> {
        const OP: &str = "ChangeResourceRecordSets";
        let build = |e: aws_sdk_route53::error::BuildError| malformed(OP, e.to_string());
        let mut changes = Vec::with_capacity(records.len());
        for record in records {
            let set = ResourceRecordSet::builder()
                .name(name)
                .r#type(RrType::Cname)
                .set_identifier(&record.set_identifier)
                .geo_location(to_sdk_geo(&record.geo_location))
                .ttl(i64::from(ttl))
                .resource_records(
                    ResourceRecord::builder()
                        .value(&record.value)
                        .build()
                        .map_err(build)?,
                )
                .build()
                .map_err(build)?;
            changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(set)
                    .build()
                    .map_err(build)?,
            );
        }
        let batch = ChangeBatch::builder()
            .comment("geoprov endpoint-failover")
            .set_changes(Some(changes))
            .build()
            .map_err(build)?;
        let output = self
            .call(OP, || {
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
            .call("GetChange", || {
                self.client.get_change().id(change_id).send()
            })
            .await?;
        Ok(output
            .change_info()
            .is_some_and(|info| info.status() == &ChangeStatus::Insync))
    }

    async fn observations(&self, health_check_id: &str) -> Result<Observations, Route53Error> {
        let output = self
            .call("GetHealthCheckStatus", || {
                self.client
                    .get_health_check_status()
                    .health_check_id(health_check_id)
                    .send()
            })
            .await?;
        let reports: Vec<&str> = output
            .health_check_observations()
            .iter()
            .filter_map(|o| o.status_report().and_then(|r| r.status()))
            .collect();
        Ok(Observations {
            checkers: reports.len(),
            successes: reports
                .iter()
                .filter(|s| health::is_success_report(s))
                .count(),
        })
    }
}
