//! JITR that honours the registry, at the function boundary: the device
//! activation over moto's IoT (certificates under a registered CA, things,
//! groups, types, policies) and the device registry in DynamoDB, driven by
//! real-shaped `$aws/events/certificates/registered/<caId>` events.

use aws_sdk_iot::Client as IotClient;
use aws_sdk_iot::types::{CertificateMode, CertificateStatus};
use device_activation::activation::{Activation, Activator};
use device_activation::iot::SdkRegistrar;
use geoprov_shared::audit::Decision;
use geoprov_shared::device::{
    DeviceProfile, DeviceStatus, PublicKeyFingerprint, RegionName, SerialNumber,
};
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry};
use geoprov_tests::certs::{DeviceCa, SignedDevice, device_ca};
use geoprov_tests::emulator::{activation_resources, certificate_id, certificate_status};
use geoprov_tests::{audit_decisions, fresh_registry, moto, sdk_config};
use pre_provisioning_hook::{DeviceRuleSettings, Reason};
use serde_json::{Value, json};

const POLICY: &str = "geoprov-DevicePolicy";
const THING_TYPE: &str = "geoprov-device";
const GROUP: &str = "geoprov-devices";

/// One region's IoT as the regional stack leaves it, with the device CA
/// registered for auto-registration and no provisioning template (JITR).
struct Region {
    name: &'static str,
    iot: IotClient,
    ca_id: String,
}

async fn region(name: &'static str, ca: &DeviceCa) -> Region {
    let iot = IotClient::new(&sdk_config(&moto().endpoint, name).await);
    activation_resources(&iot, THING_TYPE, GROUP, POLICY).await;
    with_ca(name, iot, ca).await
}

impl Region {
    fn activator(&self, registry: &DynamoRegistry) -> Activator<DynamoRegistry, SdkRegistrar> {
        let settings = DeviceRuleSettings {
            region: RegionName::try_from(self.name).unwrap(),
            require_factory_key: true,
            default_max_provisions: 3,
            default_thing_group: GROUP.try_into().unwrap(),
            thing_group_prefix: "geoprov-".into(),
        };
        Activator::new(
            settings.device_only_policy(),
            registry.clone(),
            SdkRegistrar::new(self.iot.clone()),
            THING_TYPE,
            POLICY,
            [self.ca_id.clone()].into(),
        )
    }

    /// What IoT does on the first connect: the certificate registered
    /// PENDING_ACTIVATION under the CA, and the event it publishes.
    async fn auto_register(&self, ca: &DeviceCa, device: &SignedDevice) -> Value {
        let id = self
            .iot
            .register_certificate()
            .certificate_pem(&device.certificate_pem)
            .ca_certificate_pem(&ca.pem)
            .status(CertificateStatus::PendingActivation)
            .send()
            .await
            .unwrap()
            .certificate_id()
            .unwrap()
            .to_owned();
        assert_eq!(id, certificate_id(&device.certificate_pem));
        json!({
            "certificateId": id,
            "caCertificateId": self.ca_id,
            "timestamp": 1_796_000_000_000_u64,
            "certificateStatus": "PENDING_ACTIVATION",
            "awsAccountId": "123456789012",
            "certificateRegistrationTimestamp": "1796000000000"
        })
    }

    /// The event IoT publishes again when the device comes back with its
    /// certificate still PENDING_ACTIVATION.
    fn auto_register_again(&self, device: &SignedDevice) -> Value {
        json!({
            "certificateId": certificate_id(&device.certificate_pem),
            "caCertificateId": self.ca_id,
            "timestamp": 1_796_000_060_000_u64,
            "certificateStatus": "PENDING_ACTIVATION",
            "awsAccountId": "123456789012",
            "certificateRegistrationTimestamp": "1796000000000"
        })
    }

    async fn status(&self, device: &SignedDevice) -> String {
        certificate_status(&self.iot, &certificate_id(&device.certificate_pem)).await
    }

    async fn thing_exists(&self, name: &str) -> bool {
        self.iot
            .describe_thing()
            .thing_name(name)
            .send()
            .await
            .is_ok()
    }
}

fn profile(serial: &str, device: &SignedDevice) -> DeviceProfile {
    DeviceProfile {
        public_key_sha256: Some(
            PublicKeyFingerprint::try_from(device.spki_sha256.clone()).unwrap(),
        ),
        ..DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap())
    }
}

