//! Record sets in the shape Route 53's API returns them (`ListResourceRecordSets`,
//! and so `aws route53 list-resource-record-sets` JSON), with only the fields
//! the answer model reads.

use serde::{Deserialize, Serialize};

/// A DNS name as Route 53 compares names: lower case, without the trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A Route 53 geolocation, with Route 53's own keys. `CountryCode: "*"` is the
/// default location.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GeoLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdivision_code: Option<String>,
}

impl GeoLocation {
    pub fn continent(code: &str) -> Self {
        GeoLocation {
            continent_code: Some(code.to_owned()),
            ..Default::default()
        }
    }

    pub fn country(code: &str) -> Self {
        GeoLocation {
            country_code: Some(code.to_owned()),
            ..Default::default()
        }
    }

    pub fn subdivision(country: &str, subdivision: &str) -> Self {
        GeoLocation {
            country_code: Some(country.to_owned()),
            subdivision_code: Some(subdivision.to_owned()),
            ..Default::default()
        }
    }

    /// Route 53's default location, for every address no other record matches.
    pub fn default_location() -> Self {
        GeoLocation::country("*")
    }

    pub fn is_default(&self) -> bool {
        self.country_code.as_deref() == Some("*") && self.subdivision_code.is_none()
    }
}

/// The role of a record in a failover pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailoverRole {
    Primary,
    Secondary,
}

/// Where an alias record leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasTarget {
    pub hosted_zone_id: String,
    #[serde(rename = "DNSName")]
    pub dns_name: String,
    pub evaluate_target_health: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceRecord {
    pub value: String,
}

/// One record set. Fields Route 53 has and the model does not read (for
/// example `CidrRoutingConfig`) are ignored when reading JSON; the routing
/// policies the model does not implement are kept so it can refuse them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordSet {
    pub name: String,
    #[serde(rename = "Type")]
    pub record_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_location: Option<GeoLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_target: Option<AliasTarget>,
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_records: Vec<ResourceRecord>,
    /// Weighted routing: not modelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Latency routing: not modelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Multivalue answer routing: not modelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_value_answer: Option<bool>,
}

impl RecordSet {
    /// A plain (non-alias) CNAME.
    pub fn cname(name: &str, value: &str, ttl: i64) -> Self {
        RecordSet {
            name: name.to_owned(),
            record_type: "CNAME".to_owned(),
            set_identifier: None,
            geo_location: None,
            failover: None,
            health_check_id: None,
            alias_target: None,
            ttl: Some(ttl),
            resource_records: vec![ResourceRecord {
                value: value.to_owned(),
            }],
            weight: None,
            region: None,
            multi_value_answer: None,
        }
    }

    /// A CNAME alias to another record of the same zone.
    pub fn cname_alias(name: &str, zone_id: &str, target: &str, evaluate: bool) -> Self {
        RecordSet {
            ttl: None,
            resource_records: Vec::new(),
            alias_target: Some(AliasTarget {
                hosted_zone_id: zone_id.to_owned(),
                dns_name: target.to_owned(),
                evaluate_target_health: evaluate,
            }),
            ..RecordSet::cname(name, "", 0)
        }
    }

    pub fn with_set_identifier(mut self, id: &str) -> Self {
        self.set_identifier = Some(id.to_owned());
        self
    }

    pub fn with_geo_location(mut self, geo: GeoLocation) -> Self {
        self.geo_location = Some(geo);
        self
    }

    pub fn with_failover(mut self, role: FailoverRole) -> Self {
        self.failover = Some(role);
        self
    }

    pub fn with_health_check(mut self, id: &str) -> Self {
        self.health_check_id = Some(id.to_owned());
        self
    }

    /// The values of a non-alias record.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.resource_records.iter().map(|r| r.value.as_str())
    }

    /// What identifies a record set in a hosted zone: name, type and set
    /// identifier. Two record sets with the same key cannot coexist.
    pub fn key(&self) -> (String, String, Option<String>) {
        (
            normalize_name(&self.name),
            self.record_type.clone(),
            self.set_identifier.clone(),
        )
    }
}
