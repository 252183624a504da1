//! The device as the factory registered it: identity, status, residency,
//! quota, factory key and the attributes its thing is created with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that does not satisfy the rules of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Is `s` a valid AWS IoT thing name (1-128 of `[A-Za-z0-9:_-]`)?
pub fn is_thing_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// The region canary's reserved serial in `region`: the one serial the hook
/// allows without quota or audit (with its factory key), and the thing the
/// canary's provisioning probe makes and deletes.
pub fn canary_serial(region: &str) -> String {
    format!("geoprov-canary-{region}-probe")
}

/// The prefix the thing groups a manifest may name must have, unless the
/// stack's `ThingGroupPrefix` says otherwise: the stack's own.
pub const DEFAULT_THING_GROUP_PREFIX: &str = "geoprov-";

/// Why a profile may not name `group`, if it may not: a device inherits its
/// thing group's policies, so a manifest line (which may be tampered with)
/// names only the stack's groups: those with `prefix`.
pub fn thing_group_refused(group: &str, prefix: &str) -> Option<String> {
    match group.starts_with(prefix) {
        true => None,
        false => Some(format!(
            "the thing group {group} is not one a device may be put in: it must start with {prefix:?} (ThingGroupPrefix)"
        )),
    }
}

/// What records which decision committed a certificate.
pub fn commit_token(certificate_id: &str, request_id: &str) -> String {
    format!("{certificate_id}:{request_id}")
}

/// Why a manifest may not name `serial`, if it may not:
/// - a region canary's serial (`geoprov-canary-<region>-probe`, any
///   region): only `geoprov setup canary` writes its profile, pinned to its
///   region; a manifest line could otherwise drop the pin and let the claim
///   key provision it;
/// - a serial that starts with the provisioning client-id prefix: its
///   provisioning client id (`<prefix><serial>`) would then begin with the
///   prefix twice, and the device's own client id (`<serial>`) would be one
///   the claim policy lets the claim key connect as.
pub fn reserved_serial(serial: &str, client_id_prefix: &str) -> Option<String> {
    let lower = serial.to_ascii_lowercase();
    if lower.starts_with("geoprov-canary-") && lower.ends_with("-probe") {
        return Some(format!(
            "{serial} is reserved for the region canary (geoprov setup canary writes it)"
        ));
    }
    if !client_id_prefix.is_empty() && serial.starts_with(client_id_prefix) {
        return Some(format!(
            "{serial} starts with the provisioning client-id prefix {client_id_prefix:?}, which the claim key may connect as"
        ));
    }
    None
}

/// A string newtype that exists only in valid form: serde, `TryFrom` and
/// `Display` all go through `check`, which may also normalise the value.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, check: $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                let check: fn(String) -> Result<String, InvalidValue> = $check;
                check(s).map($name)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidValue;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                $name::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A device serial number, which is also its IoT thing name.
    SerialNumber,
    check: |s| match is_thing_name(&s) {
        true => Ok(s),
        false => Err(InvalidValue(
            "serial number must be 1-128 characters of [A-Za-z0-9:_-]".into(),
        )),
    }
);

validated_string!(
    /// An IoT thing group name (same character rules as a thing name).
    ThingGroupName,
    check: |s| match is_thing_name(&s) {
        true => Ok(s),
        false => Err(InvalidValue(
            "thing group must be 1-128 characters of [A-Za-z0-9:_-]".into(),
        )),
    }
);

validated_string!(
    /// An AWS region name such as `eu-west-1`: lower-case words and a number,
    /// e.g. us-east-1, ap-southeast-2, us-gov-west-1.
    RegionName,
    check: |s| {
        let well_formed = s.len() <= 32
            && s.rsplit_once('-').is_some_and(|(words, number)| {
                !number.is_empty()
                    && number.bytes().all(|b| b.is_ascii_digit())
                    && words.split('-').count() >= 2
                    && words
                        .split('-')
                        .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
            });
        match well_formed {
            true => Ok(s),
            false => Err(InvalidValue(format!("{s:?} is not a region name like eu-west-1"))),
        }
    }
);

