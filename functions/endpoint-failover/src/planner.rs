//! The failover planner: from the records as Route 53 holds them and the
//! health of each region, which records to change. Pure and deterministic, so
//! copies of the function in every region compute the same plan from the same
//! health and converge instead of fighting.

use std::collections::BTreeMap;

use geoprov_shared::device::RegionName;
use serde::Serialize;

use crate::config::FailoverConfig;
use crate::health::RegionHealth;

/// Why a record changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The location has no record yet.
    RecordMissing,
    /// The record points at a region that is unhealthy or drained.
    RegionUnavailable,
    /// The record points at something outside the location's preference: a
    /// region its residency rule forbids, or no configured endpoint at all.
    NotInPreference,
    /// A more preferred region is available again.
    PreferredRegionAvailable,
}

/// One record to UPSERT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub set_identifier: String,
    /// The region the record points at now, the raw value when it is no
    /// configured endpoint, or `None` when there is no record.
    pub from: Option<String>,
    pub to: RegionName,
    pub reason: Reason,
    /// Index of the location in the configuration.
    #[serde(skip)]
    pub location: usize,
}

/// A move back to a more preferred region that waits for the record's
/// minimum change interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deferred {
    pub set_identifier: String,
    pub from: String,
    pub to: RegionName,
    /// Epoch seconds from which the move may happen.
    pub not_before: i64,
}

/// A location none of whose regions is available: its record is left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stranded {
    pub set_identifier: String,
    pub current: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub deferred: Vec<Deferred>,
    pub stranded: Vec<Stranded>,
}

/// What the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// CNAME value of each geolocation record of the global name, by set identifier.
    pub records: &'a BTreeMap<String, String>,
    /// Health by region; a region missing here is healthy and undrained.
    pub health: &'a BTreeMap<RegionName, RegionHealth>,
    /// When each record was last changed by geoprov (epoch seconds).
    pub last_change: &'a BTreeMap<String, i64>,
    /// Now, in epoch seconds.
    pub now: i64,
}

impl Observed<'_> {
    pub fn available(&self, region: &RegionName) -> bool {
        self.health
            .get(region)
            .copied()
            .unwrap_or_default()
            .available()
    }
}

/// Plans every location, in configuration order.
pub fn plan(config: &FailoverConfig, observed: Observed<'_>) -> Plan {
    let mut plan = Plan::default();
    for (index, location) in config.locations.iter().enumerate() {
        let id = &location.set_identifier;
        let current = observed.records.get(id);
        let Some(target) = location.preference.iter().find(|r| observed.available(r)) else {
            plan.stranded.push(Stranded {
                set_identifier: id.clone(),
                current: current.cloned(),
            });
            continue;
        };
        let change = |from: Option<String>, reason| Change {
            set_identifier: id.clone(),
            from,
            to: target.clone(),
            reason,
            location: index,
        };
        let Some(value) = current else {
            plan.changes.push(change(None, Reason::RecordMissing));
            continue;
        };
        let Some(region) = config.region_of_endpoint(value) else {
            plan.changes
                .push(change(Some(value.clone()), Reason::NotInPreference));
            continue;
        };
        let from = Some(region.to_string());
        if region == target {
            continue;
        }
        if !location.preference.contains(region) {
            plan.changes.push(change(from, Reason::NotInPreference));
        } else if !observed.available(region) {
            plan.changes.push(change(from, Reason::RegionUnavailable));
        } else {
            // The current region is available and allowed, and the target
            // comes before it: a move back, which waits for the interval.
            let not_before = observed.last_change.get(id).map_or(i64::MIN, |changed| {
                changed.saturating_add(config.min_change_interval_seconds as i64)
            });
            if observed.now >= not_before {
                plan.changes
                    .push(change(from, Reason::PreferredRegionAvailable));
            } else {
                plan.deferred.push(Deferred {
                    set_identifier: id.clone(),
                    from: region.to_string(),
                    to: target.clone(),
                    not_before,
                });
            }
        }
    }
    plan
}

/// Route 53's limits on one ChangeResourceRecordSets request, where every
/// UPSERT counts twice.
pub const MAX_RECORDS_PER_BATCH: usize = 1000;
pub const MAX_VALUE_CHARS_PER_BATCH: usize = 32_000;

