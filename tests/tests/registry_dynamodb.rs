//! The DynamoDB registry adapter against moto server.

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::device::{DeviceProfile, DeviceStatus, RegionName, SerialNumber};
use geoprov_shared::registry::{AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit};
use geoprov_tests::fresh_registry;

fn serial(s: &str) -> SerialNumber {
    SerialNumber::try_from(s).unwrap()
}

fn event(serial: &str, request_id: &str, time: &str) -> AuditEvent {
    AuditEvent {
        kind: "PROVISIONING_DECISION".into(),
        serial_number: Some(serial.into()),
        decision: Decision::Allow,
        reason: "ALLOWED".into(),
        detail: "every rule passed".into(),
        region: "eu-west-1".into(),
        certificate_id: Some("cert".into()),
        claim_certificate_id: Some("claim".into()),
        client_id: Some(serial.into()),
        request_id: request_id.into(),
        time: time.into(),
    }
}

fn commit(serial_number: &str, certificate_id: &str, quota: u32) -> ProvisioningCommit {
    ProvisioningCommit {
        serial: serial(serial_number),
        certificate_id: certificate_id.into(),
        region: RegionName::try_from("eu-west-1").unwrap(),
        quota,
        at: "2026-11-29T12:00:00Z".into(),
    }
}

#[tokio::test]
async fn profiles_round_trip_through_the_table() {
    let registry = fresh_registry("registry").await;
    let line = r#"{"serialNumber":"SN-1","status":"BLOCKED","allowedRegions":["eu-west-1","us-east-1"],"maxProvisions":2,"publicKeySha256":"ababababababababababababababababababababababababababababababab01","thingGroup":"sensors-eu","attributes":{"model":"X1","batch":"7"}}"#;
    let profile: DeviceProfile = serde_json::from_str(line).unwrap();
    registry
        .put_profiles(std::slice::from_ref(&profile))
        .await
        .unwrap();

    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(record.profile, profile);
    assert_eq!(record.provisioning.provision_count, 0);
    assert!(registry.device(&serial("SN-2")).await.unwrap().is_none());
}

#[tokio::test]
async fn a_commit_updates_state_and_audit_together() {
    let registry = fresh_registry("registry").await;
    registry
        .put_profiles(&[DeviceProfile::allowed(serial("SN-1"))])
        .await
        .unwrap();
    let outcome = registry
        .record_provisioning(
            &commit("SN-1", "cert-a", 2),
            &event("SN-1", "r1", "2026-11-29T12:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::Committed);
    let state = registry
        .device(&serial("SN-1"))
        .await
        .unwrap()
        .unwrap()
        .provisioning;
    assert_eq!(state.provision_count, 1);
    assert_eq!(state.last_certificate_id.as_deref(), Some("cert-a"));
    assert_eq!(state.last_region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        state.last_provisioned_at.as_deref(),
        Some("2026-11-29T12:00:00Z")
    );
    assert!(state.provisioned_certificate_ids.contains("cert-a"));
    let audit = registry.audit_events(&serial("SN-1")).await.unwrap();
    assert_eq!(audit, [event("SN-1", "r1", "2026-11-29T12:00:00Z")]);
}

#[tokio::test]
async fn a_commit_conflicts_and_writes_nothing_when_a_condition_fails() {
    let registry = fresh_registry("registry").await;
    let mut blocked = DeviceProfile::allowed(serial("SN-B"));
    blocked.status = DeviceStatus::Blocked;
    registry
        .put_profiles(&[DeviceProfile::allowed(serial("SN-1")), blocked])
        .await
        .unwrap();
    let cases = [
        (
            "SN-1",
            "cert-a",
            1,
            CommitOutcome::Committed,
            "a first provisioning",
        ),
        ("SN-1", "cert-b", 1, CommitOutcome::Conflict, "over quota"),
        (
            "SN-1",
            "cert-a",
            5,
            CommitOutcome::Conflict,
            "the same certificate again",
        ),
        ("SN-B", "x", 5, CommitOutcome::Conflict, "a blocked device"),
        (
            "SN-NONE",
            "x",
            5,
            CommitOutcome::Conflict,
            "an unregistered device",
        ),
    ];
    for (i, (serial_number, certificate_id, quota, expected, case)) in cases.into_iter().enumerate()
    {
        let audit = event(
            serial_number,
            &format!("r{i}"),
            &format!("2026-11-29T12:00:0{i}Z"),
        );
        let outcome = registry
            .record_provisioning(&commit(serial_number, certificate_id, quota), &audit)
            .await
            .unwrap();
        assert_eq!(outcome, expected, "{case}");
    }
    let count = |serial_number| {
        let registry = &registry;
        async move {
            let record = registry.device(&serial(serial_number)).await.unwrap();
            record.unwrap().provisioning.provision_count
        }
    };
    assert_eq!(count("SN-1").await, 1);
    assert_eq!(count("SN-B").await, 0);
    assert!(registry.device(&serial("SN-NONE")).await.unwrap().is_none());
    assert_eq!(
        registry.audit_events(&serial("SN-1")).await.unwrap().len(),
        1
    );
    assert!(registry
        .audit_events(&serial("SN-B"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn reimporting_a_profile_keeps_the_provisioning_state() {
    let registry = fresh_registry("registry").await;
    let profile = DeviceProfile::allowed(serial("SN-1"));
    registry
        .put_profiles(std::slice::from_ref(&profile))
        .await
        .unwrap();
    registry
        .record_provisioning(
            &commit("SN-1", "cert-a", 3),
            &event("SN-1", "r", "2026-11-29T12:00:00Z"),
        )
        .await
        .unwrap();
    let mut changed = profile.clone();
    changed.max_provisions = Some(9);
    registry.put_profiles(&[changed]).await.unwrap();
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(record.profile.max_provisions, Some(9));
    assert_eq!(record.provisioning.provision_count, 1);
}

#[tokio::test]
async fn the_audit_log_is_append_only_and_ordered_by_time() {
    let registry = fresh_registry("registry").await;
    let later = event("SN-1", "r2", "2026-11-29T12:00:02Z");
    let earlier = event("SN-1", "r1", "2026-11-29T12:00:01Z");
    registry.append(&later).await.unwrap();
    registry.append(&earlier).await.unwrap();
    // The same event again would overwrite: refused.
    assert!(registry.append(&earlier).await.is_err());
    // An event without a valid serial is kept apart, not lost.
    let mut stray = event("not a serial", "r3", "2026-11-29T12:00:03Z");
    stray.decision = Decision::Deny;
    registry.append(&stray).await.unwrap();
    assert_eq!(
        registry.audit_events(&serial("SN-1")).await.unwrap(),
        [earlier, later]
    );
}