#[tokio::test]
async fn a_certificate_is_activated_only_where_and_while_the_registry_allows_it() {
    let ca = device_ca();
    let (eu, us) = (
        region("eu-west-1", &ca).await,
        region("us-east-1", &ca).await,
    );
    let registry = fresh_registry("activation").await;
    let pinned = ca.sign("SN-PINNED");
    let blocked = ca.sign("SN-BLOCKED");
    let foreign_key = ca.sign("SN-OTHERKEY");
    registry
        .put_profiles(&[
            DeviceProfile {
                allowed_regions: Some(["eu-west-1".try_into().unwrap()].into()),
                attributes: serde_json::from_value(json!({"model": "X1"})).unwrap(),
                ..profile("SN-PINNED", &pinned)
            },
            DeviceProfile {
                status: DeviceStatus::Blocked,
                ..profile("SN-BLOCKED", &blocked)
            },
            // The factory recorded another key for this serial.
            profile("SN-OTHERKEY", &ca.sign("SN-OTHERKEY")),
        ])
        .await
        .unwrap();

    // Pinned to eu-west-1, it lands in us-east-1: never activated there.
    let event = us.auto_register(&ca, &pinned).await;
    let outcome = us
        .activator(&registry)
        .handle(event.clone(), "r1")
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Activation::Denied {
                reason: Reason::RegionNotAllowed,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(us.status(&pinned).await, "PENDING_ACTIVATION");
    assert!(!us.thing_exists("SN-PINNED").await);
    // The event comes again on every connect: denied again, never active.
    let again = us.activator(&registry).handle(event, "r2").await.unwrap();
    assert!(matches!(again, Activation::Denied { .. }), "{again:?}");
    assert_eq!(us.status(&pinned).await, "PENDING_ACTIVATION");

    // In eu-west-1 it is activated, with its thing, group, policy, principal.
    let event = eu.auto_register(&ca, &pinned).await;
    let outcome = eu
        .activator(&registry)
        .handle(event.clone(), "r3")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Activation::Activated {
            serial: "SN-PINNED".into()
        }
    );
    assert_eq!(eu.status(&pinned).await, "ACTIVE");
    let thing = eu
        .iot
        .describe_thing()
        .thing_name("SN-PINNED")
        .send()
        .await
        .unwrap();
    assert_eq!(thing.thing_type_name(), Some(THING_TYPE));
    let attributes = thing.attributes().unwrap();
    assert_eq!(attributes["region"], "eu-west-1");
    assert_eq!(attributes["model"], "X1");
    assert_eq!(attributes["serialNumber"], "SN-PINNED");
    let arn = eu
        .iot
        .describe_certificate()
        .certificate_id(certificate_id(&pinned.certificate_pem))
        .send()
        .await
        .unwrap()
        .certificate_description()
        .unwrap()
        .certificate_arn()
        .unwrap()
        .to_owned();
    let policies = eu
        .iot
        .list_attached_policies()
        .target(&arn)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = policies
        .policies()
        .iter()
        .filter_map(|p| p.policy_name())
        .collect();
    assert_eq!(names, [POLICY]);
    let principals = eu
        .iot
        .list_thing_principals()
        .thing_name("SN-PINNED")
        .send()
        .await
        .unwrap();
    assert_eq!(principals.principals(), [arn]);
    let groups = eu
        .iot
        .list_thing_groups_for_thing()
        .thing_name("SN-PINNED")
        .send()
        .await
        .unwrap();
    let groups: Vec<&str> = groups
        .thing_groups()
        .iter()
        .filter_map(|g| g.group_name())
        .collect();
    assert_eq!(groups, [GROUP]);
    // The provisioning counts against the quota, like the hook's.
    let record = registry
        .device(&SerialNumber::try_from("SN-PINNED").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.provisioning.total(), 1);
    // The same event again: the certificate is no longer pending.
    let replay = eu.activator(&registry).handle(event, "r4").await.unwrap();
    assert!(matches!(replay, Activation::Ignored { .. }), "{replay:?}");
    assert_eq!(
        audit_decisions(&registry, "SN-PINNED").await,
        [
            (Decision::Deny, "REGION_NOT_ALLOWED".to_owned()),
            (Decision::Deny, "REGION_NOT_ALLOWED".to_owned()),
            (Decision::Allow, "ALLOWED".to_owned()),
        ]
    );

    // Blocked, or another key than the factory's: never activated anywhere.
    for (device, serial, reason) in [
        (&blocked, "SN-BLOCKED", Reason::DeviceBlocked),
        (&foreign_key, "SN-OTHERKEY", Reason::KeyMismatch),
    ] {
        let event = eu.auto_register(&ca, device).await;
        let outcome = eu.activator(&registry).handle(event, "r5").await.unwrap();
        assert!(
            matches!(&outcome, Activation::Denied { reason: r, .. } if *r == reason),
            "{serial}: {outcome:?}"
        );
        assert_eq!(eu.status(device).await, "PENDING_ACTIVATION");
        assert!(!eu.thing_exists(serial).await);
    }

    // Unblocked, the device's next connect activates it.
    registry
        .put_profiles(&[profile("SN-BLOCKED", &blocked)])
        .await
        .unwrap();
    let event = eu.auto_register_again(&blocked);
    let outcome = eu.activator(&registry).handle(event, "r6").await.unwrap();
    assert_eq!(
        outcome,
        Activation::Activated {
            serial: "SN-BLOCKED".into()
        }
    );
    assert_eq!(eu.status(&blocked).await, "ACTIVE");
}

