//! The DynamoDB registry adapter against moto server: profiles, operator
//! blocks, per-region provisionings, versioned commits, settling a lost
//! commit, and the audit log.

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::device::{
    DeviceProfile, DeviceStatus, OperatorBlock, RegionName, SerialNumber,
};
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, DynamoRegistry, ProvisioningCommit, RegistryError,
    Settled,
};
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

/// A fresh table holding one allowed device.
async fn registry_with(serial_number: &str) -> DynamoRegistry {
    let registry = fresh_registry("registry").await;
    registry
        .put_profiles(&[DeviceProfile::allowed(serial(serial_number))])
        .await
        .unwrap();
    registry
}

fn region(name: &str) -> RegionName {
    RegionName::try_from(name).unwrap()
}

/// The commit a hook in eu-west-1 would send for the profile as stored now.
async fn commit(
    registry: &DynamoRegistry,
    serial_number: &str,
    certificate_id: &str,
    region_limit: u32,
) -> ProvisioningCommit {
    commit_in(
        registry,
        "eu-west-1",
        serial_number,
        certificate_id,
        region_limit,
    )
    .await
}

async fn commit_in(
    registry: &DynamoRegistry,
    region_name: &str,
    serial_number: &str,
    certificate_id: &str,
    region_limit: u32,
) -> ProvisioningCommit {
    let device = registry.device(&serial(serial_number)).await.unwrap();
    ProvisioningCommit {
        serial: serial(serial_number),
        certificate_id: certificate_id.into(),
        region: region(region_name),
        region_limit,
        profile_version: device.as_ref().and_then(|d| d.profile.version.clone()),
        guard: device.and_then(|d| d.provisioning.guard),
        at: "2026-11-29T12:00:00Z".into(),
    }
}

async fn count_in(registry: &DynamoRegistry, serial_number: &str, region_name: &str) -> u32 {
    registry
        .device(&serial(serial_number))
        .await
        .unwrap()
        .map(|d| d.provisioning.count_in(&region(region_name)))
        .unwrap_or(0)
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

    let mut record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert!(record.profile.version.is_some(), "an import sets a version");
    record.profile.version = None;
    assert_eq!(record.profile, profile);
    assert_eq!(record.provisioning.total(), 0);
    assert!(record.block.is_none());
    assert!(registry.device(&serial("SN-2")).await.unwrap().is_none());
}

#[tokio::test]
async fn a_commit_updates_state_and_audit_together() {
    let registry = registry_with("SN-1").await;
    let outcome = registry
        .record_provisioning(
            &commit(&registry, "SN-1", "cert-a", 2).await,
            &event("SN-1", "r1", "2026-11-29T12:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::Committed);
    let provisioning = registry
        .device(&serial("SN-1"))
        .await
        .unwrap()
        .unwrap()
        .provisioning;
    let state = &provisioning.regions[&region("eu-west-1")];
    assert_eq!(state.provision_count, 1);
    assert_eq!(state.last_certificate_id.as_deref(), Some("cert-a"));
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
        let commit = commit(&registry, serial_number, certificate_id, quota).await;
        let outcome = registry.record_provisioning(&commit, &audit).await.unwrap();
        assert_eq!(outcome, expected, "{case}");
    }
    assert_eq!(count_in(&registry, "SN-1", "eu-west-1").await, 1);
    assert_eq!(count_in(&registry, "SN-B", "eu-west-1").await, 0);
    assert!(registry.device(&serial("SN-NONE")).await.unwrap().is_none());
    assert_eq!(
        registry.audit_events(&serial("SN-1")).await.unwrap().len(),
        1
    );
    assert!(
        registry
            .audit_events(&serial("SN-B"))
            .await
            .unwrap()
            .is_empty()
    );
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
            &commit(&registry, "SN-1", "cert-a", 3).await,
            &event("SN-1", "r", "2026-11-29T12:00:00Z"),
        )
        .await
        .unwrap();
    let mut changed = profile.clone();
    changed.max_provisions = Some(9);
    registry.put_profiles(&[changed]).await.unwrap();
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(record.profile.max_provisions, Some(9));
    assert_eq!(record.provisioning.total(), 1);
}

#[tokio::test]
async fn a_commit_decided_on_an_older_profile_conflicts() {
    let registry = fresh_registry("registry").await;
    let profile = DeviceProfile::allowed(serial("SN-1"));
    registry
        .put_profiles(std::slice::from_ref(&profile))
        .await
        .unwrap();
    let stale = commit(&registry, "SN-1", "cert-a", 3).await;
    // An import between the read and the commit (the same line again).
    registry.put_profiles(&[profile]).await.unwrap();
    let audit = event("SN-1", "r", "2026-11-29T12:00:00Z");
    assert_eq!(
        registry.record_provisioning(&stale, &audit).await.unwrap(),
        CommitOutcome::Conflict
    );
    let fresh = commit(&registry, "SN-1", "cert-a", 3).await;
    assert_eq!(
        registry.record_provisioning(&fresh, &audit).await.unwrap(),
        CommitOutcome::Committed
    );
}

