//! What moto's Route 53 cannot do, tested at the SDK boundary with
//! aws-smithy-mocks: Throttling and PriorRequestNotComplete (as the XML error
//! responses Route 53 sends, so the SDK's own error parsing is exercised),
//! changes that stay PENDING, and listings over several pages. The failover
//! state and the region alarms stay in moto.

use aws_sdk_route53::Client;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
use aws_sdk_route53::operation::get_change::GetChangeOutput;
use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use aws_sdk_route53::primitives::DateTime;
use aws_sdk_route53::types::{ChangeAction, ChangeInfo, ChangeStatus, RrType};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use endpoint_failover::handler::Failover;
use geoprov_failover::alarms::SdkAlarms;
use geoprov_failover::config::FailoverConfig;
use geoprov_failover::health::Status;
use geoprov_failover::report::ErrorCode;
use geoprov_failover::route53::{Route53, SdkRoute53, to_sdk};
use geoprov_failover::state::DynamoFailoverStore;
use geoprov_failover::tree::{self, ZoneChange};
use geoprov_tests::failover::{
    TEST_RETRY, alarm_event, fresh_store, moto_alarms, test_bounds, two_region_config,
};
use route53_answer::RecordSet;

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

fn change_info(status: ChangeStatus) -> ChangeInfo {
    ChangeInfo::builder()
        .id("/change/C2682N5HXP0BZ4")
        .status(status)
        .submitted_at(DateTime::from_secs(1_795_000_000))
        .build()
        .unwrap()
}

fn change_output() -> ChangeResourceRecordSetsOutput {
    ChangeResourceRecordSetsOutput::builder()
        .change_info(change_info(ChangeStatus::Pending))
        .build()
}

fn one_upsert() -> Vec<ZoneChange> {
    vec![ZoneChange::Upsert(RecordSet::cname(
        &format!("eu-west-1.default.{NAME}"),
        "abc-ats.iot.eu-west-1.amazonaws.com",
        60,
    ))]
}

#[tokio::test]
async fn throttling_and_prior_request_not_complete_are_retried() {
    for code in ["Throttling", "PriorRequestNotComplete"] {
        let rule = mock!(Client::change_resource_record_sets)
            .sequence()
            .http_status(400, route53_error(code))
            .times(2)
            .output(change_output)
            .build();
        let route53 = mocked(&[&rule]);
        let id = route53.change(ZONE, &one_upsert()).await;
        assert_eq!(id.as_deref(), Ok("/change/C2682N5HXP0BZ4"), "{code}");
        assert_eq!(rule.num_calls(), 3, "{code}");
    }
}

/// ChangeResourceRecordSets answering with Route 53's `code` error, always.
fn changes_always_fail_with(code: &str) -> Rule {
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
        let rule = changes_always_fail_with(code);
        let err = mocked(&[&rule])
            .change(ZONE, &one_upsert())
            .await
            .unwrap_err();
        assert_eq!(err.code.as_deref(), Some(code));
        assert_eq!(err.attempts, calls, "{code}");
        assert_eq!(rule.num_calls(), calls as usize, "{code}");
    }
}

/// The two-region configuration on the mocked zone.
async fn config() -> FailoverConfig {
    let mut config = two_region_config().await;
    config["hostedZoneId"] = ZONE.into();
    config["recordName"] = NAME.into();
    FailoverConfig::from_json(&config.to_string()).unwrap()
}

/// The two-region failover with Route 53 mocked, its state and alarms in moto.
async fn failover_with(rules: &[&Rule]) -> Failover<SdkRoute53, DynamoFailoverStore, SdkAlarms> {
    let config = config().await;
    let store = fresh_store(&config).await;
    let alarms = moto_alarms(&config).await;
    Failover::new(config, mocked(rules), store, alarms, test_bounds())
}

/// The zone holding the whole tree of the two-region configuration.
fn built_tree_rule(config: &FailoverConfig) -> Rule {
    let records: Vec<_> = tree::apply(&[], &tree::plan(config, &[], &|_| true).changes)
        .iter()
        .map(|r| to_sdk(r).unwrap())
        .collect();
    mock!(Client::list_resource_record_sets).then_output(move || {
        ListResourceRecordSetsOutput::builder()
            .set_resource_record_sets(Some(records.clone()))
            .is_truncated(false)
            .max_items(300)
            .build()
            .unwrap()
    })
}

