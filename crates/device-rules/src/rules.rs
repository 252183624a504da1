//! The provisioning decision: pure rules over the claim and the device record.
//!
//! Deny by default; allow only when every rule passes, checked in this order
//! (after the request parsed): only device-settable parameters, claim
//! certificate trusted, device registered and not blocked (by the manifest or
//! by an operator), region allowed, quota summed over every region, factory
//! key (required by default), client id = the provisioning prefix + serial.
//!
//! Every rule assumes the claim key is public: anyone can send any serial,
//! any client id and any parameter. So the device sets nothing but its
//! serial, the hook overrides every other template parameter, and only the
//! factory key ties a request to the device it names.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::{
    DeviceRecord, DeviceStatus, RegionName, SerialNumber, ThingGroupName, thing_group_refused,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::claim::ProvisioningClaim;

/// The parameter IoT itself adds to a request: the new certificate's id.
pub const IOT_CERTIFICATE_ID_PARAMETER: &str = "AWS::IoT::Certificate::Id";

/// Why a decision came out as it did; written to the audit log and used as
/// the `Reason` metric dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Allowed,
    BadParameters,
    UnexpectedParameter,
    UntrustedClaim,
    UnknownDevice,
    DeviceBlocked,
    RegionNotAllowed,
    QuotaExceeded,
    NoFactoryKey,
    KeyMismatch,
    ClientIdMismatch,
    ThingGroupNotAllowed,
    /// Device activation: a thing of the serial's name exists with another
    /// type.
    ThingTypeMismatch,
    DeadlineExceeded,
    InternalError,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "ALLOWED",
            Reason::BadParameters => "BAD_PARAMETERS",
            Reason::UnexpectedParameter => "UNEXPECTED_PARAMETER",
            Reason::UntrustedClaim => "UNTRUSTED_CLAIM",
            Reason::UnknownDevice => "UNKNOWN_DEVICE",
            Reason::DeviceBlocked => "DEVICE_BLOCKED",
            Reason::RegionNotAllowed => "REGION_NOT_ALLOWED",
            Reason::QuotaExceeded => "QUOTA_EXCEEDED",
            Reason::NoFactoryKey => "NO_FACTORY_KEY",
            Reason::KeyMismatch => "KEY_MISMATCH",
            Reason::ClientIdMismatch => "CLIENT_ID_MISMATCH",
            Reason::ThingGroupNotAllowed => "THING_GROUP_NOT_ALLOWED",
            Reason::ThingTypeMismatch => "THING_TYPE_MISMATCH",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A denial and what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub detail: String,
}

impl Denial {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Denial {
            reason,
            detail: detail.into(),
        }
    }
}

/// Whether an allowed provisioning consumes quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// A new certificate: consume one provisioning in this region, whose
    /// count must stay below `region_limit` (the quota less the other
    /// regions' provisionings as read).
    New { region_limit: u32 },
    /// IoT retrying a certificate already provisioned: nothing to consume.
    Retry,
}

/// An allowed provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: GrantKind,
    pub parameter_overrides: BTreeMap<String, String>,
    /// The profile version the decision read; the commit holds only on it.
    pub profile_version: Option<String>,
}

/// The outcome of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Grant),
    Deny(Denial),
}

/// The rules as configured for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The region this copy runs in.
    pub region: RegionName,
    /// Claim certificate ids this region trusts; empty trusts none.
    pub trusted_claim_certificate_ids: BTreeSet<String>,
    /// The provisioning client id is this prefix and the serial; the claim
    /// policy lets the claim certificate connect with this prefix only, and
    /// a provisioned device connects with its serial.
    pub client_id_prefix: String,
    /// Deny a device whose profile has no factory key (`NO_FACTORY_KEY`).
    pub require_factory_key: bool,
    /// Quota for devices whose record sets none.
    pub default_max_provisions: u32,
    /// The thing group of a device whose profile names none.
    pub default_thing_group: ThingGroupName,
    /// The prefix of the thing groups a profile may name
    /// (`THING_GROUP_PREFIX`): a device inherits its group's policies.
    pub thing_group_prefix: String,
    /// The request parameters a device may set (besides the one IoT adds).
    pub device_settable_parameters: BTreeSet<String>,
    /// The template parameters that take the profile's attributes ("" when
    /// the profile has none of that name).
    pub attribute_parameters: BTreeSet<String>,
}

