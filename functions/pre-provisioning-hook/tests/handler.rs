//! The hook handler over the in-process registry: audit, quota, retries,
//! deadline and fail-closed behaviour. (The DynamoDB adapter is tested
//! against moto in the workspace's `tests` crate.)

use std::future::Future;
use std::time::Duration;

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::config::Env;
use geoprov_shared::device::{DeviceProfile, DeviceRecord, DeviceStatus, SerialNumber};
use geoprov_shared::registry::memory::MemoryRegistry;
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError,
};
use pre_provisioning_hook::{HookConfig, HookResponse, Policy, ProvisioningHook, Reason};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The policy the hook runs with when only the required variables are set.
fn policy() -> Policy {
    let env = Env::from_pairs([("TABLE_NAME", "geoprov"), ("AWS_REGION", "eu-west-1")]);
    HookConfig::from_env(&env).unwrap().policy
}

fn serial(s: &str) -> SerialNumber {
    SerialNumber::try_from(s).unwrap()
}

const SAMPLE_EVENT: &str = include_str!("../../../events/pre-provisioning-hook/allow.json");

/// The sample event `events/pre-provisioning-hook/allow.json`, for another
/// serial and certificate.
fn request(serial: &str, certificate_id: &str) -> Value {
    let mut event: Value = serde_json::from_str(SAMPLE_EVENT).unwrap();
    event["certificateId"] = certificate_id.into();
    event["clientId"] = serial.into();
    event["parameters"] = json!({ "SerialNumber": serial });
    event
}

fn hook_with(profiles: Vec<DeviceProfile>) -> ProvisioningHook<MemoryRegistry> {
    ProvisioningHook::new(
        policy(),
        MemoryRegistry::with_profiles(profiles),
        Duration::from_secs(2),
    )
}

