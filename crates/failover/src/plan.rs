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
//! Not modelled: retries (a throttled request that a device sends again
//! spends nothing but takes a turn later), Lambda concurrency, and CPU.
//! The game day measures what the model leaves out.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::RegionName;
use serde::{Deserialize, Serialize};

use crate::config::FailoverConfig;
use crate::coverage::{answers, full_zone};

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
    pub seconds: f64,
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
}

/// A phase's arrivals, by region.
type Arrivals = BTreeMap<RegionName, Vec<Arrival>>;

/// A phase from the devices arriving in each region and what each spends.
fn phase(name: String, fleet: &Fleet, arrivals: &Arrivals, target: Option<f64>) -> Phase {
    let mut regions = Vec::new();
    let mut raise = Vec::new();
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
            if let Some(target) = target
                && seconds > target
            {
                raise.push(Raise {
                    region: region.clone(),
                    quota: quota.clone(),
                    from: r,
                    to: (*spent as f64 / target).ceil(),
                });
            }
        }
        regions.push(RegionLoad {
            region: region.clone(),
            devices,
            units,
            seconds: worst.as_ref().map_or(0.0, |w| w.1),
            bottleneck: worst.as_ref().map(|w| w.0.clone()),
            rate: worst.map(|w| w.2),
            claim_uses,
        });
    }
    Phase {
        name,
        seconds: regions.iter().map(|r| r.seconds).fold(0.0, f64::max),
        regions,
        raise,
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
            });
    }
    phases.push(phase("onboard".into(), fleet, &onboard, target_seconds));
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
            });
            // Back where its certificate is still registered and ACTIVE.
            failback.entry(from.clone()).or_default().push(Arrival {
                devices: location.devices,
                spend: vec![("connect", 1)],
                claim: false,
            });
        }
        phases.push(phase(
            format!("rehome after losing {lost}"),
            fleet,
            &rehome,
            target_seconds,
        ));
        phases.push(phase(
            format!("failback to {lost}"),
            fleet,
            &failback,
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
        assert_eq!(us.seconds, 3600.0);
        assert_eq!(us.units["connect"], 72_000);
        let eu = onboard
            .regions
            .iter()
            .find(|r| r.region.as_str() == "eu-west-1")
            .unwrap();
        // 18,000 UpdateCertificate at 10 per second: half an hour.
        assert_eq!(eu.bottleneck.as_deref(), Some("updateCertificate"));
        assert_eq!(eu.seconds, 1800.0);
        assert_eq!(onboard.seconds, 3600.0);
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
        assert_eq!(us.seconds, 300.0);
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
        assert_eq!(eu.seconds, 150.0);
        // Failback: one CONNECT each, at 500 per second.
        let failback = &phases[4];
        assert_eq!(failback.regions[0].units["connect"], 1500);
        assert_eq!(failback.seconds, 3.0);
    }

    #[test]
    fn a_target_names_each_quota_to_raise_and_to_what() {
        let fleet = fleet(serde_json::json!({
            "locations": {"na": {"devices": 6000, "route": "jitr"}},
            "regionQuotas": {"us-east-1": {"createThing": 100}},
        }));
        let phases = plan(&config(), &fleet, Some(300.0)).unwrap();
        let raise: Vec<(&str, &str, f64, f64)> = phases[0]
            .raise
            .iter()
            .map(|r| (r.region.as_str(), r.quota.as_str(), r.from, r.to))
            .collect();
        // 6,000 in 300 s is 20 per second: createThing's raised 100 is enough.
        assert_eq!(
            raise,
            [
                ("us-east-1", "attachThingPrincipal", 15.0, 20.0),
                ("us-east-1", "autoRegistration", 15.0, 20.0),
                ("us-east-1", "updateCertificate", 10.0, 20.0),
            ]
        );
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
