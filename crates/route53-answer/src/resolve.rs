//! Resolution of a name in one hosted zone for a client in one location.

use std::collections::HashMap;

use serde::Serialize;

use crate::continents::continent_of;
use crate::record::{FailoverRole, RecordSet, normalize_name};

/// Aliases and CNAMEs followed before the model calls it a loop.
pub const MAX_HOPS: usize = 16;

/// Where the resolver asking is, as Route 53's geolocation database places
/// it. A country without a continent gets the continent Route 53 lists it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdivision: Option<String>,
}

impl ClientLocation {
    pub fn country(code: &str) -> Self {
        ClientLocation {
            country: Some(code.to_ascii_uppercase()),
            ..Default::default()
        }
    }

    /// An address Route 53 cannot place: only the default record matches.
    pub fn unknown() -> Self {
        ClientLocation::default()
    }

    /// A resolver inside a geolocation: for the default location, one Route
    /// 53 cannot place.
    pub fn within(geo: &crate::GeoLocation) -> Self {
        match geo.is_default() {
            true => ClientLocation::unknown(),
            false => ClientLocation {
                continent: geo.continent_code.clone(),
                country: geo.country_code.clone(),
                subdivision: geo.subdivision_code.clone(),
            },
        }
    }

    fn continent(&self) -> Option<&str> {
        self.continent
            .as_deref()
            .or_else(|| self.country.as_deref().and_then(continent_of))
    }
}

/// The routing policy of a group of records with one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Policy {
    Simple,
    Geolocation,
    Failover,
}

/// One record the resolution went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    pub name: String,
    pub policy: Policy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    /// The record's own health: its health check, and its alias target's when
    /// it evaluates target health.
    pub healthy: bool,
    /// The alias target, or the CNAME's value.
    pub to: String,
    pub alias: bool,
    /// Why this record of the group was chosen.
    pub why: String,
}

/// Why there is no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NoAnswer {
    #[error("{name} has no record in the zone")]
    NoRecord { name: String },
    #[error("no geolocation record of {name} matches the client and there is no default")]
    NoGeolocationMatch { name: String },
    #[error("more than {MAX_HOPS} aliases or CNAMEs in a row from {name}: a loop")]
    Loop { name: String },
    #[error("{name}: {what} is not modelled")]
    Unsupported { name: String, what: String },
}

/// What a resolver gets, and the records that led there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub answer: Option<String>,
    pub path: Vec<Hop>,
    #[serde(rename = "noAnswer", skip_serializing_if = "Option::is_none")]
    pub no_answer: Option<NoAnswer>,
}

/// The record sets of one hosted zone, indexed by name.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    by_name: HashMap<String, Vec<RecordSet>>,
}

impl Zone {
    pub fn new(records: impl IntoIterator<Item = RecordSet>) -> Self {
        let mut by_name: HashMap<String, Vec<RecordSet>> = HashMap::new();
        for record in records {
            by_name
                .entry(normalize_name(&record.name))
                .or_default()
                .push(record);
        }
        Zone { by_name }
    }

    fn group(&self, name: &str) -> Option<&[RecordSet]> {
        self.by_name.get(name).map(Vec::as_slice)
    }