impl Policy {
    /// The rules that need no registry read: only device-settable
    /// parameters, and a trusted claim certificate.
    pub fn check_claim(&self, claim: &ProvisioningClaim) -> Result<(), Denial> {
        for (name, value) in &claim.parameters {
            if name == IOT_CERTIFICATE_ID_PARAMETER {
                if value.as_deref() != Some(claim.certificate_id.as_str()) {
                    return Err(Denial::new(
                        Reason::UnexpectedParameter,
                        format!("{name} is not the certificate's id"),
                    ));
                }
            } else if !self.device_settable_parameters.contains(name) {
                return Err(Denial::new(
                    Reason::UnexpectedParameter,
                    format!("parameter {name:?} is not one a device may set"),
                ));
            }
        }
        if self
            .trusted_claim_certificate_ids
            .contains(&claim.claim_certificate_id)
        {
            Ok(())
        } else {
            Err(Denial::new(
                Reason::UntrustedClaim,
                format!(
                    "claim certificate {} is not trusted in {}",
                    claim.claim_certificate_id, self.region
                ),
            ))
        }
    }

    /// Every rule, in order, over the claim and the device as read.
    pub fn decide(&self, claim: &ProvisioningClaim, device: Option<&DeviceRecord>) -> Verdict {
        match self.evaluate(claim, device) {
            Ok(grant) => Verdict::Allow(grant),
            Err(denial) => Verdict::Deny(denial),
        }
    }

    fn evaluate(
        &self,
        claim: &ProvisioningClaim,
        device: Option<&DeviceRecord>,
    ) -> Result<Grant, Denial> {
        self.check_claim(claim)?;
        let grant = self.device_rules(
            &claim.serial,
            &claim.certificate_id,
            &claim.certificate_pem,
            device,
        )?;
        let expected_client_id = format!("{}{}", self.client_id_prefix, claim.serial);
        if claim.client_id != expected_client_id {
            return Err(Denial::new(
                Reason::ClientIdMismatch,
                format!("clientId is not {expected_client_id}"),
            ));
        }
        Ok(grant)
    }

    /// The rules about the device and its certificate, whoever asks (the
    /// hook for a claim, the JITR activation for an auto-registered
    /// certificate): registered, not blocked by the manifest or by an
    /// operator, region allowed, quota summed over every region, factory key.
    pub fn device_rules(
        &self,
        serial: &SerialNumber,
        certificate_id: &str,
        certificate_pem: &str,
        device: Option<&DeviceRecord>,
    ) -> Result<Grant, Denial> {
        let device = standing(serial, device, Some(self.region.as_str()))?;
        let profile = &device.profile;

        if let Some(why) = profile
            .thing_group
            .as_ref()
            .and_then(|group| thing_group_refused(group.as_str(), &self.thing_group_prefix))
        {
            return Err(Denial::new(Reason::ThingGroupNotAllowed, why));
        }

        let provisioned = &device.provisioning;
        let quota = profile
            .max_provisions
            .unwrap_or(self.default_max_provisions);
        let kind = if provisioned.has_certificate(certificate_id) {
            GrantKind::Retry
        } else if provisioned.total() >= quota {
            return Err(Denial::new(
                Reason::QuotaExceeded,
                format!(
                    "{serial} has used {} of {} provisionings in all regions",
                    provisioned.total(),
                    quota
                ),
            ));
        } else {
            GrantKind::New {
                region_limit: quota - provisioned.elsewhere(&self.region),
            }
        };

        factory_key(
            serial,
            device,
            || spki_sha256(certificate_pem).map_err(|e| format!("certificatePem: {e}")),
            self.require_factory_key,
        )?;

        Ok(Grant {
            kind,
            parameter_overrides: self.overrides(device),
            profile_version: profile.version.clone(),
        })
    }