validated_string!(
    /// Hex SHA-256 of a DER SubjectPublicKeyInfo, kept in lower case.
    PublicKeyFingerprint,
    check: |s| match s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(s.to_ascii_lowercase()),
        false => Err(InvalidValue(
            "publicKeySha256 must be 64 hex characters (SHA-256 of the DER SubjectPublicKeyInfo)"
                .into(),
        )),
    }
);

/// Whether the device may be provisioned at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    #[default]
    Allowed,
    Blocked,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Allowed => "ALLOWED",
            DeviceStatus::Blocked => "BLOCKED",
            DeviceStatus::Revoked => "REVOKED",
        }
    }
}

/// Parameter names the hook sets itself; an attribute may not shadow them.
pub const RESERVED_PARAMETER_NAMES: [&str; 3] = ["SerialNumber", "Region", "ThingGroupName"];

/// Thing attributes as IoT accepts them: names 1-128 of `[A-Za-z0-9_.,@/:#-]`,
/// values at most 800 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct ThingAttributes(BTreeMap<String, String>);

impl ThingAttributes {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<BTreeMap<String, String>> for ThingAttributes {
    type Error = InvalidValue;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        for (name, value) in &map {
            let name_ok = (1..=128).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'-')
                });
            if !name_ok {
                return Err(InvalidValue(format!(
                    "attribute name {name:?} must be 1-128 characters of [A-Za-z0-9_.,@/:#-]"
                )));
            }
            if RESERVED_PARAMETER_NAMES.contains(&name.as_str()) {
                return Err(InvalidValue(format!(
                    "attribute name {name:?} is reserved for the provisioning template"
                )));
            }
            if value.chars().count() > 800 {
                return Err(InvalidValue(format!(
                    "attribute {name:?} is longer than 800 characters"
                )));
            }
        }
        Ok(ThingAttributes(map))
    }
}

impl From<ThingAttributes> for BTreeMap<String, String> {
    fn from(a: ThingAttributes) -> Self {
        a.0
    }
}

/// What the factory recorded for one device: one line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProfile {
    pub serial_number: SerialNumber,
    #[serde(default)]
    pub status: DeviceStatus,
    /// Regions the device may be provisioned in; `None` means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<BTreeSet<RegionName>>,
    /// Provisioning quota; `None` means the function's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_provisions: Option<u32>,
    /// Certificates the cert issuer may mint for the device (distinct CSRs,
    /// over every region); `None` means the issuer's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_certificates: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<PublicKeyFingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_group: Option<ThingGroupName>,
    #[serde(default, skip_serializing_if = "ThingAttributes::is_empty")]
    pub attributes: ThingAttributes,
    /// Changed by every import and every operator block or unblock; the
    /// hook's commit holds only if the profile it read is still this one.
    /// Set by the registry, never by the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl DeviceProfile {
    /// A registered, allowed device with no other restriction.
    pub fn allowed(serial: SerialNumber) -> Self {
        DeviceProfile {
            serial_number: serial,
            status: DeviceStatus::Allowed,
            allowed_regions: None,
            max_provisions: None,
            max_certificates: None,
            public_key_sha256: None,
            thing_group: None,
            attributes: ThingAttributes::default(),
            version: None,
        }
    }
}

/// What the hook has recorded about the device's provisionings in one
/// region: each region counts in an item of its own, so that global-table
/// replication (last writer wins per item) cannot lose an increment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningState {
    /// Absent on an item a fence made before any provisioning here.
    #[serde(default)]
    pub provision_count: u32,
    /// Every certificate provisioned so far, so an IoT retry is recognised.
    #[serde(default)]
    pub provisioned_certificate_ids: BTreeSet<String>,
    /// Which decision committed each certificate: `<certificate id>:<request
    /// id>`, so that settling a lost commit tells its own commit from
    /// another decision's (device activation's) of the same certificate.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub committed_by: BTreeSet<String>,
    /// Certificates whose lost commit was settled as not applied: they are
    /// never provisioned here.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub fenced_certificate_ids: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_provisioned_at: Option<String>,
}