    /// What a resolver at `client` gets for `name`, with `healthy` giving the
    /// status of each health check (an id it does not know is its caller's
    /// business; pass `|_| true` for "all healthy").
    pub fn resolve(
        &self,
        name: &str,
        client: &ClientLocation,
        healthy: &dyn Fn(&str) -> bool,
    ) -> Resolution {
        let mut path = Vec::new();
        let mut current = normalize_name(name);
        let fail = |path, no_answer| Resolution {
            answer: None,
            path,
            no_answer: Some(no_answer),
        };
        for _ in 0..=MAX_HOPS {
            let Some(group) = self.group(&current) else {
                // A name the zone does not hold is where the zone's answer ends.
                return match path.is_empty() {
                    true => fail(path, NoAnswer::NoRecord { name: current }),
                    false => Resolution {
                        answer: Some(current),
                        path,
                        no_answer: None,
                    },
                };
            };
            let (record, policy, why) = match self.choose(&current, group, client, healthy) {
                Ok(chosen) => chosen,
                Err(no_answer) => return fail(path, no_answer),
            };
            let (to, alias) = match &record.alias_target {
                Some(target) => (normalize_name(&target.dns_name), true),
                None => match record.values().collect::<Vec<_>>().as_slice() {
                    [one] if record.record_type == "CNAME" => (normalize_name(one), false),
                    values => {
                        // An address record ends the resolution with its values.
                        let answer = values.join(", ");
                        path.push(self.hop(&current, record, policy, why, &answer, false, healthy));
                        return Resolution {
                            answer: Some(answer),
                            path,
                            no_answer: None,
                        };
                    }
                },
            };
            path.push(self.hop(&current, record, policy, why, &to, alias, healthy));
            current = to;
        }
        let start = normalize_name(name);
        fail(path, NoAnswer::Loop { name: start })
    }

    #[allow(clippy::too_many_arguments)]
    fn hop(
        &self,
        name: &str,
        record: &RecordSet,
        policy: Policy,
        why: String,
        to: &str,
        alias: bool,
        healthy: &dyn Fn(&str) -> bool,
    ) -> Hop {
        Hop {
            name: name.to_owned(),
            policy,
            set_identifier: record.set_identifier.clone(),
            health_check_id: record.health_check_id.clone(),
            healthy: self.record_healthy(record, healthy, 0),
            to: to.to_owned(),
            alias,
            why,
        }
    }

    /// A record's health: a health check it carries must be healthy, and an
    /// alias that evaluates target health needs a healthy target. A record
    /// with neither is always healthy.
    pub fn record_healthy(
        &self,
        record: &RecordSet,
        healthy: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> bool {
        let checked = record.health_check_id.as_deref().is_none_or(healthy);
        let target = match &record.alias_target {
            Some(target) if target.evaluate_target_health => {
                self.name_healthy(&normalize_name(&target.dns_name), healthy, depth + 1)
            }
            _ => true,
        };
        checked && target
    }

    /// An alias target that is a group of records is healthy when at least one
    /// of them is. A name outside the zone cannot be evaluated here and counts
    /// as healthy; a loop counts as unhealthy.
    fn name_healthy(&self, name: &str, healthy: &dyn Fn(&str) -> bool, depth: usize) -> bool {
        if depth > MAX_HOPS {
            return false;
        }
        match self.group(name) {
            None => true,
            Some(group) => group.iter().any(|r| self.record_healthy(r, healthy, depth)),
        }
    }

    fn choose<'z>(
        &'z self,
        name: &str,
        group: &'z [RecordSet],
        client: &ClientLocation,
        healthy: &dyn Fn(&str) -> bool,
    ) -> Result<(&'z RecordSet, Policy, String), NoAnswer> {
        let unsupported = |what: &str| NoAnswer::Unsupported {
            name: name.to_owned(),
            what: what.to_owned(),
        };
        if group
            .iter()
            .any(|r| r.weight.is_some() || r.region.is_some() || r.multi_value_answer.is_some())
        {
            return Err(unsupported(
                "weighted, latency or multivalue answer routing",
            ));
        }
        let geo = group.iter().filter(|r| r.geo_location.is_some()).count();
        let failover = group.iter().filter(|r| r.failover.is_some()).count();
        let is_healthy = |r: &RecordSet| self.record_healthy(r, healthy, 0);
        match (geo, failover) {
            (0, 0) => match group {
                [one] => Ok((one, Policy::Simple, "the only record".to_owned())),
                _ => Err(unsupported("several simple records with one name")),
            },
            (n, 0) if n == group.len() => self.choose_geolocation(name, group, client, &is_healthy),
            (0, n) if n == group.len() => choose_failover(group, &is_healthy)
                .map(|(r, why)| (r, Policy::Failover, why))
                .ok_or_else(|| unsupported("a failover group without a PRIMARY or SECONDARY")),
            _ => Err(unsupported(
                "records of one name with mixed routing policies",
            )),
        }
    }

