//! endpoint-failover against moto: Route 53 records and health checks, and the
//! health state, ledger and lock in DynamoDB. moto's health checks always say
//! healthy and its changes are INSYNC at once; those gaps are covered in
//! `failover_route53_sdk_boundary.rs`.

use std::collections::BTreeMap;

use endpoint_failover::config::FailoverConfig;
use endpoint_failover::health::Status;
use endpoint_failover::planner::Reason;
use endpoint_failover::report::{ErrorCode, Report};
use endpoint_failover::route53::{Route53, SdkRoute53};
use geoprov_tests::failover::{
    alarm_event, config_json, endpoint, every_country_config, expected_targets, failover,
    health_check, hosted_zone, records_by_region, route53_client, schedule_event,
    two_region_config, two_region_config_with_checks, MotoFailover, TEST_RETRY,
};
use serde_json::{json, Value};

const NA: &str = "US East IoT Global Endpoint";
const DEFAULT: &str = "Default IoT Global Endpoint";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn changed(report: &Report) -> Vec<(String, Option<String>, String, Reason)> {
    report
        .changes
        .iter()
        .map(|c| {
            (
                c.set_identifier.clone(),
                c.from.clone(),
                c.to.to_string(),
                c.reason,
            )
        })
        .collect()
}

fn status(report: &Report, region: &str) -> Status {
    report.health[&region.try_into().unwrap()]
}

async fn reconciled(config: &Value) -> MotoFailover {
    let failover = failover(config).await;
    let report = failover
        .handle(json!({"action": "reconcile"}), "setup")
        .await;
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    failover
}

#[tokio::test]
async fn first_reconcile_creates_every_record_and_the_second_changes_nothing() {
    let config = two_region_config().await;
    let failover = failover(&config).await;

    let report = failover.handle(json!({"action": "reconcile"}), "r1").await;
    assert_eq!(report.trigger, "RECONCILE");
    assert!(report.applied, "{report:?}");
    assert_eq!(report.insync, Some(true));
    assert!(report.change_id.is_some());
    assert_eq!(
        changed(&report),
        [
            (NA.into(), None, "us-east-1".into(), Reason::RecordMissing),
            (
                DEFAULT.into(),
                None,
                "eu-west-1".into(),
                Reason::RecordMissing
            ),
        ]
    );

    // The records as Route 53 holds them: CNAME, TTL, GeoLocation, value.
    let cfg = failover.config();
    let route53 = SdkRoute53::new(route53_client().await, TEST_RETRY);
    let records = route53
        .geo_records(&cfg.hosted_zone_id, &cfg.record_name)
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[NA].value, endpoint("us-east-1"));
    assert_eq!(records[NA].ttl, Some(60));
    assert_eq!(
        records[NA].geo_location.continent_code.as_deref(),
        Some("NA")
    );
    assert_eq!(records[DEFAULT].value, endpoint("eu-west-1"));
    assert!(records[DEFAULT].geo_location.is_default());

    let again = failover.handle(json!({"action": "reconcile"}), "r2").await;
    assert!(again.changes.is_empty() && !again.applied, "{again:?}");
    assert_eq!(again.change_id, None);
}

#[tokio::test]
async fn alarm_repoints_north_america_and_ok_points_it_back() {
    let mut config = two_region_config().await;
    config["recoverAfter"] = json!(2);
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert_eq!(report.trigger, "ALARM_STATE_CHANGE");
    assert_eq!(status(&report, "us-east-1"), Status::Unhealthy);
    assert_eq!(
        changed(&report),
        [(
            NA.into(),
            Some("us-east-1".into()),
            "eu-west-1".into(),
            Reason::RegionUnavailable
        )]
    );
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "eu-west-1"), (DEFAULT, "eu-west-1")])
    );

    // One OK is not enough with recoverAfter 2.
    let first_ok = failover.handle(alarm_event("us-east-1", "OK"), "o1").await;
    assert_eq!(status(&first_ok, "us-east-1"), Status::Unhealthy);
    assert!(first_ok.changes.is_empty(), "{first_ok:?}");

    // INSUFFICIENT_DATA is no signal: it neither counts nor resets.
    let no_data = failover
        .handle(alarm_event("us-east-1", "INSUFFICIENT_DATA"), "i1")
        .await;
    assert!(
        no_data.changes.is_empty() && no_data.errors.is_empty(),
        "{no_data:?}"
    );

    let second_ok = failover.handle(alarm_event("us-east-1", "OK"), "o2").await;
    assert_eq!(status(&second_ok, "us-east-1"), Status::Healthy);
    assert_eq!(
        changed(&second_ok),
        [(
            NA.into(),
            Some("eu-west-1".into()),
            "us-east-1".into(),
            Reason::PreferredRegionAvailable
        )]
    );
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "us-east-1"), (DEFAULT, "eu-west-1")])
    );
}

