//! The record tree under the global name, and the changes that take the zone
//! from what Route 53 holds to it. Pure and deterministic.
//!
//! For each location, in its preference order, over the regions the control
//! plane admits (`chain`):
//!
//! ```text
//! <global>                     geolocation alias (EvaluateTargetHealth false) -> <a1>.<key>.<global>
//! <a1>.<key>.<global>  PRIMARY   CNAME <a1 endpoint>, HealthCheckId <a1 check>
//!                      SECONDARY alias (EvaluateTargetHealth true) -> <a2>.<key>.<global>
//! ...
//! <an>.<key>.<global>  PRIMARY   CNAME <an endpoint>, HealthCheckId <an check>
//!                      SECONDARY CNAME <a1 endpoint>, no health check
//! ```
//!
//! Every step is a failover pair of one PRIMARY and one SECONDARY, the shape
//! the Route 53 Developer Guide documents ("for failover to function
//! correctly, you must create one primary and one secondary failover
//! record", <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-configuring.html>).
//! Route 53 answers with the first region of the chain whose health check is
//! healthy, with no call to its API: that is the data plane's failover. The
//! last step's SECONDARY carries no health check, so it is always healthy
//! ("a record without a health check is always healthy"): when every region
//! of the chain is unhealthy, each step passes to the next and the last
//! answers the chain's first region. A one-region chain is a pair whose both
//! members name that region.
//!
//! The geolocation alias does not evaluate its target's health on purpose:
//! if it did, a location whose chain is all down would fall back to the
//! continent or default record, whose regions may be outside the location's
//! preference (its residency rule). A region outside the preference therefore
//! never appears in a location's answer path.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::RegionName;
use route53_answer::{FailoverRole, GeoLocation, RecordSet, normalize_name};
use serde::Serialize;

use crate::config::{FailoverConfig, Location};

/// The set identifiers of the two records of a chain step.
pub const PRIMARY_ID: &str = "geoprov-primary";
pub const SECONDARY_ID: &str = "geoprov-secondary";

/// The DNS label that names a location in the tree: `default`,
/// `continent-na`, `country-de`, `subdivision-us-ca`.
pub fn location_key(geo: &GeoLocation) -> String {
    let lower = |s: &str| s.to_ascii_lowercase();
    match (
        geo.continent_code.as_deref(),
        geo.country_code.as_deref(),
        geo.subdivision_code.as_deref(),
    ) {
        (_, Some("*"), _) => "default".to_owned(),
        (_, Some(country), Some(sub)) => format!("subdivision-{}-{}", lower(country), lower(sub)),
        (_, Some(country), None) => format!("country-{}", lower(country)),
        (Some(continent), None, _) => format!("continent-{}", lower(continent)),
        (None, None, _) => "unplaced".to_owned(),
    }
}

/// The name of the chain step of `region` for the location `key`.
pub fn step_name(region: &RegionName, key: &str, record_name: &str) -> String {
    format!("{region}.{key}.{record_name}")
}

/// The regions a location's chain uses: its preference less what the control
/// plane holds out. When it would hold out every region, the chain keeps the
/// whole preference and the health checks alone decide (`stranded`).
pub fn chain(
    location: &Location,
    admitted: &dyn Fn(&RegionName) -> bool,
) -> (Vec<RegionName>, bool) {
    let chain: Vec<RegionName> = location
        .preference
        .iter()
        .filter(|r| admitted(r))
        .cloned()
        .collect();
    match chain.is_empty() {
        true => (location.preference.clone(), true),
        false => (chain, false),
    }
}

/// Every record of one location's tree, steps from the last to the first and
/// then the geolocation alias: an order in which each alias's target exists
/// before the alias.
pub fn location_records(
    config: &FailoverConfig,
    location: &Location,
    chain: &[RegionName],
) -> Vec<RecordSet> {
    let key = location_key(&location.geo_location);
    let name = &config.record_name;
    let zone = &config.hosted_zone_id;
    let mut records = Vec::with_capacity(2 * chain.len() + 1);
    for (i, region) in chain.iter().enumerate().rev() {
        let target = &config.regions[region];
        let step = step_name(region, &key, name);
        records.push(
            RecordSet::cname(&step, &target.endpoint, i64::from(config.ttl))
                .with_set_identifier(PRIMARY_ID)
                .with_failover(FailoverRole::Primary)
                .with_health_check(&target.health_check_id),
        );
        let secondary = match chain.get(i + 1) {
            Some(next) => RecordSet::cname_alias(&step, zone, &step_name(next, &key, name), true),
            // The end of the chain: the first region, with no health check.
            None => RecordSet::cname(
                &step,
                &config.regions[&chain[0]].endpoint,
                i64::from(config.ttl),
            ),
        };
        records.push(
            secondary
                .with_set_identifier(SECONDARY_ID)
                .with_failover(FailoverRole::Secondary),
        );
    }
    if let Some(first) = chain.first() {
        records.push(
            RecordSet::cname_alias(name, zone, &step_name(first, &key, name), false)
                .with_set_identifier(&location.set_identifier)
                .with_geo_location(location.geo_location.clone()),
        );
    }
    records
}

/// One change to the zone. Each is sent whole in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneChange {
    Upsert(RecordSet),
    /// A delete names the record exactly as Route 53 holds it.
    Delete(RecordSet),
    /// A record that turns from a plain CNAME into an alias (the flat records
    /// of earlier versions, the SECONDARY of a step that becomes or stops
    /// being the last of its chain) or back, or a renamed location's alias:
    /// DELETE and CREATE in one request, the atomic pair the Route 53
    /// Developer Guide documents for it; Route 53 applies a request as one
    /// transaction, so the name never goes unanswered.
    Replace {
        old: Box<RecordSet>,
        new: Box<RecordSet>,
    },
}

