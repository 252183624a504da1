//! The provisioning decision: pure rules over the claim and the device record.
//!
//! Deny by default; allow only when every rule passes, checked in this order:
//! claim trusted, device registered and not blocked, region allowed, quota,
//! factory key, client id. Parameters were checked when the claim was parsed.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_shared::device::{DeviceRecord, DeviceStatus, RegionName};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::request::ProvisioningClaim;

/// Why a decision came out as it did; written to the audit log and used as
/// the `Reason` metric dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Allowed,
    BadParameters,
    UntrustedClaim,
    UnknownDevice,
    DeviceBlocked,
    RegionNotAllowed,
    QuotaExceeded,
    KeyMismatch,
    ClientIdMismatch,
    DeadlineExceeded,
    InternalError,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "ALLOWED",
            Reason::BadParameters => "BAD_PARAMETERS",
            Reason::UntrustedClaim => "UNTRUSTED_CLAIM",
            Reason::UnknownDevice => "UNKNOWN_DEVICE",
            Reason::DeviceBlocked => "DEVICE_BLOCKED",
            Reason::RegionNotAllowed => "REGION_NOT_ALLOWED",
            Reason::QuotaExceeded => "QUOTA_EXCEEDED",
            Reason::KeyMismatch => "KEY_MISMATCH",
            Reason::ClientIdMismatch => "CLIENT_ID_MISMATCH",
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
    /// A new certificate: consume one provisioning, below `quota`.
    New { quota: u32 },
    /// IoT retrying a certificate already provisioned: nothing to consume.
    Retry,
}

/// An allowed provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: GrantKind,
    pub parameter_overrides: BTreeMap<String, String>,
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
    /// Claim certificate ids this region trusts; empty trusts any.
    pub trusted_claim_certificate_ids: BTreeSet<String>,
    pub require_client_id_match: bool,
    /// Quota for devices whose record sets none.
    pub default_max_provisions: u32,
}

impl Policy {
    /// Rule 2, which needs no registry read.
    pub fn check_claim(&self, claim: &ProvisioningClaim) -> Result<(), Denial> {
        if self.trusted_claim_certificate_ids.is_empty()
            || self
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

        let device = device.ok_or_else(|| {
            Denial::new(
                Reason::UnknownDevice,
                format!("{} is not in the registry", claim.serial),
            )
        })?;
        let profile = &device.profile;

        if profile.status != DeviceStatus::Allowed {
            return Err(Denial::new(
                Reason::DeviceBlocked,
                format!("{} is {}", claim.serial, profile.status.as_str()),
            ));
        }

        if let Some(allowed) = &profile.allowed_regions {
            if !allowed.contains(&self.region) {
                return Err(Denial::new(
                    Reason::RegionNotAllowed,
                    format!("{} may not be provisioned in {}", claim.serial, self.region),
                ));
            }
        }

        let state = &device.provisioning;
        let quota = profile
            .max_provisions
            .unwrap_or(self.default_max_provisions);
        let kind = if state
            .provisioned_certificate_ids
            .contains(&claim.certificate_id)
        {
            GrantKind::Retry
        } else if state.provision_count >= quota {
            return Err(Denial::new(
                Reason::QuotaExceeded,
                format!(
                    "{} has used {} of {} provisionings",
                    claim.serial, state.provision_count, quota
                ),
            ));
        } else {
            GrantKind::New { quota }
        };

        if let Some(expected) = &profile.public_key_sha256 {
            let actual = spki_sha256(&claim.certificate_pem)
                .map_err(|e| Denial::new(Reason::KeyMismatch, format!("certificatePem: {e}")))?;
            if actual != expected.as_str() {
                return Err(Denial::new(
                    Reason::KeyMismatch,
                    "the certificate's public key is not the factory key".to_owned(),
                ));
            }
        }

        if self.require_client_id_match && claim.client_id != claim.serial.as_str() {
            return Err(Denial::new(
                Reason::ClientIdMismatch,
                "clientId is not the serial number".to_owned(),
            ));
        }

        Ok(Grant {
            kind,
            parameter_overrides: self.overrides(device),
        })
    }