/// The device's provisionings in every region, as this region reads them:
/// its own region's count strongly consistent, the others' as replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provisionings {
    pub regions: BTreeMap<RegionName, ProvisioningState>,
    /// The version of the device's commit guard as read: every commit, in
    /// any region, changes it, so a commit decided on counts another region
    /// has since changed does not hold (exact on one table; within the
    /// replication lag across a global table's regions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
}

impl Provisionings {
    /// Provisionings in every region.
    pub fn total(&self) -> u32 {
        self.regions
            .values()
            .fold(0u32, |sum, state| sum.saturating_add(state.provision_count))
    }

    /// Provisionings in regions other than `region`.
    pub fn elsewhere(&self, region: &RegionName) -> u32 {
        self.total().saturating_sub(self.count_in(region))
    }

    pub fn count_in(&self, region: &RegionName) -> u32 {
        self.regions
            .get(region)
            .map(|state| state.provision_count)
            .unwrap_or(0)
    }

    /// Whether `certificate_id` was fenced in `region` (its commit settled
    /// as not applied).
    pub fn is_fenced(&self, region: &RegionName, certificate_id: &str) -> bool {
        self.regions
            .get(region)
            .is_some_and(|state| state.fenced_certificate_ids.contains(certificate_id))
    }

    /// Whether the decision `request_id` committed `certificate_id` in
    /// `region`.
    pub fn committed_by(
        &self,
        region: &RegionName,
        certificate_id: &str,
        request_id: &str,
    ) -> bool {
        self.regions.get(region).is_some_and(|state| {
            state
                .committed_by
                .contains(&commit_token(certificate_id, request_id))
        })
    }

    /// Whether `certificate_id` was provisioned in `region`.
    pub fn has_certificate_in(&self, region: &RegionName, certificate_id: &str) -> bool {
        self.regions
            .get(region)
            .is_some_and(|state| state.provisioned_certificate_ids.contains(certificate_id))
    }

    /// Whether `certificate_id` was provisioned in any region.
    pub fn has_certificate(&self, certificate_id: &str) -> bool {
        self.regions
            .values()
            .any(|state| state.provisioned_certificate_ids.contains(certificate_id))
    }
}

/// An operator's block: an item of its own, which no manifest import
/// touches, so re-importing cannot lift it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorBlock {
    pub reason: String,
    /// RFC 3339.
    pub blocked_at: String,
}

/// A registered device: its profile, any operator block, and its
/// provisionings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub profile: DeviceProfile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<OperatorBlock>,
    pub provisioning: Provisionings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_the_iot_rules() {
        assert!(is_thing_name("SN-0001:a_b"));
        assert!(is_thing_name(&"a".repeat(128)));
        assert!(!is_thing_name(""));
        assert!(!is_thing_name(&"a".repeat(129)));
        assert!(!is_thing_name("SN 1"));
        assert!(!is_thing_name("SN/1"));
        assert!(!is_thing_name("ßN"));
        // Every character is checked, not just the first.
        assert!(!is_thing_name("SN1$"));
    }

    #[test]
    fn region_names_are_checked() {
        for ok in ["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"] {
            assert!(RegionName::try_from(ok).is_ok(), "{ok}");
        }
        for bad in ["", "useast1", "us-east", "US-EAST-1", "us--1", "eu-west-x"] {
            assert!(RegionName::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_are_normalised_to_lower_case() {
        let fp = PublicKeyFingerprint::try_from("AB".repeat(32)).unwrap();
        assert_eq!(fp.as_str(), "ab".repeat(32));
        assert!(PublicKeyFingerprint::try_from("ab".repeat(31)).is_err());
        assert!(PublicKeyFingerprint::try_from("zz".repeat(32)).is_err());
    }

    #[test]
    fn a_manifest_line_with_only_a_serial_is_an_allowed_device() {
        let p: DeviceProfile = serde_json::from_str(r#"{"serialNumber":"SN-1"}"#).unwrap();
        assert_eq!(
            p,
            DeviceProfile::allowed(SerialNumber::try_from("SN-1").unwrap())
        );
    }

    #[test]
    fn attributes_may_not_shadow_template_parameters() {
        let err = serde_json::from_str::<DeviceProfile>(
            r#"{"serialNumber":"SN-1","attributes":{"Region":"x"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