impl ZoneChange {
    /// The record the change leaves (or, for a delete, removes).
    pub fn record(&self) -> &RecordSet {
        match self {
            ZoneChange::Upsert(r) | ZoneChange::Delete(r) => r,
            ZoneChange::Replace { new, .. } => new,
        }
    }

    /// What the change counts for against Route 53's limits of one request:
    /// (ResourceRecord elements, characters of values), an UPSERT twice.
    fn weight(&self) -> (usize, usize) {
        fn of(record: &RecordSet) -> (usize, usize) {
            let chars: usize = record.values().map(str::len).sum::<usize>()
                + record.alias_target.as_ref().map_or(0, |a| a.dns_name.len());
            (record.resource_records.len().max(1), chars)
        }
        match self {
            ZoneChange::Upsert(r) => (2 * of(r).0, 2 * of(r).1),
            ZoneChange::Delete(r) => of(r),
            ZoneChange::Replace { old, new } => (of(old).0 + of(new).0, of(old).1 + of(new).1),
        }
    }
}

/// A record in the way of a location's tree; the location is left as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub set_identifier: String,
    /// The name of the record in the way.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicting_set_identifier: Option<String>,
    pub message: String,
}

/// The tree of every location, and the ordered changes that reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreePlan {
    /// Per location (configuration order): its chain and whether it is stranded.
    pub chains: Vec<(Vec<RegionName>, bool)>,
    /// UPSERTs (targets before the aliases that name them), then DELETEs
    /// (aliases before their targets): every prefix leaves each location
    /// answerable.
    pub changes: Vec<ZoneChange>,
    /// The location each change belongs to (index into the configuration),
    /// `None` for records of locations no longer configured.
    pub change_locations: Vec<Option<usize>>,
    pub conflicts: Vec<Conflict>,
}

/// Whether two record sets are the same as Route 53 would hold them.
pub fn same_record(a: &RecordSet, b: &RecordSet) -> bool {
    let alias = |r: &RecordSet| {
        r.alias_target.as_ref().map(|t| {
            (
                t.hosted_zone_id
                    .trim_start_matches("/hostedzone/")
                    .to_owned(),
                normalize_name(&t.dns_name),
                t.evaluate_target_health,
            )
        })
    };
    let values = |r: &RecordSet| -> BTreeSet<String> { r.values().map(normalize_name).collect() };
    a.key() == b.key()
        && a.geo_location == b.geo_location
        && a.failover == b.failover
        && a.health_check_id == b.health_check_id
        && alias(a) == alias(b)
        && values(a) == values(b)
        && (a.alias_target.is_some() || a.ttl == b.ttl)
}

/// Whether a record under the global name has exactly the shape geoprov gives
/// its records, so that geoprov may delete it when it no longer needs it.
pub fn is_geoprov_record(record: &RecordSet, record_name: &str) -> bool {
    let name = normalize_name(&record.name);
    let suffix = format!(".{record_name}");
    let alias_into_tree = |evaluate: bool| {
        record.alias_target.as_ref().is_some_and(|t| {
            t.evaluate_target_health == evaluate && normalize_name(&t.dns_name).ends_with(&suffix)
        }) && record.resource_records.is_empty()
    };
    if record.record_type != "CNAME"
        || record.health_check_id.is_some() && record.alias_target.is_some()
    {
        return false;
    }
    if name == record_name {
        return record.geo_location.is_some()
            && record.failover.is_none()
            && alias_into_tree(false);
    }
    let Some(prefix) = name.strip_suffix(&suffix) else {
        return false;
    };
    let step_shaped = prefix.split('.').count() == 2 && record.geo_location.is_none();
    step_shaped
        && match (record.set_identifier.as_deref(), record.failover) {
            (Some(PRIMARY_ID), Some(FailoverRole::Primary)) => {
                record.alias_target.is_none() && record.health_check_id.is_some()
            }
            (Some(SECONDARY_ID), Some(FailoverRole::Secondary)) => {
                // An alias to the next step, or the end of the chain: a
                // plain CNAME without a health check.
                let end_of_chain = record.alias_target.is_none()
                    && record.health_check_id.is_none()
                    && record.resource_records.len() == 1;
                alias_into_tree(true) || end_of_chain
            }
            _ => false,
        }
}

/// Plans the changes from `current` (every record at the global name and
/// below it, as listed) to the tree of `config` with the chains given by
/// `admitted`.
///
/// The order keeps every location answered in its preference after any
/// prefix of the changes, and never lets aliases form a loop:
/// 1. UPSERTs and replaces, per location the steps from the last to the
///    first and then the geolocation alias, so each alias's target exists
///    before it. The new last step's SECONDARY turns into the plain CNAME
///    first, so re-ordering a preference never points two steps at each
///    other, even for a moment;
/// 2. DELETEs: geolocation aliases of locations no longer configured, then
///    SECONDARY, then PRIMARY records, so no record is deleted while a
///    remaining one names it.
pub fn plan(
    config: &FailoverConfig,
    current: &[RecordSet],
    admitted: &dyn Fn(&RegionName) -> bool,
) -> TreePlan {
    let lookup = Lookup::new(config, current);
    let mut planned = Planned::default();
    for (index, location) in config.locations.iter().enumerate() {
        planned.location(config, &lookup, index, location, admitted);
    }
    let deletes = lookup.deletes(&planned.wanted);
    let Planned {
        mut plan, upserts, ..
    } = planned;
    for (index, change) in upserts {
        plan.changes.push(change);
        plan.change_locations.push(Some(index));
    }
    for record in deletes {
        plan.changes.push(ZoneChange::Delete(record.clone()));
        plan.change_locations.push(lookup.location_of(record));
    }
    plan
}

