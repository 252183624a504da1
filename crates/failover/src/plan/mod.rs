//! The fleet planner (`geoprov plan`): how long IoT's rate quotas make a
//! wave of onboarding, the re-homing after the loss of each region, and the
//! failback take, which quota bounds each, and what rate would bring each
//! under a target.
//!
//! The model: every device of a phase asks at once, and each region serves
//! each kind of request at its quota's rate, so a region's phase takes, for
//! each quota, the units its devices spend over the rate, and the largest
//! of those is the phase's time there and its bottleneck. Where a location
//! is answered comes from the answer model (`route53-answer`) over the
//! records the failover writes, as `coverage` does:
//! - **onboarding**: every region healthy; each device provisions where its
//!   location is answered;
//! - **re-home after the loss of region X**: X unhealthy, the others
//!   healthy; the devices of each location whose answer changes move to its
//!   new answer. A device with a fleet-CA certificate is registered there
//!   on its first connection and activated by device activation (JITR); a
//!   claim device holding an Amazon-CA certificate must provision again
//!   with the claim;
//! - **failback**: X healthy again; the moved devices go back, where their
//!   certificates are still registered and ACTIVE: a CONNECT each.
//!
//! What each route spends, per device (the regional stack's flows):
//! - claim: two CONNECTs (the claim's, then the device's own), a
//!   certificate creation and a RegisterThing;
//! - JITR: two CONNECTs (the first registers the certificate and is
//!   dropped), an auto-registration, and device activation's
//!   UpdateCertificate, CreateThing and AttachThingPrincipal (its other
//!   calls have no published rate: add them to the quota file if the
//!   account's are lower).
//!
//! That arithmetic is the phase's floor (`floorSeconds`): it assumes a
//! request whenever a unit is free. Devices retry with backoff instead, so
//! each region of a phase is also simulated ([`simulate`]), and the
//! simulated time for every device to be working is the prediction
//! (`seconds`, with `p50Seconds` and `p99Seconds`). A target's quota
//! increases come from the floor (each rate at least its units over the
//! target), and the phase is simulated again with them
//! (`secondsWithRaises`): what is left over is the devices' backoff.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::RegionName;
use serde::{Deserialize, Serialize};

use crate::config::FailoverConfig;
use crate::coverage::{answers, full_zone};

pub mod simulate;

pub use simulate::Behaviour;
use simulate::{Kind, Outcome, Start};

/// Requests per second, by quota name.
pub type Rates = BTreeMap<String, f64>;

