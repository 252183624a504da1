//! Identity coverage: for every location, every region DNS may answer it
//! with, and whether a device of that location can work there.
//!
//! Where a location can be sent is computed, not assumed: the location's
//! records as the failover writes them (its whole preference as the chain:
//! a chain the control plane trims is a part of it) are resolved by the
//! answer model (`route53-answer`) for a resolver inside the location,
//! under every combination of region health. That includes Route 53's own
//! fallbacks: a failover step whose PRIMARY and SECONDARY are both
//! unhealthy answers the PRIMARY, and the chain's last step answers its
//! first region.
//!
//! What a device needs in a region it is answered to (the IoT developer
//! guide's "Just-in-time registration" and "Provisioning templates"; the
//! regional stack):
//! - the fleet CA registered there, ACTIVE, with auto-registration on, so
//!   that its certificate is registered on its first connection there;
//! - the device policy the activation attaches, the thing type and the
//!   device's thing group (the stack's default one, or the group its
//!   registry entry names), or activation fails there;
//! - the registry allowing the region (`allowedRegions`), or activation
//!   denies it there.
//!
//! A device's location is not in the registry. A device restricted to some
//! regions is taken to be in the locations whose preferred region it is
//! allowed in (where it is provisioned while every region is healthy); when
//! some of those never send it outside its regions, locations built for its
//! residency, it is taken to be in those. An unrestricted device may be
//! anywhere.
//!
//! Each region's IoT certificate provider (`provider_in`,
//! `provider_notices`): with one, every fleet-provisioning
//! `CreateCertificateFromCsr` there is signed by its Lambda function instead
//! of by Amazon's CA (the IoT developer guide's "Self-managed certificate
//! signing using AWS IoT Core certificate provider"). The regional stack's is
//! `geoprov-<region>` (EnableCertificateProvider), whose certificates come
//! from the fleet CA and so work in every region (JITR). The guide says "You
//! can only create one certificate provider per AWS account"; geoprov holds
//! the stricter reading, one in the whole account, whatever its region.
//! Coverage has no input saying which locations' claim devices should get
//! fleet-CA certificates (`plan`'s routes), so a region without geoprov's
//! provider is a warning, and another provider a notice: neither is a gap.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::{DeviceProfile, DeviceStatus, RegionName};
use route53_answer::{ClientLocation, Zone};
use serde::Serialize;

use crate::config::FailoverConfig;
use crate::tree::location_records;

/// More regions than this make 2^n health combinations too many to walk.
pub const MAX_REGIONS: usize = 12;

/// Where DNS may send one location's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reach {
    /// The first region of its preference: where it is answered while every
    /// region is healthy.
    pub preferred: RegionName,
    /// Every region it is answered with under some combination of health.
    pub regions: BTreeSet<RegionName>,
}

/// The zone as the failover writes it when every region is admitted: each
/// location's whole preference as its chain (a trimmed chain is a part of it).
pub fn full_zone(config: &FailoverConfig) -> Zone {
    Zone::new(
        config
            .locations
            .iter()
            .flat_map(|l| location_records(config, l, &l.preference)),
    )
}

/// The region each location (by set identifier) is answered with when
/// exactly the regions in `down` are unhealthy.
pub fn answers(
    config: &FailoverConfig,
    zone: &Zone,
    down: &BTreeSet<&RegionName>,
) -> Result<BTreeMap<String, RegionName>, String> {
    let healthy = |check: &str| {
        !config
            .regions
            .iter()
            .any(|(r, t)| t.health_check_id == check && down.contains(r))
    };
    config
        .locations
        .iter()
        .map(|location| {
            let client = ClientLocation::within(&location.geo_location);
            let answer = zone.resolve(&config.record_name, &client, &healthy).answer;
            let region = answer
                .as_deref()
                .and_then(|a| config.region_of_endpoint(a))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "location {}: the records answer {answer:?}, which is no region's endpoint",
                        location.set_identifier
                    )
                })?;
            Ok((location.set_identifier.clone(), region))
        })
        .collect()
}