/// The key of a record set: its name, type and set identifier.
type RecordKey = (String, String, Option<String>);

/// The records `plan` starts from, indexed, and the configured locations
/// by the key in a step's name and by set identifier.
struct Lookup<'a> {
    record_name: &'a String,
    current: &'a [RecordSet],
    by_key: BTreeMap<RecordKey, &'a RecordSet>,
    by_name: BTreeMap<String, Vec<&'a RecordSet>>,
    keys: BTreeMap<String, usize>,
    ids: BTreeMap<&'a str, usize>,
    suffix: String,
    configured_ids: BTreeSet<&'a str>,
}

impl<'a> Lookup<'a> {
    /// Indexes `current` by key and by name, and `config`'s locations.
    fn new(config: &'a FailoverConfig, current: &'a [RecordSet]) -> Self {
        let record_name = &config.record_name;
        let by_key: BTreeMap<_, &RecordSet> = current.iter().map(|r| (r.key(), r)).collect();
        let mut by_name: BTreeMap<String, Vec<&RecordSet>> = BTreeMap::new();
        for record in current {
            by_name
                .entry(normalize_name(&record.name))
                .or_default()
                .push(record);
        }
        // Which location a record belongs to: by the key in a step's name, or by
        // the set identifier of a geolocation alias.
        let keys: BTreeMap<String, usize> = config
            .locations
            .iter()
            .enumerate()
            .map(|(i, l)| (location_key(&l.geo_location), i))
            .collect();
        let ids: BTreeMap<&str, usize> = config
            .locations
            .iter()
            .enumerate()
            .map(|(i, l)| (l.set_identifier.as_str(), i))
            .collect();
        let suffix = format!(".{record_name}");
        let configured_ids: BTreeSet<&str> = config
            .locations
            .iter()
            .map(|l| l.set_identifier.as_str())
            .collect();
        Lookup {
            record_name,
            current,
            by_key,
            by_name,
            keys,
            ids,
            suffix,
            configured_ids,
        }
    }

    /// The records at the global name itself.
    fn at_name(&self) -> &[&'a RecordSet] {
        self.by_name
            .get(self.record_name.as_str())
            .map_or(&[], Vec::as_slice)
    }

    /// Which configured location a record belongs to, if any.
    fn location_of(&self, record: &RecordSet) -> Option<usize> {
        let name = normalize_name(&record.name);
        if name == *self.record_name {
            return self.ids.get(record.set_identifier.as_deref()?).copied();
        }
        let (_region, key) = name.strip_suffix(&self.suffix)?.split_once('.')?;
        self.keys.get(key).copied()
    }

    /// The records geoprov made that the tree no longer has, in deletion order.
    fn deletes(&self, wanted: &BTreeSet<RecordKey>) -> Vec<&'a RecordSet> {
        let record_name = self.record_name;
        let mut deletes: Vec<&RecordSet> = self
            .current
            .iter()
            .filter(|r| !wanted.contains(&r.key()) && is_geoprov_record(r, record_name))
            .filter(|r| {
                // A geolocation alias of a location still configured is replaced by
                // an UPSERT, never deleted.
                !(normalize_name(&r.name) == *record_name
                    && r.set_identifier
                        .as_deref()
                        .is_some_and(|id| self.configured_ids.contains(id)))
            })
            .collect();
        deletes.sort_by_key(|r| (delete_rank(r, record_name), r.key()));
        deletes
    }
}

/// What `plan` gathers location by location: the chains and conflicts, the
/// records to keep, and the UPSERTs and replaces with their locations.
#[derive(Default)]
struct Planned {
    plan: TreePlan,
    wanted: BTreeSet<RecordKey>,
    upserts: Vec<(usize, ZoneChange)>,
}

impl Planned {
    /// Decides a location's chain, and whether its records are written or (conflict) kept.
    fn location(
        &mut self,
        config: &FailoverConfig,
        lookup: &Lookup<'_>,
        index: usize,
        location: &Location,
        admitted: &dyn Fn(&RegionName) -> bool,
    ) {
        let (regions, stranded) = chain(location, admitted);
        let records = location_records(config, location, &regions);
        self.plan.chains.push((regions, stranded));
        for record in &records {
            self.wanted.insert(record.key());
        }
        let renamed = match in_the_way(
            location,
            &records,
            lookup.at_name(),
            &lookup.by_name,
            lookup.record_name,
            &lookup.configured_ids,
        ) {
            Some(InTheWay::Conflict(conflict)) => {
                self.plan.conflicts.push(conflict);
                // Keep what is there: nothing of this location is changed or deleted.
                for record in lookup
                    .current
                    .iter()
                    .filter(|r| lookup.location_of(r) == Some(index))
                {
                    self.wanted.insert(record.key());
                }
                return;
            }
            Some(InTheWay::Renamed(old)) => Some(old),
            None => None,
        };
        self.changes(lookup, index, records, renamed);
    }