#[tokio::test]
async fn an_operator_block_stops_commits_and_survives_a_re_import() {
    let registry = fresh_registry("registry").await;
    let profile = DeviceProfile::allowed(serial("SN-1"));
    registry
        .put_profiles(std::slice::from_ref(&profile))
        .await
        .unwrap();
    let before_block = commit(&registry, "SN-1", "cert-a", 3).await;
    let block = OperatorBlock {
        reason: "reported stolen".into(),
        blocked_at: "2026-11-30T00:00:00Z".into(),
    };
    registry.block(&serial("SN-1"), &block).await.unwrap();
    registry.put_profiles(&[profile]).await.unwrap();
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(
        record.block.as_ref(),
        Some(&block),
        "the import lifted the block"
    );
    // A commit decided before the block, or after it, does not hold.
    let audit = event("SN-1", "r", "2026-11-29T12:00:00Z");
    assert_eq!(
        registry
            .record_provisioning(&before_block, &audit)
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    let after = commit(&registry, "SN-1", "cert-a", 3).await;
    assert_eq!(
        registry.record_provisioning(&after, &audit).await.unwrap(),
        CommitOutcome::Conflict
    );
    registry.unblock(&serial("SN-1")).await.unwrap();
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert!(record.block.is_none());
    let unblocked = commit(&registry, "SN-1", "cert-a", 3).await;
    assert_eq!(
        registry
            .record_provisioning(&unblocked, &audit)
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    // A serial not in the registry cannot be blocked.
    assert!(matches!(
        registry.block(&serial("SN-NONE"), &block).await,
        Err(RegistryError::UnknownDevice(_))
    ));
}

#[tokio::test]
async fn each_region_counts_in_its_own_item_and_the_device_reads_them_all() {
    let registry = registry_with("SN-1").await;
    let audit = |i: usize| event("SN-1", &format!("r{i}"), "2026-11-29T12:00:00Z");
    for (i, (region_name, cert)) in [("eu-west-1", "a"), ("us-east-1", "b"), ("us-east-1", "c")]
        .into_iter()
        .enumerate()
    {
        let c = commit_in(&registry, region_name, "SN-1", cert, 3).await;
        assert_eq!(
            registry.record_provisioning(&c, &audit(i)).await.unwrap(),
            CommitOutcome::Committed
        );
    }
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(record.provisioning.count_in(&region("eu-west-1")), 1);
    assert_eq!(record.provisioning.count_in(&region("us-east-1")), 2);
    assert_eq!(record.provisioning.total(), 3);
    assert!(record.provisioning.has_certificate("c"));
}

#[tokio::test]
async fn a_lost_commit_settles_to_exactly_one_outcome() {
    let registry = registry_with("SN-1").await;
    let mut denial = event("SN-1", "r-denied", "2026-11-29T12:00:01Z");
    denial.decision = Decision::Deny;
    denial.reason = "DEADLINE_EXCEEDED".into();

    // Applied before it was settled (the decision's commit and its denial
    // carry its request id): nothing more is written.
    let applied = commit(&registry, "SN-1", "cert-a", 3).await;
    registry
        .record_provisioning(&applied, &event("SN-1", "r-denied", "2026-11-29T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        registry
            .settle_lost_commit(&applied, &denial)
            .await
            .unwrap(),
        Settled::Committed
    );
    // The same certificate committed by another decision (device
    // activation's request): not this decision's commit.
    let mut other = denial.clone();
    other.request_id = "r-hook-2".into();
    assert_eq!(
        registry.settle_lost_commit(&applied, &other).await.unwrap(),
        Settled::CommittedElsewhere
    );

    // Not applied: fenced and denied; arriving late, it cannot apply.
    let lost = commit(&registry, "SN-1", "cert-b", 3).await;
    assert_eq!(
        registry.settle_lost_commit(&lost, &denial).await.unwrap(),
        Settled::Fenced
    );
    assert_eq!(
        registry
            .record_provisioning(&lost, &event("SN-1", "r-b", "2026-11-29T12:00:02Z"))
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    assert_eq!(count_in(&registry, "SN-1", "eu-west-1").await, 1);
    let reasons: Vec<String> = registry
        .audit_events(&serial("SN-1"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.request_id, e.reason))
        .collect();
    assert_eq!(reasons, ["r-denied ALLOWED", "r-denied DEADLINE_EXCEEDED"]);
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

#[tokio::test]
async fn a_fence_on_a_region_without_provisionings_keeps_the_device_readable() {
    let registry = registry_with("SN-1").await;
    let lost = commit(&registry, "SN-1", "cert-a", 3).await;
    let mut denial = event("SN-1", "r-denied", "2026-11-29T12:00:01Z");
    denial.decision = Decision::Deny;
    assert_eq!(
        registry.settle_lost_commit(&lost, &denial).await.unwrap(),
        Settled::Fenced
    );
    // The fence made the region's item: the device still reads, fenced.
    let record = registry.device(&serial("SN-1")).await.unwrap().unwrap();
    assert_eq!(record.provisioning.total(), 0);
    assert!(
        record
            .provisioning
            .is_fenced(&region("eu-west-1"), "cert-a")
    );
    // And provisions another certificate normally.
    let next = commit(&registry, "SN-1", "cert-b", 3).await;
    assert_eq!(
        registry
            .record_provisioning(&next, &event("SN-1", "r-b", "2026-11-29T12:00:02Z"))
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
}

#[tokio::test]
async fn a_block_and_unblock_alone_make_an_earlier_decision_stale() {
    let registry = registry_with("SN-1").await;
    let before = commit(&registry, "SN-1", "cert-a", 3).await;
    let block = OperatorBlock {
        reason: "checking".into(),
        blocked_at: "2026-11-30T00:00:00Z".into(),
    };
    registry.block(&serial("SN-1"), &block).await.unwrap();
    registry.unblock(&serial("SN-1")).await.unwrap();
    // No block now, and the same profile: only the version says it changed.
    assert_eq!(
        registry
            .record_provisioning(&before, &event("SN-1", "r", "2026-11-29T12:00:00Z"))
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
}

/// One `CLAIM#` item that does not parse fails no read and widens no trust:
/// it stands for its id retired, the bootstrap list included, and the other
/// items still count.
#[tokio::test]
async fn a_malformed_claim_item_counts_as_retired_for_its_id_only() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use geoprov_shared::claims::{ClaimsRead, TrustedClaim, effective_trust};
    let registry = fresh_registry("claims").await;
    let (bad, good) = ("b".repeat(64), "c".repeat(64));
    registry
        .add_claim(&TrustedClaim {
            certificate_id: good.clone(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2099-01-01T00:00:00Z".into(),
            retired_at: None,
            added_at: "2026-01-01T00:00:00Z".into(),
            note: None,
        })
        .await
        .unwrap();
    // An item for the bootstrap id, its window a number: it does not parse.
    registry
        .client()
        .put_item()
        .table_name(registry.table())
        .item("pk", AttributeValue::S("CLAIMS".into()))
        .item("sk", AttributeValue::S(format!("CLAIM#{bad}")))
        .item("certificateId", AttributeValue::S(bad.clone()))
        .item("notBefore", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let claims = registry
        .trusted_claims()
        .await
        .expect("the read still succeeds");
    assert_eq!(claims.len(), 2, "{claims:?}");
    let bootstrap = [bad.clone()].into();
    let trusted = effective_trust(
        &bootstrap,
        ClaimsRead::Fresh(&claims),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(
        trusted,
        [good].into(),
        "the malformed id is retired, the other trusted"
    );
}

/// The denial of a lost commit that could not be settled is appended only
/// if the commit did not apply, and once: one outcome per decision.
#[tokio::test]
async fn an_unsettled_denial_is_appended_only_when_the_commit_did_not_apply() {
    let registry = registry_with("SN-1").await;
    let denial = |request: &str| {
        let mut e = event("SN-1", request, "2026-11-29T12:00:05Z");
        e.decision = Decision::Deny;
        e.reason = "DEADLINE_EXCEEDED".into();
        e
    };
    // Applied: its ALLOWED is the outcome; the denial is not appended.
    let applied = commit(&registry, "SN-1", "cert-a", 3).await;
    registry
        .record_provisioning(&applied, &event("SN-1", "r-a", "2026-11-29T12:00:00Z"))
        .await
        .unwrap();
    assert!(
        !registry
            .append_unless_committed(&applied, &denial("r-a"))
            .await
            .unwrap()
    );
    // Not applied: appended, once.
    let lost = commit(&registry, "SN-1", "cert-b", 3).await;
    assert!(
        registry
            .append_unless_committed(&lost, &denial("r-b"))
            .await
            .unwrap()
    );
    assert!(
        !registry
            .append_unless_committed(&lost, &denial("r-b"))
            .await
            .unwrap()
    );
    let reasons: Vec<String> = registry
        .audit_events(&serial("SN-1"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.request_id, e.reason))
        .collect();
    assert_eq!(reasons, ["r-a ALLOWED", "r-b DEADLINE_EXCEEDED"]);
}