fn reasons(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

#[tokio::test]
async fn an_allowed_provisioning_is_recorded_and_audited_once() {
    let hook = hook_with(vec![DeviceProfile::allowed(serial("SN-1"))]);
    let decision = hook.handle(request("SN-1", "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::Allowed);
    assert!(decision.audit_written);
    let response = decision.response;
    assert!(response.allow_provisioning);
    assert_eq!(response.parameter_overrides["Region"], "eu-west-1");

    let state = hook
        .registry()
        .record(&serial("SN-1"))
        .unwrap()
        .provisioning;
    assert_eq!(state.provision_count, 1);
    assert_eq!(state.last_certificate_id.as_deref(), Some("cert-a"));
    assert_eq!(state.last_region.as_deref(), Some("eu-west-1"));

    let events = hook.registry().audit_events();
    assert_eq!(reasons(&events), ["ALLOWED"]);
    let event = &events[0];
    assert_eq!(event.decision, Decision::Allow);
    assert_eq!(event.serial_number.as_deref(), Some("SN-1"));
    assert_eq!(event.certificate_id.as_deref(), Some("cert-a"));
    let sample: Value = serde_json::from_str(SAMPLE_EVENT).unwrap();
    assert_eq!(
        event.claim_certificate_id.as_deref(),
        sample["claimCertificateId"].as_str()
    );
    assert_eq!(event.client_id.as_deref(), Some("SN-1"));
    assert_eq!(event.request_id, "req-1");
    assert_eq!(event.region, "eu-west-1");
}

#[tokio::test]
async fn an_iot_retry_is_allowed_again_without_counting() {
    let mut profile = DeviceProfile::allowed(serial("SN-1"));
    profile.max_provisions = Some(1);
    let hook = hook_with(vec![profile]);
    assert!(
        hook.handle(request("SN-1", "cert-a"), "r1")
            .await
            .response
            .allow_provisioning
    );
    assert!(
        hook.handle(request("SN-1", "cert-a"), "r2")
            .await
            .response
            .allow_provisioning
    );
    assert!(
        !hook
            .handle(request("SN-1", "cert-b"), "r3")
            .await
            .response
            .allow_provisioning
    );
    let state = hook
        .registry()
        .record(&serial("SN-1"))
        .unwrap()
        .provisioning;
    assert_eq!(state.provision_count, 1);
    assert_eq!(
        reasons(&hook.registry().audit_events()),
        ["ALLOWED", "ALLOWED", "QUOTA_EXCEEDED"]
    );
}

#[tokio::test]
async fn every_denial_is_audited_with_its_reason() {
    let mut blocked = DeviceProfile::allowed(serial("SN-B"));
    blocked.status = DeviceStatus::Revoked;
    let hook = hook_with(vec![blocked]);
    let mut no_cert = request("SN-1", "c");
    no_cert.as_object_mut().unwrap().remove("certificatePem");
    for payload in [
        request("SN-UNKNOWN", "c"),
        request("SN-B", "c"),
        json!({"parameters": {}}),
        no_cert,
        json!(null),
    ] {
        let decision = hook.handle(payload, "r").await;
        assert_eq!(decision.response, HookResponse::deny());
        assert!(decision.audit_written);
    }
    assert_eq!(
        reasons(&hook.registry().audit_events()),
        [
            "UNKNOWN_DEVICE",
            "DEVICE_BLOCKED",
            "BAD_PARAMETERS",
            "BAD_PARAMETERS",
            "BAD_PARAMETERS"
        ]
    );
    assert!(hook
        .registry()
        .audit_events()
        .iter()
        .all(|e| e.decision == Decision::Deny));
}

#[tokio::test]
async fn no_allow_leaks_into_the_next_warm_invocation() {
    let hook = hook_with(vec![DeviceProfile::allowed(serial("SN-1"))]);
    assert!(
        hook.handle(request("SN-1", "a"), "r1")
            .await
            .response
            .allow_provisioning
    );
    let next = hook.handle(request("SN-2", "b"), "r2").await;
    assert_eq!(next.response, HookResponse::deny());
    assert_eq!(next.reason, Reason::UnknownDevice);
}

#[tokio::test]
async fn audit_never_holds_the_certificate_body() {
    let hook = hook_with(vec![DeviceProfile::allowed(serial("SN-1"))]);
    hook.handle(request("SN-1", "a"), "r1").await;
    let stored = serde_json::to_string(&hook.registry().audit_events()).unwrap();
    assert!(!stored.contains("BEGIN CERTIFICATE"), "{stored}");
}

/// A registry that never answers, as a DynamoDB that does not respond.
struct Unresponsive;

impl DeviceRegistry for Unresponsive {
    fn device(
        &self,
        _: &SerialNumber,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, RegistryError>> + Send {
        std::future::pending()
    }
    fn record_provisioning(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> impl Future<Output = Result<CommitOutcome, RegistryError>> + Send {
        std::future::pending()
    }
}

impl AuditLog for Unresponsive {
    fn append(&self, _: &AuditEvent) -> impl Future<Output = Result<(), RegistryError>> + Send {
        std::future::pending()
    }
}

#[tokio::test]
async fn denies_when_the_registry_does_not_answer_before_the_deadline() {
    let hook = ProvisioningHook::new(policy(), Unresponsive, Duration::from_millis(50));
    let decision = hook.handle(request("SN-1", "a"), "r").await;
    assert_eq!(decision.response, HookResponse::deny());
    assert_eq!(decision.reason, Reason::DeadlineExceeded);
    assert!(!decision.audit_written);
}

/// A registry whose every call fails, as a DynamoDB that refuses.
struct Failing;

impl DeviceRegistry for Failing {
    async fn device(&self, _: &SerialNumber) -> Result<Option<DeviceRecord>, RegistryError> {
        Err(RegistryError::Unavailable("refused".into()))
    }
    async fn record_provisioning(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        Err(RegistryError::Unavailable("refused".into()))
    }
}

impl AuditLog for Failing {
    async fn append(&self, _: &AuditEvent) -> Result<(), RegistryError> {
        Err(RegistryError::Unavailable("refused".into()))
    }
}

#[tokio::test]
async fn denies_when_the_registry_fails() {
    let hook = ProvisioningHook::new(policy(), Failing, Duration::from_secs(1));
    let decision = hook.handle(request("SN-1", "a"), "r").await;
    assert_eq!(decision.response, HookResponse::deny());
    assert_eq!(decision.reason, Reason::InternalError);
    assert!(!decision.audit_written);
}

/// Arbitrary JSON, shaped like a hook request often enough to reach the rules.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        "[A-Za-z0-9:_-]{1,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("SerialNumber".to_owned()),
                    Just("parameters".to_owned()),
                    Just("certificateId".to_owned()),
                    Just("claimCertificateId".to_owned()),
                    Just("certificatePem".to_owned()),
                    Just("templateArn".to_owned()),
                    Just("clientId".to_owned()),
                    ".{0,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_payloads_never_panic_and_never_allow_an_unregistered_device(
        payload in arbitrary_json(),
        fields in (".{0,30}", ".{0,30}", ".{0,30}", "[A-Za-z0-9:_-]{1,20}"),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        // Only SN-REGISTERED is registered, so nothing else may be allowed.
        let hook = hook_with(vec![DeviceProfile::allowed(serial("SN-REGISTERED"))]);
        let (cert, claim, client, serial_number) = fields;
        let shaped = json!({
            "claimCertificateId": claim, "certificateId": cert, "certificatePem": "x",
            "templateArn": "t", "clientId": client, "parameters": {"SerialNumber": serial_number}
        });
        for p in [payload, shaped] {
            let response = runtime.block_on(hook.handle(p, "r")).response;
            prop_assert!(!response.allow_provisioning || serial_number == "SN-REGISTERED");
        }
        prop_assert_eq!(hook.registry().audit_events().len(), 2);
    }
}