    /// Decides whether each of a location's records is kept, UPSERTed or replaced.
    fn changes(
        &mut self,
        lookup: &Lookup<'_>,
        index: usize,
        records: Vec<RecordSet>,
        renamed: Option<&RecordSet>,
    ) {
        for record in records {
            let is_alias_of_location = normalize_name(&record.name) == *lookup.record_name;
            match (lookup.by_key.get(&record.key()), &renamed) {
                (None, Some(old)) if is_alias_of_location => {
                    // The location's own alias under its former set identifier:
                    // replaced in one request, so the geolocation never goes unanswered.
                    self.wanted.insert(old.key());
                    self.upserts.push((
                        index,
                        ZoneChange::Replace {
                            old: Box::new((*old).clone()),
                            new: Box::new(record),
                        },
                    ));
                }
                (Some(old), _) if same_record(old, &record) => {}
                (Some(old), _) if old.alias_target.is_some() != record.alias_target.is_some() => {
                    self.upserts.push((
                        index,
                        ZoneChange::Replace {
                            old: Box::new((*old).clone()),
                            new: Box::new(record),
                        },
                    ));
                }
                _ => self.upserts.push((index, ZoneChange::Upsert(record))),
            }
        }
    }
}

/// Deletes of geolocation aliases first, then of secondaries (aliases), then
/// of primaries: no record is deleted while a remaining record names it.
fn delete_rank(record: &RecordSet, record_name: &str) -> u8 {
    match (normalize_name(&record.name) == record_name, record.failover) {
        (true, _) => 0,
        (false, Some(FailoverRole::Secondary)) => 1,
        _ => 2,
    }
}

/// What stands where a location's tree goes.
enum InTheWay<'a> {
    /// A record Route 53 would not let the tree coexist with.
    Conflict(Conflict),
    /// geoprov's own alias for this geolocation under a set identifier no
    /// longer configured: the location was renamed.
    Renamed(&'a RecordSet),
}

fn in_the_way<'a>(
    location: &Location,
    records: &[RecordSet],
    at_name: &[&'a RecordSet],
    by_name: &BTreeMap<String, Vec<&RecordSet>>,
    record_name: &str,
    configured_ids: &BTreeSet<&str>,
) -> Option<InTheWay<'a>> {
    let conflict = |record: &RecordSet, message: String| {
        InTheWay::Conflict(Conflict {
            set_identifier: location.set_identifier.clone(),
            name: normalize_name(&record.name),
            conflicting_set_identifier: record.set_identifier.clone(),
            message,
        })
    };
    let mut renamed = None;
    for record in at_name {
        let same_id = record.set_identifier.as_deref() == Some(location.set_identifier.as_str());
        if record.record_type != "CNAME" || record.geo_location.is_none() {
            return Some(conflict(
                record,
                format!(
                    "a {} record without geolocation holds the global name; geolocation records cannot share it",
                    record.record_type
                ),
            ));
        }
        if !same_id && record.geo_location.as_ref() == Some(&location.geo_location) {
            let unconfigured = record
                .set_identifier
                .as_deref()
                .is_some_and(|id| !configured_ids.contains(id));
            if unconfigured && is_geoprov_record(record, record_name) {
                renamed = Some(InTheWay::Renamed(record));
                continue;
            }
            return Some(conflict(
                record,
                "another record already answers this geolocation under another set identifier"
                    .into(),
            ));
        }
    }
    // A step name must hold only geoprov's failover pair.
    let step_names: BTreeSet<String> = records
        .iter()
        .map(|r| normalize_name(&r.name))
        .filter(|n| n != record_name)
        .collect();
    step_names
        .iter()
        .filter_map(|name| by_name.get(name))
        .flatten()
        .find(|r| !is_geoprov_record(r, record_name))
        .map(|r| {
            conflict(
                r,
                "a record that is not geoprov's holds a name of this location's chain".into(),
            )
        })
        .or(renamed)
}

/// Route 53's limits on one ChangeResourceRecordSets request.
pub const MAX_RECORDS_PER_BATCH: usize = 1000;
pub const MAX_VALUE_CHARS_PER_BATCH: usize = 32_000;

/// Splits ordered changes into as few consecutive batches as Route 53's
/// limits allow, keeping their order.
pub fn batches(changes: &[ZoneChange]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut records, mut chars) = (0, 0, 0);
    for (i, change) in changes.iter().enumerate() {
        let (r, c) = change.weight();
        if i > start
            && (records + r > MAX_RECORDS_PER_BATCH || chars + c > MAX_VALUE_CHARS_PER_BATCH)
        {
            batches.push(start..i);
            (start, records, chars) = (i, 0, 0);
        }
        records += r;
        chars += c;
    }
    if start < changes.len() {
        batches.push(start..changes.len());
    }
    batches
}