    /// The most specific record that matches (subdivision, country,
    /// continent, default); an unhealthy one passes to the next broader one.
    /// When every record that matches is unhealthy, Route 53 answers as if
    /// all were healthy: with the most specific.
    fn choose_geolocation<'z>(
        &self,
        name: &str,
        group: &'z [RecordSet],
        client: &ClientLocation,
        is_healthy: &dyn Fn(&RecordSet) -> bool,
    ) -> Result<(&'z RecordSet, Policy, String), NoAnswer> {
        let find = |what: String, test: &dyn Fn(&crate::GeoLocation) -> bool| {
            group
                .iter()
                .find(|r| r.geo_location.as_ref().is_some_and(test))
                .map(|r| (what, r))
        };
        let country = client.country.as_deref();
        let mut matches = Vec::new();
        if let (Some(country), Some(sub)) = (country, client.subdivision.as_deref()) {
            matches.extend(find(format!("subdivision {country}-{sub}"), &|g| {
                g.country_code.as_deref() == Some(country)
                    && g.subdivision_code.as_deref() == Some(sub)
            }));
        }
        if let Some(country) = country {
            matches.extend(find(format!("country {country}"), &|g| {
                g.country_code.as_deref() == Some(country) && g.subdivision_code.is_none()
            }));
        }
        if let Some(continent) = client.continent() {
            matches.extend(find(format!("continent {continent}"), &|g| {
                g.continent_code.as_deref() == Some(continent)
            }));
        }
        matches.extend(find("the default location".to_owned(), &|g| g.is_default()));

        let mut passed = Vec::new();
        for (what, record) in &matches {
            if is_healthy(record) {
                let why = match passed.is_empty() {
                    true => format!("geolocation: {what} matches"),
                    false => format!(
                        "geolocation: {what} matches; {} unhealthy",
                        passed.join(", ")
                    ),
                };
                return Ok((*record, Policy::Geolocation, why));
            }
            passed.push(what.clone());
        }
        match matches.first() {
            Some((what, record)) => Ok((
                *record,
                Policy::Geolocation,
                format!(
                    "geolocation: every match ({}) unhealthy, so the most specific, {what}",
                    passed.join(", ")
                ),
            )),
            None => Err(NoAnswer::NoGeolocationMatch {
                name: name.to_owned(),
            }),
        }
    }
}

/// PRIMARY while it is healthy, else a healthy SECONDARY; when both are
/// unhealthy, Route 53 treats both as healthy and answers with the PRIMARY.
fn choose_failover<'z>(
    group: &'z [RecordSet],
    is_healthy: &dyn Fn(&RecordSet) -> bool,
) -> Option<(&'z RecordSet, String)> {
    let role = |role| group.iter().find(|r| r.failover == Some(role));
    let (primary, secondary) = (role(FailoverRole::Primary), role(FailoverRole::Secondary));
    match (primary, secondary) {
        (Some(p), _) if is_healthy(p) => Some((p, "failover: PRIMARY healthy".to_owned())),
        (Some(_), Some(s)) if is_healthy(s) => Some((
            s,
            "failover: PRIMARY unhealthy, SECONDARY healthy".to_owned(),
        )),
        (Some(p), Some(_)) => Some((
            p,
            "failover: both unhealthy, so both count as healthy: PRIMARY".to_owned(),
        )),
        (Some(p), None) => Some((
            p,
            "failover: PRIMARY unhealthy and alone, so it counts as healthy".to_owned(),
        )),
        (None, Some(s)) => Some((s, "failover: SECONDARY alone".to_owned())),
        (None, None) => None,
    }
}
