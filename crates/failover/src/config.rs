//! `FAILOVER_CONFIG` and the function's other settings, validated at cold
//! start. Every error names the field it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use geoprov_shared::config::{ConfigError, Env};
use geoprov_shared::device::RegionName;
use route53_answer::GeoLocation;
use serde::{Deserialize, Serialize};

/// The continent codes Route 53 geolocation records accept.
pub const CONTINENT_CODES: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// The largest TTL accepted: a failover record cached longer than a day would
/// keep devices on a dead region for that long.
pub const MAX_TTL: u32 = 86_400;

/// One region the global name can point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionTarget {
    /// The region's IoT (custom domain) endpoint, the CNAME's value.
    pub endpoint: String,
    /// The Route 53 health check the region's records carry (the data plane).
    pub health_check_id: String,
    /// The region's health alarm, in that region: read with DescribeAlarms on
    /// schedule, and its state changes arrive through EventBridge.
    pub alarm_name: String,
}

/// Why a geolocation cannot be a Route 53 geolocation record.
fn check_geo_location(geo: &GeoLocation) -> Result<(), String> {
    match (
        geo.continent_code.as_deref(),
        geo.country_code.as_deref(),
        geo.subdivision_code.as_deref(),
    ) {
        (Some(continent), None, None) => match CONTINENT_CODES.contains(&continent) {
            true => Ok(()),
            false => Err(format!(
                "ContinentCode {continent:?} is not one of {}",
                CONTINENT_CODES.join(", ")
            )),
        },
        (None, Some("*"), None) => Ok(()),
        (None, Some("*"), Some(_)) => {
            Err("SubdivisionCode cannot go with the default CountryCode \"*\"".into())
        }
        (None, Some(country), subdivision) => {
            if !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(format!(
                    "CountryCode {country:?} is not two upper-case letters or \"*\""
                ));
            }
            match subdivision {
                Some(sub)
                    if sub.is_empty()
                        || sub.len() > 3
                        || !sub
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
                {
                    Err(format!(
                        "SubdivisionCode {sub:?} is not 1 to 3 upper-case letters or digits"
                    ))
                }
                _ => Ok(()),
            }
        }
        (Some(_), Some(_), _) => Err("give ContinentCode or CountryCode, not both".into()),
        (Some(_), None, Some(_)) => Err("SubdivisionCode needs a CountryCode".into()),
        (None, None, _) => Err("needs ContinentCode or CountryCode".into()),
    }
}

/// One geolocation record of the global name and the regions it may use, in
/// order. The list is also the residency rule: no other region is ever used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    pub set_identifier: String,
    pub geo_location: GeoLocation,
    pub preference: Vec<RegionName>,
}

/// `FAILOVER_CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverConfig {
    pub hosted_zone_id: String,
    pub record_name: String,
    pub ttl: u32,
    pub regions: BTreeMap<RegionName, RegionTarget>,
    pub locations: Vec<Location>,
    /// Consecutive unhealthy signals that make a healthy region unhealthy.
    pub fail_after: u32,
    /// Consecutive healthy signals that make an unhealthy region healthy.
    pub recover_after: u32,
    /// How long a region that recovered must stay available before the
    /// chains take it back (failback hysteresis). Leaving a region that
    /// failed never waits: its health check already moved the devices.
    pub min_change_interval_seconds: u64,
    /// Whether an UNKNOWN signal (a region whose alarm cannot be read or has
    /// too little data) counts toward `failAfter`.
    #[serde(default = "default_true")]
    pub unknown_counts_as_unhealthy: bool,
    /// Alarm events older than this are stale and dropped.
    #[serde(default = "default_max_event_age")]
    pub max_event_age_seconds: u64,
}

fn default_true() -> bool {
    true
}

fn default_max_event_age() -> u64 {
    300
}

/// `FAILOVER_CONFIG` cannot be used; `field` is a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FAILOVER_CONFIG: {field}: {message}")]
pub struct InvalidFailoverConfig {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidFailoverConfig {
    InvalidFailoverConfig {
        field: field.into(),
        message: message.into(),
    }
}

/// A DNS name in the form Route 53 returns it: lower case, no trailing dot.
pub fn normalize_dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The domain the global name is in: the name less its first label.
fn parent_domain(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, parent)| parent)
}