/// The change an ALARM for us-east-1 makes: North America's eu-west-1 step
/// becomes the end of its chain (its SECONDARY names eu-west-1) and its
/// alias moves there; the default chain's eu-west-1 step becomes the end
/// of its chain, its SECONDARY replaced by the plain CNAME with the
/// guide's atomic pair, DELETE + CREATE; then the us-east-1 steps no chain
/// uses are deleted.
fn expected_change_rule() -> Rule {
    mock!(Client::change_resource_record_sets)
        .match_requests(|r| {
            let changes = r.change_batch().map(|b| b.changes()).unwrap_or_default();
            let actions: Vec<&ChangeAction> = changes.iter().map(|c| c.action()).collect();
            let record = |i: usize| changes[i].resource_record_set();
            changes.len() == 8
                && actions[..4]
                    == [
                        &ChangeAction::Upsert,
                        &ChangeAction::Upsert,
                        &ChangeAction::Delete,
                        &ChangeAction::Create,
                    ]
                && actions[4..].iter().all(|a| *a == &ChangeAction::Delete)
                && record(1).is_some_and(|s| {
                    s.set_identifier() == Some("US East IoT Global Endpoint")
                        && s.geo_location().and_then(|g| g.continent_code()) == Some("NA")
                        && s.alias_target().is_some_and(|a| {
                            a.dns_name() == format!("eu-west-1.continent-na.{NAME}")
                                && !a.evaluate_target_health()
                        })
                })
                && record(2).is_some_and(|s| {
                    s.name() == format!("eu-west-1.default.{NAME}")
                        && s.set_identifier() == Some(tree::SECONDARY_ID)
                        && s.alias_target().is_some()
                })
                && record(3).is_some_and(|s| {
                    s.name() == format!("eu-west-1.default.{NAME}")
                        && s.set_identifier() == Some(tree::SECONDARY_ID)
                        && s.alias_target().is_none()
                        && s.health_check_id().is_none()
                })
        })
        .then_output(change_output)
}

#[tokio::test]
async fn an_alarm_changes_the_tree_and_the_change_is_awaited_until_insync() {
    let records = built_tree_rule(&config().await);
    let change = expected_change_rule();
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
    let failover = failover_with(&[&records, &change, &get_change]).await;

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.health[&"us-east-1".try_into().unwrap()],
        Status::Unhealthy
    );
    assert!(report.applied);
    assert_eq!(report.change_id.as_deref(), Some("/change/C2682N5HXP0BZ4"));
    assert_eq!(report.insync, Some(true));
    assert_eq!(change.num_calls(), 1);
    assert_eq!(get_change.num_calls(), 3);
}

#[tokio::test]
async fn a_change_still_pending_at_the_bound_is_reported() {
    let records = built_tree_rule(&config().await);
    let change = expected_change_rule();
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Pending))
                .build()
        })
        .repeatedly()
        .build();
    let failover = failover_with(&[&records, &change, &get_change]).await;

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert!(report.applied, "{report:?}");
    assert_eq!(report.insync, Some(false));
    assert_eq!(report.count(ErrorCode::NotInsync), 1, "{report:?}");
    assert!(get_change.num_calls() >= 2);
}

#[tokio::test]
async fn throttled_writes_that_never_succeed_leave_the_records_unapplied() {
    let records = built_tree_rule(&config().await);
    let throttled = changes_always_fail_with("Throttling");
    let failover = failover_with(&[&records, &throttled]).await;

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert!(!report.applied);
    assert_eq!(report.count(ErrorCode::Route53Failed), 1, "{report:?}");
    assert_eq!(report.change_id, None);
    assert_eq!(throttled.num_calls(), TEST_RETRY.attempts as usize);
}

#[tokio::test]
async fn listing_follows_pages_and_stops_past_the_global_name() {
    let config = config().await;
    let all: Vec<_> = tree::apply(&[], &tree::plan(&config, &[], &|_| true).changes);
    let sdk: Vec<_> = all.iter().map(|r| to_sdk(r).unwrap()).collect();
    let outside = to_sdk(&RecordSet::cname("www.example.com", "x.example.net", 60)).unwrap();
    let (first, rest) = sdk.split_at(3);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let page_one = mock!(Client::list_resource_record_sets)
        .match_requests(|r| r.start_record_identifier().is_none())
        .then_output(move || {
            ListResourceRecordSetsOutput::builder()
                .set_resource_record_sets(Some(first.clone()))
                .is_truncated(true)
                .next_record_name(format!("us-east-1.continent-na.{NAME}"))
                .next_record_type(RrType::Cname)
                .next_record_identifier("geoprov-primary")
                .max_items(3)
                .build()
                .unwrap()
        });
    let page_two = mock!(Client::list_resource_record_sets)
        .match_requests(|r| r.start_record_identifier() == Some("geoprov-primary"))
        .then_output(move || {
            let mut records = rest.clone();
            records.push(outside.clone());
            ListResourceRecordSetsOutput::builder()
                .set_resource_record_sets(Some(records))
                .is_truncated(true)
                .next_record_name("zzz.example.com")
                .max_items(300)
                .build()
                .unwrap()
        });
    let listed = mocked(&[&page_one, &page_two])
        .records(ZONE, NAME)
        .await
        .unwrap();
    assert_eq!(listed.len(), all.len());
    assert_eq!(
        page_one.num_calls() + page_two.num_calls(),
        2,
        "stops past the global name"
    );
}
