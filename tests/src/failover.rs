//! Helpers for the endpoint-failover tests: a hosted zone, health checks and
//! region alarms in moto, configurations, the function over real adapters,
//! and what resolvers get from the records (the Route 53 answer model).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_route53::types::{HealthCheckConfig, HealthCheckType};
use endpoint_failover::handler::Failover;
use geoprov_failover::alarms::SdkAlarms;
use geoprov_failover::config::{Bounds, FailoverConfig};
use geoprov_failover::route53::{self, Retry, Route53, SdkRoute53};
use geoprov_failover::state::DynamoFailoverStore;
use geoprov_failover::tree::{self, ZoneChange};
use route53_answer::{ClientLocation, RecordSet, Zone};
use serde_json::{Value, json};
use std::time::Duration;

use crate::{TEST_REGION, moto, sdk_config, unique_table};

pub type MotoFailover = Failover<SdkRoute53, DynamoFailoverStore, SdkAlarms>;

/// The endpoint the tests give `region`.
pub fn endpoint(region: &str) -> String {
    format!("abc123-ats.iot.{region}.amazonaws.com")
}

pub fn alarm_name(region: &str) -> String {
    format!("geoprov-health-{region}")
}

/// Retries short enough for tests.
pub const TEST_RETRY: Retry = Retry {
    attempts: 4,
    base: Duration::from_millis(5),
    cap: Duration::from_millis(50),
};

/// Bounds short enough for tests.
pub fn test_bounds() -> Bounds {
    Bounds {
        insync_timeout: Duration::from_secs(2),
        insync_poll: Duration::from_millis(20),
        lock_wait: Duration::from_secs(20),
        lease: Duration::from_secs(60),
        call_timeout: Duration::from_secs(10),
        lease_margin: Duration::from_secs(1),
        route53_attempts: TEST_RETRY.attempts,
        route53_backoff: TEST_RETRY.base,
    }
}

/// A Route 53 client on moto.
pub async fn route53_client() -> aws_sdk_route53::Client {
    route53::client(&sdk_config(&moto().endpoint, TEST_REGION).await)
}

/// The Route 53 adapter on moto.
pub async fn moto_route53() -> SdkRoute53 {
    SdkRoute53::new(route53_client().await, TEST_RETRY)
}

/// The alarm adapter on moto, for `regions`.
pub async fn moto_alarms(config: &FailoverConfig) -> SdkAlarms {
    SdkAlarms::new(
        &sdk_config(&moto().endpoint, TEST_REGION).await,
        config.regions.keys(),
    )
}

/// A new hosted zone `<unique>.example.com` in moto; returns its id (without
/// the `/hostedzone/` prefix) and the zone's name.
pub async fn hosted_zone() -> (String, String) {
    let client = route53_client().await;
    let name = format!("{}.example.com", unique_table("zone"));
    let zone = client
        .create_hosted_zone()
        .name(&name)
        .caller_reference(&name)
        .send()
        .await
        .expect("create hosted zone in moto");
    let id = zone
        .hosted_zone()
        .expect("hosted zone in the response")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();
    (id, name)
}

/// A CloudWatch client on moto in `region`.
pub async fn cloudwatch(region: &str) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_config(&moto().endpoint, region).await)
}

/// The region's health alarm, in that region, as the regional stack makes it
/// (on the canary's CanarySuccess metric).
pub async fn region_alarm(region: &str) {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
    cloudwatch(region)
        .await
        .put_metric_alarm()
        .alarm_name(alarm_name(region))
        .namespace("geoprov")
        .metric_name("CanarySuccess")
        .dimensions(Dimension::builder().name("Region").value(region).build())
        .statistic(Statistic::Minimum)
        .period(60)
        .evaluation_periods(3)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::LessThanThreshold)
        .send()
        .await
        .expect("put alarm in moto");
}

/// Sets the region's alarm to OK, ALARM or INSUFFICIENT_DATA.
pub async fn set_region_alarm(region: &str, state: &str) {
    cloudwatch(region)
        .await
        .set_alarm_state()
        .alarm_name(alarm_name(region))
        .state_value(state.into())
        .state_reason("geoprov test")
        .send()
        .await
        .expect("set alarm state in moto");
}

/// A Route 53 HTTPS health check of `region`'s endpoint in moto; its id.
pub async fn health_check(region: &str) -> String {
    let client = route53_client().await;
    let reference = unique_table(&format!("hc-{region}"));
    let check = client
        .create_health_check()
        .caller_reference(&reference)
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Https)
                .fully_qualified_domain_name(endpoint(region))
                .port(443)
                .resource_path("/health")
                .build()
                .expect("health check config"),
        )
        .send()
        .await
        .expect("create health check in moto");
    check.health_check().expect("health check").id().to_owned()
}