#[tokio::test]
async fn a_redelivered_event_counts_once() {
    let mut config = two_region_config().await;
    config["failAfter"] = json!(2);
    let failover = reconciled(&config).await;

    // EventBridge delivers at least once: the same event twice is one signal.
    let alarm = alarm_event("us-east-1", "ALARM");
    for attempt in ["first delivery", "redelivery"] {
        let report = failover.handle(alarm.clone(), attempt).await;
        assert_eq!(status(&report, "us-east-1"), Status::Healthy, "{attempt}");
        assert!(report.changes.is_empty(), "{attempt}: {report:?}");
    }
    // A second alarm event is the second signal.
    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "second")
        .await;
    assert_eq!(status(&report, "us-east-1"), Status::Unhealthy);
    assert!(report.applied, "{report:?}");
}

#[tokio::test]
async fn failback_waits_for_the_minimum_interval_but_failover_never_does() {
    let mut config = two_region_config().await;
    config["minChangeIntervalSeconds"] = json!(3600);
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    // The records were just created: moving away from a dead region is immediate.
    let down = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert!(down.applied, "{down:?}");

    let up = failover.handle(alarm_event("us-east-1", "OK"), "o1").await;
    assert_eq!(status(&up, "us-east-1"), Status::Healthy);
    assert!(up.changes.is_empty(), "{up:?}");
    assert_eq!(up.deferred.len(), 1);
    assert_eq!(up.deferred[0].set_identifier, NA);
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "eu-west-1"), (DEFAULT, "eu-west-1")])
    );
}

#[tokio::test]
async fn drain_and_undrain_move_traffic_and_dry_run_writes_nothing() {
    let config = two_region_config().await;
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let dry = failover
        .handle(
            json!({"action": "drain", "region": "us-east-1", "dryRun": true}),
            "d0",
        )
        .await;
    assert!(dry.dry_run && !dry.applied, "{dry:?}");
    assert_eq!(status(&dry, "us-east-1"), Status::Drained);
    assert_eq!(changed(&dry).len(), 1);
    let after_dry = failover.handle(json!({"action": "status"}), "s0").await;
    assert_eq!(
        status(&after_dry, "us-east-1"),
        Status::Healthy,
        "dry run stored nothing"
    );
    assert!(after_dry.changes.is_empty());
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "us-east-1"), (DEFAULT, "eu-west-1")])
    );

    let drained = failover
        .handle(json!({"action": "drain", "region": "us-east-1"}), "d1")
        .await;
    assert!(drained.applied, "{drained:?}");
    assert_eq!(status(&drained, "us-east-1"), Status::Drained);
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "eu-west-1"), (DEFAULT, "eu-west-1")])
    );
    // Healthy signals do not bring a drained region back.
    let ok = failover.handle(alarm_event("us-east-1", "OK"), "o1").await;
    assert_eq!(status(&ok, "us-east-1"), Status::Drained);
    assert!(ok.changes.is_empty());

    let undrained = failover
        .handle(json!({"action": "undrain", "region": "us-east-1"}), "u1")
        .await;
    assert_eq!(status(&undrained, "us-east-1"), Status::Healthy);
    assert!(undrained.applied, "{undrained:?}");
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "us-east-1"), (DEFAULT, "eu-west-1")])
    );
}

#[tokio::test]
async fn a_residency_locked_location_stays_and_is_reported() {
    let (zone_id, zone_name) = hosted_zone().await;
    let config = config_json(
        &zone_id,
        &zone_name,
        &[("us-east-1", "hc-1"), ("eu-west-1", "hc-2")],
        &[
            (
                NA,
                json!({"ContinentCode": "NA"}),
                &["us-east-1", "eu-west-1"],
            ),
            (
                "EU residency",
                json!({"ContinentCode": "EU"}),
                &["eu-west-1"],
            ),
            (
                DEFAULT,
                json!({"CountryCode": "*"}),
                &["eu-west-1", "us-east-1"],
            ),
        ],
    );
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let report = failover
        .handle(alarm_event("eu-west-1", "ALARM"), "a1")
        .await;
    assert_eq!(
        changed(&report),
        [(
            DEFAULT.into(),
            Some("eu-west-1".into()),
            "us-east-1".into(),
            Reason::RegionUnavailable
        )]
    );
    assert!(report.applied);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(report.errors[0].code, ErrorCode::NoHealthyRegion);
    assert_eq!(
        report.errors[0].set_identifier.as_deref(),
        Some("EU residency")
    );
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[
            (NA, "us-east-1"),
            ("EU residency", "eu-west-1"),
            (DEFAULT, "us-east-1")
        ])
    );
}