/// Where DNS may send each location (by set identifier), under every
/// combination of region health.
pub fn reachable_regions(config: &FailoverConfig) -> Result<BTreeMap<String, Reach>, String> {
    let regions: Vec<&RegionName> = config.regions.keys().collect();
    if regions.len() > MAX_REGIONS {
        return Err(format!(
            "{} regions: at most {MAX_REGIONS} can be walked (2^n health combinations)",
            regions.len()
        ));
    }
    let zone = full_zone(config);
    let mut answered: BTreeMap<String, BTreeSet<RegionName>> = BTreeMap::new();
    for mask in 0u32..(1 << regions.len()) {
        let down: BTreeSet<&RegionName> = regions
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) == 0)
            .map(|(_, r)| *r)
            .collect();
        for (location, region) in answers(config, &zone, &down)? {
            answered.entry(location).or_default().insert(region);
        }
    }
    config
        .locations
        .iter()
        .map(|location| {
            let preferred = location
                .preference
                .first()
                .ok_or_else(|| format!("location {} has no region", location.set_identifier))?;
            let reach = Reach {
                preferred: preferred.clone(),
                regions: answered
                    .remove(&location.set_identifier)
                    .unwrap_or_default(),
            };
            Ok((location.set_identifier.clone(), reach))
        })
        .collect()
}

/// What a region holds of what devices need there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionFacts {
    /// The fleet CA: `None` when it is not registered there; else whether
    /// it is ACTIVE and whether auto-registration is on.
    pub fleet_ca: Option<(bool, bool)>,
    pub device_policy: bool,
    pub thing_type: bool,
    /// The thing groups that exist there, of those devices name.
    pub thing_groups: BTreeSet<String>,
}

/// What is missing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "missing", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Missing {
    /// The fleet CA is not registered in the region.
    FleetCa,
    /// The fleet CA is registered but not ACTIVE.
    FleetCaInactive,
    /// The fleet CA's auto-registration is off.
    AutoRegistration,
    DevicePolicy,
    ThingType,
    ThingGroup {
        group: String,
    },
    /// The registry does not allow the region for these devices.
    RegistryExcludesRegion,
}

impl Missing {
    pub fn describe(&self) -> String {
        match self {
            Missing::FleetCa => "the fleet CA is not registered".into(),
            Missing::FleetCaInactive => "the fleet CA is registered but not ACTIVE".into(),
            Missing::AutoRegistration => "the fleet CA's auto-registration is off".into(),
            Missing::DevicePolicy => "the device policy does not exist".into(),
            Missing::ThingType => "the thing type does not exist".into(),
            Missing::ThingGroup { group } => format!("thing group {group} does not exist"),
            Missing::RegistryExcludesRegion => {
                "the registry's allowedRegions exclude the region".into()
            }
        }
    }
}

/// One gap: devices of `location` that DNS may send to `region`, where they
/// cannot work for want of `missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    pub location: String,
    pub region: RegionName,
    #[serde(flatten)]
    pub missing: Missing,
    /// How many registered devices it strands.
    pub devices: usize,
    /// A few of their serial numbers.
    pub examples: Vec<String>,
}

/// Examples kept per gap.
const EXAMPLES: usize = 5;

/// The group a device's thing is put in: its own, or the stack's default.
fn group_of<'a>(device: &'a DeviceProfile, default_group: &'a str) -> &'a str {
    device
        .thing_group
        .as_ref()
        .map_or(default_group, |g| g.as_str())
}