/// A `FAILOVER_CONFIG` document. `locations` are (setIdentifier,
/// geoLocation, preference).
pub fn config_json(
    zone_id: &str,
    zone_name: &str,
    regions: &[(&str, &str)],
    locations: &[(&str, Value, &[&str])],
) -> Value {
    let regions: serde_json::Map<String, Value> = regions
        .iter()
        .map(|(region, health_check_id)| {
            (
                (*region).to_owned(),
                json!({
                    "endpoint": endpoint(region),
                    "healthCheckId": health_check_id,
                    "alarmName": alarm_name(region),
                }),
            )
        })
        .collect();
    let locations: Vec<Value> = locations
        .iter()
        .map(|(id, geo, preference)| {
            json!({"setIdentifier": id, "geoLocation": geo, "preference": preference})
        })
        .collect();
    json!({
        "hostedZoneId": zone_id,
        "recordName": format!("global.iot.{zone_name}"),
        "ttl": 60,
        "regions": regions,
        "locations": locations,
        "failAfter": 1,
        "recoverAfter": 1,
        "minChangeIntervalSeconds": 0,
    })
}

/// The two-region configuration of the design: North America to us-east-1,
/// everything else to eu-west-1, in a new hosted zone.
pub async fn two_region_config() -> Value {
    two_region_config_with_checks("hc-us-east-1", "hc-eu-west-1").await
}

/// The same with the given health check ids (real ones, for the schedule).
pub async fn two_region_config_with_checks(us_east_1: &str, eu_west_1: &str) -> Value {
    let (zone_id, zone_name) = hosted_zone().await;
    config_json(
        &zone_id,
        &zone_name,
        &[("us-east-1", us_east_1), ("eu-west-1", eu_west_1)],
        &[
            (
                "US East IoT Global Endpoint",
                json!({"ContinentCode": "NA"}),
                &["us-east-1", "eu-west-1"],
            ),
            (
                "Default IoT Global Endpoint",
                json!({"CountryCode": "*"}),
                &["eu-west-1", "us-east-1"],
            ),
        ],
    )
}

/// Five regions for the large configurations.
pub const FIVE_REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "sa-east-1",
    "eu-central-1",
];

/// 250 locations, one per country code plus the default, each preferring
/// three of the five regions in rotation (so each region is the first choice
/// of 50 locations).
pub fn every_country_config(zone_id: &str, zone_name: &str) -> Value {
    let preferences: Vec<Vec<&str>> = (0..250)
        .map(|i| (0..3).map(|k| FIVE_REGIONS[(i + k) % 5]).collect())
        .collect();
    let ids: Vec<String> = COUNTRY_CODES
        .iter()
        .map(|code| format!("country {code}"))
        .collect();
    let mut locations: Vec<(&str, Value, &[&str])> = COUNTRY_CODES
        .iter()
        .zip(&ids)
        .zip(&preferences)
        .map(|((code, id), pref)| (id.as_str(), json!({"CountryCode": code}), pref.as_slice()))
        .collect();
    locations.push((
        "Default IoT Global Endpoint",
        json!({"CountryCode": "*"}),
        &preferences[249],
    ));
    let checks: Vec<String> = FIVE_REGIONS.iter().map(|r| format!("hc-{r}")).collect();
    let regions: Vec<(&str, &str)> = FIVE_REGIONS
        .iter()
        .zip(&checks)
        .map(|(r, hc)| (*r, hc.as_str()))
        .collect();
    config_json(zone_id, zone_name, &regions, &locations)
}

/// Where each location must point when the regions in `down` are
/// unavailable: the first region of its preference that is not down.
pub fn expected_targets(config: &FailoverConfig, down: &[&str]) -> BTreeMap<String, String> {
    config
        .locations
        .iter()
        .map(|l| {
            let target = l
                .preference
                .iter()
                .find(|r| !down.contains(&r.as_str()))
                .expect("a region of the preference is up");
            (l.set_identifier.clone(), target.to_string())
        })
        .collect()
}

/// The failover state of `config` in a fresh table in moto.
pub async fn fresh_store(config: &FailoverConfig) -> DynamoFailoverStore {
    let sdk = sdk_config(&moto().endpoint, TEST_REGION).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_table("failover");
    geoprov_shared::table::create_table(&dynamodb, &table)
        .await
        .expect("create table in moto");
    DynamoFailoverStore::new(dynamodb, table, &config.record_name)
}

/// The failover over moto's Route 53, CloudWatch and a fresh table, as
/// `main.rs` builds it.
pub async fn failover(config: &Value) -> MotoFailover {
    let config = FailoverConfig::from_json(&config.to_string()).expect("valid FAILOVER_CONFIG");
    let store = fresh_store(&config).await;
    failover_with_store(config, store, test_bounds()).await
}

/// A failover over moto with the given state store (two instances sharing
/// one table are two writers).
pub async fn failover_with_store(
    config: FailoverConfig,
    store: DynamoFailoverStore,
    bounds: Bounds,
) -> MotoFailover {
    let alarms = moto_alarms(&config).await;
    Failover::new(config, moto_route53().await, store, alarms, bounds)
}