/// The zone after the changes, as Route 53 would hold it.
pub fn apply(current: &[RecordSet], changes: &[ZoneChange]) -> Vec<RecordSet> {
    let mut zone: BTreeMap<_, RecordSet> = current.iter().map(|r| (r.key(), r.clone())).collect();
    for change in changes {
        match change {
            ZoneChange::Upsert(r) => {
                zone.insert(r.key(), r.clone());
            }
            ZoneChange::Replace { old, new } => {
                zone.remove(&old.key());
                zone.insert(new.key(), RecordSet::clone(new));
            }
            ZoneChange::Delete(r) => {
                zone.remove(&r.key());
            }
        }
    }
    zone.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, endpoint};
    use proptest::prelude::*;
    use route53_answer::{ClientLocation, Zone};

    const NAME: &str = "global.iot.example.com";

    fn config(regions: &[&str], locations: &[(&str, GeoLocation, Vec<&str>)]) -> FailoverConfig {
        let locations: Vec<(&str, GeoLocation, &[&str])> = locations
            .iter()
            .map(|(id, geo, preference)| (*id, geo.clone(), preference.as_slice()))
            .collect();
        fixtures::config(regions, &locations)
    }

    fn two_regions() -> FailoverConfig {
        config(
            &["us-east-1", "eu-west-1"],
            &[
                (
                    "NA",
                    GeoLocation::continent("NA"),
                    vec!["us-east-1", "eu-west-1"],
                ),
                ("EU-only", GeoLocation::continent("EU"), vec!["eu-west-1"]),
                (
                    "Default",
                    GeoLocation::default_location(),
                    vec!["eu-west-1", "us-east-1"],
                ),
            ],
        )
    }

    fn all(_: &RegionName) -> bool {
        true
    }

    /// The region each location's resolver gets, with `down` unhealthy.
    fn answers(config: &FailoverConfig, zone: &[RecordSet], down: &[&str]) -> Vec<Option<String>> {
        let zone = Zone::new(zone.to_vec());
        let down: BTreeSet<String> = down.iter().map(|r| format!("hc-{r}")).collect();
        config
            .locations
            .iter()
            .map(|l| {
                zone.resolve(NAME, &ClientLocation::within(&l.geo_location), &|id| {
                    !down.contains(id)
                })
                .answer
                .and_then(|v| config.region_of_endpoint(&v).map(|r| r.to_string()))
            })
            .collect()
    }

    fn built(config: &FailoverConfig, admitted: &dyn Fn(&RegionName) -> bool) -> Vec<RecordSet> {
        apply(&[], &plan(config, &[], admitted).changes)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    /// The records of each step name (every name but the global one).
    fn zone_steps(zone: &[RecordSet]) -> Vec<Vec<&RecordSet>> {
        let mut steps: BTreeMap<String, Vec<&RecordSet>> = BTreeMap::new();
        for record in zone.iter().filter(|r| normalize_name(&r.name) != NAME) {
            steps
                .entry(normalize_name(&record.name))
                .or_default()
                .push(record);
        }
        steps.into_values().collect()
    }

    /// Every step is one PRIMARY and one SECONDARY, and the last step of
    /// each chain ends in a plain CNAME to the chain's first region.
    fn check_pairs(zone: &[RecordSet]) -> Result<(), TestCaseError> {
        for step in zone_steps(zone) {
            let roles: BTreeSet<_> = step.iter().filter_map(|r| r.failover).collect();
            prop_assert_eq!(step.len(), 2, "{:?}", step);
            prop_assert_eq!(roles.len(), 2, "{:?}", step);
        }
        Ok(())
    }

    #[test]
    fn builds_a_chain_per_location_in_preference_order() {
        let config = two_regions();
        let first = plan(&config, &[], &all);
        assert!(first.conflicts.is_empty());
        // Every step a PRIMARY and a SECONDARY, and each location's alias:
        // NA 2 steps, EU-only 1, Default 2.
        assert_eq!(first.changes.len(), (2 * 2 + 1) + (2 + 1) + (2 * 2 + 1));
        for step in zone_steps(&apply(&[], &first.changes)) {
            assert_eq!(step.len(), 2, "a failover pair: {step:?}");
        }
        let zone = apply(&[], &first.changes);
        let na_alias = zone
            .iter()
            .find(|r| r.set_identifier.as_deref() == Some("NA"))
            .unwrap();
        let target = na_alias.alias_target.as_ref().unwrap();
        assert_eq!(
            target.dns_name,
            "us-east-1.continent-na.global.iot.example.com"
        );
        assert!(
            !target.evaluate_target_health,
            "no fallback outside the preference"
        );
        assert_eq!(
            answers(&config, &zone, &[]),
            [s("us-east-1"), s("eu-west-1"), s("eu-west-1")]
        );
        // The data plane alone: us-east-1's check fails, NA answers eu-west-1.
        assert_eq!(
            answers(&config, &zone, &["us-east-1"]),
            [s("eu-west-1"), s("eu-west-1"), s("eu-west-1")]
        );
        // Everything down: each location gets the first of its chain; the
        // EU-only location never gets us-east-1.
        assert_eq!(
            answers(&config, &zone, &["us-east-1", "eu-west-1"]),
            [s("us-east-1"), s("eu-west-1"), s("eu-west-1")]
        );
        assert!(
            plan(&config, &zone, &all).changes.is_empty(),
            "a second plan changes nothing"
        );
    }

    /// Each change as its kind, normalized name and set identifier.
    fn summary(changes: &[ZoneChange]) -> Vec<(&str, String, Option<&str>)> {
        changes
            .iter()
            .map(|c| {
                let kind = match c {
                    ZoneChange::Upsert(_) => "UPSERT",
                    ZoneChange::Delete(_) => "DELETE",
                    ZoneChange::Replace { .. } => "REPLACE",
                };
                (
                    kind,
                    normalize_name(&c.record().name),
                    c.record().set_identifier.as_deref(),
                )
            })
            .collect()
    }

    /// Asserts every prefix of `changes` answers each location in its preference.
    fn assert_every_prefix_in_preference(
        config: &FailoverConfig,
        zone: &[RecordSet],
        changes: &[ZoneChange],
    ) {
        for k in 0..=changes.len() {
            let partial = apply(zone, &changes[..k]);
            for down in [&[][..], &["us-east-1", "eu-west-1"][..]] {
                for (location, answer) in
                    config.locations.iter().zip(answers(config, &partial, down))
                {
                    assert!(
                        answer
                            .as_ref()
                            .is_some_and(|a| location.preference.iter().any(|r| r.as_str() == a)),
                        "after {k} changes {} answers {answer:?}",
                        location.set_identifier
                    );
                }
            }
        }
    }

    #[test]
    fn a_drain_moves_the_head_of_each_chain_and_deletes_what_it_left() {
        let config = two_regions();
        let zone = built(&config, &all);
        let no_us = |r: &RegionName| r.as_str() != "us-east-1";
        let drain = plan(&config, &zone, &no_us);
        assert_eq!(
            summary(&drain.changes),
            [
                // NA: eu-west-1 is its only step now; its SECONDARY names it.
                (
                    "UPSERT",
                    "eu-west-1.continent-na.global.iot.example.com".into(),
                    Some(SECONDARY_ID)
                ),
                ("UPSERT", "global.iot.example.com".into(), Some("NA")),
                // Default: eu-west-1 becomes the last step, its SECONDARY
                // turns from an alias into the plain CNAME: DELETE + CREATE.
                (
                    "REPLACE",
                    "eu-west-1.default.global.iot.example.com".into(),
                    Some(SECONDARY_ID)
                ),
                (
                    "DELETE",
                    "us-east-1.continent-na.global.iot.example.com".into(),
                    Some(SECONDARY_ID)
                ),
                (
                    "DELETE",
                    "us-east-1.default.global.iot.example.com".into(),
                    Some(SECONDARY_ID)
                ),
                (
                    "DELETE",
                    "us-east-1.continent-na.global.iot.example.com".into(),
                    Some(PRIMARY_ID)
                ),
                (
                    "DELETE",
                    "us-east-1.default.global.iot.example.com".into(),
                    Some(PRIMARY_ID)
                ),
            ]
        );
        // Every prefix of the drain answers each location in its preference,
        // all healthy and all down.
        assert_every_prefix_in_preference(&config, &zone, &drain.changes);
        let drained = apply(&zone, &drain.changes);
        // us-east-1 healthy or not, nobody is sent there.
        assert_eq!(
            answers(&config, &drained, &[]),
            [s("eu-west-1"), s("eu-west-1"), s("eu-west-1")]
        );
        // Undrain: back as before, exactly.
        let undrain = plan(&config, &drained, &all);
        let mut back = apply(&drained, &undrain.changes);
        let mut before = zone.clone();
        back.sort_by_key(RecordSet::key);
        before.sort_by_key(RecordSet::key);
        assert_eq!(back, before);
    }

    #[test]
    fn migrates_flat_records_with_one_atomic_replace_per_location() {
        let config = two_regions();
        let flat: Vec<RecordSet> = config
            .locations
            .iter()
            .map(|l| {
                RecordSet::cname(NAME, &endpoint(l.preference[0].as_str()), 60)
                    .with_set_identifier(&l.set_identifier)
                    .with_geo_location(l.geo_location.clone())
            })
            .collect();
        let migration = plan(&config, &flat, &all);
        let replaces = migration
            .changes
            .iter()
            .filter(|c| matches!(c, ZoneChange::Replace { .. }))
            .count();
        assert_eq!(replaces, 3);
        assert!(
            !migration
                .changes
                .iter()
                .any(|c| matches!(c, ZoneChange::Delete(_)))
        );
        // Every prefix of the changes leaves every location answered in its preference.
        for k in 0..=migration.changes.len() {
            let zone = apply(&flat, &migration.changes[..k]);
            assert_eq!(
                answers(&config, &zone, &[]),
                [s("us-east-1"), s("eu-west-1"), s("eu-west-1")],
                "after {k} changes"
            );
        }
        let migrated = apply(&flat, &migration.changes);
        assert!(plan(&config, &migrated, &all).changes.is_empty());
    }

    #[test]
    fn a_conflicting_record_is_reported_and_other_locations_proceed() {
        let config = two_regions();
        let foreign_geo = RecordSet::cname(NAME, "elsewhere.example.net", 60)
            .with_set_identifier("someone else's")
            .with_geo_location(GeoLocation::continent("EU"));
        let foreign_step = RecordSet::cname(
            "eu-west-1.default.global.iot.example.com",
            "elsewhere.example.net",
            60,
        );
        let zone = vec![foreign_geo.clone(), foreign_step.clone()];
        let planned = plan(&config, &zone, &all);
        let conflicts: Vec<(&str, &str)> = planned
            .conflicts
            .iter()
            .map(|c| (c.set_identifier.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            conflicts,
            [
                ("EU-only", "global.iot.example.com"),
                ("Default", "eu-west-1.default.global.iot.example.com"),
            ]
        );
        assert_eq!(
            planned
                .change_locations
                .iter()
                .flatten()
                .copied()
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([0])
        );
        let after = apply(&zone, &planned.changes);
        assert!(
            after.contains(&foreign_geo) && after.contains(&foreign_step),
            "never deleted"
        );
        assert_eq!(answers(&config, &after, &[])[0], s("us-east-1"));

        // A plain CNAME on the global name blocks every location.
        let plain = vec![RecordSet::cname(NAME, "elsewhere.example.net", 60)];
        assert_eq!(plan_conflicts(&config, &plain), 3);
    }

    fn plan_conflicts(config: &FailoverConfig, zone: &[RecordSet]) -> usize {
        plan(config, zone, &all).conflicts.len()
    }

    #[test]
    fn deletes_only_what_is_exactly_geoprovs() {
        let config = two_regions();
        let zone = built(&config, &all);
        let mut fewer = config.clone();
        fewer.locations.retain(|l| l.set_identifier != "NA");
        let foreign = RecordSet::cname("www.global.iot.example.com", "x.example.net", 60);
        let mut current = zone.clone();
        current.push(foreign.clone());
        let planned = plan(&fewer, &current, &all);
        let deleted: BTreeSet<String> = planned
            .changes
            .iter()
            .filter_map(|c| match c {
                ZoneChange::Delete(r) => Some(format!(
                    "{} {:?}",
                    normalize_name(&r.name),
                    r.set_identifier
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            BTreeSet::from([
                "global.iot.example.com Some(\"NA\")".to_owned(),
                "us-east-1.continent-na.global.iot.example.com Some(\"geoprov-primary\")"
                    .to_owned(),
                "us-east-1.continent-na.global.iot.example.com Some(\"geoprov-secondary\")"
                    .to_owned(),
                "eu-west-1.continent-na.global.iot.example.com Some(\"geoprov-primary\")"
                    .to_owned(),
                "eu-west-1.continent-na.global.iot.example.com Some(\"geoprov-secondary\")"
                    .to_owned(),
            ])
        );
        // The geolocation alias goes first, then the secondary, then primaries.
        assert!(
            matches!(&planned.changes[0], ZoneChange::Delete(r) if r.set_identifier.as_deref() == Some("NA"))
        );
        assert!(apply(&current, &planned.changes).contains(&foreign));
    }

    #[test]
    fn a_renamed_location_replaces_its_own_alias_in_one_request() {
        let config = two_regions();
        let zone = built(&config, &all);
        let mut renamed = config.clone();
        renamed.locations[0].set_identifier = "North America".into();
        let planned = plan(&renamed, &zone, &all);
        assert!(planned.conflicts.is_empty(), "{:?}", planned.conflicts);
        assert_eq!(planned.changes.len(), 1, "{:?}", planned.changes);
        let ZoneChange::Replace { old, new } = &planned.changes[0] else {
            panic!("{:?}", planned.changes[0]);
        };
        assert_eq!(old.set_identifier.as_deref(), Some("NA"));
        assert_eq!(new.set_identifier.as_deref(), Some("North America"));
        let after = apply(&zone, &planned.changes);
        assert_eq!(
            answers(&renamed, &after, &[]),
            [s("us-east-1"), s("eu-west-1"), s("eu-west-1")]
        );
        assert!(plan(&renamed, &after, &all).changes.is_empty());
    }

    #[test]
    fn batches_respect_route53_limits_and_keep_order() {
        let upsert = |value_len: usize| {
            ZoneChange::Upsert(RecordSet::cname(
                "a.example.com",
                &"x".repeat(value_len),
                60,
            ))
        };
        assert!(batches(&[]).is_empty());
        assert_eq!(batches(&vec![upsert(40); 3]), vec![0..3]);
        // 500 UPSERTs are 1000 records: the 501st starts a new batch.
        assert_eq!(batches(&vec![upsert(10); 501]), [0..500, 500..501]);
        // 32,000 value characters, counted twice.
        assert_eq!(batches(&vec![upsert(1_000); 40]), [0..16, 16..32, 32..40]);
        let delete = ZoneChange::Delete(RecordSet::cname("a.example.com", "v", 60));
        assert_eq!(batches(&vec![delete; 1001]), [0..1000, 1000..1001]);
    }

    // ---- properties --------------------------------------------------------

    const REGIONS: [&str; 5] = [
        "us-east-1",
        "eu-west-1",
        "ap-southeast-2",
        "sa-east-1",
        "eu-central-1",
    ];

    prop_compose! {
        /// 2-5 regions, 1-30 locations (the first the default, some locked
        /// to one region), and an admitted set.
        fn world()(
            n_regions in 2usize..=5,
            prefs in proptest::collection::vec(proptest::sample::subsequence((0..5).collect::<Vec<usize>>(), 1..=5).prop_shuffle(), 1..=30),
            locked in proptest::collection::vec(any::<bool>(), 30),
            admitted in proptest::collection::vec(any::<bool>(), 5),
            earlier in proptest::collection::vec(any::<bool>(), 5),
            down in proptest::collection::vec(any::<bool>(), 5),
        ) -> (FailoverConfig, Vec<bool>, Vec<bool>, Vec<bool>) {
            let regions = &REGIONS[..n_regions];
            let locations: Vec<(String, GeoLocation, Vec<&str>)> = prefs.iter().enumerate().map(|(i, p)| {
                let mut pref: Vec<&str> = p.iter().filter(|r| **r < n_regions).map(|r| REGIONS[*r]).collect();
                if pref.is_empty() { pref.push(REGIONS[i % n_regions]); }
                if locked[i] { pref.truncate(1); }
                let geo = match i {
                    0 => GeoLocation::default_location(),
                    i if i % 7 == 3 => GeoLocation::continent(["AF", "AS", "EU", "NA", "OC", "SA", "AN"][i / 7]),
                    _ => GeoLocation::country(&format!("{}{}", (b'A' + (i / 26) as u8) as char, (b'A' + (i % 26) as u8) as char)),
                };
                (format!("loc-{i}"), geo, pref)
            }).collect();
            let borrowed: Vec<(&str, GeoLocation, Vec<&str>)> = locations.iter().map(|(id, g, p)| (id.as_str(), g.clone(), p.clone())).collect();
            (config(regions, &borrowed), admitted, earlier, down)
        }
    }

    fn admits(flags: &[bool]) -> impl Fn(&RegionName) -> bool + '_ {
        move |r: &RegionName| {
            REGIONS
                .iter()
                .position(|x| *x == r.as_str())
                .is_some_and(|i| flags[i])
        }
    }

    /// Every answer is a region of the location's preference; when a region
    /// of its chain is healthy, the first healthy one of the chain; when none
    /// is, the first of the chain.
    fn check_answers(
        config: &FailoverConfig,
        zone: &[RecordSet],
        chains: &[(Vec<RegionName>, bool)],
        down: &[bool],
    ) -> Result<(), TestCaseError> {
        let down_names: Vec<&str> = REGIONS
            .iter()
            .zip(down)
            .filter(|(_, d)| **d)
            .map(|(r, _)| *r)
            .collect();
        let got = answers(config, zone, &down_names);
        for ((location, (chain, _)), answer) in config.locations.iter().zip(chains).zip(got) {
            let answer = answer.ok_or_else(|| {
                TestCaseError::fail(format!("{} has no answer", location.set_identifier))
            })?;
            prop_assert!(
                location.preference.iter().any(|r| r.as_str() == answer),
                "{} got {answer}, outside {:?}",
                location.set_identifier,
                location.preference
            );
            let expected = chain
                .iter()
                .find(|r| !down_names.contains(&r.as_str()))
                .unwrap_or(&chain[0]);
            prop_assert_eq!(
                expected.as_str(),
                answer.as_str(),
                "{}",
                location.set_identifier
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn answers_stay_in_the_preference_and_follow_the_chain((config, admitted, _, down) in world()) {
            let first = plan(&config, &[], &admits(&admitted));
            prop_assert!(first.conflicts.is_empty());
            let zone = apply(&[], &first.changes);
            check_pairs(&zone)?;
            check_answers(&config, &zone, &first.chains, &down)?;
            // The answer path never names a region outside the preference.
            let resolver = Zone::new(zone.clone());
            for location in &config.locations {
                let resolution = resolver.resolve(NAME, &ClientLocation::within(&location.geo_location), &|_| true);
                for hop in &resolution.path {
                    let region = hop.to.split('.').next().unwrap_or_default();
                    let named = REGIONS.iter().find(|r| hop.to.starts_with(&format!("{r}.")) || hop.to == endpoint(r));
                    if let Some(r) = named {
                        prop_assert!(location.preference.iter().any(|p| p.as_str() == *r), "{} path goes through {region}", location.set_identifier);
                    }
                }
            }
            prop_assert!(plan(&config, &zone, &admits(&admitted)).changes.is_empty());
        }

        /// A configuration whose preferences change (re-ordered, shortened,
        /// lengthened): at every prefix of the changes each location still
        /// answers with a region of its old or new preference, whatever the
        /// health, and no alias ever leads back to itself.
        #[test]
        fn a_changed_preference_never_leaves_a_gap_or_a_loop((config, admitted, earlier, _) in world(), seed in any::<u64>()) {
            let mut changed = config.clone();
            let mut rng = seed;
            for location in &mut changed.locations {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let len = location.preference.len();
                location.preference.rotate_left((rng >> 33) as usize % len);
                if rng & 1 == 1 && location.preference.len() > 1 {
                    location.preference.pop();
                }
            }
            let before = apply(&[], &plan(&config, &[], &admits(&earlier)).changes);
            let next = plan(&changed, &before, &admits(&admitted));
            prop_assert!(next.conflicts.is_empty(), "{:?}", next.conflicts);
            let everything_down: Vec<&str> = REGIONS.to_vec();
            for k in 0..=next.changes.len() {
                let zone = Zone::new(apply(&before, &next.changes[..k]));
                for (old, new) in config.locations.iter().zip(&changed.locations) {
                    for down in [&[][..], &everything_down[..]] {
                        let down: BTreeSet<String> = down.iter().map(|r| format!("hc-{r}")).collect();
                        let resolution = zone.resolve(NAME, &ClientLocation::within(&old.geo_location), &|id| !down.contains(id));
                        let region = resolution.answer.as_deref().and_then(|a| config.region_of_endpoint(a));
                        prop_assert!(
                            region.is_some_and(|r| old.preference.contains(r) || new.preference.contains(r)),
                            "after {} of {} changes {}: {:?}", k, next.changes.len(), old.set_identifier, resolution
                        );
                    }
                }
            }
        }

        /// The control plane frozen at an earlier plan (Route 53's API down):
        /// the tree it left still answers by the rules, whatever the health.
        /// And every prefix of the next plan's changes does too.
        #[test]
        fn a_frozen_or_half_applied_tree_still_answers_by_the_rules((config, admitted, earlier, down) in world()) {
            let first = plan(&config, &[], &admits(&earlier));
            let frozen = apply(&[], &first.changes);
            check_answers(&config, &frozen, &first.chains, &down)?;
            let next = plan(&config, &frozen, &admits(&admitted));
            let down_names: Vec<&str> = REGIONS.iter().zip(&down).filter(|(_, d)| **d).map(|(r, _)| *r).collect();
            for k in 0..=next.changes.len() {
                let zone = apply(&frozen, &next.changes[..k]);
                let mut got = answers(&config, &zone, &[]);
                got.extend(answers(&config, &zone, &down_names));
                let twice = config.locations.iter().chain(config.locations.iter());
                for (location, answer) in twice.zip(got) {
                    prop_assert!(answer.as_ref().is_some_and(|a| location.preference.iter().any(|r| r.as_str() == a)),
                        "after {} of {} changes {} answers {:?}", k, next.changes.len(), location.set_identifier, answer);
                }
            }
            let done = apply(&frozen, &next.changes);
            check_pairs(&done)?;
            check_answers(&config, &done, &next.chains, &down)?;
        }
    }
}
