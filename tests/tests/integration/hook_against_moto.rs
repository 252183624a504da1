//! The hook's handler with the DynamoDB registry in moto: the quota under
//! concurrency, in one region and in two sharing the table, the audit
//! trail, and the deadline against a silent endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoprov_shared::config::Env;
use geoprov_shared::device::{DeviceProfile, PublicKeyFingerprint, SerialNumber};
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry};
use geoprov_tests::{TEST_REGION, fresh_registry, sdk_config};
use pre_provisioning_hook::rules::spki_sha256;
use pre_provisioning_hook::{HookConfig, Policy, ProvisioningHook, Reason};
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
        ("LAMBDA_TIMEOUT_MS", "5000"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", claim.as_str()),
    ]);
    HookConfig::from_env(&env).unwrap().policy
}

fn policy() -> Policy {
    policy_in(TEST_REGION)
}

/// A registered device whose factory key is the sample certificate's.
fn profile(serial: &str) -> DeviceProfile {
    let pem = sample()["certificatePem"].as_str().unwrap().to_owned();
    let mut profile = DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_claims_with_a_quota_of_three_allow_exactly_three() {
    let registry = fresh_registry("quota").await;
    let serial = SerialNumber::try_from("SN-QUOTA").unwrap();
    let mut profile = profile("SN-QUOTA");
    profile.max_provisions = Some(3);
    registry.put_profiles(&[profile]).await.unwrap();
    let hook = Arc::new(ProvisioningHook::new(
        policy(),
        registry,
        Duration::from_millis(4500),
    ));

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let hook = hook.clone();
            tokio::spawn(async move {
                hook.handle(
                    request("SN-QUOTA", &format!("cert-{i}")),
                    &format!("req-{i}"),
                )
                .await
            })
        })
        .collect();
    let mut reasons = Vec::new();
    for task in tasks {
        reasons.push(task.await.unwrap().reason);
    }
    let allowed = reasons.iter().filter(|r| **r == Reason::Allowed).count();
    let over = reasons
        .iter()
        .filter(|r| **r == Reason::QuotaExceeded)
        .count();
    assert_eq!((allowed, over), (3, 17), "{reasons:?}");

    let registry = hook.registry();
    let provisioning = registry
        .device(&serial)
        .await
        .unwrap()
        .unwrap()
        .provisioning;
    assert_eq!(provisioning.total(), 3);
    let state =
        &provisioning.regions[&geoprov_shared::device::RegionName::try_from(TEST_REGION).unwrap()];
    assert_eq!(state.provisioned_certificate_ids.len(), 3);
    let audit = registry.audit_events(&serial).await.unwrap();
    assert_eq!(audit.len(), 20, "every decision is audited once");
    assert_eq!(audit.iter().filter(|e| e.reason == "ALLOWED").count(), 3);
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.reason == "QUOTA_EXCEEDED")
            .count(),
        17
    );
}

#[tokio::test]
async fn decisions_are_audited_in_the_table() {
    let registry = fresh_registry("audit").await;
    registry.put_profiles(&[profile("SN-1")]).await.unwrap();
    let hook = ProvisioningHook::new(policy(), registry, Duration::from_secs(3));
    assert_eq!(
        hook.handle(request("SN-1", "c1"), "r1").await.reason,
        Reason::Allowed
    );
    assert_eq!(
        hook.handle(request("SN-1", "c1"), "r2").await.reason,
        Reason::Allowed
    );
    let mut untrusted = policy();
    untrusted.trusted_claim_certificate_ids = ["other-claim".to_owned()].into();
    let strict = ProvisioningHook::new(
        untrusted,
        DynamoRegistry::new(hook.registry().client().clone(), hook.registry().table()),
        Duration::from_secs(3),
    );
    assert_eq!(
        strict.handle(request("SN-1", "c2"), "r3").await.reason,
        Reason::UntrustedClaim
    );

    let audit = hook
        .registry()
        .audit_events(&SerialNumber::try_from("SN-1").unwrap())
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.request_id.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("r1", "ALLOWED"),
            ("r2", "ALLOWED"),
            ("r3", "UNTRUSTED_CLAIM")
        ]
    );
    assert!(
        audit
            .iter()
            .all(|e| e.certificate_id.is_some() && e.time.ends_with('Z'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_sharing_one_table_each_count_their_own_and_stay_within_the_quota() {
    let registry = fresh_registry("two-regions").await;
    let serial = SerialNumber::try_from("SN-TWO").unwrap();
    registry.put_profiles(&[profile("SN-TWO")]).await.unwrap();
    let regions = ["eu-west-1", "us-east-1"];
    let hooks: Vec<_> = regions
        .iter()
        .map(|region| {
            Arc::new(ProvisioningHook::new(
                policy_in(region),
                DynamoRegistry::new(registry.client().clone(), registry.table()),
                Duration::from_millis(4500),
            ))
        })
        .collect();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let hook = hooks[i % 2].clone();
            tokio::spawn(async move {
                hook.handle(request("SN-TWO", &format!("cert-{i}")), &format!("req-{i}"))
                    .await
                    .reason
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap() == Reason::Allowed);
    }
    let provisioning = registry
        .device(&serial)
        .await
        .unwrap()
        .unwrap()
        .provisioning;
    let per_region: Vec<u32> = regions
        .iter()
        .map(|r| provisioning.count_in(&geoprov_shared::device::RegionName::try_from(*r).unwrap()))
        .collect();
    // Each region counts in its own item; the sum never passes the quota
    // plus one per other region, and on one table, where every commit
    // changes the device's guard, it is the quota exactly.
    assert_eq!(allowed as u32, provisioning.total(), "{per_region:?}");
    assert!(
        provisioning.total() <= 3 + (regions.len() as u32 - 1),
        "{per_region:?}"
    );
    assert_eq!(provisioning.total(), 3, "{per_region:?}");
}

/// A loopback port that accepts connections and never answers.
fn silent_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn denies_with_deadline_exceeded_when_dynamodb_never_answers() {
    let config = sdk_config(&silent_endpoint(), TEST_REGION).await;
    let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(&config), "geoprov");
    let deadline = Duration::from_millis(1000);
    let hook = ProvisioningHook::new(policy(), registry, deadline);

    let started = Instant::now();
    let decision = hook.handle(request("SN-1", "c1"), "r1").await;
    let elapsed = started.elapsed();

    assert_eq!(decision.reason, Reason::DeadlineExceeded);
    assert!(!decision.response.allow_provisioning);
    assert!(
        elapsed < deadline + Duration::from_millis(500),
        "answered after {elapsed:?}"
    );
}