/// Splits UPSERTs (given by the length of their one value) into as few
/// consecutive batches as Route 53's limits allow.
pub fn batches(value_lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut records, mut chars) = (0, 0, 0);
    for (i, len) in value_lengths.iter().enumerate() {
        let (r, c) = (2, 2 * len);
        if i > start
            && (records + r > MAX_RECORDS_PER_BATCH || chars + c > MAX_VALUE_CHARS_PER_BATCH)
        {
            batches.push(start..i);
            (start, records, chars) = (i, 0, 0);
        }
        records += r;
        chars += c;
    }
    if start < value_lengths.len() {
        batches.push(start..value_lengths.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GeoLocation, Location, RegionTarget};
    use proptest::prelude::*;

    fn region(name: &str) -> RegionName {
        RegionName::try_from(name).unwrap()
    }

    fn endpoint(region: &str) -> String {
        format!("abc-ats.iot.{region}.amazonaws.com")
    }

    fn config(regions: &[&str], locations: &[(&str, GeoLocation, &[&str])]) -> FailoverConfig {
        FailoverConfig {
            hosted_zone_id: "Z1".into(),
            record_name: "global.iot.example.com".into(),
            ttl: 60,
            regions: regions
                .iter()
                .map(|r| {
                    (
                        region(r),
                        RegionTarget {
                            endpoint: endpoint(r),
                            health_check_id: format!("hc-{r}"),
                            alarm_name: format!("alarm-{r}"),
                        },
                    )
                })
                .collect(),
            locations: locations
                .iter()
                .map(|(id, geo, pref)| Location {
                    set_identifier: (*id).into(),
                    geo_location: geo.clone(),
                    preference: pref.iter().map(|r| region(r)).collect(),
                })
                .collect(),
            fail_after: 1,
            recover_after: 1,
            min_change_interval_seconds: 60,
        }
    }

    fn two_regions() -> FailoverConfig {
        config(
            &["us-east-1", "eu-west-1"],
            &[
                (
                    "NA",
                    GeoLocation::continent("NA"),
                    &["us-east-1", "eu-west-1"],
                ),
                ("EU-only", GeoLocation::continent("EU"), &["eu-west-1"]),
                (
                    "Default",
                    GeoLocation::default_location(),
                    &["eu-west-1", "us-east-1"],
                ),
            ],
        )
    }

    fn records(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(id, r)| ((*id).into(), endpoint(r)))
            .collect()
    }

    fn health(down: &[&str], drained: &[&str]) -> BTreeMap<RegionName, RegionHealth> {
        let mut h = BTreeMap::new();
        for r in down {
            h.insert(
                region(r),
                RegionHealth {
                    healthy: false,
                    ..Default::default()
                },
            );
        }
        for r in drained {
            h.insert(region(r), RegionHealth::default().drained(true));
        }
        h
    }

    fn summary(plan: &Plan) -> Vec<(String, Option<String>, String, Reason)> {
        plan.changes
            .iter()
            .map(|c| {
                (
                    c.set_identifier.clone(),
                    c.from.clone(),
                    c.to.to_string(),
                    c.reason,
                )
            })
            .collect()
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn creates_every_missing_record_toward_the_first_preference() {
        let plan = plan(
            &two_regions(),
            Observed {
                records: &BTreeMap::new(),
                health: &BTreeMap::new(),
                last_change: &BTreeMap::new(),
                now: 0,
            },
        );
        assert_eq!(
            summary(&plan),
            [
                (s("NA"), None, s("us-east-1"), Reason::RecordMissing),
                (s("EU-only"), None, s("eu-west-1"), Reason::RecordMissing),
                (s("Default"), None, s("eu-west-1"), Reason::RecordMissing),
            ]
        );
    }

    #[test]
    fn fails_over_at_once_and_leaves_other_locations_alone() {
        let recs = records(&[
            ("NA", "us-east-1"),
            ("EU-only", "eu-west-1"),
            ("Default", "eu-west-1"),
        ]);
        let last = BTreeMap::from([(s("NA"), 1_000)]);
        let plan = plan(
            &two_regions(),
            Observed {
                records: &recs,
                health: &health(&["us-east-1"], &[]),
                last_change: &last,
                now: 1_001,
            },
        );
        assert_eq!(
            summary(&plan),
            [(
                s("NA"),
                Some(s("us-east-1")),
                s("eu-west-1"),
                Reason::RegionUnavailable
            )]
        );
    }

    #[test]
    fn fails_back_only_after_the_minimum_interval() {
        let recs = records(&[
            ("NA", "eu-west-1"),
            ("EU-only", "eu-west-1"),
            ("Default", "eu-west-1"),
        ]);
        let last = BTreeMap::from([(s("NA"), 1_000)]);
        let healthy = BTreeMap::new();
        let observed = |now| Observed {
            records: &recs,
            health: &healthy,
            last_change: &last,
            now,
        };
        let early = plan(&two_regions(), observed(1_059));
        assert!(early.changes.is_empty());
        assert_eq!(early.deferred.len(), 1);
        assert_eq!(early.deferred[0].not_before, 1_060);
        let later = plan(&two_regions(), observed(1_060));
        assert_eq!(
            summary(&later),
            [(
                s("NA"),
                Some(s("eu-west-1")),
                s("us-east-1"),
                Reason::PreferredRegionAvailable
            )]
        );
    }

    #[test]
    fn drained_regions_are_left_like_unhealthy_ones() {
        let recs = records(&[
            ("NA", "us-east-1"),
            ("EU-only", "eu-west-1"),
            ("Default", "eu-west-1"),
        ]);
        let plan = plan(
            &two_regions(),
            Observed {
                records: &recs,
                health: &health(&[], &["us-east-1"]),
                last_change: &BTreeMap::new(),
                now: 0,
            },
        );
        assert_eq!(summary(&plan)[0].3, Reason::RegionUnavailable);
    }

    #[test]
    fn a_residency_locked_location_is_stranded_not_moved() {
        let recs = records(&[
            ("NA", "us-east-1"),
            ("EU-only", "eu-west-1"),
            ("Default", "eu-west-1"),
        ]);
        let plan = plan(
            &two_regions(),
            Observed {
                records: &recs,
                health: &health(&["eu-west-1"], &[]),
                last_change: &BTreeMap::new(),
                now: 0,
            },
        );
        assert_eq!(
            plan.stranded,
            [Stranded {
                set_identifier: s("EU-only"),
                current: Some(endpoint("eu-west-1"))
            }]
        );
        assert_eq!(
            summary(&plan),
            [(
                s("Default"),
                Some(s("eu-west-1")),
                s("us-east-1"),
                Reason::RegionUnavailable
            )]
        );
    }

    #[test]
    fn records_outside_the_preference_are_corrected_at_once() {
        let mut recs = records(&[("NA", "us-east-1"), ("EU-only", "us-east-1")]);
        recs.insert(s("Default"), s("somewhere.example.net"));
        let last = BTreeMap::from([(s("EU-only"), 0), (s("Default"), 0)]);
        let plan = plan(
            &two_regions(),
            Observed {
                records: &recs,
                health: &BTreeMap::new(),
                last_change: &last,
                now: 1,
            },
        );
        assert_eq!(
            summary(&plan),
            [
                (
                    s("EU-only"),
                    Some(s("us-east-1")),
                    s("eu-west-1"),
                    Reason::NotInPreference
                ),
                (
                    s("Default"),
                    Some(s("somewhere.example.net")),
                    s("eu-west-1"),
                    Reason::NotInPreference
                ),
            ]
        );
    }

    #[test]
    fn batches_respect_route53_limits() {
        assert!(batches(&[]).is_empty());
        assert_eq!(batches(&[40; 3]), vec![0..3]);
        // 500 UPSERTs are 1000 records: the 501st starts a new batch.
        assert_eq!(batches(&[10; 501]), [0..500, 500..501]);
        // 32,000 value characters, counted twice.
        assert_eq!(batches(&[1_000; 40]), [0..16, 16..32, 32..40]);
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
        fn world()(
            prefs in proptest::collection::vec(proptest::sample::subsequence(REGIONS.to_vec(), 1..=5).prop_shuffle(), 1..12),
            down in proptest::collection::vec(any::<(bool, bool)>(), 5),
            current in proptest::collection::vec(proptest::option::of(0usize..6), 12),
            last in proptest::collection::vec(proptest::option::of(0i64..200), 12),
            now in 0i64..300,
        ) -> (FailoverConfig, BTreeMap<String, String>, BTreeMap<RegionName, RegionHealth>, BTreeMap<String, i64>, i64) {
            let ids: Vec<String> = (0..prefs.len()).map(|i| format!("loc-{i}")).collect();
            let locations: Vec<(&str, GeoLocation, &[&str])> = prefs.iter().enumerate().map(|(i, p)| {
                let geo = if i == 0 { GeoLocation::default_location() } else { GeoLocation::country(&format!("A{}", (b'A' + i as u8) as char)) };
                (ids[i].as_str(), geo, p.as_slice())
            }).collect();
            let config = config(&REGIONS, &locations);
            let mut records = BTreeMap::new();
            let mut last_change = BTreeMap::new();
            for (i, id) in ids.iter().enumerate() {
                match current[i] {
                    Some(5) => { records.insert(id.clone(), "stray.example.net".to_owned()); }
                    Some(r) => { records.insert(id.clone(), endpoint(REGIONS[r])); }
                    None => {}
                }
                if let Some(t) = last[i] { last_change.insert(id.clone(), t); }
            }
            let health = REGIONS.iter().zip(&down).map(|(r, (unhealthy, drained))| {
                (region(r), RegionHealth { healthy: !unhealthy, drained: *drained, ..Default::default() })
            }).collect();
            (config, records, health, last_change, now)
        }
    }

    proptest! {
        #[test]
        fn targets_only_available_regions_of_the_preference((config, records, health, last, now) in world()) {
            let observed = Observed { records: &records, health: &health, last_change: &last, now };
            let plan = plan(&config, observed);
            for change in &plan.changes {
                let location = &config.locations[change.location];
                prop_assert_eq!(&location.set_identifier, &change.set_identifier);
                prop_assert!(location.preference.contains(&change.to), "outside preference: {:?}", change);
                prop_assert!(observed.available(&change.to), "unavailable target: {:?}", change);
                // The first available region of the preference, never a later one.
                let first = location.preference.iter().find(|r| observed.available(r));
                prop_assert_eq!(first, Some(&change.to));
            }
            for stranded in &plan.stranded {
                let location = config.locations.iter().find(|l| l.set_identifier == stranded.set_identifier).unwrap();
                prop_assert!(location.preference.iter().all(|r| !observed.available(r)));
            }
            // A record on an unavailable or forbidden region is never merely deferred.
            for deferred in &plan.deferred {
                let location = config.locations.iter().find(|l| l.set_identifier == deferred.set_identifier).unwrap();
                let from = RegionName::try_from(deferred.from.as_str()).unwrap();
                prop_assert!(observed.available(&from) && location.preference.contains(&from));
            }
        }

        #[test]
        fn is_deterministic((config, records, health, last, now) in world()) {
            let observed = Observed { records: &records, health: &health, last_change: &last, now };
            prop_assert_eq!(plan(&config, observed), plan(&config, observed));
        }

        #[test]
        fn applying_a_plan_leaves_nothing_to_change((config, mut records, health, mut last, now) in world()) {
            let first = plan(&config, Observed { records: &records, health: &health, last_change: &last, now });
            for change in &first.changes {
                records.insert(change.set_identifier.clone(), config.regions[&change.to].endpoint.clone());
                last.insert(change.set_identifier.clone(), now);
            }
            let second = plan(&config, Observed { records: &records, health: &health, last_change: &last, now });
            prop_assert!(second.changes.is_empty(), "{:?}", second.changes);
            prop_assert_eq!(second.stranded, first.stranded);
        }

        #[test]
        fn batches_cover_every_change_once_within_limits(lengths in proptest::collection::vec(1usize..300, 0..1500)) {
            let batches = batches(&lengths);
            let mut next = 0;
            for batch in &batches {
                prop_assert_eq!(batch.start, next);
                prop_assert!(!batch.is_empty());
                prop_assert!(2 * batch.len() <= MAX_RECORDS_PER_BATCH);
                prop_assert!(2 * lengths[batch.clone()].iter().sum::<usize>() <= MAX_VALUE_CHARS_PER_BATCH);
                next = batch.end;
            }
            prop_assert_eq!(next, lengths.len());
        }
    }
}