/// Whether `endpoint` (normalized) is an AWS IoT endpoint of `region`: its
/// ATS data endpoint, `<id>-ats.iot.<region>.amazonaws.com` (`.com.cn` in
/// China), as `DescribeEndpoint` (`iot:Data-ATS`) names it; or the region's
/// own name for it under the global name's domain (a name the operator's
/// zone holds, with the region as one of its labels). Anything else could
/// send a location's devices to a host that is not IoT's: a tampered or
/// mistaken document is refused before a record names it.
fn is_iot_endpoint_of(endpoint: &str, region: &str, record_name: &str) -> bool {
    let ats = [".amazonaws.com", ".amazonaws.com.cn"]
        .iter()
        .any(|suffix| {
            endpoint
                .strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix(&format!(".iot.{region}")))
                .and_then(|id| id.strip_suffix("-ats"))
                .is_some_and(|id| {
                    !id.is_empty()
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        });
    let own = endpoint
        .strip_suffix(parent_domain(record_name))
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|rest| {
            endpoint != record_name && rest.split('.').any(|label| label == region)
        });
    ats || own
}

fn check_dns_name(name: &str) -> Result<(), String> {
    let name = normalize_dns_name(name);
    if name.is_empty() || name.len() > 253 {
        return Err("is not a DNS name of 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("label {label:?} of {name:?} is not a DNS label"));
        }
    }
    Ok(())
}