    /// The template parameters the hook sets: the device's attributes, its
    /// thing group and this region (the last two win over attributes).
    fn overrides(&self, device: &DeviceRecord) -> BTreeMap<String, String> {
        let mut overrides: BTreeMap<String, String> = device
            .profile
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(group) = &device.profile.thing_group {
            overrides.insert("ThingGroupName".into(), group.as_str().to_owned());
        }
        overrides.insert("Region".into(), self.region.to_string());
        overrides
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
        DeviceProfile, ProvisioningState, PublicKeyFingerprint, SerialNumber, ThingAttributes,
        ThingGroupName,
    };
    use proptest::prelude::*;

    struct DeviceCert {
        pem: String,
        spki_sha256: String,
    }

    fn device_cert() -> DeviceCert {
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

    fn policy() -> Policy {
        Policy {
            region: RegionName::try_from("eu-west-1").unwrap(),
            trusted_claim_certificate_ids: BTreeSet::new(),
            require_client_id_match: false,
            default_max_provisions: 3,
        }
    }

    fn claim(serial: &str, certificate_pem: &str) -> ProvisioningClaim {
        ProvisioningClaim {
            serial: SerialNumber::try_from(serial).unwrap(),
            claim_certificate_id: "claim-1".into(),
            certificate_id: "cert-new".into(),
            certificate_pem: certificate_pem.into(),
            template_arn: "arn:aws:iot:eu-west-1:123456789012:provisiontemplate/geoprov".into(),
            client_id: serial.into(),
        }
    }

    fn record(serial: &str) -> DeviceRecord {
        DeviceRecord {
            profile: DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap()),
            provisioning: ProvisioningState::default(),
        }
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
    fn allows_a_registered_device_and_overrides_region_group_and_attributes() {
        let mut device = record("SN-1");
        device.profile.thing_group =
            Some(ThingGroupName::try_from("sensors-eu".to_owned()).unwrap());
        device.profile.attributes =
            ThingAttributes::try_from(BTreeMap::from([("model".to_owned(), "X1".to_owned())]))
                .unwrap();
        let grant = granted(policy().decide(&claim("SN-1", "unused"), Some(&device)));
        assert_eq!(grant.kind, GrantKind::New { quota: 3 });
        assert_eq!(
            grant.parameter_overrides,
            BTreeMap::from([
                ("Region".to_owned(), "eu-west-1".to_owned()),
                ("ThingGroupName".to_owned(), "sensors-eu".to_owned()),
                ("model".to_owned(), "X1".to_owned()),
            ])
        );
    }

    #[test]
    fn denies_an_untrusted_claim_certificate() {
        let mut p = policy();
        p.trusted_claim_certificate_ids = BTreeSet::from(["claim-other".to_owned()]);
        let c = claim("SN-1", "");
        assert_eq!(
            p.check_claim(&c).unwrap_err().reason,
            Reason::UntrustedClaim
        );
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
            denied(policy().decide(&claim("SN-1", ""), None)),
            Reason::UnknownDevice
        );
    }

    #[test]
    fn denies_blocked_and_revoked_devices() {
        for status in [DeviceStatus::Blocked, DeviceStatus::Revoked] {
            let mut device = record("SN-1");
            device.profile.status = status;
            assert_eq!(
                denied(policy().decide(&claim("SN-1", ""), Some(&device))),
                Reason::DeviceBlocked
            );
        }
    }

    #[test]
    fn denies_a_region_outside_the_devices_residency() {
        let mut device = record("SN-1");
        device.profile.allowed_regions =
            Some(BTreeSet::from([RegionName::try_from("us-east-1").unwrap()]));
        assert_eq!(
            denied(policy().decide(&claim("SN-1", ""), Some(&device))),
            Reason::RegionNotAllowed
        );
        device
            .profile
            .allowed_regions
            .as_mut()
            .unwrap()
            .insert(RegionName::try_from("eu-west-1").unwrap());
        granted(policy().decide(&claim("SN-1", ""), Some(&device)));
    }

    #[test]
    fn denies_a_new_certificate_once_the_quota_is_used() {
        let mut device = record("SN-1");
        device.provisioning.provision_count = 3;
        device.provisioning.provisioned_certificate_ids =
            ["a", "b", "c"].map(String::from).into_iter().collect();
        assert_eq!(
            denied(policy().decide(&claim("SN-1", ""), Some(&device))),
            Reason::QuotaExceeded
        );
        // The device's own quota overrides the default.
        device.profile.max_provisions = Some(4);
        assert_eq!(
            granted(policy().decide(&claim("SN-1", ""), Some(&device))).kind,
            GrantKind::New { quota: 4 }
        );
    }