/// Every record at and below the global name, as moto holds them.
pub async fn zone_records(config: &FailoverConfig) -> Vec<RecordSet> {
    moto_route53()
        .await
        .records(&config.hosted_zone_id, &config.record_name)
        .await
        .expect("list records in moto")
}

/// Writes `changes` to the zone in moto, in Route 53-sized batches.
pub async fn write_records(config: &FailoverConfig, changes: &[ZoneChange]) {
    let route53 = moto_route53().await;
    for batch in tree::batches(changes) {
        route53
            .change(&config.hosted_zone_id, &changes[batch])
            .await
            .expect("write records in moto");
    }
}

/// The flat records of earlier geoprov versions: one geolocation CNAME per
/// location to the first region of its preference.
pub fn flat_records(config: &FailoverConfig) -> Vec<ZoneChange> {
    config
        .locations
        .iter()
        .map(|l| {
            ZoneChange::Upsert(
                RecordSet::cname(
                    &config.record_name,
                    &config.regions[&l.preference[0]].endpoint,
                    i64::from(config.ttl),
                )
                .with_set_identifier(&l.set_identifier)
                .with_geo_location(l.geo_location.clone()),
            )
        })
        .collect()
}

/// What a resolver in each location gets from `records` (set identifier to
/// the region of the answer, or the raw answer) with the health checks of
/// the regions in `down` unhealthy.
pub fn answers_from(
    config: &FailoverConfig,
    records: Vec<RecordSet>,
    down: &[&str],
) -> BTreeMap<String, String> {
    let unhealthy: BTreeSet<&str> = down
        .iter()
        .filter_map(|r| config.regions.iter().find(|(name, _)| name.as_str() == *r))
        .map(|(_, target)| target.health_check_id.as_str())
        .collect();
    let zone = Zone::new(records);
    config
        .locations
        .iter()
        .map(|l| {
            let answer = zone
                .resolve(
                    &config.record_name,
                    &ClientLocation::within(&l.geo_location),
                    &|id| !unhealthy.contains(id),
                )
                .answer
                .unwrap_or_else(|| "(no answer)".to_owned());
            let region = config
                .region_of_endpoint(&answer)
                .map_or(answer, |r| r.to_string());
            (l.set_identifier.clone(), region)
        })
        .collect()
}

/// What resolvers get from moto's records, with `down` unhealthy.
pub async fn answers(config: &FailoverConfig, down: &[&str]) -> BTreeMap<String, String> {
    answers_from(config, zone_records(config).await, down)
}

fn seconds_ago(seconds: i64) -> time::OffsetDateTime {
    let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds);
    at.replace_nanosecond(0).expect("zero nanoseconds")
}

/// The time `seconds` seconds ago, as EventBridge writes an event's time.
pub fn event_time(seconds: i64) -> String {
    seconds_ago(seconds)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 time")
}

/// The time `seconds` seconds ago, as CloudWatch writes an alarm state's
/// timestamp (`2026-11-29T17:04:40.989+0000`).
pub fn state_timestamp(seconds: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
    );
    seconds_ago(seconds)
        .format(format)
        .expect("CloudWatch time")
}

/// A CloudWatch alarm state change event for `region`'s health alarm, in the
/// shape EventBridge delivers it, with an event id of its own, sent now.
pub fn alarm_event(region: &str, state: &str) -> Value {
    alarm_event_at(region, state, 0)
}

/// The same, for a state change `seconds` ago.
pub fn alarm_event_at(region: &str, state: &str, seconds: i64) -> Value {
    let name = alarm_name(region);
    json!({
        "version": "0",
        "id": format!("7bf73129-1428-4cd3-a780-{:012}", NEXT_EVENT.fetch_add(1, Ordering::Relaxed)),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": event_time(seconds),
        "region": region,
        "resources": [format!("arn:aws:cloudwatch:{region}:123456789012:alarm:{name}")],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": "test", "timestamp": state_timestamp(seconds)},
            "previousState": {"value": "OK", "reason": "test", "timestamp": "2026-11-29T16:51:03.410+0000"},
            "configuration": {"metrics": []}
        }
    })
}

static NEXT_EVENT: AtomicUsize = AtomicUsize::new(1);

/// The EventBridge schedule event, with an event id of its own.
pub fn schedule_event() -> Value {
    json!({
        "version": "0",
        "id": format!("53dc4d37-cffa-4f76-80c9-{:012}", NEXT_EVENT.fetch_add(1, Ordering::Relaxed)),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": event_time(0),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/geoprov-failover-schedule"],
        "detail": {}
    })
}

/// The ISO 3166-1 alpha-2 country codes (249): with the default location, a
/// configuration of 250 geolocation records.
pub const COUNTRY_CODES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];