/// IoT's published default rates the planner uses ("AWS IoT Core endpoints
/// and quotas" and the developer guide's quota table; check the current
/// page and the account's raised values).
pub fn published_rates() -> Rates {
    [
        ("connect", 500.0),
        ("autoRegistration", 15.0),
        ("createCertificate", 15.0),
        ("registerThing", 10.0),
        ("updateCertificate", 10.0),
        ("createThing", 15.0),
        ("attachThingPrincipal", 15.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// How a location's devices get their identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// Fleet provisioning by claim, with a certificate of the fleet CA
    /// (the certificate provider): JITR anywhere else.
    ClaimFleetCa,
    /// Fleet provisioning by claim, with an Amazon-CA certificate: valid
    /// only in the region that made it.
    ClaimAmazonCa,
    /// A certificate from the issuer: JITR everywhere.
    Jitr,
}

/// The fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    /// Devices per location (set identifier), and their route.
    pub locations: BTreeMap<String, FleetLocation>,
    /// Rates that differ from IoT's published defaults, everywhere.
    #[serde(default)]
    pub quotas: Rates,
    /// Rates of one region that differ from the above.
    #[serde(default)]
    pub region_quotas: BTreeMap<RegionName, Rates>,
    /// How the devices retry, for the simulation.
    #[serde(default)]
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetLocation {
    pub devices: u64,
    pub route: Route,
}

/// The units a device of `route` spends to get working in a region.
fn units_to_join(route: Route) -> Vec<(&'static str, u64)> {
    match route {
        Route::ClaimFleetCa | Route::ClaimAmazonCa => vec![
            ("connect", 2),
            ("createCertificate", 1),
            ("registerThing", 1),
        ],
        Route::Jitr => vec![
            ("connect", 2),
            ("autoRegistration", 1),
            ("updateCertificate", 1),
            ("createThing", 1),
            ("attachThingPrincipal", 1),
        ],
    }
}

/// How a device of `route` gets working where it first lands.
fn kind_to_join(route: Route) -> Kind {
    match route {
        Route::Jitr => Kind::Jitr,
        Route::ClaimFleetCa | Route::ClaimAmazonCa => Kind::Claim,
    }
}

/// How a device moved by a failover gets working in its new region.
fn kind_to_move(route: Route) -> Kind {
    match route {
        Route::ClaimAmazonCa => Kind::Claim,
        Route::ClaimFleetCa | Route::Jitr => Kind::Jitr,
    }
}

/// What a device moved by a failover spends in its new region.
fn units_to_move(route: Route) -> Vec<(&'static str, u64)> {
    match route {
        // A fleet-CA certificate is recognised by JITR.
        Route::ClaimFleetCa | Route::Jitr => units_to_join(Route::Jitr),
        Route::ClaimAmazonCa => units_to_join(Route::ClaimAmazonCa),
    }
}

/// One region's share of a phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionLoad {
    pub region: RegionName,
    pub devices: u64,
    /// Units spent, by quota.
    pub units: BTreeMap<String, u64>,
    /// Simulated: every device working, from the phase's start.
    pub seconds: f64,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    /// Units over rates: the most time any quota takes.
    pub floor_seconds: f64,
    /// Simulated requests per quota: [granted, throttled].
    pub requests: BTreeMap<String, [u64; 2]>,
    /// The quota that takes longest, and its rate.
    pub bottleneck: Option<String>,
    pub rate: Option<f64>,
    /// Devices that must provision again with the claim.
    pub claim_uses: u64,
}

/// One phase: the regions' loads; it takes as long as the slowest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub regions: Vec<RegionLoad>,
    /// With a target: each quota to raise, in each region, to the rate that
    /// brings the phase under it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub raise: Vec<Raise>,
    /// The phase simulated again with the rates raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_with_raises: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Raise {
    pub region: RegionName,
    pub quota: String,
    pub from: f64,
    pub to: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the fleet names location {0:?}, which the failover configuration does not have")]
    UnknownLocation(String),
    #[error("quota {quota:?}: {rate} is not a positive rate")]
    BadRate { quota: String, rate: f64 },
    #[error("{0}")]
    NoRegion(String),
    #[error("behaviour.{0}: not a usable value")]
    BadBehaviour(&'static str),
}

/// The rate of `quota` in `region`.
fn rate(fleet: &Fleet, region: &RegionName, quota: &str) -> f64 {
    fleet
        .region_quotas
        .get(region)
        .and_then(|r| r.get(quota))
        .or_else(|| fleet.quotas.get(quota))
        .copied()
        .or_else(|| published_rates().get(quota).copied())
        .unwrap_or(f64::INFINITY)
}

/// Devices of one location arriving in a region, what each spends there,
/// and whether they use the claim to.
struct Arrival {
    devices: u64,
    spend: Vec<(&'static str, u64)>,
    claim: bool,
    kind: Kind,
}

/// A phase's arrivals, by region.
type Arrivals = BTreeMap<RegionName, Vec<Arrival>>;

/// The simulation's rates in `region`, with `raised` applied.
fn simulated_rates(fleet: &Fleet, region: &RegionName, raised: &[Raise]) -> simulate::Rates {
    let get = |quota: &str| {
        raised
            .iter()
            .find(|r| &r.region == region && r.quota == quota)
            .map_or_else(|| rate(fleet, region, quota), |r| r.to)
    };
    simulate::Rates {
        connect: get("connect"),
        auto_registration: get("autoRegistration"),
        create_certificate: get("createCertificate"),
        register_thing: get("registerThing"),
        activation: ["updateCertificate", "createThing", "attachThingPrincipal"]
            .into_iter()
            .map(get)
            .fold(f64::INFINITY, f64::min),
    }
}

/// Simulations of each region's arrivals, with seeds from the fleet's on;
/// the one whose last device is the median is the prediction.
pub const RUNS: u64 = 5;

/// A region's arrivals simulated [`RUNS`] times: the median run.
fn simulated(
    fleet: &Fleet,
    region: &RegionName,
    groups: &[Arrival],
    start: Start,
    raised: &[Raise],
) -> Outcome {
    let cohorts: Vec<(u64, Kind)> = groups.iter().map(|a| (a.devices, a.kind)).collect();
    let rates = simulated_rates(fleet, region, raised);
    let mut runs: Vec<Outcome> = (0..RUNS)
        .map(|run| {
            let behaviour = Behaviour {
                seed: fleet.behaviour.seed.wrapping_add(run),
                ..fleet.behaviour.clone()
            };
            simulate::simulate(&cohorts, start, &rates, &behaviour)
        })
        .collect();
    runs.sort_by(|a, b| a.all_seconds.total_cmp(&b.all_seconds));
    runs.swap_remove(runs.len() / 2)
}

/// A phase from the devices arriving in each region and what each spends.
fn phase(
    name: String,
    fleet: &Fleet,
    arrivals: &Arrivals,
    start: Start,
    target: Option<f64>,
) -> Phase {
    let mut regions = Vec::new();
    for (region, groups) in arrivals {
        let mut units: BTreeMap<String, u64> = BTreeMap::new();
        let (mut devices, mut claim_uses) = (0, 0);
        for arrival in groups {
            devices += arrival.devices;
            if arrival.claim {
                claim_uses += arrival.devices;
            }
            for (quota, per_device) in &arrival.spend {
                *units.entry((*quota).to_owned()).or_default() += arrival.devices * per_device;
            }
        }
        let mut worst: Option<(String, f64, f64)> = None;
        for (quota, spent) in &units {
            let r = rate(fleet, region, quota);
            let seconds = *spent as f64 / r;
            if worst.as_ref().is_none_or(|(_, s, _)| seconds > *s) {
                worst = Some((quota.clone(), seconds, r));
            }
        }
        let outcome = simulated(fleet, region, groups, start, &[]);
        regions.push(RegionLoad {
            region: region.clone(),
            devices,
            units,
            seconds: outcome.all_seconds,
            p50_seconds: outcome.p50_seconds,
            p99_seconds: outcome.p99_seconds,
            floor_seconds: worst.as_ref().map_or(0.0, |w| w.1),
            requests: outcome.requests,
            bottleneck: worst.as_ref().map(|w| w.0.clone()),
            rate: worst.map(|w| w.2),
            claim_uses,
        });
    }
    let (raise, seconds_with_raises) = match target {
        Some(target) => raises(fleet, arrivals, &regions, start, target),
        None => (Vec::new(), None),
    };
    Phase {
        name,
        seconds: regions.iter().map(|r| r.seconds).fold(0.0, f64::max),
        regions,
        raise,
        seconds_with_raises,
    }
}

/// The rates that bring a phase under `target`, and the phase simulated
/// with them. In each region over the target, every quota that takes more
/// than half the target at its rate is a candidate: each starts at the
/// larger of its rate and its units over the target, and all grow by 5 %
/// steps, up to three times, until the simulated phase meets the target.
fn raises(
    fleet: &Fleet,
    arrivals: &Arrivals,
    regions: &[RegionLoad],
    start: Start,
    target: f64,
) -> (Vec<Raise>, Option<f64>) {
    let mut candidates: Vec<(Raise, f64)> = Vec::new();
    for load in regions.iter().filter(|l| l.seconds > target) {
        for (quota, spent) in &load.units {
            let from = rate(fleet, &load.region, quota);
            let needed = *spent as f64 / target;
            if *spent as f64 / from > target / 2.0 {
                let raise = Raise {
                    region: load.region.clone(),
                    quota: quota.clone(),
                    from,
                    to: from,
                };
                candidates.push((raise, from.max(needed)));
            }
        }
    }
    if candidates.is_empty() {
        return (Vec::new(), None);
    }
    // A region with nothing raised keeps the time already simulated.
    let with = |raise: &[Raise]| {
        regions
            .iter()
            .zip(arrivals)
            .map(|(load, (region, groups))| {
                if raise.iter().any(|r| &r.region == region) {
                    simulated(fleet, region, groups, start, raise).all_seconds
                } else {
                    load.seconds
                }
            })
            .fold(0.0, f64::max)
    };
    let mut factor: f64 = 1.0;
    loop {
        for (raise, base) in candidates.iter_mut() {
            raise.to = (*base * factor).ceil();
        }
        let raised: Vec<Raise> = candidates
            .iter()
            .map(|(r, _)| r.clone())
            .filter(|r| r.to > r.from)
            .collect();
        let seconds = with(&raised);
        if seconds <= target || factor >= 3.0 {
            return (raised, Some(seconds));
        }
        factor *= 1.05;
    }
}

/// Onboarding, then for each region its loss and its failback.
pub fn plan(
    config: &FailoverConfig,
    fleet: &Fleet,
    target_seconds: Option<f64>,
) -> Result<Vec<Phase>, PlanError> {
    for name in fleet.locations.keys() {
        if !config.locations.iter().any(|l| &l.set_identifier == name) {
            return Err(PlanError::UnknownLocation(name.clone()));
        }
    }
    let rates = fleet
        .quotas
        .iter()
        .chain(fleet.region_quotas.values().flatten());
    for (quota, rate) in rates {
        if !(rate.is_finite() && *rate > 0.0) {
            return Err(PlanError::BadRate {
                quota: quota.clone(),
                rate: *rate,
            });
        }
    }
    if let Some(field) = fleet.behaviour.invalid() {
        return Err(PlanError::BadBehaviour(field));
    }
    let zone = full_zone(config);
    let home = answers(config, &zone, &BTreeSet::new()).map_err(PlanError::NoRegion)?;
    let mut phases = Vec::new();
    let mut onboard = Arrivals::new();
    for (name, location) in &fleet.locations {
        onboard
            .entry(home[name].clone())
            .or_default()
            .push(Arrival {
                devices: location.devices,
                spend: units_to_join(location.route),
                claim: location.route != Route::Jitr,
                kind: kind_to_join(location.route),
            });
    }
    phases.push(phase(
        "onboard".into(),
        fleet,
        &onboard,
        Start::PowerOn,
        target_seconds,
    ));
    for lost in config.regions.keys() {
        let moved = answers(config, &zone, &BTreeSet::from([lost])).map_err(PlanError::NoRegion)?;
        let (mut rehome, mut failback) = (Arrivals::new(), Arrivals::new());
        for (name, location) in &fleet.locations {
            let (from, to) = (&home[name], &moved[name]);
            if from == to {
                continue;
            }
            rehome.entry(to.clone()).or_default().push(Arrival {
                devices: location.devices,
                spend: units_to_move(location.route),
                claim: location.route == Route::ClaimAmazonCa,
                kind: kind_to_move(location.route),
            });
            // Back where its certificate is still registered and ACTIVE.
            failback.entry(from.clone()).or_default().push(Arrival {
                devices: location.devices,
                spend: vec![("connect", 1)],
                claim: false,
                kind: Kind::Connect,
            });
        }
        phases.push(phase(
            format!("rehome after losing {lost}"),
            fleet,
            &rehome,
            Start::Fault,
            target_seconds,
        ));
        phases.push(phase(
            format!("failback to {lost}"),
            fleet,
            &failback,
            Start::Recheck,
            target_seconds,
        ));
    }
    Ok(phases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use route53_answer::GeoLocation;

    /// North America and the default location fail over between the two
    /// regions; Switzerland keeps to eu-west-1.
    fn config() -> FailoverConfig {
        fixtures::config(
            &["us-east-1", "eu-west-1"],
            &[
                (
                    "na",
                    GeoLocation::continent("NA"),
                    &["us-east-1", "eu-west-1"],
                ),
                ("ch", GeoLocation::country("CH"), &["eu-west-1"]),
                (
                    "default",
                    GeoLocation::default_location(),
                    &["eu-west-1", "us-east-1"],
                ),
            ],
        )
    }

    fn fleet(json: serde_json::Value) -> Fleet {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn onboarding_is_bounded_by_register_thing_for_claims_and_update_certificate_for_jitr() {
        let fleet = fleet(serde_json::json!({"locations": {
            "na": {"devices": 36000, "route": "claim-amazon-ca"},
            "default": {"devices": 18000, "route": "jitr"},
        }}));
        let phases = plan(&config(), &fleet, None).unwrap();
        let onboard = &phases[0];
        assert_eq!(onboard.name, "onboard");
        let us = &onboard
            .regions
            .iter()
            .find(|r| r.region.as_str() == "us-east-1")
            .unwrap();
        // 36,000 RegisterThing at 10 per second: an hour.
        assert_eq!(us.bottleneck.as_deref(), Some("registerThing"));
        assert_eq!(us.floor_seconds, 3600.0);
        // Simulated, with retries: a little over the floor.
        assert!(us.seconds >= 3600.0 && us.seconds < 3600.0 * 1.15, "{us:?}");
        assert_eq!(us.units["connect"], 72_000);
        let eu = onboard
            .regions
            .iter()
            .find(|r| r.region.as_str() == "eu-west-1")
            .unwrap();
        // 18,000 UpdateCertificate at 10 per second: half an hour.
        assert_eq!(eu.bottleneck.as_deref(), Some("updateCertificate"));
        assert_eq!(eu.floor_seconds, 1800.0);
        assert_eq!(onboard.seconds, us.seconds.max(eu.seconds));
    }

    #[test]
    fn losing_a_region_moves_only_the_locations_it_answered_and_residency_stays() {
        let fleet = fleet(serde_json::json!({"locations": {
            "na": {"devices": 1500, "route": "claim-fleet-ca"},
            "ch": {"devices": 700, "route": "jitr"},
            "default": {"devices": 3000, "route": "claim-amazon-ca"},
        }}));
        let phases = plan(&config(), &fleet, None).unwrap();
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "onboard",
                "rehome after losing eu-west-1",
                "failback to eu-west-1",
                "rehome after losing us-east-1",
                "failback to us-east-1"
            ]
        );
        // eu-west-1 lost: the default location moves to us-east-1 and must
        // use the claim again (Amazon-CA certificates); Switzerland has no
        // other region and stays.
        let rehome = &phases[1];
        assert_eq!(rehome.regions.len(), 1);
        let us = &rehome.regions[0];
        assert_eq!(
            (us.region.as_str(), us.devices, us.claim_uses),
            ("us-east-1", 3000, 3000)
        );
        assert_eq!(us.bottleneck.as_deref(), Some("registerThing"));
        assert_eq!(us.floor_seconds, 300.0);
        assert!(us.seconds > us.floor_seconds, "{us:?}");
        // us-east-1 lost: North America's fleet-CA devices re-home by JITR,
        // with no claim use, bounded by UpdateCertificate.
        let rehome = &phases[3];
        let eu = &rehome.regions[0];
        assert_eq!(
            (eu.region.as_str(), eu.devices, eu.claim_uses),
            ("eu-west-1", 1500, 0)
        );
        assert_eq!(eu.units.get("registerThing"), None);
        assert_eq!(eu.bottleneck.as_deref(), Some("updateCertificate"));
        assert_eq!(eu.floor_seconds, 150.0);
        // Failback: one CONNECT each, at 500 per second.
        let failback = &phases[4];
        assert_eq!(failback.regions[0].units["connect"], 1500);
        assert_eq!(failback.regions[0].floor_seconds, 3.0);
        // Each device notices within 30 to 90 s (the recheck, 60 s, jittered).
        assert!((30.0..=93.0).contains(&failback.seconds), "{failback:?}");
    }

    #[test]
    fn a_target_names_each_quota_to_raise_and_to_what() {
        // Powered on at 100 a second: 6,000 devices in a minute.
        let fleet = fleet(serde_json::json!({
            "locations": {"na": {"devices": 6000, "route": "jitr"}},
            "regionQuotas": {"us-east-1": {"createThing": 100}},
            "behaviour": {"powerOnPerSecond": 100},
        }));
        let phases = plan(&config(), &fleet, Some(500.0)).unwrap();
        let onboard = &phases[0];
        let raise: Vec<(&str, &str, f64)> = onboard
            .raise
            .iter()
            .map(|r| (r.region.as_str(), r.quota.as_str(), r.from))
            .collect();
        // 6,000 in 500 s is 12 per second. UpdateCertificate's 10 is not
        // enough; auto-registration (400 s at 15) and AttachThingPrincipal
        // (400 s) become the bottleneck next, so they are raised too;
        // createThing's raised 100 is far from it.
        assert_eq!(
            raise,
            [
                ("us-east-1", "attachThingPrincipal", 15.0),
                ("us-east-1", "autoRegistration", 15.0),
                ("us-east-1", "updateCertificate", 10.0),
            ]
        );
        assert!(
            onboard.raise.iter().all(|r| r.to >= 15.0 && r.to <= 45.0),
            "{onboard:?}"
        );
        let with = onboard.seconds_with_raises.unwrap();
        assert!(with <= 500.0 && onboard.seconds > 600.0, "{onboard:?}");
        // Exactly at the floor, the retries still miss the target.
        let phases = plan(&config(), &fleet, Some(600.0)).unwrap();
        let update = phases[0]
            .raise
            .iter()
            .find(|r| r.quota == "updateCertificate")
            .unwrap();
        assert!(update.to > 10.0 && phases[0].seconds_with_raises.unwrap() <= 600.0);
        // A phase that meets the target asks for nothing.
        let phases = plan(&config(), &fleet, Some(3600.0)).unwrap();
        assert!(
            phases
                .iter()
                .all(|p| p.raise.is_empty() && p.seconds_with_raises.is_none())
        );
    }

    #[test]
    fn a_target_no_rate_can_meet_is_said_to_be_missed() {
        // A JITR device is working only after its activation (5 s here)
        // and its next attempt: no rate brings 600 devices under 4 s.
        let fleet = fleet(serde_json::json!({
            "locations": {"na": {"devices": 600, "route": "jitr"}},
            "behaviour": {"activationSeconds": 5},
        }));
        let phases = plan(&config(), &fleet, Some(4.0)).unwrap();
        let onboard = &phases[0];
        assert!(!onboard.raise.is_empty(), "{onboard:?}");
        let with = onboard.seconds_with_raises.unwrap();
        assert!(with > 5.0 && with < onboard.seconds, "{onboard:?}");
    }

    #[test]
    fn an_unknown_location_or_a_rate_that_is_not_positive_is_refused() {
        let unknown =
            fleet(serde_json::json!({"locations": {"mars": {"devices": 1, "route": "jitr"}}}));
        assert_eq!(
            plan(&config(), &unknown, None),
            Err(PlanError::UnknownLocation("mars".into()))
        );
        let zero = fleet(serde_json::json!({"locations": {}, "quotas": {"connect": 0}}));
        assert!(matches!(
            plan(&config(), &zero, None),
            Err(PlanError::BadRate { .. })
        ));
    }
}