    /// The device's provisionings in every region and its quota, when the
    /// first exceeds the second: two regions committed inside the
    /// replication lag (each within its own count).
    pub fn overshoot(&self, device: &DeviceRecord) -> Option<(u32, u32)> {
        let quota = device
            .profile
            .max_provisions
            .unwrap_or(self.default_max_provisions);
        let total = device.provisioning.total();
        (total > quota).then_some((total, quota))
    }

    /// Every template parameter a device may not set: this region, the
    /// thing group (the profile's, else the default), and each attribute
    /// parameter (the profile's value, else ""). Nothing the device sent
    /// reaches the thing but its serial.
    pub fn overrides(&self, device: &DeviceRecord) -> BTreeMap<String, String> {
        let attributes: BTreeMap<&String, &String> = device.profile.attributes.iter().collect();
        let mut overrides: BTreeMap<String, String> = self
            .attribute_parameters
            .iter()
            .map(|name| {
                let value = attributes.get(name).map(|v| v.as_str()).unwrap_or("");
                (name.clone(), value.to_owned())
            })
            .collect();
        let group = device
            .profile
            .thing_group
            .as_ref()
            .unwrap_or(&self.default_thing_group);
        overrides.insert("ThingGroupName".into(), group.as_str().to_owned());
        overrides.insert("Region".into(), self.region.to_string());
        overrides
    }
}

/// The device's standing, whoever asks (the hook, device activation, the
/// issuer): registered, not blocked by the manifest or by an operator, and
/// allowed in `region` when the caller knows where the device is.
pub fn standing<'a>(
    serial: &SerialNumber,
    device: Option<&'a DeviceRecord>,
    region: Option<&str>,
) -> Result<&'a DeviceRecord, Denial> {
    let device = device.ok_or_else(|| {
        Denial::new(
            Reason::UnknownDevice,
            format!("{serial} is not in the registry"),
        )
    })?;
    let profile = &device.profile;
    if profile.status != DeviceStatus::Allowed {
        return Err(Denial::new(
            Reason::DeviceBlocked,
            format!("{serial} is {}", profile.status.as_str()),
        ));
    }
    if let Some(block) = &device.block {
        return Err(Denial::new(
            Reason::DeviceBlocked,
            format!(
                "{serial} is blocked by an operator since {}: {}",
                block.blocked_at, block.reason
            ),
        ));
    }
    if let (Some(region), Some(allowed)) = (region, &profile.allowed_regions)
        && !allowed.iter().any(|r| r.as_str() == region)
    {
        return Err(Denial::new(
            Reason::RegionNotAllowed,
            format!("{serial} may not be provisioned in {region}"),
        ));
    }
    Ok(device)
}

/// The factory-key rule: a key recorded in the registry must be the key
/// presented (`presented` gives its SHA-256, read only when needed), and with
/// `require` a device without a recorded key is refused.
pub fn factory_key(
    serial: &SerialNumber,
    device: &DeviceRecord,
    presented: impl FnOnce() -> Result<String, String>,
    require: bool,
) -> Result<(), Denial> {
    match &device.profile.public_key_sha256 {
        Some(expected) => {
            let actual = presented().map_err(|e| Denial::new(Reason::KeyMismatch, e))?;
            if actual != expected.as_str() {
                return Err(Denial::new(
                    Reason::KeyMismatch,
                    format!("the public key presented for {serial} is not its factory key"),
                ));
            }
            Ok(())
        }
        None if require => Err(Denial::new(
            Reason::NoFactoryKey,
            format!("{serial} has no factory key (publicKeySha256) in the registry"),
        )),
        None => Ok(()),
    }
}