#[tokio::test]
async fn concurrent_invocations_with_the_same_signal_make_one_change() {
    let config = two_region_config().await;
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let (a, b) = tokio::join!(
        failover.handle(alarm_event("us-east-1", "ALARM"), "c1"),
        failover.handle(alarm_event("us-east-1", "ALARM"), "c2"),
    );
    for report in [&a, &b] {
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(status(report, "us-east-1"), Status::Unhealthy);
    }
    let applied: Vec<&Report> = [&a, &b].into_iter().filter(|r| r.applied).collect();
    assert_eq!(applied.len(), 1, "exactly one writes: {a:?} {b:?}");
    assert_eq!(applied[0].changes.len(), 1);
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "eu-west-1"), (DEFAULT, "eu-west-1")])
    );
}

#[tokio::test]
async fn the_schedule_polls_moto_health_checks() {
    // moto's GetHealthCheckStatus always reports success: the schedule sees
    // every region healthy and reconciles.
    let (us, eu) = (
        health_check("us-east-1").await,
        health_check("eu-west-1").await,
    );
    let config = two_region_config_with_checks(&us, &eu).await;
    let failover = failover(&config).await;
    failover
        .handle(json!({"action": "drain", "region": "eu-west-1"}), "d")
        .await;
    let report = failover.handle(schedule_event(), "s1").await;
    assert_eq!(report.trigger, "SCHEDULE");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(status(&report, "us-east-1"), Status::Healthy);
    assert_eq!(status(&report, "eu-west-1"), Status::Drained);
    assert_eq!(
        records_by_region(failover.config()).await,
        map(&[(NA, "us-east-1"), (DEFAULT, "us-east-1")])
    );

    // A health check moto does not know is an error for that region only.
    let mut broken = config.clone();
    broken["regions"]["eu-west-1"]["healthCheckId"] = json!("no-such-check");
    let report = geoprov_tests::failover::failover(&broken)
        .await
        .handle(schedule_event(), "s2")
        .await;
    assert_eq!(report.count(ErrorCode::HealthCheckFailed), 1, "{report:?}");
    assert_eq!(report.errors[0].region.as_deref(), Some("eu-west-1"));
}

#[tokio::test]
async fn an_event_for_an_unknown_region_writes_nothing_not_even_a_reconcile() {
    let config = two_region_config().await;
    let failover = failover(&config).await;
    let cfg = failover.config().clone();
    let report = failover
        .handle(json!({"action": "drain", "region": "ap-south-1"}), "x")
        .await;
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(report.errors[0].code, ErrorCode::UnknownRegion);
    assert_eq!(report.errors[0].region.as_deref(), Some("ap-south-1"));
    assert!(report.changes.is_empty() && !report.applied);
    assert_eq!(status(&report, "us-east-1"), Status::Healthy);
    assert!(
        records_by_region(&cfg).await.is_empty(),
        "no record created"
    );
}

#[tokio::test]
async fn unknown_alarms_and_invalid_events_change_nothing() {
    let config = two_region_config().await;
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let mut stray = alarm_event("us-east-1", "ALARM");
    stray["detail"]["alarmName"] = json!("some-other-alarm");
    let report = failover.handle(stray, "x1").await;
    assert_eq!(report.errors[0].code, ErrorCode::UnknownAlarm);
    assert!(report.changes.is_empty());

    let report = failover.handle(json!({"hello": "world"}), "x2").await;
    assert_eq!(report.trigger, "INVALID_EVENT");
    assert_eq!(report.errors[0].code, ErrorCode::InvalidEvent);
    assert_eq!(
        records_by_region(&cfg).await,
        map(&[(NA, "us-east-1"), (DEFAULT, "eu-west-1")])
    );
}

#[tokio::test]
async fn every_country_and_five_regions_apply_correctly() {
    let (zone_id, zone_name) = hosted_zone().await;
    let config = every_country_config(&zone_id, &zone_name);
    let cfg = FailoverConfig::from_json(&config.to_string()).unwrap();
    assert_eq!(cfg.locations.len(), 250);
    assert_eq!(cfg.regions.len(), 5);

    let failover = reconciled(&config).await;
    let expected = |down: &[&str]| expected_targets(&cfg, down);
    assert_eq!(records_by_region(&cfg).await, expected(&[]));

    let report = failover
        .handle(alarm_event("eu-west-1", "ALARM"), "a1")
        .await;
    assert!(
        report.applied && report.errors.is_empty(),
        "{:?}",
        report.errors
    );
    // eu-west-1 is the first choice of every fifth location.
    assert_eq!(report.changes.len(), 50);
    assert_eq!(records_by_region(&cfg).await, expected(&["eu-west-1"]));

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a2")
        .await;
    assert!(report.applied, "{:?}", report.errors);
    assert_eq!(
        records_by_region(&cfg).await,
        expected(&["eu-west-1", "us-east-1"])
    );
}