#[tokio::test]
async fn a_failover_is_activated_without_quota_and_audited_and_other_cas_are_not_ours() {
    let ca = device_ca();
    let (eu, us) = (
        region("eu-west-1", &ca).await,
        region("us-east-1", &ca).await,
    );
    let registry = fresh_registry("activation-failover").await;
    let roaming = ca.sign("SN-ROAMING");
    let grouped = ca.sign("SN-GROUPED");
    registry
        .put_profiles(&[
            profile("SN-ROAMING", &roaming),
            DeviceProfile {
                thing_group: Some("geoprov-no-such-group".try_into().unwrap()),
                ..profile("SN-GROUPED", &grouped)
            },
        ])
        .await
        .unwrap();

    // Activated in eu-west-1, then its region fails and DNS moves it to
    // us-east-1: the same certificate registers there and is activated,
    // with no second unit of quota, and the decision audited there too.
    let event = eu.auto_register(&ca, &roaming).await;
    let first = eu.activator(&registry).handle(event, "r1").await.unwrap();
    assert_eq!(
        first,
        Activation::Activated {
            serial: "SN-ROAMING".into()
        }
    );
    let event = us.auto_register(&ca, &roaming).await;
    let second = us.activator(&registry).handle(event, "r2").await.unwrap();
    assert_eq!(
        second,
        Activation::Completed {
            serial: "SN-ROAMING".into()
        }
    );
    assert_eq!(us.status(&roaming).await, "ACTIVE");
    let record = registry
        .device(&SerialNumber::try_from("SN-ROAMING").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.provisioning.total(), 1);
    let regions: Vec<String> = registry
        .audit_events(&SerialNumber::try_from("SN-ROAMING").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.region, e.reason))
        .collect();
    assert_eq!(regions, ["eu-west-1 ALLOWED", "us-east-1 ALLOWED"]);

    // A group that does not exist would fail every run after the commit:
    // refused before it, no quota used.
    let event = eu.auto_register(&ca, &grouped).await;
    let outcome = eu.activator(&registry).handle(event, "r3").await.unwrap();
    assert!(
        matches!(
            outcome,
            Activation::Denied {
                reason: Reason::InternalError,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(eu.status(&grouped).await, "PENDING_ACTIVATION");
    let record = registry
        .device(&SerialNumber::try_from("SN-GROUPED").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.provisioning.total(), 0);

    // Another CA of the account, with auto-registration: not the fleet's,
    // so its certificates are not this function's to activate.
    let other = device_ca();
    let other_eu = region_with_ca_only("eu-west-1", &other).await;
    let stranger = other.sign("SN-ROAMING");
    let event = other_eu.auto_register(&other, &stranger).await;
    let outcome = eu.activator(&registry).handle(event, "r4").await.unwrap();
    assert!(matches!(outcome, Activation::Ignored { .. }), "{outcome:?}");
    assert_eq!(other_eu.status(&stranger).await, "PENDING_ACTIVATION");
}

/// A second CA registered in a region whose stack resources exist already.
async fn region_with_ca_only(name: &'static str, ca: &DeviceCa) -> Region {
    let iot = IotClient::new(&sdk_config(&moto().endpoint, name).await);
    with_ca(name, iot, ca).await
}

/// `ca` registered in the region for auto-registration, with no template,
/// as `geoprov setup ca` registers the fleet CA.
async fn with_ca(name: &'static str, iot: IotClient, ca: &DeviceCa) -> Region {
    let registered = iot
        .register_ca_certificate()
        .ca_certificate(&ca.pem)
        .set_as_active(true)
        .allow_auto_registration(true)
        .certificate_mode(CertificateMode::SniOnly)
        .send()
        .await
        .unwrap();
    Region {
        name,
        iot,
        ca_id: registered.certificate_id().unwrap().to_owned(),
    }
}

/// A certificate whose provisioning commit the hook settled as not applied
/// (fenced) can never commit in that region: the activation denies it at
/// once, audited, instead of conflicting on every run of the rule, and the
/// certificate stays PENDING_ACTIVATION.
#[tokio::test]
async fn a_certificate_the_hook_fenced_is_denied_and_audited_not_retried() {
    use geoprov_shared::audit::AuditEvent;
    use geoprov_shared::registry::{ProvisioningCommit, Settled};
    let ca = device_ca();
    let here = region("eu-central-1", &ca).await;
    let registry = fresh_registry("activation-fenced").await;
    let device = ca.sign("SN-FENCED");
    registry
        .put_profiles(&[profile("SN-FENCED", &device)])
        .await
        .unwrap();
    let serial = SerialNumber::try_from("SN-FENCED").unwrap();
    let record = registry.device(&serial).await.unwrap().unwrap();
    let commit = ProvisioningCommit {
        serial: serial.clone(),
        certificate_id: certificate_id(&device.certificate_pem),
        region: RegionName::try_from(here.name).unwrap(),
        region_limit: 3,
        profile_version: record.profile.version.clone(),
        guard: record.provisioning.guard.clone(),
        at: "2026-12-07T12:00:00Z".into(),
    };
    let hook_denial = AuditEvent {
        kind: "PROVISIONING_DECISION".into(),
        serial_number: Some("SN-FENCED".into()),
        decision: Decision::Deny,
        reason: "DEADLINE_EXCEEDED".into(),
        detail: "no decision within 4000 ms; the commit did not apply".into(),
        region: here.name.into(),
        certificate_id: Some(commit.certificate_id.clone()),
        claim_certificate_id: None,
        client_id: None,
        request_id: "hook-1".into(),
        time: "2026-12-07T12:00:00Z".into(),
    };
    assert_eq!(
        registry
            .settle_lost_commit(&commit, &hook_denial)
            .await
            .unwrap(),
        Settled::Fenced
    );

    let event = here.auto_register(&ca, &device).await;
    for run in ["r1", "r2"] {
        let outcome = here
            .activator(&registry)
            .handle(event.clone(), run)
            .await
            .expect("a decision, not a conflict to retry");
        assert!(
            matches!(
                outcome,
                Activation::Denied {
                    reason: Reason::DeadlineExceeded,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    assert_eq!(here.status(&device).await, "PENDING_ACTIVATION");
    assert!(!here.thing_exists("SN-FENCED").await);
    // The hook's denial, then one per activation run.
    assert_eq!(
        audit_decisions(&registry, "SN-FENCED").await,
        [
            (Decision::Deny, "DEADLINE_EXCEEDED".to_owned()),
            (Decision::Deny, "DEADLINE_EXCEEDED".to_owned()),
            (Decision::Deny, "DEADLINE_EXCEEDED".to_owned()),
        ]
    );
}

/// A thing of the serial's name that is not a device's (here, one without
/// the device type, as an operator's console might be) is never given the
/// certificate: refused, audited, the certificate left PENDING_ACTIVATION.
#[tokio::test]
async fn an_existing_thing_of_another_type_is_refused() {
    let ca = device_ca();
    let here = region("ap-northeast-1", &ca).await;
    let registry = fresh_registry("activation-thing-type").await;
    let device = ca.sign("SN-CONSOLE");
    registry
        .put_profiles(&[profile("SN-CONSOLE", &device)])
        .await
        .unwrap();
    here.iot
        .create_thing()
        .thing_name("SN-CONSOLE")
        .send()
        .await
        .unwrap();
    let event = here.auto_register(&ca, &device).await;
    let outcome = here.activator(&registry).handle(event, "r1").await.unwrap();
    assert!(
        matches!(
            outcome,
            Activation::Denied {
                reason: Reason::ThingTypeMismatch,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(here.status(&device).await, "PENDING_ACTIVATION");
    assert_eq!(
        audit_decisions(&registry, "SN-CONSOLE").await,
        [(Decision::Deny, "THING_TYPE_MISMATCH".to_owned())]
    );
}