/// Every gap, by location, region and what is missing. A device that is
/// blocked or revoked needs nothing anywhere.
pub fn gaps(
    reachable: &BTreeMap<String, Reach>,
    facts: &BTreeMap<RegionName, RegionFacts>,
    devices: &[DeviceProfile],
    default_group: &str,
) -> Vec<Gap> {
    let mut found: BTreeMap<(String, RegionName, Missing), (usize, Vec<String>)> = BTreeMap::new();
    let absent = RegionFacts::default();
    for device in devices.iter().filter(|d| d.status == DeviceStatus::Allowed) {
        let allowed = |r: &RegionName| {
            device
                .allowed_regions
                .as_ref()
                .is_none_or(|a| a.contains(r))
        };
        for (location, reach) in locations_of(reachable, &allowed) {
            for region in &reach.regions {
                let held = facts.get(region).unwrap_or(&absent);
                for missing in region_gaps(held, allowed(region), group_of(device, default_group)) {
                    let entry = found
                        .entry((location.clone(), region.clone(), missing))
                        .or_default();
                    entry.0 += 1;
                    if entry.1.len() < EXAMPLES {
                        entry.1.push(device.serial_number.as_str().to_owned());
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .map(|((location, region, missing), (devices, examples))| Gap {
            location,
            region,
            missing,
            devices,
            examples,
        })
        .collect()
}

/// The locations a device with these allowed regions is taken to be in.
fn locations_of<'a>(
    reachable: &'a BTreeMap<String, Reach>,
    allowed: &dyn Fn(&RegionName) -> bool,
) -> Vec<(&'a String, &'a Reach)> {
    // Where it is provisioned while every region is healthy.
    let candidates: Vec<(&String, &Reach)> = reachable
        .iter()
        .filter(|(_, reach)| allowed(&reach.preferred))
        .collect();
    let residency: Vec<(&String, &Reach)> = candidates
        .iter()
        .copied()
        .filter(|(_, reach)| reach.regions.iter().all(allowed))
        .collect();
    match residency.is_empty() {
        true => candidates,
        false => residency,
    }
}

/// What one device lacks in one region.
fn region_gaps(held: &RegionFacts, allowed: bool, group: &str) -> Vec<Missing> {
    if !allowed {
        // Activation denies it there whatever the region holds.
        return vec![Missing::RegistryExcludesRegion];
    }
    let mut missing = Vec::new();
    match held.fleet_ca {
        None => missing.push(Missing::FleetCa),
        Some((false, _)) => missing.push(Missing::FleetCaInactive),
        Some((true, false)) => missing.push(Missing::AutoRegistration),
        Some((true, true)) => {}
    }
    if !held.device_policy {
        missing.push(Missing::DevicePolicy);
    }
    if !held.thing_type {
        missing.push(Missing::ThingType);
    }
    if !held.thing_groups.contains(group) {
        missing.push(Missing::ThingGroup {
            group: group.to_owned(),
        });
    }
    missing
}

/// The thing groups devices need, the default one included.
pub fn needed_groups(devices: &[DeviceProfile], default_group: &str) -> BTreeSet<String> {
    devices
        .iter()
        .filter(|d| d.status == DeviceStatus::Allowed)
        .map(|d| group_of(d, default_group).to_owned())
        .chain(std::iter::once(default_group.to_owned()))
        .collect()
}

/// A certificate provider as IoT describes it in a region
/// (DescribeCertificateProvider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateProvider {
    pub name: String,
    pub function_arn: String,
}

/// The name the regional stack gives its certificate provider in `region`.
pub fn geoprov_provider_name(region: &RegionName) -> String {
    format!("geoprov-{region}")
}

/// Whose certificate provider a region has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "provider",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum RegionProvider {
    /// The regional stack's, `geoprov-<region>`.
    Geoprov { name: String, function_arn: String },
    /// None: IoT signs CreateCertificateFromCsr with Amazon's CA.
    None,
    /// Another one, which signs every CreateCertificateFromCsr there.
    Other { name: String, function_arn: String },
}

/// The provider of `region` from the ones IoT lists there. Another one wins
/// over geoprov's (it is what a person must act on); two at once cannot be
/// under either reading of the one-per-account rule.
pub fn provider_in(region: &RegionName, listed: &[CertificateProvider]) -> RegionProvider {
    let ours = geoprov_provider_name(region);
    let foreign = listed.iter().find(|p| p.name != ours);
    match (foreign, listed.iter().find(|p| p.name == ours)) {
        (Some(p), _) => RegionProvider::Other {
            name: p.name.clone(),
            function_arn: p.function_arn.clone(),
        },
        (None, Some(p)) => RegionProvider::Geoprov {
            name: p.name.clone(),
            function_arn: p.function_arn.clone(),
        },
        (None, None) => RegionProvider::None,
    }
}

/// What a person should know about the certificate providers. None fails
/// coverage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "notice",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ProviderNotice {
    /// Another provider signs CreateCertificateFromCsr in `region`, and, one
    /// being allowed per account, keeps geoprov's from being made anywhere.
    ForeignProvider {
        region: RegionName,
        name: String,
        function_arn: String,
    },
    /// Claim devices can provision in `region`, where geoprov's provider is
    /// absent: they get Amazon-CA certificates there, which work in no other
    /// region. `account_provider` is the account's provider elsewhere, if any.
    NoGeoprovProvider {
        region: RegionName,
        account_provider: Option<String>,
    },
}

impl ProviderNotice {
    /// One line for a person, with what to do.
    pub fn describe(&self) -> String {
        match self {
            ProviderNotice::ForeignProvider {
                region,
                name,
                function_arn,
            } => format!(
                "notice: {region}: certificate provider {name} (function {function_arn}) is not \
                 geoprov's ({geoprov}); it signs every CreateCertificateFromCsr there, and IoT \
                 allows one per account, so geoprov's cannot be made while it exists. Either \
                 deploy {region}'s stack with EnableCertificateProvider=false, or delete the \
                 other provider: aws iot delete-certificate-provider \
                 --certificate-provider-name {name} --region {region}",
                geoprov = geoprov_provider_name(region),
            ),
            ProviderNotice::NoGeoprovProvider {
                region,
                account_provider,
            } => {
                let held = account_provider.as_ref().map_or(String::new(), |p| {
                    format!(" (the account's one provider is {p})")
                });
                format!(
                    "warning: {region}: no geoprov certificate provider ({geoprov}){held}: claim \
                     devices provisioning there get Amazon-CA certificates, valid in {region} \
                     only; for fleet-CA certificates, valid everywhere through JITR, deploy \
                     {region}'s stack with EnableCertificateProvider=true",
                    geoprov = geoprov_provider_name(region),
                )
            }
        }
    }
}

/// The notices for the regions' providers (by region, what IoT lists
/// there): every other provider, and every region some location can be
/// answered with (where claim devices can provision) that lacks geoprov's
/// and has no other one.
pub fn provider_notices(
    reachable: &BTreeMap<String, Reach>,
    providers: &BTreeMap<RegionName, Vec<CertificateProvider>>,
) -> Vec<ProviderNotice> {
    let mut notices = Vec::new();
    for (region, listed) in providers {
        let ours = geoprov_provider_name(region);
        notices.extend(listed.iter().filter(|p| p.name != ours).map(|p| {
            ProviderNotice::ForeignProvider {
                region: region.clone(),
                name: p.name.clone(),
                function_arn: p.function_arn.clone(),
            }
        }));
    }
    let answerable: BTreeSet<&RegionName> =
        reachable.values().flat_map(|r| r.regions.iter()).collect();
    for region in answerable {
        let listed = providers.get(region).map_or(&[][..], Vec::as_slice);
        if !listed.is_empty() {
            // geoprov's, or another one, which has its notice.
            continue;
        }
        let account_provider = providers
            .iter()
            .find_map(|(r, l)| l.first().map(|p| format!("{} in {r}", p.name)));
        notices.push(ProviderNotice::NoGeoprovProvider {
            region: region.clone(),
            account_provider,
        });
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, region};
    use geoprov_shared::device::SerialNumber;
    use route53_answer::GeoLocation;

    const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "eu-central-1"];

    fn config(locations: &[(&str, GeoLocation, &[&str])]) -> FailoverConfig {
        fixtures::config(&REGIONS, locations)
    }

    /// Europe, preferring eu-west-1 and failing over to eu-central-1.
    fn europe() -> BTreeMap<String, Reach> {
        let europe = (
            "eu",
            GeoLocation::continent("EU"),
            &["eu-west-1", "eu-central-1"][..],
        );
        reachable_regions(&config(&[europe])).unwrap()
    }

    fn regions(names: &[&str]) -> BTreeSet<RegionName> {
        names.iter().map(|r| region(r)).collect()
    }

    #[test]
    fn a_location_can_be_answered_with_every_region_of_its_chain_and_no_other() {
        let config = config(&[
            (
                "eu",
                GeoLocation::continent("EU"),
                &["eu-west-1", "eu-central-1"],
            ),
            ("de", GeoLocation::country("DE"), &["eu-central-1"]),
            (
                "default",
                GeoLocation::default_location(),
                &["us-east-1", "eu-west-1"],
            ),
        ]);
        let reachable = reachable_regions(&config).unwrap();
        assert_eq!(
            reachable["eu"].regions,
            regions(&["eu-west-1", "eu-central-1"])
        );
        assert_eq!(reachable["eu"].preferred, region("eu-west-1"));
        // A one-region chain answers its region whatever its health: the
        // geolocation alias does not evaluate the chain's health.
        assert_eq!(reachable["de"].regions, regions(&["eu-central-1"]));
        assert_eq!(
            reachable["default"].regions,
            regions(&["us-east-1", "eu-west-1"])
        );
    }

    fn facts_everywhere(groups: &[&str]) -> BTreeMap<RegionName, RegionFacts> {
        REGIONS
            .into_iter()
            .map(|r| {
                (
                    region(r),
                    RegionFacts {
                        fleet_ca: Some((true, true)),
                        device_policy: true,
                        thing_type: true,
                        thing_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                    },
                )
            })
            .collect()
    }

    fn device(serial: &str, allowed: Option<&[&str]>, group: Option<&str>) -> DeviceProfile {
        let mut profile = DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap());
        profile.allowed_regions = allowed.map(regions);
        profile.thing_group = group.map(|g| g.try_into().unwrap());
        profile
    }

    #[test]
    fn a_clean_deployment_has_no_gap() {
        let reachable = europe();
        let devices = [
            device("SN-1", None, None),
            device(
                "SN-2",
                Some(&["eu-west-1", "eu-central-1"]),
                Some("geoprov-sensors"),
            ),
        ];
        let facts = facts_everywhere(&["geoprov-devices", "geoprov-sensors"]);
        assert_eq!(gaps(&reachable, &facts, &devices, "geoprov-devices"), []);
    }

    #[test]
    fn each_missing_piece_is_named_with_its_location_region_and_devices() {
        let reachable = europe();
        let devices = [
            device("SN-1", None, None),
            // Pinned to eu-west-1, yet EU can fail over to eu-central-1.
            device("SN-2", Some(&["eu-west-1"]), Some("geoprov-sensors")),
            // Pinned to eu-central-1: not in EU, whose preferred region it
            // may not use, so EU's failover to eu-central-1 is no gap of its.
            device("SN-4", Some(&["eu-central-1"]), None),
            // Blocked: needs nothing.
            DeviceProfile {
                status: DeviceStatus::Blocked,
                ..device("SN-3", Some(&["us-east-1"]), None)
            },
        ];
        let mut facts = facts_everywhere(&["geoprov-devices", "geoprov-sensors"]);
        let central = facts.get_mut(&region("eu-central-1")).unwrap();
        central.fleet_ca = None;
        let west = facts.get_mut(&region("eu-west-1")).unwrap();
        west.thing_groups.remove("geoprov-sensors");
        let found = gaps(&reachable, &facts, &devices, "geoprov-devices");
        let summary: Vec<(&str, &str, Missing, usize)> = found
            .iter()
            .map(|g| {
                (
                    g.location.as_str(),
                    g.region.as_str(),
                    g.missing.clone(),
                    g.devices,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("eu", "eu-central-1", Missing::FleetCa, 1),
                ("eu", "eu-central-1", Missing::RegistryExcludesRegion, 1),
                (
                    "eu",
                    "eu-west-1",
                    Missing::ThingGroup {
                        group: "geoprov-sensors".into()
                    },
                    1
                ),
            ]
        );
        assert_eq!(found[1].examples, ["SN-2"]);
    }

    #[test]
    fn a_pinned_device_is_taken_to_be_in_the_location_built_for_its_residency() {
        let pinned = [device("SN-EU", Some(&["eu-west-1"]), None)];
        let facts = facts_everywhere(&["geoprov-devices"]);
        let default = (
            "default",
            GeoLocation::default_location(),
            &["eu-west-1", "us-east-1"][..],
        );
        // Only the default location: it can send the device to us-east-1.
        let reachable = reachable_regions(&config(std::slice::from_ref(&default))).unwrap();
        let found = gaps(&reachable, &facts, &pinned, "geoprov-devices");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].missing, Missing::RegistryExcludesRegion);
        assert_eq!(found[0].region, region("us-east-1"));
        // With a location that never leaves eu-west-1, the device is there.
        let eu = ("eu", GeoLocation::continent("EU"), &["eu-west-1"][..]);
        let reachable = reachable_regions(&config(&[eu, default])).unwrap();
        assert_eq!(gaps(&reachable, &facts, &pinned, "geoprov-devices"), []);
    }

    #[test]
    fn an_inactive_ca_or_auto_registration_off_is_named_as_such() {
        let held = |ca| RegionFacts {
            fleet_ca: ca,
            device_policy: false,
            thing_type: false,
            thing_groups: BTreeSet::new(),
        };
        assert_eq!(
            region_gaps(&held(Some((false, true))), true, "g")[0],
            Missing::FleetCaInactive
        );
        assert_eq!(
            region_gaps(&held(Some((true, false))), true, "g"),
            [
                Missing::AutoRegistration,
                Missing::DevicePolicy,
                Missing::ThingType,
                Missing::ThingGroup { group: "g".into() }
            ]
        );
    }

    fn provider(name: &str) -> CertificateProvider {
        CertificateProvider {
            name: name.into(),
            function_arn: format!("arn:aws:lambda:eu-west-1:123456789012:function:{name}-fn"),
        }
    }

    #[test]
    fn a_regions_provider_is_geoprovs_none_or_the_other_one() {
        let west = region("eu-west-1");
        assert_eq!(provider_in(&west, &[]), RegionProvider::None);
        assert_eq!(
            provider_in(&west, &[provider("geoprov-eu-west-1")]),
            RegionProvider::Geoprov {
                name: "geoprov-eu-west-1".into(),
                function_arn: provider("geoprov-eu-west-1").function_arn,
            }
        );
        // Another region's name is not this stack's.
        assert!(matches!(
            provider_in(&west, &[provider("geoprov-eu-central-1")]),
            RegionProvider::Other { name, .. } if name == "geoprov-eu-central-1"
        ));
        // Beside geoprov's, the other one is what is reported.
        assert!(matches!(
            provider_in(&west, &[provider("geoprov-eu-west-1"), provider("acme")]),
            RegionProvider::Other { name, .. } if name == "acme"
        ));
        let json = serde_json::to_value(provider_in(&west, &[provider("acme")])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"provider": "OTHER", "name": "acme", "functionArn": provider("acme").function_arn})
        );
    }

    #[test]
    fn a_region_claim_devices_can_reach_without_geoprovs_provider_is_a_warning() {
        // IoT allows one provider per account: geoprov's is in eu-west-1,
        // so eu-central-1, where EU fails over, has none. us-east-1 is no
        // location's answer, so nothing is said of it.
        let providers = BTreeMap::from([
            (region("eu-west-1"), vec![provider("geoprov-eu-west-1")]),
            (region("eu-central-1"), vec![]),
            (region("us-east-1"), vec![]),
        ]);
        let notices = provider_notices(&europe(), &providers);
        assert_eq!(
            notices,
            [ProviderNotice::NoGeoprovProvider {
                region: region("eu-central-1"),
                account_provider: Some("geoprov-eu-west-1 in eu-west-1".into()),
            }]
        );
        let line = notices[0].describe();
        assert!(line.starts_with("warning: eu-central-1: "), "{line}");
        assert!(line.contains("EnableCertificateProvider=true"), "{line}");
        // A region IoT was not asked about counts as one without a provider.
        assert_eq!(
            provider_notices(&europe(), &BTreeMap::new()).len(),
            2,
            "both EU regions"
        );
    }

    #[test]
    fn another_provider_is_a_notice_naming_it_and_how_to_remove_it() {
        let providers = BTreeMap::from([
            (region("eu-west-1"), vec![]),
            (region("eu-central-1"), vec![provider("acme")]),
        ]);
        let notices = provider_notices(&europe(), &providers);
        assert_eq!(
            notices,
            [
                ProviderNotice::ForeignProvider {
                    region: region("eu-central-1"),
                    name: "acme".into(),
                    function_arn: provider("acme").function_arn,
                },
                ProviderNotice::NoGeoprovProvider {
                    region: region("eu-west-1"),
                    account_provider: Some("acme in eu-central-1".into()),
                },
            ]
        );
        let line = notices[0].describe();
        assert!(
            line.starts_with("notice: eu-central-1: certificate provider acme"),
            "{line}"
        );
        assert!(line.contains(&provider("acme").function_arn), "{line}");
        assert!(line.contains("EnableCertificateProvider=false"), "{line}");
        assert!(
            line.contains(
                "aws iot delete-certificate-provider --certificate-provider-name acme --region eu-central-1"
            ),
            "{line}"
        );
    }
}