    #[test]
    fn allows_an_iot_retry_of_a_provisioned_certificate_without_counting() {
        let mut device = record("SN-1");
        device.profile.max_provisions = Some(1);
        device.provisioning.provision_count = 1;
        device.provisioning.provisioned_certificate_ids = BTreeSet::from(["cert-new".to_owned()]);
        assert_eq!(
            granted(policy().decide(&claim("SN-1", ""), Some(&device))).kind,
            GrantKind::Retry
        );
    }

    #[test]
    fn checks_the_factory_key_when_the_registry_has_one() {
        let cert = device_cert();
        let other = device_cert();
        let mut device = record("SN-1");
        device.profile.public_key_sha256 =
            Some(PublicKeyFingerprint::try_from(cert.spki_sha256.clone()).unwrap());
        granted(policy().decide(&claim("SN-1", &cert.pem), Some(&device)));
        assert_eq!(
            denied(policy().decide(&claim("SN-1", &other.pem), Some(&device))),
            Reason::KeyMismatch
        );
        for garbage in [
            "",
            "not a pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert_eq!(
                denied(policy().decide(&claim("SN-1", garbage), Some(&device))),
                Reason::KeyMismatch
            );
        }
    }

    #[test]
    fn spki_fingerprint_matches_the_key_pair() {
        let cert = device_cert();
        assert_eq!(spki_sha256(&cert.pem).unwrap(), cert.spki_sha256);
    }

    #[test]
    fn checks_the_client_id_only_when_required() {
        let mut c = claim("SN-1", "");
        c.client_id = "someone-else".into();
        granted(policy().decide(&c, Some(&record("SN-1"))));
        let mut p = policy();
        p.require_client_id_match = true;
        assert_eq!(
            denied(p.decide(&c, Some(&record("SN-1")))),
            Reason::ClientIdMismatch
        );
        c.client_id = "SN-1".into();
        granted(p.decide(&c, Some(&record("SN-1"))));
    }

    #[test]
    fn rules_apply_in_the_documented_order() {
        // A device failing every later rule is reported by the earliest one.
        let mut device = record("SN-1");
        device.profile.status = DeviceStatus::Blocked;
        device.profile.allowed_regions = Some(BTreeSet::new());
        device.profile.max_provisions = Some(0);
        let mut p = policy();
        p.require_client_id_match = true;
        let mut c = claim("SN-1", "");
        c.client_id = "x".into();
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::DeviceBlocked);
        device.profile.status = DeviceStatus::Allowed;
        assert_eq!(
            denied(p.decide(&c, Some(&device))),
            Reason::RegionNotAllowed
        );
        device.profile.allowed_regions = None;
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::QuotaExceeded);
        device.profile.max_provisions = None;
        device.profile.public_key_sha256 =
            Some(PublicKeyFingerprint::try_from("0".repeat(64)).unwrap());
        assert_eq!(denied(p.decide(&c, Some(&device))), Reason::KeyMismatch);
        device.profile.public_key_sha256 = None;
        assert_eq!(
            denied(p.decide(&c, Some(&device))),
            Reason::ClientIdMismatch
        );
    }

    proptest! {
        #[test]
        fn never_allows_an_unregistered_device(
            serial in "[A-Za-z0-9:_-]{1,128}",
            claim_id in ".{0,40}",
            client in ".{0,40}",
            pem in ".{0,200}",
            require_client in any::<bool>(),
        ) {
            let mut c = claim(&serial, &pem);
            c.claim_certificate_id = claim_id;
            c.client_id = client;
            let mut p = policy();
            p.require_client_id_match = require_client;
            prop_assert!(matches!(p.decide(&c, None), Verdict::Deny(_)));
        }

        #[test]
        fn an_allowed_new_provisioning_is_always_under_quota(
            count in 0u32..10,
            max in proptest::option::of(0u32..10),
        ) {
            let mut device = record("SN-1");
            device.provisioning.provision_count = count;
            device.profile.max_provisions = max;
            if let Verdict::Allow(grant) = policy().decide(&claim("SN-1", ""), Some(&device)) {
                let GrantKind::New { quota } = grant.kind else { panic!("no retry here") };
                prop_assert!(count < quota);
                prop_assert_eq!(quota, max.unwrap_or(3));
            }
        }
    }
}
