//! The hook handler over the in-process registry: audit, quota (summed over
//! regions), retries, the deadline and a lost commit, a profile changed
//! under a decision, operator blocks, and fail-closed behaviour. (The
//! DynamoDB adapter is tested against moto in the workspace's `tests` crate.)

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::claims::TrustedClaim;
use geoprov_shared::config::Env;
use geoprov_shared::device::{
    DeviceProfile, DeviceRecord, DeviceStatus, OperatorBlock, PublicKeyFingerprint, RegionName,
    SerialNumber,
};
use geoprov_shared::registry::memory::MemoryRegistry;
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError, Settled,
};
use pre_provisioning_hook::rules::spki_sha256;
use pre_provisioning_hook::{HookConfig, HookResponse, Policy, ProvisioningHook, Reason};
use proptest::prelude::*;
use serde_json::{Value, json};

const SAMPLE_EVENT: &str = include_str!("../../../events/pre-provisioning-hook/allow.json");

fn sample() -> Value {
    serde_json::from_str(SAMPLE_EVENT).unwrap()
}

/// The policy the hook runs with in `region` when only the required
/// variables are set (and the sample's claim certificate is trusted).
fn policy_in(region: &str) -> Policy {
    let claim = sample()["claimCertificateId"].as_str().unwrap().to_owned();
    let env = Env::from_pairs([
        ("TABLE_NAME", "geoprov"),
        ("AWS_REGION", region),
        ("LAMBDA_TIMEOUT_MS", "4000"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", claim.as_str()),
    ]);
    HookConfig::from_env(&env).unwrap().policy
}

fn policy() -> Policy {
    policy_in("eu-west-1")
}

fn serial(s: &str) -> SerialNumber {
    SerialNumber::try_from(s).unwrap()
}

fn region(name: &str) -> RegionName {
    RegionName::try_from(name).unwrap()
}

/// A registered device whose factory key is the sample certificate's.
fn profile(serial_number: &str) -> DeviceProfile {
    let pem = sample()["certificatePem"].as_str().unwrap().to_owned();
    let mut profile = DeviceProfile::allowed(serial(serial_number));
    profile.public_key_sha256 =
        Some(PublicKeyFingerprint::try_from(spki_sha256(&pem).unwrap()).unwrap());
    profile
}

/// The sample event `events/pre-provisioning-hook/allow.json`, for another
/// serial and certificate.
fn request(serial: &str, certificate_id: &str) -> Value {
    let mut event = sample();
    event["certificateId"] = certificate_id.into();
    event["clientId"] = format!("prov-{serial}").into();
    event["parameters"] =
        json!({ "SerialNumber": serial, "AWS::IoT::Certificate::Id": certificate_id });
    event
}

fn hook_with(profiles: Vec<DeviceProfile>) -> ProvisioningHook<MemoryRegistry> {
    ProvisioningHook::new(
        policy(),
        MemoryRegistry::with_profiles(profiles),
        Duration::from_secs(2),
    )
}

/// Provisionings of `serial` in `region` as the registry holds them.
fn count_in(registry: &MemoryRegistry, serial_number: &str, region_name: &str) -> u32 {
    registry
        .record(&serial(serial_number))
        .unwrap()
        .provisioning
        .count_in(&region(region_name))
}

fn reasons(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

#[tokio::test]
async fn an_allowed_provisioning_is_recorded_and_audited_once() {
    let hook = hook_with(vec![profile("SN-1")]);
    let decision = hook.handle(request("SN-1", "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::Allowed);
    assert!(decision.audit_written);
    let response = decision.response;
    assert!(response.allow_provisioning);
    assert_eq!(response.parameter_overrides["Region"], "eu-west-1");

    let provisioning = hook
        .registry()
        .record(&serial("SN-1"))
        .unwrap()
        .provisioning;
    let state = &provisioning.regions[&region("eu-west-1")];
    assert_eq!(state.provision_count, 1);
    assert_eq!(state.last_certificate_id.as_deref(), Some("cert-a"));
    assert_eq!(provisioning.total(), 1);

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
    assert_eq!(event.client_id.as_deref(), Some("prov-SN-1"));
    assert_eq!(event.request_id, "req-1");
    assert_eq!(event.region, "eu-west-1");
}

#[tokio::test]
async fn an_iot_retry_is_allowed_again_without_counting() {
    let mut profile = profile("SN-1");
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
    assert_eq!(count_in(hook.registry(), "SN-1", "eu-west-1"), 1);
    assert_eq!(
        reasons(&hook.registry().audit_events()),
        ["ALLOWED", "ALLOWED", "QUOTA_EXCEEDED"]
    );
}

#[tokio::test]
async fn every_denial_is_audited_with_its_reason() {
    let mut blocked = profile("SN-B");
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
    assert!(
        hook.registry()
            .audit_events()
            .iter()
            .all(|e| e.decision == Decision::Deny)
    );
}

#[tokio::test]
async fn no_allow_leaks_into_the_next_warm_invocation() {
    let hook = hook_with(vec![profile("SN-1")]);
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
    let hook = hook_with(vec![profile("SN-1")]);
    hook.handle(request("SN-1", "a"), "r1").await;
    let stored = serde_json::to_string(&hook.registry().audit_events()).unwrap();
    assert!(!stored.contains("BEGIN CERTIFICATE"), "{stored}");
}

/// A registry that never answers, as a DynamoDB that does not respond.
struct Unresponsive;

impl DeviceRegistry for Unresponsive {
    fn trusted_claims(
        &self,
    ) -> impl Future<Output = Result<Vec<TrustedClaim>, RegistryError>> + Send {
        std::future::pending()
    }
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
    fn settle_lost_commit(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> impl Future<Output = Result<Settled, RegistryError>> + Send {
        std::future::pending()
    }
    fn append_unless_committed(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send {
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
    async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
        Err(RegistryError::Unavailable("refused".into()))
    }
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
    async fn settle_lost_commit(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> Result<Settled, RegistryError> {
        Err(RegistryError::Unavailable("refused".into()))
    }
    async fn append_unless_committed(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> Result<bool, RegistryError> {
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
        let hook = hook_with(vec![profile("SN-REGISTERED")]);
        let (cert, claim, client, serial_number) = fields;
        let shaped = json!({
            "claimCertificateId": claim, "certificateId": cert,
            "certificatePem": sample()["certificatePem"], "templateArn": "t",
            "clientId": client, "parameters": {"SerialNumber": serial_number}
        });
        for p in [payload, shaped] {
            let response = runtime.block_on(hook.handle(p, "r")).response;
            prop_assert!(!response.allow_provisioning || serial_number == "SN-REGISTERED");
        }
        prop_assert_eq!(hook.registry().audit_events().len(), 2);
    }
}

/// The test registries below wrap the in-process registry: each passes
/// every call through but the commit, which it makes its own way with
/// `$this` (the fake) in scope.
macro_rules! wrapping_registry {
    ($fake:ty, |$this:ident| $inner:expr, commit($commit:ident, $audit:ident) $body:block) => {
        impl DeviceRegistry for $fake {
            async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
                let $this = self;
                $inner.trusted_claims().await
            }
            async fn device(
                &self,
                serial: &SerialNumber,
            ) -> Result<Option<DeviceRecord>, RegistryError> {
                let $this = self;
                $inner.device(serial).await
            }
            async fn record_provisioning(
                &self,
                $commit: &ProvisioningCommit,
                $audit: &AuditEvent,
            ) -> Result<CommitOutcome, RegistryError> {
                let $this = self;
                $body
            }
            async fn settle_lost_commit(
                &self,
                commit: &ProvisioningCommit,
                denial: &AuditEvent,
            ) -> Result<Settled, RegistryError> {
                let $this = self;
                $inner.settle_lost_commit(commit, denial).await
            }
            async fn append_unless_committed(
                &self,
                commit: &ProvisioningCommit,
                denial: &AuditEvent,
            ) -> Result<bool, RegistryError> {
                let $this = self;
                $inner.append_unless_committed(commit, denial).await
            }
        }

        impl AuditLog for $fake {
            async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
                let $this = self;
                $inner.append(event).await
            }
        }
    };
}

/// A fake registry for what neither moto nor the in-process registry can
/// do on demand: a commit that applies while its answer is lost.
struct LostAnswer {
    inner: Arc<MemoryRegistry>,
    /// Apply the commit, then never answer (`true`); or answer nothing now
    /// and apply it `late` later, after the deadline has settled it.
    apply_first: bool,
    late: Duration,
}

wrapping_registry!(LostAnswer, |this| this.inner, commit(commit, audit) {
    if this.apply_first {
        this.inner.record_provisioning(commit, audit).await?;
    } else {
        let (inner, commit, audit, late) =
            (this.inner.clone(), commit.clone(), audit.clone(), this.late);
        tokio::spawn(async move {
            tokio::time::sleep(late).await;
            inner.record_provisioning(&commit, &audit).await
        });
    }
    std::future::pending().await
});

#[tokio::test]
async fn a_commit_that_applied_while_its_answer_was_lost_is_one_allow() {
    let inner = Arc::new(MemoryRegistry::with_profiles([profile("SN-1")]));
    let registry = LostAnswer {
        inner: inner.clone(),
        apply_first: true,
        late: Duration::ZERO,
    };
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_millis(100));
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert!(decision.response.allow_provisioning, "{decision:?}");
    assert_eq!(decision.reason, Reason::Allowed);
    assert_eq!(reasons(&inner.audit_events()), ["ALLOWED"]);
    assert_eq!(count_in(&inner, "SN-1", "eu-west-1"), 1);
}

#[tokio::test]
async fn a_commit_that_had_not_applied_is_fenced_and_one_deadline_denial() {
    let inner = Arc::new(MemoryRegistry::with_profiles([profile("SN-1")]));
    let registry = LostAnswer {
        inner: inner.clone(),
        apply_first: false,
        late: Duration::from_millis(300),
    };
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_millis(100));
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert_eq!(decision.response, HookResponse::deny());
    assert_eq!(decision.reason, Reason::DeadlineExceeded);
    assert!(decision.audit_written);
    // The lost commit arrives after the settlement: the fence refuses it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_in(&inner, "SN-1", "eu-west-1"), 0);
    assert_eq!(reasons(&inner.audit_events()), ["DEADLINE_EXCEEDED"]);
}

/// A registry whose profile changes (an import) between each read and
/// the commit, `times` times.
struct ChangingUnderfoot {
    inner: MemoryRegistry,
    changed: AtomicUsize,
    times: usize,
    profile: DeviceProfile,
}

wrapping_registry!(ChangingUnderfoot, |this| this.inner, commit(commit, audit) {
    if this.changed.fetch_add(1, Ordering::SeqCst) < this.times {
        this.inner.put_profile(this.profile.clone());
    }
    this.inner.record_provisioning(commit, audit).await
});

#[tokio::test]
async fn a_profile_changed_between_read_and_commit_is_decided_again() {
    // The import between the read and the commit takes the device out of
    // eu-west-1: the commit must not hold, and the new profile decides.
    let mut moved = profile("SN-1");
    moved.allowed_regions = Some([region("us-east-1")].into());
    let registry = ChangingUnderfoot {
        inner: MemoryRegistry::with_profiles([profile("SN-1")]),
        changed: AtomicUsize::new(0),
        times: 1,
        profile: moved,
    };
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(2));
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert_eq!(decision.reason, Reason::RegionNotAllowed);
    let registry = hook.registry();
    assert_eq!(count_in(&registry.inner, "SN-1", "eu-west-1"), 0);
    assert_eq!(
        reasons(&registry.inner.audit_events()),
        ["REGION_NOT_ALLOWED"]
    );
}

#[tokio::test]
async fn a_device_sent_thing_group_or_attribute_is_denied() {
    let hook = hook_with(vec![profile("SN-1")]);
    for (name, value) in [("ThingGroupName", "fleet-admins"), ("model", "X9")] {
        let mut payload = request("SN-1", "cert-a");
        payload["parameters"][name] = value.into();
        let decision = hook.handle(payload, "r").await;
        assert_eq!(decision.reason, Reason::UnexpectedParameter, "{name}");
    }
    assert_eq!(count_in(hook.registry(), "SN-1", "eu-west-1"), 0);
}

#[tokio::test]
async fn the_default_group_and_empty_attributes_are_set_when_the_profile_has_none() {
    let hook = hook_with(vec![profile("SN-1")]);
    let overrides = hook
        .handle(request("SN-1", "cert-a"), "r")
        .await
        .response
        .parameter_overrides;
    assert_eq!(overrides["ThingGroupName"], "geoprov-devices");
    assert_eq!(overrides["model"], "");
    assert_eq!(overrides["firmware"], "");
}

#[tokio::test]
async fn a_device_without_a_factory_key_is_denied_by_default() {
    let hook = hook_with(vec![DeviceProfile::allowed(serial("SN-1"))]);
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert_eq!(decision.reason, Reason::NoFactoryKey);
}

#[tokio::test]
async fn the_devices_own_client_id_is_denied_to_the_claim() {
    let hook = hook_with(vec![profile("SN-1")]);
    let mut payload = request("SN-1", "cert-a");
    payload["clientId"] = "SN-1".into();
    let decision = hook.handle(payload, "r").await;
    assert_eq!(decision.reason, Reason::ClientIdMismatch);
}

#[tokio::test]
async fn an_operator_block_survives_a_re_import() {
    let registry = MemoryRegistry::with_profiles([profile("SN-1")]);
    registry
        .set_block(
            &serial("SN-1"),
            Some(OperatorBlock {
                reason: "reported stolen".into(),
                blocked_at: "2026-11-30T00:00:00Z".into(),
            }),
        )
        .unwrap();
    registry.put_profile(profile("SN-1"));
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(2));
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert_eq!(decision.reason, Reason::DeviceBlocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_sharing_one_table_never_exceed_the_quota() {
    let registry = Arc::new(MemoryRegistry::with_profiles([profile("SN-1")]));
    let regions = ["eu-west-1", "us-east-1"];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let registry = registry.clone();
        let name = regions[i % 2];
        tasks.push(tokio::spawn(async move {
            let hook = ProvisioningHook::new(
                policy_in(name),
                SharedRegistry(registry),
                Duration::from_secs(2),
            );
            hook.handle(request("SN-1", &format!("cert-{i}")), "r")
                .await
                .response
                .allow_provisioning
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    let total = registry
        .record(&serial("SN-1"))
        .unwrap()
        .provisioning
        .total();
    // One table read consistently by both: the sum is the quota exactly.
    assert_eq!(allowed, 3);
    assert_eq!(total, 3);
}

/// The in-process registry shared by hooks of several regions.
struct SharedRegistry(Arc<MemoryRegistry>);

wrapping_registry!(SharedRegistry, |this| this.0, commit(commit, audit) {
    this.0.record_provisioning(commit, audit).await
});

#[tokio::test]
async fn a_claim_certificate_from_the_table_is_trusted_and_a_retired_one_refused_without_a_restart()
{
    let claim_id = sample()["claimCertificateId"].as_str().unwrap().to_owned();
    let in_table = |retired: Option<&str>| TrustedClaim {
        certificate_id: claim_id.clone(),
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2099-01-01T00:00:00Z".into(),
        retired_at: retired.map(str::to_owned),
        added_at: "2026-01-01T00:00:00Z".into(),
        note: None,
    };
    // The bootstrap list trusts another certificate only.
    let mut bootstrap = policy();
    bootstrap.trusted_claim_certificate_ids = ["0".repeat(64)].into();
    let registry = MemoryRegistry::with_profiles([profile("SN-1"), profile("SN-2")]);
    registry.set_claims(vec![in_table(None)]);
    let ttl = Duration::from_millis(50);
    let hook = ProvisioningHook::new(bootstrap, registry, Duration::from_secs(2))
        .with_claim_cache_ttl(ttl);
    assert_eq!(
        hook.handle(request("SN-1", "cert-a"), "r1").await.reason,
        Reason::Allowed
    );
    hook.registry()
        .set_claims(vec![in_table(Some("2026-11-30T00:00:00Z"))]);
    // Within the cache period the old list may still stand; after it, not.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        hook.handle(request("SN-2", "cert-b"), "r2").await.reason,
        Reason::UntrustedClaim
    );
}

#[tokio::test]
async fn retiring_a_bootstrap_claim_in_the_table_revokes_it() {
    let claim_id = sample()["claimCertificateId"].as_str().unwrap().to_owned();
    let registry = MemoryRegistry::with_profiles([profile("SN-1")]);
    // The bootstrap list (policy()) trusts the sample's claim; the table
    // retires it.
    registry.set_claims(vec![TrustedClaim {
        certificate_id: claim_id,
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2026-01-01T00:00:00Z".into(),
        retired_at: Some("2026-11-30T00:00:00Z".into()),
        added_at: "2026-11-30T00:00:00Z".into(),
        note: None,
    }]);
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(2));
    assert_eq!(
        hook.handle(request("SN-1", "cert-a"), "r").await.reason,
        Reason::UntrustedClaim
    );
}

#[tokio::test]
async fn an_overshoot_seen_by_the_hook_is_audited_as_quota_overshoot() {
    let registry = MemoryRegistry::with_profiles([profile("SN-1")]);
    let hook = ProvisioningHook::new(policy_in("eu-west-1"), registry, Duration::from_secs(2));
    // Two provisionings here, then two in us-east-1 committed against a
    // stale view (what replication lag allows): 4 > 3.
    for cert in ["a", "b"] {
        hook.handle(request("SN-1", cert), "r").await;
    }
    let version = hook.registry().record(&serial("SN-1")).unwrap();
    for cert in ["c", "d"] {
        let commit = ProvisioningCommit {
            serial: serial("SN-1"),
            certificate_id: cert.into(),
            region: region("us-east-1"),
            region_limit: 3,
            profile_version: version.profile.version.clone(),
            guard: hook
                .registry()
                .record(&serial("SN-1"))
                .unwrap()
                .provisioning
                .guard,
            at: "2026-11-30T12:00:00Z".into(),
        };
        let mut audit = hook.registry().audit_events()[0].clone();
        audit.request_id = format!("elsewhere-{cert}");
        hook.registry()
            .record_provisioning(&commit, &audit)
            .await
            .unwrap();
    }
    let decision = hook.handle(request("SN-1", "e"), "r-over").await;
    assert_eq!(decision.reason, Reason::QuotaExceeded);
    let overshoots: Vec<AuditEvent> = hook
        .registry()
        .audit_events()
        .into_iter()
        .filter(|e| e.kind == "QUOTA_OVERSHOOT")
        .collect();
    assert_eq!(overshoots.len(), 1);
    assert!(
        overshoots[0].detail.starts_with("4 provisionings"),
        "{}",
        overshoots[0].detail
    );
}

/// A registry whose commit fails with an error after applying, or without.
struct CommitErrors {
    inner: MemoryRegistry,
    apply: bool,
}

wrapping_registry!(CommitErrors, |this| this.inner, commit(commit, audit) {
    if this.apply {
        this.inner.record_provisioning(commit, audit).await?;
    }
    Err(RegistryError::Unavailable("connection reset".into()))
});

#[tokio::test]
async fn a_commit_that_fails_without_an_answer_is_settled_to_one_outcome() {
    for (apply, reason, allowed) in [(true, "ALLOWED", true), (false, "INTERNAL_ERROR", false)] {
        let registry = CommitErrors {
            inner: MemoryRegistry::with_profiles([profile("SN-1")]),
            apply,
        };
        let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(2));
        let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
        assert_eq!(
            decision.response.allow_provisioning, allowed,
            "apply {apply}"
        );
        assert_eq!(reasons(&hook.registry().inner.audit_events()), [reason]);
        // IoT retrying a fenced certificate is denied at once, not looped.
        if !apply {
            let again = hook.handle(request("SN-1", "cert-a"), "r2").await;
            assert_eq!(again.reason, Reason::DeadlineExceeded);
            assert_eq!(count_in(&hook.registry().inner, "SN-1", "eu-west-1"), 0);
        }
    }
}

const CANARY: &str = "geoprov-canary-eu-west-1-probe";

fn canary_hook(profiles: Vec<DeviceProfile>) -> ProvisioningHook<MemoryRegistry> {
    hook_with(profiles).with_canary_serial(Some(serial(CANARY)))
}

/// The canary's profile as `geoprov setup canary` writes it: its key, and
/// pinned to its region.
fn canary_profile() -> DeviceProfile {
    let mut canary = profile(CANARY);
    canary.allowed_regions = Some([region("eu-west-1")].into());
    canary
}

/// A manifest line that takes over the canary serial and widens its
/// regions: every rule passes, but a canary not pinned to exactly this
/// region is not the canary's; denied and audited.
#[tokio::test]
async fn a_canary_serial_not_pinned_to_exactly_this_region_is_denied() {
    for regions in [None, Some(vec!["eu-west-1", "us-east-1"])] {
        let mut taken = profile(CANARY);
        taken.allowed_regions = regions.map(|r| r.into_iter().map(region).collect());
        let hook = canary_hook(vec![taken]);
        let decision = hook.handle(request(CANARY, "cert-a"), "req-1").await;
        assert_eq!(decision.reason, Reason::RegionNotAllowed);
        assert!(!decision.response.allow_provisioning);
        assert_eq!(
            reasons(&hook.registry().audit_events()),
            ["REGION_NOT_ALLOWED"]
        );
    }
}

#[tokio::test]
async fn the_canary_serial_is_allowed_again_and_again_without_quota_or_audit() {
    let mut canary = canary_profile();
    canary.max_provisions = Some(1);
    let hook = canary_hook(vec![canary, profile("SN-1")]);
    for (i, certificate) in ["cert-a", "cert-b", "cert-c"].iter().enumerate() {
        let decision = hook
            .handle(request(CANARY, certificate), &format!("req-{i}"))
            .await;
        assert_eq!(decision.reason, Reason::Allowed, "probe {i}");
        assert!(decision.response.allow_provisioning);
        assert_eq!(decision.response.parameter_overrides["Region"], "eu-west-1");
    }
    assert_eq!(
        hook.registry()
            .record(&serial(CANARY))
            .unwrap()
            .provisioning
            .total(),
        0
    );
    assert!(hook.registry().audit_events().is_empty());
    // A device is still a device.
    hook.handle(request("SN-1", "cert-d"), "req-d").await;
    assert_eq!(reasons(&hook.registry().audit_events()), ["ALLOWED"]);
}

#[tokio::test]
async fn provisionings_of_the_canary_serial_from_before_count_for_nothing() {
    // A probe run while the hook did not know the serial committed like a
    // device's, up to the quota.
    let mut canary = canary_profile();
    canary.max_provisions = Some(1);
    let registry = MemoryRegistry::with_profiles(vec![canary]);
    let read = registry.record(&serial(CANARY)).unwrap();
    let commit = ProvisioningCommit {
        serial: serial(CANARY),
        certificate_id: "cert-0".into(),
        region: region("eu-west-1"),
        region_limit: 1,
        profile_version: read.profile.version.clone(),
        guard: read.provisioning.guard.clone(),
        at: "2026-11-30T12:00:00Z".into(),
    };
    let audit = AuditEvent {
        kind: "PROVISIONING_DECISION".into(),
        serial_number: Some(CANARY.into()),
        decision: Decision::Allow,
        reason: "ALLOWED".into(),
        detail: "before CANARY_SERIAL".into(),
        region: "eu-west-1".into(),
        certificate_id: Some("cert-0".into()),
        claim_certificate_id: None,
        client_id: None,
        request_id: "req-0".into(),
        time: "2026-11-30T12:00:00Z".into(),
    };
    assert_eq!(
        registry.record_provisioning(&commit, &audit).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(count_in(&registry, CANARY, "eu-west-1"), 1);
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(2))
        .with_canary_serial(Some(serial(CANARY)));
    let decision = hook.handle(request(CANARY, "cert-1"), "req-1").await;
    assert_eq!(decision.reason, Reason::Allowed);
    assert_eq!(count_in(hook.registry(), CANARY, "eu-west-1"), 1);
    assert!(!decision.audit_written, "the probe has no audit event");
}

#[tokio::test]
async fn the_canary_serial_is_denied_and_audited_without_its_key_or_its_region() {
    // Anyone holds the claim key: another key is KEY_MISMATCH.
    let mut other_key = DeviceProfile::allowed(serial(CANARY));
    other_key.public_key_sha256 = Some(PublicKeyFingerprint::try_from("ab".repeat(32)).unwrap());
    let hook = canary_hook(vec![other_key]);
    let decision = hook.handle(request(CANARY, "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::KeyMismatch);
    assert_eq!(reasons(&hook.registry().audit_events()), ["KEY_MISMATCH"]);

    // No factory key: denied even where REQUIRE_FACTORY_KEY is off.
    let mut policy = policy();
    policy.require_factory_key = false;
    let hook = ProvisioningHook::new(
        policy,
        MemoryRegistry::with_profiles(vec![DeviceProfile::allowed(serial(CANARY))]),
        Duration::from_secs(2),
    )
    .with_canary_serial(Some(serial(CANARY)));
    let decision = hook.handle(request(CANARY, "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::NoFactoryKey);
    assert_eq!(reasons(&hook.registry().audit_events()), ["NO_FACTORY_KEY"]);

    // Another region's canary serial is allowed there only.
    let mut elsewhere = profile(CANARY);
    elsewhere.allowed_regions = Some([region("us-east-1")].into());
    let hook = canary_hook(vec![elsewhere]);
    let decision = hook.handle(request(CANARY, "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::RegionNotAllowed);

    // Unregistered: UNKNOWN_DEVICE, audited.
    let hook = canary_hook(vec![]);
    let decision = hook.handle(request(CANARY, "cert-a"), "req-1").await;
    assert_eq!(decision.reason, Reason::UnknownDevice);
    assert_eq!(reasons(&hook.registry().audit_events()), ["UNKNOWN_DEVICE"]);
}

#[test]
fn canary_serial_is_read_from_the_environment() {
    let claim = sample()["claimCertificateId"].as_str().unwrap().to_owned();
    let base = [
        ("TABLE_NAME", "geoprov"),
        ("AWS_REGION", "eu-west-1"),
        ("LAMBDA_TIMEOUT_MS", "4000"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", claim.as_str()),
    ];
    let config = HookConfig::from_env(&Env::from_pairs(base)).unwrap();
    assert_eq!(config.canary_serial, None);
    let mut with = base.to_vec();
    with.push(("CANARY_SERIAL", CANARY));
    let config = HookConfig::from_env(&Env::from_pairs(with.clone())).unwrap();
    assert_eq!(config.canary_serial, Some(serial(CANARY)));
    // Only this region's canary serial: a device's would provision
    // without quota or audit.
    for wrong in ["not a serial", "SN-1", "geoprov-canary-us-east-1-probe"] {
        with.pop();
        with.push(("CANARY_SERIAL", wrong));
        let e = HookConfig::from_env(&Env::from_pairs(with.clone())).unwrap_err();
        assert!(e.to_string().contains("CANARY_SERIAL"), "{wrong}: {e}");
    }
}

/// A registry double (a fake, named as such: neither moto nor the
/// in-process registry refuses one call on demand) whose trusted-claims
/// read fails and whose every other call passes through.
struct ClaimsUnreadable {
    inner: MemoryRegistry,
    /// Fail the claims read (`true`), or pass it through.
    failing: std::sync::atomic::AtomicBool,
}

impl DeviceRegistry for ClaimsUnreadable {
    async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
        match self.failing.load(Ordering::SeqCst) {
            true => Err(RegistryError::Unavailable("throttled".into())),
            false => self.inner.trusted_claims().await,
        }
    }
    async fn device(&self, serial: &SerialNumber) -> Result<Option<DeviceRecord>, RegistryError> {
        self.inner.device(serial).await
    }
    async fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        self.inner.record_provisioning(commit, audit).await
    }
    async fn settle_lost_commit(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<Settled, RegistryError> {
        self.inner.settle_lost_commit(commit, denial).await
    }
    async fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<bool, RegistryError> {
        self.inner.append_unless_committed(commit, denial).await
    }
}

impl AuditLog for ClaimsUnreadable {
    async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.inner.append(event).await
    }
}

/// A hook that starts while the claims read fails trusts nothing, not the
/// bootstrap list (which the table may have retired): denied, audited. Once
/// the table answers (here, retiring the bootstrap claim), its word holds,
/// and when it fails again later the retirement still stands.
#[tokio::test]
async fn before_the_claims_are_read_nothing_is_trusted() {
    let claim_id = sample()["claimCertificateId"].as_str().unwrap().to_owned();
    let registry = ClaimsUnreadable {
        inner: MemoryRegistry::with_profiles([profile("SN-1"), profile("SN-2")]),
        failing: true.into(),
    };
    let ttl = Duration::from_millis(30);
    let hook =
        ProvisioningHook::new(policy(), registry, Duration::from_secs(2)).with_claim_cache_ttl(ttl);
    let decision = hook.handle(request("SN-1", "cert-a"), "r1").await;
    assert_eq!(decision.reason, Reason::InternalError);
    assert_eq!(decision.response, HookResponse::deny());
    assert!(decision.audit_written);
    assert_eq!(
        reasons(&hook.registry().inner.audit_events()),
        ["INTERNAL_ERROR"]
    );

    // The table answers: it retires the bootstrap claim.
    hook.registry().inner.set_claims(vec![TrustedClaim {
        certificate_id: claim_id,
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2099-01-01T00:00:00Z".into(),
        retired_at: Some("2026-12-01T00:00:00Z".into()),
        added_at: "2026-01-01T00:00:00Z".into(),
        note: None,
    }]);
    hook.registry().failing.store(false, Ordering::SeqCst);
    assert_eq!(
        hook.handle(request("SN-2", "cert-b"), "r2").await.reason,
        Reason::UntrustedClaim
    );
    // Failing again after the cache period: the retirement still stands.
    hook.registry().failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        hook.handle(request("SN-2", "cert-c"), "r3").await.reason,
        Reason::UntrustedClaim
    );
}

/// A fake (named as such: neither moto nor the in-process registry loses
/// answers on demand) that loses two answers in a row: the commit applies
/// and its answer never comes, and the settlement never answers either.
struct LostTwice {
    inner: Arc<MemoryRegistry>,
}

impl DeviceRegistry for LostTwice {
    async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
        self.inner.trusted_claims().await
    }
    async fn device(&self, serial: &SerialNumber) -> Result<Option<DeviceRecord>, RegistryError> {
        self.inner.device(serial).await
    }
    async fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        self.inner.record_provisioning(commit, audit).await?;
        std::future::pending().await
    }
    async fn settle_lost_commit(
        &self,
        _: &ProvisioningCommit,
        _: &AuditEvent,
    ) -> Result<Settled, RegistryError> {
        std::future::pending().await
    }
    async fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<bool, RegistryError> {
        self.inner.append_unless_committed(commit, denial).await
    }
}

impl AuditLog for LostTwice {
    async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.inner.append(event).await
    }
}

/// The commit applied, its answer was lost, and the settlement got no
/// answer in its time: the hook can only deny, but the decision keeps one
/// audit outcome, the commit's. IoT, denied, asks again with the same
/// certificate, which is then a retry.
#[tokio::test]
async fn a_lost_commit_and_a_lost_settlement_leave_one_outcome() {
    let inner = Arc::new(MemoryRegistry::with_profiles([profile("SN-1")]));
    let hook = ProvisioningHook::new(
        policy(),
        LostTwice {
            inner: inner.clone(),
        },
        Duration::from_millis(100),
    );
    let decision = hook.handle(request("SN-1", "cert-a"), "r").await;
    assert_eq!(decision.response, HookResponse::deny());
    assert_eq!(decision.reason, Reason::DeadlineExceeded);
    assert!(decision.audit_written, "the commit's event is the outcome");
    assert_eq!(reasons(&inner.audit_events()), ["ALLOWED"]);
    assert_eq!(count_in(&inner, "SN-1", "eu-west-1"), 1);
}

/// A fake (named as such) in which, while this decision's commit is lost
/// and never applies, another decision (device activation) commits the
/// same certificate in the region.
struct ProvisionedMeanwhile {
    inner: Arc<MemoryRegistry>,
}

wrapping_registry!(ProvisionedMeanwhile, |this| this.inner, commit(commit, audit) {
    let mut activation = audit.clone();
    activation.request_id = "activation-1".into();
    this.inner.record_provisioning(commit, &activation).await?;
    std::future::pending().await
});

/// Settling tells this decision's commit from another's: the certificate
/// is provisioned, by device activation, so the hook allows it as a retry,
/// with an audit event of its own beside activation's.
#[tokio::test]
async fn a_certificate_another_decision_committed_is_allowed_and_audited_by_both() {
    let inner = Arc::new(MemoryRegistry::with_profiles([profile("SN-1")]));
    let hook = ProvisioningHook::new(
        policy(),
        ProvisionedMeanwhile {
            inner: inner.clone(),
        },
        Duration::from_millis(100),
    );
    let decision = hook.handle(request("SN-1", "cert-a"), "r-hook").await;
    assert!(decision.response.allow_provisioning, "{decision:?}");
    assert!(decision.audit_written);
    let events: Vec<(String, String)> = inner
        .audit_events()
        .iter()
        .map(|e| (e.request_id.clone(), e.reason.clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("activation-1".to_owned(), "ALLOWED".to_owned()),
            ("r-hook".to_owned(), "ALLOWED".to_owned()),
        ]
    );
    assert_eq!(count_in(&inner, "SN-1", "eu-west-1"), 1, "one quota unit");
}