/// Hex SHA-256 of the DER SubjectPublicKeyInfo of a PEM certificate.
pub fn spki_sha256(certificate_pem: &str) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| format!("not a PEM document: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", pem.label));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(hex::encode(Sha256::digest(cert.public_key().raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoprov_shared::device::{
        DeviceProfile, OperatorBlock, ProvisioningState, Provisionings, PublicKeyFingerprint,
        SerialNumber, ThingAttributes, ThingGroupName,
    };
    use proptest::prelude::*;
    use std::sync::OnceLock;

    struct DeviceCert {
        pem: String,
        spki_sha256: String,
    }

    fn new_cert() -> DeviceCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["device".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        DeviceCert {
            pem: cert.pem(),
            spki_sha256: hex::encode(Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&key),
            )),
        }
    }

    /// The factory key of every test device (one key pair, made once).
    fn factory() -> &'static DeviceCert {
        static CERT: OnceLock<DeviceCert> = OnceLock::new();
        CERT.get_or_init(new_cert)
    }

    fn region(name: &str) -> RegionName {
        RegionName::try_from(name).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            region: region("eu-west-1"),
            trusted_claim_certificate_ids: BTreeSet::from(["claim-1".to_owned()]),
            client_id_prefix: "prov-".into(),
            require_factory_key: true,
            default_max_provisions: 3,
            default_thing_group: ThingGroupName::try_from("geoprov-devices".to_owned()).unwrap(),
            thing_group_prefix: "geoprov-".into(),
            device_settable_parameters: BTreeSet::from(["SerialNumber".to_owned()]),
            attribute_parameters: BTreeSet::from(["model".to_owned(), "firmware".to_owned()]),
        }
    }

    /// A well-formed claim for `serial`, by the device that holds the
    /// factory key, from the right client id.
    fn claim(serial: &str) -> ProvisioningClaim {
        ProvisioningClaim {
            serial: SerialNumber::try_from(serial).unwrap(),
            claim_certificate_id: "claim-1".into(),
            certificate_id: "cert-new".into(),
            certificate_pem: factory().pem.clone(),
            template_arn: "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/geoprov-fleet"
                .into(),
            client_id: format!("prov-{serial}"),
            parameters: BTreeMap::from([(
                IOT_CERTIFICATE_ID_PARAMETER.to_owned(),
                Some("cert-new".to_owned()),
            )]),
        }
    }

    /// A registered, allowed device with the factory key on record.
    fn record(serial: &str) -> DeviceRecord {
        let mut profile = DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap());
        profile.public_key_sha256 =
            Some(PublicKeyFingerprint::try_from(factory().spki_sha256.clone()).unwrap());
        profile.version = Some("v1".into());
        DeviceRecord {
            profile,
            block: None,
            provisioning: Provisionings::default(),
        }
    }

    fn provisioned(device: &mut DeviceRecord, region_name: &str, count: u32, certs: &[&str]) {
        device.provisioning.regions.insert(
            region(region_name),
            ProvisioningState {
                provision_count: count,
                provisioned_certificate_ids: certs.iter().map(|c| c.to_string()).collect(),
                ..ProvisioningState::default()
            },
        );
    }

    fn denied(verdict: Verdict) -> Reason {
        match verdict {
            Verdict::Deny(d) => d.reason,
            Verdict::Allow(g) => panic!("expected a denial, got {g:?}"),
        }
    }

    fn granted(verdict: Verdict) -> Grant {
        match verdict {
            Verdict::Allow(g) => g,
            Verdict::Deny(d) => panic!("expected an allow, got {d:?}"),
        }
    }

    #[test]
    fn allows_a_registered_device_and_overrides_every_template_parameter() {
        let mut device = record("SN-1");
        device.profile.thing_group =
            Some(ThingGroupName::try_from("geoprov-sensors-eu".to_owned()).unwrap());
        device.profile.attributes =
            ThingAttributes::try_from(BTreeMap::from([("model".to_owned(), "X1".to_owned())]))
                .unwrap();
        let grant = granted(policy().decide(&claim("SN-1"), Some(&device)));
        assert_eq!(grant.kind, GrantKind::New { region_limit: 3 });
        assert_eq!(grant.profile_version.as_deref(), Some("v1"));
        assert_eq!(
            grant.parameter_overrides,
            BTreeMap::from([
                ("Region".to_owned(), "eu-west-1".to_owned()),
                ("ThingGroupName".to_owned(), "geoprov-sensors-eu".to_owned()),
                ("model".to_owned(), "X1".to_owned()),
                ("firmware".to_owned(), String::new()),
            ])
        );
    }

    /// A tampered manifest line names a privileged group: the device would
    /// inherit its policies. Only groups with the stack's prefix are given.
    #[test]
    fn a_profile_group_without_the_stack_prefix_is_denied() {
        let mut device = record("SN-1");
        device.profile.thing_group =
            Some(ThingGroupName::try_from("fleet-admins".to_owned()).unwrap());
        match policy().decide(&claim("SN-1"), Some(&device)) {
            Verdict::Deny(denial) => {
                assert_eq!(denial.reason, Reason::ThingGroupNotAllowed);
                assert!(denial.detail.contains("fleet-admins"), "{denial:?}");
            }
            Verdict::Allow(grant) => panic!("allowed: {grant:?}"),
        }
    }

    #[test]
    fn a_device_without_a_group_gets_the_default_group_not_its_own() {
        let grant = granted(policy().decide(&claim("SN-1"), Some(&record("SN-1"))));
        assert_eq!(
            grant.parameter_overrides["ThingGroupName"],
            "geoprov-devices"
        );
    }

    #[test]
    fn a_parameter_the_device_may_not_set_is_denied_and_named() {
        for (name, value) in [
            ("ThingGroupName", "fleet-admins"),
            ("model", "X9"),
            ("Region", "us-east-1"),
            ("Anything", "x"),
        ] {
            let mut c = claim("SN-1");
            c.parameters.insert(name.into(), Some(value.into()));
            let Verdict::Deny(denial) = policy().decide(&c, Some(&record("SN-1"))) else {
                panic!("{name} was accepted");
            };
            assert_eq!(denial.reason, Reason::UnexpectedParameter);
            assert!(denial.detail.contains(name), "{}", denial.detail);
        }
        // IoT's own parameter must be this certificate's id.
        let mut c = claim("SN-1");
        c.parameters
            .insert(IOT_CERTIFICATE_ID_PARAMETER.into(), Some("other".into()));
        assert_eq!(
            denied(policy().decide(&c, Some(&record("SN-1")))),
            Reason::UnexpectedParameter
        );
    }

    #[test]
    fn denies_an_untrusted_claim_certificate_and_an_empty_trust_set_trusts_none() {
        let mut p = policy();
        p.trusted_claim_certificate_ids = BTreeSet::from(["claim-other".to_owned()]);
        let c = claim("SN-1");
        assert_eq!(
            p.check_claim(&c).unwrap_err().reason,
            Reason::UntrustedClaim
        );
        assert_eq!(
            denied(p.decide(&c, Some(&record("SN-1")))),
            Reason::UntrustedClaim
        );
        p.trusted_claim_certificate_ids.clear();
        assert_eq!(
            denied(p.decide(&c, Some(&record("SN-1")))),
            Reason::UntrustedClaim
        );
        p.trusted_claim_certificate_ids.insert("claim-1".into());
        assert!(p.check_claim(&c).is_ok());
    }

    #[test]
    fn denies_a_device_missing_from_the_registry() {
        assert_eq!(
            denied(policy().decide(&claim("SN-1"), None)),
            Reason::UnknownDevice
        );
    }

    #[test]
    fn denies_blocked_and_revoked_devices_and_operator_blocks() {
        for status in [DeviceStatus::Blocked, DeviceStatus::Revoked] {
            let mut device = record("SN-1");
            device.profile.status = status;
            assert_eq!(
                denied(policy().decide(&claim("SN-1"), Some(&device))),
                Reason::DeviceBlocked
            );
        }
        let mut device = record("SN-1");
        device.block = Some(OperatorBlock {
            reason: "stolen".into(),
            blocked_at: "2026-11-30T00:00:00Z".into(),
        });
        assert_eq!(
            denied(policy().decide(&claim("SN-1"), Some(&device))),
            Reason::DeviceBlocked
        );
    }

    #[test]
    fn denies_a_region_outside_the_devices_residency() {
        let mut device = record("SN-1");
        device.profile.allowed_regions = Some(BTreeSet::from([region("us-east-1")]));
        assert_eq!(
            denied(policy().decide(&claim("SN-1"), Some(&device))),
            Reason::RegionNotAllowed
        );
        device
            .profile
            .allowed_regions
            .as_mut()
            .unwrap()
            .insert(region("eu-west-1"));
        granted(policy().decide(&claim("SN-1"), Some(&device)));
    }

    #[test]
    fn the_quota_counts_every_region() {
        let mut device = record("SN-1");
        provisioned(&mut device, "us-east-1", 2, &["a", "b"]);
        // One left in all: this region may hold one.
        assert_eq!(
            granted(policy().decide(&claim("SN-1"), Some(&device))).kind,
            GrantKind::New { region_limit: 1 }
        );
        provisioned(&mut device, "eu-west-1", 1, &["c"]);
        assert_eq!(
            denied(policy().decide(&claim("SN-1"), Some(&device))),
            Reason::QuotaExceeded
        );
        // The device's own quota overrides the default.
        device.profile.max_provisions = Some(4);
        assert_eq!(
            granted(policy().decide(&claim("SN-1"), Some(&device))).kind,
            GrantKind::New { region_limit: 2 }
        );
    }

    #[test]
    fn allows_an_iot_retry_of_a_provisioned_certificate_without_counting() {
        let mut device = record("SN-1");
        device.profile.max_provisions = Some(1);
        provisioned(&mut device, "eu-west-1", 1, &["cert-new"]);
        assert_eq!(
            granted(policy().decide(&claim("SN-1"), Some(&device))).kind,
            GrantKind::Retry
        );
    }

    #[test]
    fn a_device_without_a_factory_key_is_denied_unless_that_is_turned_off() {
        let mut device = record("SN-1");
        device.profile.public_key_sha256 = None;
        assert_eq!(
            denied(policy().decide(&claim("SN-1"), Some(&device))),
            Reason::NoFactoryKey
        );
        let mut p = policy();
        p.require_factory_key = false;
        granted(p.decide(&claim("SN-1"), Some(&device)));
    }

    #[test]
    fn checks_the_factory_key() {
        let other = new_cert();
        let device = record("SN-1");
        granted(policy().decide(&claim("SN-1"), Some(&device)));
        let mut c = claim("SN-1");
        c.certificate_pem = other.pem.clone();
        assert_eq!(
            denied(policy().decide(&c, Some(&device))),
            Reason::KeyMismatch
        );
        for garbage in [
            "",
            "not a pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            c.certificate_pem = garbage.into();
            assert_eq!(
                denied(policy().decide(&c, Some(&device))),
                Reason::KeyMismatch
            );
        }
    }

    #[test]
    fn spki_fingerprint_matches_the_key_pair() {
        let cert = new_cert();
        assert_eq!(spki_sha256(&cert.pem).unwrap(), cert.spki_sha256);
    }

    #[test]
    fn the_client_id_is_the_provisioning_prefix_and_the_serial() {
        for wrong in ["SN-1", "prov-SN-2", "prov-", "someone-else", "PROV-SN-1"] {
            let mut c = claim("SN-1");
            c.client_id = wrong.into();
            assert_eq!(
                denied(policy().decide(&c, Some(&record("SN-1")))),
                Reason::ClientIdMismatch,
                "{wrong}"
            );
        }
        granted(policy().decide(&claim("SN-1"), Some(&record("SN-1"))));
    }

    #[test]
    fn rules_apply_in_the_documented_order() {
        // A request failing every rule is reported by the earliest one.
        let mut device = record("SN-1");
        device.profile.status = DeviceStatus::Blocked;
        device.profile.allowed_regions = Some(BTreeSet::new());
        device.profile.max_provisions = Some(0);
        device.profile.public_key_sha256 = None;
        let mut c = claim("SN-1");
        c.client_id = "x".into();
        c.parameters
            .insert("ThingGroupName".into(), Some("x".into()));
        c.claim_certificate_id = "claim-other".into();
        let p = policy();
        assert_eq!(
            denied(p.decide(&c, Some(&device))),
            Reason::UnexpectedParameter
        );
        c.parameters.remove("ThingGroupName");
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::UntrustedClaim);
        c.claim_certificate_id = "claim-1".into();
        assert_eq!(denied(p.decide(&c, None)), Reason::UnknownDevice);
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::DeviceBlocked);
        device.profile.status = DeviceStatus::Allowed;
        assert_eq!(
            denied(p.decide(&c, Some(&device))),
            Reason::RegionNotAllowed
        );
        device.profile.allowed_regions = None;
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::QuotaExceeded);
        device.profile.max_provisions = None;
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::NoFactoryKey);
        device.profile.public_key_sha256 =
            Some(PublicKeyFingerprint::try_from("0".repeat(64)).unwrap());
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::KeyMismatch);
        device.profile.public_key_sha256 =
            Some(PublicKeyFingerprint::try_from(factory().spki_sha256.clone()).unwrap());
        assert_eq!(
            denied(p.decide(&c, Some(&device))),
            Reason::ClientIdMismatch
        );
        c.client_id = "prov-SN-1".into();
        granted(p.decide(&c, Some(&device)));
    }

    #[test]
    fn an_overshoot_is_seen_only_past_the_quota() {
        let mut device = record("SN-1");
        provisioned(&mut device, "eu-west-1", 2, &["a", "b"]);
        provisioned(&mut device, "us-east-1", 1, &["c"]);
        assert_eq!(policy().overshoot(&device), None);
        provisioned(&mut device, "us-east-1", 2, &["c", "d"]);
        assert_eq!(policy().overshoot(&device), Some((4, 3)));
    }

    /// A request around the registered device SN-1: each field right or
    /// wrong, so the allow path is reached as often as the denials.
    #[derive(Debug, Clone)]
    struct Around {
        serial_registered: bool,
        trusted: bool,
        client_id: u8,
        extra_parameter: Option<String>,
        key_matches: bool,
        key_recorded: bool,
        count_here: u32,
        count_elsewhere: u32,
        retry: bool,
        blocked: bool,
    }

    /// `true` in `weight` draws of `weight + 1`.
    fn mostly(weight: u32) -> impl Strategy<Value = bool> {
        prop_oneof![weight => Just(true), 1 => Just(false)]
    }

    prop_compose! {
        fn around()(
            serial_registered in mostly(4),
            trusted in mostly(4),
            client_id in prop_oneof![4 => Just(0u8), 1 => 1u8..4],
            extra_parameter in prop_oneof![4 => Just(None), 1 => "[A-Za-z:]{1,12}".prop_map(Some)],
            key_matches in mostly(4),
            key_recorded in mostly(4),
            count_here in 0u32..4,
            count_elsewhere in 0u32..4,
            retry in mostly(4).prop_map(|b| !b),
            blocked in mostly(6).prop_map(|b| !b),
        ) -> Around {
            Around {
                serial_registered,
                trusted,
                client_id,
                extra_parameter,
                key_matches,
                key_recorded,
                count_here,
                count_elsewhere,
                retry,
                blocked,
            }
        }
    }

    proptest! {
        #[test]
        fn never_allows_an_unregistered_device(
            serial in "[A-Za-z0-9:_-]{1,128}",
            claim_id in ".{0,40}",
            client in ".{0,40}",
            pem in ".{0,200}",
        ) {
            let mut c = claim(&serial);
            c.claim_certificate_id = claim_id;
            c.client_id = client;
            c.certificate_pem = pem;
            prop_assert!(matches!(policy().decide(&c, None), Verdict::Deny(_)));
        }

        /// Requests around a registered device: an allow happens exactly
        /// when every rule holds, and then stays under the quota in all
        /// regions; and the allow path is reached.
        #[test]
        fn never_allows_wrongly(cases in proptest::collection::vec(around(), 256)) {
            let other = new_cert();
            let mut allowed = 0;
            for a in &cases {
                let mut device = record("SN-1");
                if !a.key_recorded {
                    device.profile.public_key_sha256 = None;
                }
                if a.blocked {
                    device.block = Some(OperatorBlock { reason: "r".into(), blocked_at: "t".into() });
                }
                let mine: Vec<String> = (0..a.count_here).map(|i| format!("here-{i}")).collect();
                let theirs: Vec<String> = (0..a.count_elsewhere).map(|i| format!("there-{i}")).collect();
                provisioned(&mut device, "eu-west-1", a.count_here,
                    &mine.iter().map(String::as_str).collect::<Vec<_>>());
                provisioned(&mut device, "us-east-1", a.count_elsewhere,
                    &theirs.iter().map(String::as_str).collect::<Vec<_>>());
                let mut c = claim(if a.serial_registered { "SN-1" } else { "SN-2" });
                if !a.trusted { c.claim_certificate_id = "claim-x".into(); }
                c.client_id = match a.client_id {
                    0 => format!("prov-{}", c.serial),
                    1 => c.serial.to_string(),
                    2 => "prov-SN-3".into(),
                    _ => String::new(),
                };
                if let Some(extra) = &a.extra_parameter {
                    c.parameters.insert(extra.clone(), Some("x".into()));
                }
                if !a.key_matches { c.certificate_pem = other.pem.clone(); }
                let retry = a.retry && a.count_here > 0;
                if retry {
                    c.certificate_id = "here-0".into();
                    c.parameters.insert(IOT_CERTIFICATE_ID_PARAMETER.into(), Some("here-0".into()));
                }
                let registered = a.serial_registered.then_some(&device);
                let verdict = policy().decide(&c, registered);
                let total = a.count_here + a.count_elsewhere;
                let should = a.serial_registered && a.trusted && a.client_id == 0
                    && a.extra_parameter.as_deref().is_none_or(|p| p == "SerialNumber")
                    && a.key_matches && a.key_recorded && !a.blocked
                    && (retry || total < 3);
                match verdict {
                    Verdict::Allow(grant) => {
                        prop_assert!(should, "allowed wrongly: {a:?}");
                        allowed += 1;
                        if let GrantKind::New { region_limit } = grant.kind {
                            prop_assert!(a.count_here < region_limit);
                            prop_assert_eq!(region_limit + a.count_elsewhere, 3);
                        } else {
                            prop_assert!(retry);
                        }
                    }
                    Verdict::Deny(d) => prop_assert!(!should, "denied wrongly ({:?}): {a:?}", d.reason),
                }
            }
            // 256 requests, each rule right four times in five or more: about
            // one in twelve is allowed, so none in 256 means the generator is
            // off (by chance, about 1 in 10^9).
            prop_assert!(allowed > 0, "no request was allowed");
        }
    }
}