impl FailoverConfig {
    /// Parses and validates the JSON document.
    pub fn from_json(raw: &str) -> Result<Self, InvalidFailoverConfig> {
        let de = &mut serde_json::Deserializer::from_str(raw);
        let mut config: FailoverConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            invalid(
                if path == "." { "(document)" } else { &path },
                e.inner().to_string(),
            )
        })?;
        config.record_name = normalize_dns_name(&config.record_name);
        for target in config.regions.values_mut() {
            target.endpoint = normalize_dns_name(&target.endpoint);
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), InvalidFailoverConfig> {
        self.validate_zone()?;
        self.validate_regions()?;
        self.validate_locations()?;
        self.validate_step_names()?;
        self.validate_default_location()?;
        self.validate_timing()
    }

    /// Whether the hosted zone, the record name and the TTL are usable.
    fn validate_zone(&self) -> Result<(), InvalidFailoverConfig> {
        if self.hosted_zone_id.trim().is_empty() {
            return Err(invalid("hostedZoneId", "is empty"));
        }
        check_dns_name(&self.record_name).map_err(|m| invalid("recordName", m))?;
        if !(1..=MAX_TTL).contains(&self.ttl) {
            return Err(invalid(
                "ttl",
                format!("{} is not between 1 and {MAX_TTL} seconds", self.ttl),
            ));
        }
        Ok(())
    }

    /// Whether regions are given, each with its own IoT endpoint, health check and alarm.
    fn validate_regions(&self) -> Result<(), InvalidFailoverConfig> {
        if self.regions.is_empty() {
            return Err(invalid("regions", "names no region"));
        }
        let mut endpoints = BTreeSet::new();
        let mut alarms = BTreeSet::new();
        for (region, target) in &self.regions {
            let field = |name: &str| format!("regions.{region}.{name}");
            check_dns_name(&target.endpoint).map_err(|m| invalid(field("endpoint"), m))?;
            if !is_iot_endpoint_of(&target.endpoint, region.as_str(), &self.record_name) {
                return Err(invalid(
                    field("endpoint"),
                    format!(
                        "{} is not an IoT endpoint of {region}: its ATS data endpoint \
                         (<id>-ats.iot.{region}.amazonaws.com) or a name under {} that names {region}",
                        target.endpoint,
                        parent_domain(&self.record_name)
                    ),
                ));
            }
            if !endpoints.insert(target.endpoint.as_str()) {
                return Err(invalid(
                    field("endpoint"),
                    format!("{} is also another region's endpoint", target.endpoint),
                ));
            }
            if target.health_check_id.trim().is_empty() {
                return Err(invalid(field("healthCheckId"), "is empty"));
            }
            if target.alarm_name.trim().is_empty() {
                return Err(invalid(field("alarmName"), "is empty"));
            }
            if !alarms.insert(target.alarm_name.as_str()) {
                return Err(invalid(
                    field("alarmName"),
                    format!("{} is also another region's alarm", target.alarm_name),
                ));
            }
        }
        Ok(())
    }

    /// Whether locations are given, each with its own set identifier, geolocation and preference.
    fn validate_locations(&self) -> Result<(), InvalidFailoverConfig> {
        if self.locations.is_empty() {
            return Err(invalid("locations", "names no location"));
        }
        let mut set_identifiers = BTreeSet::new();
        let mut geo_locations = BTreeSet::new();
        for (i, location) in self.locations.iter().enumerate() {
            let field = |name: &str| format!("locations[{i}].{name}");
            let id = &location.set_identifier;
            if id.is_empty() || id.len() > 128 {
                return Err(invalid(
                    field("setIdentifier"),
                    "must be 1 to 128 characters",
                ));
            }
            if !set_identifiers.insert(id.as_str()) {
                return Err(invalid(
                    field("setIdentifier"),
                    format!("{id:?} is used by another location"),
                ));
            }
            check_geo_location(&location.geo_location)
                .map_err(|m| invalid(field("geoLocation"), m))?;
            if !geo_locations.insert(&location.geo_location) {
                return Err(invalid(
                    field("geoLocation"),
                    "the same geolocation is given to another location",
                ));
            }
            if location.preference.is_empty() {
                return Err(invalid(field("preference"), "is empty"));
            }
            self.validate_preference(i, location)?;
        }
        Ok(())
    }

    /// Whether each region of location `i`'s preference is configured and listed once.
    fn validate_preference(
        &self,
        i: usize,
        location: &Location,
    ) -> Result<(), InvalidFailoverConfig> {
        let mut seen = BTreeSet::new();
        for (j, region) in location.preference.iter().enumerate() {
            if !self.regions.contains_key(region) {
                return Err(invalid(
                    format!("locations[{i}].preference[{j}]"),
                    format!("{region} is not one of the configured regions"),
                ));
            }
            if !seen.insert(region) {
                return Err(invalid(
                    format!("locations[{i}].preference[{j}]"),
                    format!("{region} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Whether every step name of the tree is still a DNS name.
    fn validate_step_names(&self) -> Result<(), InvalidFailoverConfig> {
        // The longest step name, `<region>.<location key>.<record name>`, must
        // still be a DNS name.
        for (i, location) in self.locations.iter().enumerate() {
            let key = crate::tree::location_key(&location.geo_location);
            for region in &location.preference {
                let step = crate::tree::step_name(region, &key, &self.record_name);
                if step.len() > 253 {
                    return Err(invalid(
                        format!("locations[{i}]"),
                        format!(
                            "its record {step} is longer than a DNS name's 253 characters; shorten recordName"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether some location is the default, so every address gets an answer.
    fn validate_default_location(&self) -> Result<(), InvalidFailoverConfig> {
        if !self.locations.iter().any(|l| l.geo_location.is_default()) {
            return Err(invalid(
                "locations",
                "no default location {\"CountryCode\": \"*\"}: addresses that match no other \
                 location would get no answer",
            ));
        }
        Ok(())
    }

    /// Whether the hysteresis counts, the event age and the change interval are in range.
    fn validate_timing(&self) -> Result<(), InvalidFailoverConfig> {
        if self.fail_after == 0 || self.fail_after > 100 {
            return Err(invalid("failAfter", "must be between 1 and 100"));
        }
        if self.recover_after == 0 || self.recover_after > 100 {
            return Err(invalid("recoverAfter", "must be between 1 and 100"));
        }
        if !(1..=86_400).contains(&self.max_event_age_seconds) {
            return Err(invalid(
                "maxEventAgeSeconds",
                "must be between 1 and 86400 (a day)",
            ));
        }
        if self.min_change_interval_seconds > 86_400 {
            return Err(invalid(
                "minChangeIntervalSeconds",
                "must be at most 86400 (a day)",
            ));
        }
        Ok(())
    }

    pub fn thresholds(&self) -> crate::health::Thresholds {
        crate::health::Thresholds {
            fail_after: self.fail_after,
            recover_after: self.recover_after,
            unknown_counts_as_unhealthy: self.unknown_counts_as_unhealthy,
            failback_hold: self.min_change_interval_seconds as i64,
        }
    }

    /// The region whose endpoint is `value` (a CNAME value as Route 53 holds it).
    pub fn region_of_endpoint(&self, value: &str) -> Option<&RegionName> {
        let value = normalize_dns_name(value);
        self.regions
            .iter()
            .find(|(_, target)| target.endpoint == value)
            .map(|(region, _)| region)
    }

    /// The region whose health alarm is `alarm_name`.
    pub fn region_of_alarm(&self, alarm_name: &str) -> Option<&RegionName> {
        self.regions
            .iter()
            .find(|(_, target)| target.alarm_name == alarm_name)
            .map(|(region, _)| region)
    }
}

/// Where `FAILOVER_CONFIG` is: the JSON itself, or a reference to it. A
/// CloudFormation parameter and a Lambda's whole environment are each capped
/// at 4 KB, so a large configuration lives in S3 (any size) or in SSM
/// Parameter Store (advanced tier: up to 8 KB), read once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Inline(String),
    /// `s3://bucket/key`
    S3 {
        bucket: String,
        key: String,
        /// The account the bucket must belong to (`ExpectedBucketOwner`):
        /// the function's `CONFIG_BUCKET_OWNER`, which it requires, so that
        /// a bucket name freed and taken by another account serves nothing.
        expected_owner: Option<String>,
    },
    /// `ssm:/name` or `ssm:name`
    Ssm {
        name: String,
    },
}

impl ConfigSource {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        let bad = |reason: &str| ConfigError::invalid("FAILOVER_CONFIG", raw, reason.to_owned());
        if raw.starts_with('{') {
            return Ok(ConfigSource::Inline(raw.to_owned()));
        }
        if let Some(rest) = raw.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    Ok(ConfigSource::S3 {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        expected_owner: None,
                    })
                }
                _ => Err(bad("an S3 reference is s3://bucket/key")),
            };
        }
        if let Some(name) = raw.strip_prefix("ssm:") {
            let ok = !name.is_empty()
                && name.len() <= 2048
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
            return match ok {
                true => Ok(ConfigSource::Ssm {
                    name: name.to_owned(),
                }),
                false => Err(bad("an SSM reference is ssm:<parameter name>")),
            };
        }
        Err(bad(
            "is neither the JSON document, s3://bucket/key nor ssm:<parameter name>",
        ))
    }

    /// Where the document came from, for errors and logs.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::Inline(_) => "FAILOVER_CONFIG (inline)".to_owned(),
            ConfigSource::S3 { bucket, key, .. } => format!("FAILOVER_CONFIG s3://{bucket}/{key}"),
            ConfigSource::Ssm { name } => format!("FAILOVER_CONFIG ssm:{name}"),
        }
    }
}

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub source: ConfigSource,
    pub table_name: String,
    pub bounds: Bounds,
}

/// Time and retry bounds of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// How long to wait for a Route 53 change to be INSYNC.
    pub insync_timeout: Duration,
    /// The first wait between two GetChange polls; it doubles up to 10 s.
    pub insync_poll: Duration,
    /// How long to wait for another invocation that is changing the records.
    pub lock_wait: Duration,
    /// How long the change lease lasts. Every write happens while at least
    /// `call_timeout` of it is left, so no write of ours can land after it.
    pub lease: Duration,
    /// The most one Route 53 call may take, retries included.
    pub call_timeout: Duration,
    /// Lease time kept in hand beyond one call, for the clocks of two
    /// execution environments to disagree.
    pub lease_margin: Duration,
    /// Attempts per Route 53 call on Throttling or PriorRequestNotComplete.
    pub route53_attempts: u32,
    /// The first backoff of those retries (full jitter, doubling, at most 5 s).
    pub route53_backoff: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            insync_timeout: Duration::from_secs(60),
            insync_poll: Duration::from_secs(1),
            lock_wait: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            call_timeout: Duration::from_secs(20),
            lease_margin: Duration::from_secs(5),
            route53_attempts: 4,
            route53_backoff: Duration::from_millis(200),
        }
    }
}

/// The SDK clients' own timeouts: one attempt, and one operation with the
/// SDK's retries. Route 53's calls are bounded again by `Bounds::call_timeout`.
pub const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The function's configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionConfigError {
    #[error(transparent)]
    Env(#[from] ConfigError),
    #[error(transparent)]
    Failover(#[from] InvalidFailoverConfig),
    #[error("{source_name}: {message}")]
    Unreadable {
        source_name: String,
        message: String,
    },
}

impl FunctionConfig {
    pub fn from_env(env: &Env) -> Result<Self, FunctionConfigError> {
        let mut source = ConfigSource::parse(env.required("FAILOVER_CONFIG")?)?;
        let owner = env.optional("CONFIG_BUCKET_OWNER");
        if let ConfigSource::S3 { expected_owner, .. } = &mut source {
            // Fail closed: an S3 document is read only from the stack's
            // own account's bucket.
            let owner = owner.map_or_else(|| env.required("CONFIG_BUCKET_OWNER"), Ok)?;
            if !(owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit())) {
                return Err(ConfigError::invalid(
                    "CONFIG_BUCKET_OWNER",
                    owner,
                    "must be a 12-digit AWS account id",
                )
                .into());
            }
            *expected_owner = Some(owner.to_owned());
        }
        let table_name = env.required("TABLE_NAME")?.to_owned();
        let defaults = Bounds::default();
        let seconds = |name: &'static str, default: Duration, max: u64| {
            let value: u64 = env.parse_or(name, default.as_secs())?;
            match value {
                1.. if value <= max => Ok(Duration::from_secs(value)),
                _ => Err(ConfigError::invalid(
                    name,
                    &value.to_string(),
                    format!("must be between 1 and {max} seconds"),
                )),
            }
        };
        let bounds = Bounds {
            insync_timeout: seconds("INSYNC_TIMEOUT_SECONDS", defaults.insync_timeout, 600)?,
            lock_wait: seconds("LOCK_WAIT_SECONDS", defaults.lock_wait, 600)?,
            ..defaults
        };
        Ok(FunctionConfig {
            source,
            table_name,
            bounds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub(crate) fn example() -> Value {
        json!({
            "hostedZoneId": "Z0123456789",
            "recordName": "global.iot.example.com",
            "ttl": 60,
            "regions": {
                "us-east-1": {"endpoint": "abc-ats.iot.us-east-1.amazonaws.com", "healthCheckId": "hc-1", "alarmName": "geoprov-health-us-east-1"},
                "eu-west-1": {"endpoint": "abc-ats.iot.eu-west-1.amazonaws.com", "healthCheckId": "hc-2", "alarmName": "geoprov-health-eu-west-1"}
            },
            "locations": [
                {"setIdentifier": "US East IoT Global Endpoint", "geoLocation": {"ContinentCode": "NA"}, "preference": ["us-east-1", "eu-west-1"]},
                {"setIdentifier": "Default IoT Global Endpoint", "geoLocation": {"CountryCode": "*"}, "preference": ["eu-west-1", "us-east-1"]}
            ],
            "failAfter": 2,
            "recoverAfter": 3,
            "minChangeIntervalSeconds": 60
        })
    }

    fn error_of(doc: &Value) -> InvalidFailoverConfig {
        FailoverConfig::from_json(&doc.to_string()).expect_err("config must be refused")
    }

    #[test]
    fn the_issue_example_is_valid() {
        let config = FailoverConfig::from_json(&example().to_string()).unwrap();
        assert_eq!(config.regions.len(), 2);
        assert_eq!(
            config
                .region_of_endpoint("ABC-ats.iot.eu-west-1.amazonaws.com.")
                .map(RegionName::as_str),
            Some("eu-west-1")
        );
        assert_eq!(
            config
                .region_of_alarm("geoprov-health-us-east-1")
                .map(RegionName::as_str),
            Some("us-east-1")
        );
    }

    /// A change that makes the example document invalid.
    type Mutation = Box<dyn Fn(&mut Value)>;

    /// A bad-field case: its name, the change, and the field its error names.
    type Case = (&'static str, Mutation, &'static str);

    /// Bad preferences, set identifiers, default location and TTLs, with the field each names.
    fn location_and_ttl_cases() -> Vec<Case> {
        vec![
            (
                "unknown region in a preference",
                Box::new(|d| d["locations"][0]["preference"][1] = json!("ap-south-1")),
                "locations[0].preference[1]",
            ),
            (
                "duplicate setIdentifier",
                Box::new(|d| {
                    d["locations"][1]["setIdentifier"] = json!("US East IoT Global Endpoint")
                }),
                "locations[1].setIdentifier",
            ),
            (
                "empty preference",
                Box::new(|d| d["locations"][0]["preference"] = json!([])),
                "locations[0].preference",
            ),
            (
                "region twice in a preference",
                Box::new(|d| d["locations"][0]["preference"] = json!(["us-east-1", "us-east-1"])),
                "locations[0].preference[1]",
            ),
            (
                "no default location",
                Box::new(|d| d["locations"][1]["geoLocation"] = json!({"ContinentCode": "EU"})),
                "locations",
            ),
            ("TTL zero", Box::new(|d| d["ttl"] = json!(0)), "ttl"),
            (
                "TTL above a day",
                Box::new(|d| d["ttl"] = json!(86_401)),
                "ttl",
            ),
            ("TTL negative", Box::new(|d| d["ttl"] = json!(-5)), "ttl"),
            ("TTL a string", Box::new(|d| d["ttl"] = json!("60")), "ttl"),
        ]
    }

    /// Bad geolocations and regions, with the field each names.
    fn geolocation_and_region_cases() -> Vec<Case> {
        vec![
            (
                "unknown continent",
                Box::new(|d| d["locations"][0]["geoLocation"] = json!({"ContinentCode": "XX"})),
                "locations[0].geoLocation",
            ),
            (
                "continent and country",
                Box::new(|d| {
                    d["locations"][0]["geoLocation"] =
                        json!({"ContinentCode": "NA", "CountryCode": "US"})
                }),
                "locations[0].geoLocation",
            ),
            (
                "lower-case country",
                Box::new(|d| d["locations"][0]["geoLocation"] = json!({"CountryCode": "us"})),
                "locations[0].geoLocation",
            ),
            (
                "unknown geolocation key",
                Box::new(|d| d["locations"][0]["geoLocation"] = json!({"Continent": "NA"})),
                "locations[0].geoLocation.Continent",
            ),
            (
                "bad region name",
                Box::new(|d| d["regions"]["US-EAST"] = d["regions"]["us-east-1"].clone()),
                "regions.US-EAST",
            ),
            (
                "another region's endpoint",
                Box::new(|d| {
                    d["regions"]["eu-west-1"]["endpoint"] =
                        d["regions"]["us-east-1"]["endpoint"].clone()
                }),
                "regions.eu-west-1.endpoint",
            ),
            (
                "shared endpoint",
                Box::new(|d| {
                    let both = json!("eu-west-1.us-east-1.iot.example.com");
                    d["regions"]["eu-west-1"]["endpoint"] = both.clone();
                    d["regions"]["us-east-1"]["endpoint"] = both;
                }),
                "regions.us-east-1.endpoint",
            ),
            (
                "empty health check",
                Box::new(|d| d["regions"]["eu-west-1"]["healthCheckId"] = json!("")),
                "regions.eu-west-1.healthCheckId",
            ),
        ]
    }

    /// Bad counts, fields, record name and region set, with the field each names.
    fn document_cases() -> Vec<Case> {
        vec![
            (
                "failAfter zero",
                Box::new(|d| d["failAfter"] = json!(0)),
                "failAfter",
            ),
            (
                "recoverAfter missing",
                Box::new(|d| {
                    d.as_object_mut().unwrap().remove("recoverAfter");
                }),
                "(document)",
            ),
            ("unknown field", Box::new(|d| d["tll"] = json!(60)), "tll"),
            (
                "bad record name",
                Box::new(|d| d["recordName"] = json!("global..example.com")),
                "recordName",
            ),
            (
                "no regions",
                Box::new(|d| d["regions"] = json!({})),
                "regions",
            ),
        ]
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = location_and_ttl_cases()
            .into_iter()
            .chain(geolocation_and_region_cases())
            .chain(document_cases());
        for (case, mutate, field) in cases {
            let mut doc = example();
            mutate(&mut doc);
            let err = error_of(&doc);
            assert_eq!(err.field, field, "{case}: {err}");
            assert!(
                err.to_string().starts_with("FAILOVER_CONFIG: "),
                "{case}: {err}"
            );
        }
    }

    /// The function reads an S3 document only from a bucket of its own
    /// account: without CONFIG_BUCKET_OWNER it does not start.
    #[test]
    fn an_s3_document_needs_the_bucket_owner() {
        let env = |owner: Option<&str>| {
            let mut pairs = vec![
                ("FAILOVER_CONFIG", "s3://geoprov-config/failover.json"),
                ("TABLE_NAME", "geoprov"),
            ];
            pairs.extend(owner.map(|o| ("CONFIG_BUCKET_OWNER", o)));
            Env::from_pairs(pairs)
        };
        let missing = FunctionConfig::from_env(&env(None)).unwrap_err();
        assert!(
            missing.to_string().contains("CONFIG_BUCKET_OWNER"),
            "{missing}"
        );
        let bad = FunctionConfig::from_env(&env(Some("me"))).unwrap_err();
        assert!(bad.to_string().contains("12-digit"), "{bad}");
        let config = FunctionConfig::from_env(&env(Some("123456789012"))).unwrap();
        assert!(matches!(
            config.source,
            ConfigSource::S3 { expected_owner: Some(ref o), .. } if o == "123456789012"
        ));
    }

    /// A region's endpoint is one of IoT's in that region, never any host.
    #[test]
    fn an_endpoint_must_be_iot_s_in_its_region() {
        let with = |region: &str, endpoint: &str| {
            let mut doc = example();
            doc["regions"][region]["endpoint"] = json!(endpoint);
            FailoverConfig::from_json(&doc.to_string())
        };
        for (region, endpoint) in [
            ("eu-west-1", "a1b2c3-ats.iot.eu-west-1.amazonaws.com"),
            ("eu-west-1", "A1B2C3-ATS.iot.eu-west-1.amazonaws.com."),
            ("eu-west-1", "eu-west-1.iot.example.com"),
            ("eu-west-1", "mqtt.eu-west-1.iot.example.com"),
        ] {
            assert!(with(region, endpoint).is_ok(), "{endpoint}");
        }
        for (region, endpoint) in [
            // Another host altogether: what a tampered document would name.
            ("eu-west-1", "mqtt.attacker.example.net"),
            // IoT, but another region's.
            ("eu-west-1", "a1b2c3-ats.iot.us-east-1.amazonaws.com"),
            // Not the ATS endpoint's shape.
            ("eu-west-1", "a1b2c3.iot.eu-west-1.amazonaws.com"),
            ("eu-west-1", "-ats.iot.eu-west-1.amazonaws.com"),
            ("eu-west-1", "x.a1b2c3-ats.iot.eu-west-1.amazonaws.com"),
            // Under the global name's domain, but naming no region.
            ("eu-west-1", "mqtt.iot.example.com"),
            // The global name itself: a loop.
            ("eu-west-1", "global.iot.example.com"),
            // Its domain in another zone.
            ("eu-west-1", "eu-west-1.iot.example.com.attacker.net"),
        ] {
            let err = with(region, endpoint).unwrap_err();
            assert_eq!(
                err.field,
                format!("regions.{region}.endpoint"),
                "{endpoint}: {err}"
            );
        }
    }

    #[test]
    fn config_sources_are_inline_s3_or_ssm() {
        assert_eq!(
            ConfigSource::parse(" {\"a\": 1}").unwrap(),
            ConfigSource::Inline("{\"a\": 1}".into())
        );
        assert_eq!(
            ConfigSource::parse("s3://geoprov-config/failover/config.json").unwrap(),
            ConfigSource::S3 {
                bucket: "geoprov-config".into(),
                key: "failover/config.json".into(),
                expected_owner: None,
            }
        );
        assert_eq!(
            ConfigSource::parse("ssm:/geoprov/failover").unwrap(),
            ConfigSource::Ssm {
                name: "/geoprov/failover".into()
            }
        );
        for bad in [
            "s3://bucket",
            "s3:///key",
            "ssm:",
            "ssm:a b",
            "[1]",
            "geoprov",
        ] {
            let err = ConfigSource::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("FAILOVER_CONFIG="), "{bad}: {err}");
        }
    }

    #[test]
    fn function_config_needs_the_table_and_bounds_in_range() {
        let doc = example().to_string();
        let env = Env::from_pairs([("FAILOVER_CONFIG", doc.as_str())]);
        assert_eq!(
            FunctionConfig::from_env(&env).unwrap_err(),
            FunctionConfigError::Env(ConfigError::Missing { name: "TABLE_NAME" })
        );
        let env = Env::from_pairs([
            ("FAILOVER_CONFIG", doc.as_str()),
            ("TABLE_NAME", "geoprov"),
            ("INSYNC_TIMEOUT_SECONDS", "0"),
        ]);
        assert!(
            FunctionConfig::from_env(&env)
                .unwrap_err()
                .to_string()
                .starts_with("INSYNC_TIMEOUT_SECONDS")
        );
        let env = Env::from_pairs([
            ("FAILOVER_CONFIG", doc.as_str()),
            ("TABLE_NAME", "geoprov"),
            ("LOCK_WAIT_SECONDS", "5"),
        ]);
        let config = FunctionConfig::from_env(&env).unwrap();
        assert_eq!(config.bounds.lock_wait, Duration::from_secs(5));
        assert_eq!(config.bounds.insync_timeout, Duration::from_secs(60));
    }
}
