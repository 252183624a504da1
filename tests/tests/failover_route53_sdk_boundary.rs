//! What moto's Route 53 cannot do, tested at the SDK boundary with
//! aws-smithy-mocks: unhealthy health checker observations, Throttling and
//! PriorRequestNotComplete (as the XML error responses Route 53 sends, so the
//! SDK's own error parsing is exercised), and changes that stay PENDING. The
//! failover state stays in moto's DynamoDB.

use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
use aws_sdk_route53::operation::get_change::GetChangeOutput;
use aws_sdk_route53::operation::get_health_check_status::GetHealthCheckStatusOutput;
use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use aws_sdk_route53::primitives::DateTime;
use aws_sdk_route53::types::{
    ChangeAction, ChangeInfo, ChangeStatus, GeoLocation, HealthCheckObservation, ResourceRecord,
    ResourceRecordSet, RrType, StatusReport,
};
use aws_sdk_route53::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use endpoint_failover::config::{FailoverConfig, GeoLocation as ConfigGeo};
use endpoint_failover::handler::Failover;
use endpoint_failover::health::{Signal, Status};
use endpoint_failover::report::ErrorCode;
use endpoint_failover::route53::{Route53, SdkRoute53, Upsert};
use geoprov_tests::failover::{
    endpoint, fresh_store, schedule_event, test_bounds, two_region_config, TEST_RETRY,
};

const ZONE: &str = "Z0123456789";
const NAME: &str = "global.iot.example.com";

fn mocked(rules: &[&Rule]) -> SdkRoute53 {
    let client: Client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::disabled()));
    SdkRoute53::new(client, TEST_RETRY)
}

/// Route 53's XML error document.
fn route53_error(code: &str) -> Option<String> {
    Some(format!(
        r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} (test)</Message></Error><RequestId>7c4d1a3e-test</RequestId></ErrorResponse>"#
    ))
}

fn observations(successes: usize, failures: usize) -> GetHealthCheckStatusOutput {
    let report = |status: &str| {
        HealthCheckObservation::builder()
            .region("us-east-1".into())
            .ip_address("15.177.0.1")
            .status_report(
                StatusReport::builder()
                    .status(status)
                    .checked_time(DateTime::from_secs(1_795_000_000))
                    .build(),
            )
            .build()
    };
    let mut output =
        GetHealthCheckStatusOutput::builder().set_health_check_observations(Some(Vec::new()));
    for _ in 0..successes {
        output = output.health_check_observations(report("Success: HTTP Status Code 200, OK"));
    }
    for _ in 0..failures {
        output = output.health_check_observations(report(
            "Failure: Connection timed out. The endpoint or the internet connection is down.",
        ));
    }
    output.build().unwrap()
}

fn change_info(status: ChangeStatus) -> ChangeInfo {
    ChangeInfo::builder()
        .id("/change/C2682N5HXP0BZ4")
        .status(status)
        .submitted_at(DateTime::from_secs(1_795_000_000))
        .build()
        .unwrap()
}

fn upsert_output() -> ChangeResourceRecordSetsOutput {
    ChangeResourceRecordSetsOutput::builder()
        .change_info(change_info(ChangeStatus::Pending))
        .build()
}

fn one_upsert() -> Vec<Upsert> {
    vec![Upsert {
        set_identifier: "US East IoT Global Endpoint".into(),
        geo_location: ConfigGeo::continent("NA"),
        value: endpoint("eu-west-1"),
    }]
}

#[tokio::test]
async fn health_checker_observations_follow_route53s_18_percent_rule() {
    let rule = |id: &'static str, ok, bad| {
        mock!(Client::get_health_check_status)
            .match_requests(move |r| r.health_check_id() == Some(id))
            .then_output(move || observations(ok, bad))
    };
    let (down, up, silent) = (rule("down", 2, 14), rule("up", 3, 13), rule("silent", 0, 0));
    let route53 = mocked(&[&down, &up, &silent]);

    let seen = route53.observations("down").await.unwrap();
    assert_eq!((seen.checkers, seen.successes), (16, 2));
    assert_eq!(seen.signal(), Some(Signal::Unhealthy));
    assert_eq!(
        route53.observations("up").await.unwrap().signal(),
        Some(Signal::Healthy)
    );
    assert_eq!(route53.observations("silent").await.unwrap().signal(), None);
}

#[tokio::test]
async fn throttling_and_prior_request_not_complete_are_retried() {
    for code in ["Throttling", "PriorRequestNotComplete"] {
        let rule = mock!(Client::change_resource_record_sets)
            .sequence()
            .http_status(400, route53_error(code))
            .times(2)
            .output(upsert_output)
            .build();
        let route53 = mocked(&[&rule]);
        let id = route53.upsert(ZONE, NAME, 60, &one_upsert()).await;
        assert_eq!(id.as_deref(), Ok("/change/C2682N5HXP0BZ4"), "{code}");
        assert_eq!(rule.num_calls(), 3, "{code}");
    }
}

/// ChangeResourceRecordSets answering with Route 53's `code` error, always.
fn upserts_always_fail_with(code: &str) -> Rule {
    mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(400, route53_error(code))
        .repeatedly()
        .build()
}

