//! Helpers for the endpoint-failover tests: a hosted zone and health checks in
//! moto, configurations, and the function over real adapters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_route53::types::{HealthCheckConfig, HealthCheckType};
use endpoint_failover::config::{Bounds, FailoverConfig};
use endpoint_failover::handler::Failover;
use endpoint_failover::route53::{self, Retry, Route53, SdkRoute53};
use endpoint_failover::state::DynamoFailoverStore;
use serde_json::{json, Value};
use std::time::Duration;

use crate::{moto, sdk_config, unique_table, TEST_REGION};

pub type MotoFailover = Failover<SdkRoute53, DynamoFailoverStore>;

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
        route53_attempts: TEST_RETRY.attempts,
        route53_backoff: TEST_RETRY.base,
    }
}

/// A Route 53 client on moto.
pub async fn route53_client() -> aws_sdk_route53::Client {
    route53::client(&sdk_config(&moto().endpoint, TEST_REGION).await)
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
    let regions: Vec<(&str, &str)> = FIVE_REGIONS.iter().map(|r| (*r, "hc")).collect();
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

/// The failover over moto's Route 53 and a fresh table, as `main.rs` builds it.
pub async fn failover(config: &Value) -> MotoFailover {
    let config = FailoverConfig::from_json(&config.to_string()).expect("valid FAILOVER_CONFIG");
    let store = fresh_store(&config).await;
    let route53 = SdkRoute53::new(route53_client().await, TEST_RETRY);
    Failover::new(config, route53, store, test_bounds())
}

/// The records of the global name as moto holds them: set identifier to the
/// region whose endpoint the CNAME names (or the raw value).
pub async fn records_by_region(config: &FailoverConfig) -> BTreeMap<String, String> {
    let route53 = SdkRoute53::new(route53_client().await, TEST_RETRY);
    route53
        .geo_records(&config.hosted_zone_id, &config.record_name)
        .await
        .expect("list records in moto")
        .into_values()
        .map(|r| {
            let region = config
                .region_of_endpoint(&r.value)
                .map_or(r.value.clone(), |r| r.to_string());
            (r.set_identifier, region)
        })
        .collect()
}

/// A CloudWatch alarm state change event for `region`'s health alarm, in the
/// shape EventBridge delivers it, with an event id of its own.
pub fn alarm_event(region: &str, state: &str) -> Value {
    let name = alarm_name(region);
    json!({
        "version": "0",
        "id": format!("7bf73129-1428-4cd3-a780-{:012}", NEXT_EVENT.fetch_add(1, Ordering::Relaxed)),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": "2026-11-29T17:04:40Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}")],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": "test", "timestamp": "2026-11-29T17:04:40.989+0000"},
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
        "time": "2026-11-29T17:05:00Z",
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