#[tokio::test]
async fn retries_are_bounded_and_other_errors_are_not_retried() {
    for (code, calls) in [
        ("Throttling", TEST_RETRY.attempts),
        ("InvalidChangeBatch", 1),
    ] {
        let rule = upserts_always_fail_with(code);
        let err = mocked(&[&rule])
            .upsert(ZONE, NAME, 60, &one_upsert())
            .await
            .unwrap_err();
        assert_eq!(err.code.as_deref(), Some(code));
        assert_eq!(err.attempts, calls, "{code}");
        assert_eq!(rule.num_calls(), calls as usize, "{code}");
    }
}

fn record(id: &str, geo: GeoLocation, region: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name(format!("{NAME}."))
        .r#type(RrType::Cname)
        .set_identifier(id)
        .geo_location(geo)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value(endpoint(region))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// The two-region failover with Route 53 mocked and its state in moto.
async fn failover_with(
    rules: &[&Rule],
) -> Failover<SdkRoute53, endpoint_failover::state::DynamoFailoverStore> {
    let mut config = two_region_config().await;
    config["hostedZoneId"] = ZONE.into();
    config["recordName"] = NAME.into();
    config["regions"]["us-east-1"]["healthCheckId"] = "hc-us".into();
    config["regions"]["eu-west-1"]["healthCheckId"] = "hc-eu".into();
    let config = FailoverConfig::from_json(&config.to_string()).unwrap();
    let store = fresh_store(&config).await;
    Failover::new(config, mocked(rules), store, test_bounds())
}

fn health_rules() -> (Rule, Rule) {
    (
        mock!(Client::get_health_check_status)
            .match_requests(|r| r.health_check_id() == Some("hc-us"))
            .then_output(|| observations(1, 15)),
        mock!(Client::get_health_check_status)
            .match_requests(|r| r.health_check_id() == Some("hc-eu"))
            .then_output(|| observations(16, 0)),
    )
}

fn records_rule() -> Rule {
    mock!(Client::list_resource_record_sets).then_output(|| {
        ListResourceRecordSetsOutput::builder()
            .resource_record_sets(record(
                "US East IoT Global Endpoint",
                GeoLocation::builder().continent_code("NA").build(),
                "us-east-1",
            ))
            .resource_record_sets(record(
                "Default IoT Global Endpoint",
                GeoLocation::builder().country_code("*").build(),
                "eu-west-1",
            ))
            .is_truncated(false)
            .max_items(300)
            .build()
            .unwrap()
    })
}

/// Only the NA record, as one UPSERT to eu-west-1 with its GeoLocation kept.
fn expected_upsert_rule() -> Rule {
    mock!(Client::change_resource_record_sets)
        .match_requests(|r| {
            let changes = r.change_batch().map(|b| b.changes()).unwrap_or_default();
            changes.len() == 1
                && changes[0].action() == &ChangeAction::Upsert
                && changes[0].resource_record_set().is_some_and(|s| {
                    s.set_identifier() == Some("US East IoT Global Endpoint")
                        && s.geo_location().and_then(|g| g.continent_code()) == Some("NA")
                        && s.ttl() == Some(60)
                        && s.resource_records()[0].value() == endpoint("eu-west-1")
                })
        })
        .then_output(upsert_output)
}

#[tokio::test]
async fn unhealthy_observations_fail_over_and_the_change_is_awaited_until_insync() {
    let (us, eu) = health_rules();
    let records = records_rule();
    let upsert = expected_upsert_rule();
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Pending))
                .build()
        })
        .times(2)
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Insync))
                .build()
        })
        .build();
    let failover = failover_with(&[&us, &eu, &records, &upsert, &get_change]).await;

    let report = failover.handle(schedule_event(), "s1").await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.health[&"us-east-1".try_into().unwrap()],
        Status::Unhealthy
    );
    assert_eq!(
        report.health[&"eu-west-1".try_into().unwrap()],
        Status::Healthy
    );
    assert!(report.applied);
    assert_eq!(report.change_id.as_deref(), Some("/change/C2682N5HXP0BZ4"));
    assert_eq!(report.insync, Some(true));
    assert_eq!(upsert.num_calls(), 1);
    assert_eq!(get_change.num_calls(), 3);
}

#[tokio::test]
async fn a_change_still_pending_at_the_bound_is_reported() {
    let (us, eu) = health_rules();
    let records = records_rule();
    let upsert = expected_upsert_rule();
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Pending))
                .build()
        })
        .repeatedly()
        .build();
    let failover = failover_with(&[&us, &eu, &records, &upsert, &get_change]).await;

    let report = failover.handle(schedule_event(), "s1").await;
    assert!(report.applied, "{report:?}");
    assert_eq!(report.insync, Some(false));
    assert_eq!(report.count(ErrorCode::NotInsync), 1, "{report:?}");
    assert!(get_change.num_calls() >= 2);
}

#[tokio::test]
async fn throttled_writes_that_never_succeed_leave_the_records_unapplied() {
    let (us, eu) = health_rules();
    let records = records_rule();
    let throttled = upserts_always_fail_with("Throttling");
    let failover = failover_with(&[&us, &eu, &records, &throttled]).await;

    let report = failover.handle(schedule_event(), "s1").await;
    assert!(!report.applied);
    assert_eq!(report.count(ErrorCode::Route53Failed), 1, "{report:?}");
    assert_eq!(report.change_id, None);
    assert_eq!(throttled.num_calls(), TEST_RETRY.attempts as usize);
}
