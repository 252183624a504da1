//! endpoint-failover against moto: the record tree in Route 53, each region's
//! alarm in CloudWatch, and the health state, ledger and lease in DynamoDB.
//! What resolvers get is read from moto's records with the Route 53 answer
//! model. moto's changes are INSYNC at once and it evaluates no health; those
//! gaps are covered in `failover_route53_sdk_boundary.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use geoprov_failover::config::FailoverConfig;
use geoprov_failover::health::Status;
use geoprov_failover::report::{ErrorCode, Report};
use geoprov_failover::route53::SdkRoute53;
use geoprov_failover::state::{
    DynamoFailoverStore, FailoverStore, LedgerEntry, LedgerError, failover_pk,
};
use geoprov_failover::tree::{self, ZoneChange};
use geoprov_tests::failover::{
    MotoFailover, TEST_RETRY, alarm_event, alarm_event_at, answers, answers_from,
    every_country_config, expected_targets, failover, failover_with_store, flat_records,
    fresh_store, hosted_zone, moto_alarms, moto_route53, region_alarm, schedule_event,
    set_region_alarm, test_bounds, two_region_config, write_records, zone_records,
};
use geoprov_tests::free_port;
use route53_answer::{GeoLocation, RecordSet};
use serde_json::{Value, json};

const NA: &str = "US East IoT Global Endpoint";
const DEFAULT: &str = "Default IoT Global Endpoint";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every region up: North America to us-east-1, the default to eu-west-1.
fn preferred() -> BTreeMap<String, String> {
    map(&[(NA, "us-east-1"), (DEFAULT, "eu-west-1")])
}

/// Everyone on eu-west-1.
fn all_on_eu_west_1() -> BTreeMap<String, String> {
    map(&[(NA, "eu-west-1"), (DEFAULT, "eu-west-1")])
}

/// The whole tree in moto answers as preferred, and with us-east-1's health
/// check failing sends North America to eu-west-1 by health alone.
async fn assert_the_whole_tree_answers(cfg: &FailoverConfig) {
    assert_eq!(answers(cfg, &[]).await, preferred());
    assert_eq!(answers(cfg, &["us-east-1"]).await, all_on_eu_west_1());
}

fn status(report: &Report, region: &str) -> Status {
    report.health[&region.try_into().unwrap()]
}

fn codes(report: &Report) -> Vec<ErrorCode> {
    report.errors.iter().map(|e| e.code).collect()
}

fn parsed(config: &Value) -> FailoverConfig {
    FailoverConfig::from_json(&config.to_string()).unwrap()
}

async fn reconciled(config: &Value) -> MotoFailover {
    let failover = failover(config).await;
    let report = failover
        .handle(json!({"action": "reconcile"}), "setup")
        .await;
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    failover
}

/// The regions of each location's chain, as the report gives them.
fn chains(report: &Report) -> BTreeMap<String, Vec<String>> {
    report
        .locations
        .iter()
        .map(|l| {
            let chain = l
                .steps
                .iter()
                .filter(|s| s.in_chain)
                .map(|s| s.region.to_string())
                .collect();
            (l.set_identifier.clone(), chain)
        })
        .collect()
}

#[tokio::test]
async fn a_reconcile_builds_the_tree_from_nothing_and_a_second_changes_nothing() {
    let config = two_region_config().await;
    let failover = failover(&config).await;
    let cfg = failover.config().clone();

    let report = failover.handle(json!({"action": "reconcile"}), "r1").await;
    assert_eq!(report.trigger, "RECONCILE");
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    assert_eq!(report.insync, Some(true));
    // NA: two steps, each a PRIMARY and a SECONDARY, and its alias; the
    // same for the default.
    assert_eq!(report.changes.len(), 10, "{:?}", report.changes);
    assert!(report.changes.iter().all(|c| c.action == "UPSERT"));
    assert_eq!(
        chains(&report),
        BTreeMap::from([
            (
                NA.to_owned(),
                vec!["us-east-1".to_owned(), "eu-west-1".to_owned()]
            ),
            (
                DEFAULT.to_owned(),
                vec!["eu-west-1".to_owned(), "us-east-1".to_owned()]
            ),
        ])
    );
    let answered: Vec<_> = report
        .locations
        .iter()
        .map(|l| l.answer.as_ref().map(|r| r.to_string()))
        .collect();
    assert_eq!(
        answered,
        [Some("us-east-1".into()), Some("eu-west-1".into())]
    );

    // The records as Route 53 holds them.
    let records = zone_records(&cfg).await;
    assert_eq!(records.len(), 10);
    let alias = records
        .iter()
        .find(|r| r.set_identifier.as_deref() == Some(NA))
        .expect("the NA geolocation alias");
    assert_eq!(alias.geo_location, Some(GeoLocation::continent("NA")));
    let target = alias.alias_target.as_ref().expect("an alias");
    assert!(!target.evaluate_target_health);
    let primaries: Vec<&RecordSet> = records
        .iter()
        .filter(|r| r.set_identifier.as_deref() == Some(tree::PRIMARY_ID))
        .collect();
    assert_eq!(primaries.len(), 4);
    assert!(
        primaries
            .iter()
            .all(|r| r.health_check_id.is_some() && r.ttl == Some(60))
    );

    // The data plane alone: with us-east-1's health check failing, North
    // America resolves to eu-west-1 with no change to the records.
    assert_the_whole_tree_answers(&cfg).await;

    let again = failover.handle(json!({"action": "reconcile"}), "r2").await;
    assert!(again.changes.is_empty() && !again.applied, "{again:?}");
    assert_eq!(again.change_id, None);
}

#[tokio::test]
async fn a_reconcile_migrates_the_flat_records_in_one_pass_without_a_gap() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    write_records(&cfg, &flat_records(&cfg)).await;
    let before = zone_records(&cfg).await;
    assert_eq!(answers_from(&cfg, before.clone(), &[]), preferred());

    // Each prefix of the changes the function will send answers every location.
    let planned = tree::plan(&cfg, &before, &|_| true);
    for k in 0..=planned.changes.len() {
        let zone = tree::apply(&before, &planned.changes[..k]);
        assert_eq!(
            answers_from(&cfg, zone, &[]),
            preferred(),
            "after {k} changes"
        );
    }

    let failover = failover(&config).await;
    let report = failover.handle(json!({"action": "reconcile"}), "m1").await;
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    let replaced: Vec<&str> = report
        .changes
        .iter()
        .filter(|c| c.action == "REPLACE")
        .filter_map(|c| c.set_identifier.as_deref())
        .collect();
    assert_eq!(replaced, [NA, DEFAULT]);
    assert_the_whole_tree_answers(&cfg).await;
    let again = failover.handle(json!({"action": "reconcile"}), "m2").await;
    assert!(again.changes.is_empty(), "{again:?}");
}

#[tokio::test]
async fn an_alarm_takes_a_region_out_and_failback_waits_the_interval() {
    let mut config = two_region_config().await;
    config["minChangeIntervalSeconds"] = json!(2);
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();

    let report = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a1")
        .await;
    assert_eq!(report.trigger, "ALARM_STATE_CHANGE");
    assert_eq!(status(&report, "us-east-1"), Status::Unhealthy);
    assert!(report.applied && report.errors.is_empty(), "{report:?}");
    assert_eq!(chains(&report)[NA], ["eu-west-1"]);
    assert_eq!(chains(&report)[DEFAULT], ["eu-west-1"]);
    // Even with us-east-1's health check green again, nobody is sent there.
    assert_eq!(answers(&cfg, &[]).await, all_on_eu_west_1());

    // Recovered, but held out for the interval.
    let ok = failover.handle(alarm_event("us-east-1", "OK"), "o1").await;
    assert_eq!(status(&ok, "us-east-1"), Status::Healthy);
    assert!(ok.changes.is_empty(), "{ok:?}");
    assert_eq!(ok.deferred.len(), 1, "{ok:?}");
    assert_eq!(ok.deferred[0].region.as_str(), "us-east-1");
    let held = ok.locations[0]
        .steps
        .iter()
        .find(|s| s.region.as_str() == "us-east-1")
        .unwrap();
    assert!(!held.in_chain && held.held_until.is_some());
    assert_eq!(answers(&cfg, &[]).await[NA], "eu-west-1");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let back = failover.handle(json!({"action": "reconcile"}), "r1").await;
    assert!(back.applied, "{back:?}");
    assert_eq!(answers(&cfg, &[]).await, preferred());
}

#[tokio::test]
async fn a_stale_alarm_after_recovery_changes_nothing() {
    let failover = reconciled(&two_region_config().await).await;
    let cfg = failover.config().clone();
    let down = failover
        .handle(alarm_event_at("us-east-1", "ALARM", 30), "a1")
        .await;
    assert_eq!(status(&down, "us-east-1"), Status::Unhealthy);
    let up = failover
        .handle(alarm_event_at("us-east-1", "OK", 10), "o1")
        .await;
    assert!(up.applied, "{up:?}");
    let healthy = answers(&cfg, &[]).await;
    assert_eq!(healthy, preferred());

    // An ALARM from before the recovery arrives late: dropped.
    let late = failover
        .handle(alarm_event_at("us-east-1", "ALARM", 20), "a2")
        .await;
    assert_eq!(codes(&late), [ErrorCode::StaleEvent], "{late:?}");
    assert_eq!(status(&late, "us-east-1"), Status::Healthy);
    assert!(late.changes.is_empty() && !late.applied);
    // Older than maxEventAgeSeconds (300 s): dropped too.
    let ancient = failover
        .handle(alarm_event_at("us-east-1", "ALARM", 3_600), "a3")
        .await;
    assert_eq!(codes(&ancient), [ErrorCode::StaleEvent], "{ancient:?}");
    assert_eq!(answers(&cfg, &[]).await, healthy);
    let status_now = failover.handle(json!({"action": "status"}), "st").await;
    assert_eq!(status(&status_now, "us-east-1"), Status::Healthy);
}

#[tokio::test]
async fn a_redelivered_event_counts_once() {
    let mut config = two_region_config().await;
    config["failAfter"] = json!(2);
    let failover = reconciled(&config).await;
    let event = alarm_event("us-east-1", "ALARM");
    let first = failover.handle(event.clone(), "a1").await;
    let again = failover.handle(event, "a1-redelivered").await;
    assert_eq!(
        status(&again, "us-east-1"),
        Status::Healthy,
        "{first:?} {again:?}"
    );
    assert!(again.changes.is_empty());
    let second = failover
        .handle(alarm_event("us-east-1", "ALARM"), "a2")
        .await;
    assert_eq!(status(&second, "us-east-1"), Status::Unhealthy);
}

#[tokio::test]
async fn drain_and_undrain_move_the_chains_and_dry_run_writes_nothing() {
    let failover = reconciled(&two_region_config().await).await;
    let cfg = failover.config().clone();
    let before = zone_records(&cfg).await;

    let dry = failover
        .handle(
            json!({"action": "drain", "region": "us-east-1", "dryRun": true}),
            "d0",
        )
        .await;
    assert!(
        dry.dry_run && !dry.applied && !dry.changes.is_empty(),
        "{dry:?}"
    );
    assert_eq!(status(&dry, "us-east-1"), Status::Drained);
    assert_eq!(
        zone_records(&cfg).await,
        before,
        "a dry run writes no record"
    );
    let status_after = failover.handle(json!({"action": "status"}), "st").await;
    assert_eq!(
        status(&status_after, "us-east-1"),
        Status::Unknown,
        "nor any state"
    );

    let drain = failover
        .handle(json!({"action": "drain", "region": "us-east-1"}), "d1")
        .await;
    assert!(drain.applied && drain.errors.is_empty(), "{drain:?}");
    assert_eq!(chains(&drain)[NA], ["eu-west-1"]);
    // us-east-1 healthy or not, nobody is sent there.
    assert_eq!(answers(&cfg, &[]).await, all_on_eu_west_1());
    // The drained region's steps are gone from the zone.
    let records = zone_records(&cfg).await;
    assert!(
        !records.iter().any(|r| r.name.starts_with("us-east-1.")),
        "{records:?}"
    );

    // Undrain takes effect at once (an operator's decision, not a recovery).
    let undrain = failover
        .handle(json!({"action": "undrain", "region": "us-east-1"}), "u1")
        .await;
    assert!(undrain.applied, "{undrain:?}");
    let mut after = zone_records(&cfg).await;
    let mut before = before;
    after.sort_by_key(RecordSet::key);
    before.sort_by_key(RecordSet::key);
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_conflicting_record_is_reported_and_other_locations_are_built() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    // Someone else's record for North America, under another set identifier.
    let foreign = RecordSet::cname(&cfg.record_name, "elsewhere.example.net", 300)
        .with_set_identifier("not geoprov")
        .with_geo_location(GeoLocation::continent("NA"));
    write_records(&cfg, &[ZoneChange::Upsert(foreign.clone())]).await;

    let failover = failover(&config).await;
    let report = failover.handle(json!({"action": "reconcile"}), "c1").await;
    assert!(report.applied, "{report:?}");
    assert_eq!(codes(&report), [ErrorCode::Conflict]);
    assert_eq!(report.errors[0].set_identifier.as_deref(), Some(NA));
    assert_eq!(
        report.errors[0].name.as_deref(),
        Some(cfg.record_name.as_str())
    );
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.location.as_deref() == Some(DEFAULT))
    );
    let records = zone_records(&cfg).await;
    assert!(
        records
            .iter()
            .any(|r| r.set_identifier.as_deref() == Some("not geoprov"))
    );
    let got = answers(&cfg, &[]).await;
    assert_eq!(got[DEFAULT], "eu-west-1");
    assert_eq!(got[NA], "elsewhere.example.net", "left as it was");
}

#[tokio::test]
async fn the_schedule_reads_each_regions_alarm_in_its_own_region() {
    let config = two_region_config().await;
    let failover = reconciled(&config).await;
    let cfg = failover.config().clone();
    region_alarm("us-east-1").await;
    region_alarm("eu-west-1").await;
    set_region_alarm("us-east-1", "ALARM").await;
    set_region_alarm("eu-west-1", "OK").await;

    let report = failover.handle(schedule_event(), "s1").await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(status(&report, "us-east-1"), Status::Unhealthy);
    assert_eq!(status(&report, "eu-west-1"), Status::Healthy);
    assert!(report.applied);
    assert_eq!(answers(&cfg, &[]).await, all_on_eu_west_1());

    // An alarm that cannot be found gives an UNKNOWN signal, which counts
    // toward failAfter (1 here): the region goes out, and the report says why.
    let mut other = config.clone();
    other["regions"]["eu-west-1"]["alarmName"] = json!("geoprov-health-nowhere");
    let missing = reconciled(&other).await;
    set_region_alarm("us-east-1", "OK").await;
    let read = missing.handle(schedule_event(), "s2").await;
    assert_eq!(codes(&read), [ErrorCode::HealthReadFailed], "{read:?}");
    assert_eq!(read.errors[0].region.as_deref(), Some("eu-west-1"));
    assert_eq!(status(&read, "eu-west-1"), Status::Unhealthy);
    assert_eq!(status(&read, "us-east-1"), Status::Healthy);
}

#[tokio::test]
async fn with_route53s_api_down_every_invocation_reports_and_health_alone_moves_north_america() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    reconciled(&config).await;

    // The same function with Route 53 at a closed port: its state and alarms still work.
    let sdk =
        geoprov_tests::sdk_config(&format!("http://127.0.0.1:{}", free_port()), "us-east-1").await;
    let dead = SdkRoute53::new(geoprov_failover::route53::client(&sdk), TEST_RETRY);
    let store = fresh_store(&cfg).await;
    let alarms = moto_alarms(&cfg).await;
    let failover =
        endpoint_failover::handler::Failover::new(cfg.clone(), dead, store, alarms, test_bounds());
    for event in [
        json!({"action": "reconcile"}),
        alarm_event("us-east-1", "ALARM"),
        schedule_event(),
        json!({"action": "drain", "region": "eu-west-1"}),
    ] {
        let started = Instant::now();
        let report = failover.handle(event.clone(), "down").await;
        assert!(!report.applied, "{report:?}");
        assert!(
            report.count(ErrorCode::Route53Failed) == 1,
            "{event}: {report:?}"
        );
        assert!(
            started.elapsed() < test_bounds().call_timeout,
            "{event}: bounded"
        );
    }
    // What resolvers get from the records already in Route 53, with
    // us-east-1's health check unhealthy: North America goes to eu-west-1.
    assert_eq!(answers(&cfg, &["us-east-1"]).await, all_on_eu_west_1());
}

/// A state store that pauses once, after the read the lease holder makes
/// (a fake, for what neither moto nor the emulator can do: stall a writer
/// between its read and its writes).
struct PausingStore {
    inner: DynamoFailoverStore,
    loads: std::sync::atomic::AtomicUsize,
    pause_on_load: usize,
    pause: Duration,
}

impl FailoverStore for PausingStore {
    async fn load(
        &self,
    ) -> Result<geoprov_failover::state::StoredState, geoprov_shared::registry::RegistryError> {
        let state = self.inner.load().await;
        let n = self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.pause_on_load {
            tokio::time::sleep(self.pause).await;
        }
        state
    }
    async fn update_region(
        &self,
        region: &geoprov_shared::device::RegionName,
        update: geoprov_failover::state::RegionUpdate,
        event_id: Option<&str>,
    ) -> Result<geoprov_failover::state::UpdateOutcome, geoprov_shared::registry::RegistryError>
    {
        self.inner.update_region(region, update, event_id).await
    }
    async fn try_lock(
        &self,
        owner: &str,
        duration: Duration,
    ) -> Result<Option<geoprov_failover::state::Lease>, geoprov_shared::registry::RegistryError>
    {
        self.inner.try_lock(owner, duration).await
    }
    async fn holds(
        &self,
        lease: &geoprov_failover::state::Lease,
    ) -> Result<bool, geoprov_shared::registry::RegistryError> {
        self.inner.holds(lease).await
    }
    async fn unlock(
        &self,
        lease: &geoprov_failover::state::Lease,
    ) -> Result<(), geoprov_shared::registry::RegistryError> {
        self.inner.unlock(lease).await
    }
    async fn record_changes(
        &self,
        lease: &geoprov_failover::state::Lease,
        entries: &[LedgerEntry],
        changed_at: i64,
        change_id: &str,
    ) -> Result<(), LedgerError> {
        self.inner
            .record_changes(lease, entries, changed_at, change_id)
            .await
    }
}

/// A writer A that drains us-east-1 and stalls after its read under the
/// lease, and the same function B on the same state.
async fn stalled_writer(
    cfg: &FailoverConfig,
    store: &DynamoFailoverStore,
    lease: Duration,
) -> endpoint_failover::handler::Failover<
    SdkRoute53,
    PausingStore,
    geoprov_failover::alarms::SdkAlarms,
> {
    let mut bounds = test_bounds();
    bounds.lease = lease;
    bounds.call_timeout = Duration::from_millis(500);
    bounds.lease_margin = Duration::from_millis(100);
    endpoint_failover::handler::Failover::new(
        cfg.clone(),
        moto_route53().await,
        PausingStore {
            inner: store.clone(),
            loads: Default::default(),
            pause_on_load: 2,
            pause: Duration::from_millis(2_500),
        },
        moto_alarms(cfg).await,
        bounds,
    )
}

#[tokio::test]
async fn a_writer_that_stalls_past_its_lease_never_applies_its_stale_plan() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    reconciled(&config).await;
    let store = fresh_store(&cfg).await;
    let a = stalled_writer(&cfg, &store, Duration::from_millis(1_500)).await;
    // B undrains while A stalls: the records A would write are stale.
    let b = failover_with_store(cfg.clone(), store.clone(), test_bounds()).await;
    let (a_report, b_report) = tokio::join!(
        a.handle(
            json!({"action": "drain", "region": "us-east-1"}),
            "writer-a"
        ),
        async {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            b.handle(
                json!({"action": "undrain", "region": "us-east-1"}),
                "writer-b",
            )
            .await
        }
    );
    assert!(!a_report.applied, "{a_report:?}");
    assert_eq!(a_report.count(ErrorCode::LeaseLost), 1, "{a_report:?}");
    assert!(a_report.change_ids.is_empty(), "A sent nothing");
    assert!(b_report.errors.is_empty(), "{b_report:?}");
    // The records are what the current state (undrained) asks for.
    assert_eq!(answers(&cfg, &[]).await, preferred());
    let check = failover_with_store(cfg.clone(), store, test_bounds()).await;
    let again = check.handle(json!({"action": "reconcile"}), "check").await;
    assert!(again.changes.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_writer_whose_lease_passed_on_is_fenced_out_though_its_clock_says_it_holds() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    reconciled(&config).await;
    let store = fresh_store(&cfg).await;
    // A's own clock gives it 60 s; the table is made to disagree (another
    // execution environment whose clock runs ahead sees the lease expired).
    let a = stalled_writer(&cfg, &store, Duration::from_secs(60)).await;
    let b = failover_with_store(cfg.clone(), store.clone(), test_bounds()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(
        &geoprov_tests::sdk_config(&geoprov_tests::moto().endpoint, geoprov_tests::TEST_REGION)
            .await,
    );
    let (a_report, b_report) = tokio::join!(
        a.handle(
            json!({"action": "drain", "region": "us-east-1"}),
            "writer-a"
        ),
        async {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            dynamodb
                .update_item()
                .table_name(store.table())
                .key("pk", AttributeValue::S(failover_pk(&cfg.record_name)))
                .key("sk", AttributeValue::S("LOCK".into()))
                .update_expression("SET expiresAt = :past")
                .expression_attribute_values(":past", AttributeValue::N("0".into()))
                .send()
                .await
                .expect("age the lease in moto");
            // B sees us-east-1 drained (A stored it) and applies that itself,
            // under a new fencing token; then undrains.
            let drained = b.handle(json!({"action": "reconcile"}), "writer-b").await;
            let undrained = b
                .handle(
                    json!({"action": "undrain", "region": "us-east-1"}),
                    "writer-b2",
                )
                .await;
            (drained, undrained)
        }
    );
    let (drained, undrained) = b_report;
    assert!(
        drained.applied && undrained.applied,
        "{drained:?} {undrained:?}"
    );
    assert!(!a_report.applied, "{a_report:?}");
    assert!(
        a_report.change_ids.is_empty(),
        "A sent nothing: {a_report:?}"
    );
    let lost = a_report
        .errors
        .iter()
        .find(|e| e.code == ErrorCode::LeaseLost)
        .expect("LEASE_LOST");
    assert!(
        lost.message.contains("passed to another invocation"),
        "{}",
        lost.message
    );
    assert_eq!(answers(&cfg, &[]).await, preferred());
}

#[tokio::test]
async fn a_lapsed_lease_is_fenced_out_of_the_ledger() {
    let cfg = parsed(&two_region_config().await);
    let store = fresh_store(&cfg).await;
    let a = store
        .try_lock("a", Duration::from_millis(200))
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        store
            .try_lock("b", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = store
        .try_lock("b", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a's lapsed");
    assert!(b.fence > a.fence, "the token only grows");
    assert!(!store.holds(&a).await.unwrap() && store.holds(&b).await.unwrap());
    let entry = LedgerEntry {
        set_identifier: NA.into(),
        chain: vec!["eu-west-1".try_into().unwrap()],
    };
    let refused = store
        .record_changes(&a, std::slice::from_ref(&entry), 1, "/change/A")
        .await;
    assert!(
        matches!(refused, Err(LedgerError::LeaseLost(f)) if f == a.fence),
        "{refused:?}"
    );
    store
        .record_changes(&b, &[entry], 1, "/change/B")
        .await
        .unwrap();
    store.unlock(&b).await.unwrap();
    let c = store
        .try_lock("c", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("unlocked");
    assert!(c.fence > b.fence, "unlocking keeps the token");
}

/// Route 53 whose reads are moto's and whose writes never answer (a fake,
/// for what moto cannot do: hang one call).
struct HangingChanges(SdkRoute53);

impl geoprov_failover::route53::Route53 for HangingChanges {
    async fn records(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Vec<RecordSet>, geoprov_failover::route53::Route53Error> {
        self.0.records(zone, name).await
    }
    async fn change(
        &self,
        _zone: &str,
        _changes: &[ZoneChange],
    ) -> Result<String, geoprov_failover::route53::Route53Error> {
        std::future::pending().await
    }
    async fn is_insync(
        &self,
        change_id: &str,
    ) -> Result<bool, geoprov_failover::route53::Route53Error> {
        self.0.is_insync(change_id).await
    }
}

#[tokio::test]
async fn a_hanging_route53_call_is_cut_before_the_lease_lapses_and_the_next_writer_repairs() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    let store = fresh_store(&cfg).await;
    let mut bounds = test_bounds();
    bounds.call_timeout = Duration::from_millis(400);
    bounds.lease_margin = Duration::from_millis(100);
    bounds.lease = Duration::from_secs(3);
    let hanging = endpoint_failover::handler::Failover::new(
        cfg.clone(),
        HangingChanges(moto_route53().await),
        store.clone(),
        moto_alarms(&cfg).await,
        bounds,
    );
    let started = Instant::now();
    let report = hanging.handle(json!({"action": "reconcile"}), "hang").await;
    assert!(
        started.elapsed() < bounds.lease,
        "cut at the call bound, inside the lease"
    );
    assert_eq!(codes(&report), [ErrorCode::Route53Failed], "{report:?}");
    assert!(
        report.errors[0].message.contains("no answer within 400 ms"),
        "{report:?}"
    );
    // It held the lease (it got as far as the write) and gave it back.
    let next = failover_with_store(cfg.clone(), store, test_bounds()).await;
    let started = Instant::now();
    let repaired = next.handle(json!({"action": "reconcile"}), "next").await;
    assert!(repaired.applied, "{repaired:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait for a lease left behind"
    );
    assert_eq!(answers(&cfg, &[]).await, preferred());
}

#[tokio::test]
async fn concurrent_invocations_with_the_same_signal_make_one_change() {
    let config = two_region_config().await;
    let cfg = parsed(&config);
    reconciled(&config).await;
    let store = fresh_store(&cfg).await;
    let a = failover_with_store(cfg.clone(), store.clone(), test_bounds()).await;
    let b = failover_with_store(cfg.clone(), store, test_bounds()).await;
    let (ra, rb) = tokio::join!(
        a.handle(json!({"action": "drain", "region": "us-east-1"}), "c-a"),
        b.handle(json!({"action": "reconcile"}), "c-b"),
    );
    let applied: usize = [&ra, &rb].iter().map(|r| r.change_ids.len()).sum();
    assert_eq!(applied, 1, "{ra:?} {rb:?}");
    assert_eq!(answers(&cfg, &[]).await[NA], "eu-west-1");
}

#[tokio::test]
async fn unknown_alarms_regions_and_invalid_events_change_nothing() {
    let failover = reconciled(&two_region_config().await).await;
    let cfg = failover.config().clone();
    let before = zone_records(&cfg).await;
    let mut foreign = alarm_event("us-east-1", "ALARM");
    foreign["detail"]["alarmName"] = json!("someone-elses-alarm");
    let mut wrong_region = alarm_event("us-east-1", "ALARM");
    wrong_region["region"] = json!("eu-west-1");
    for (event, code) in [
        (foreign, ErrorCode::UnknownAlarm),
        (wrong_region, ErrorCode::UnknownAlarm),
        (
            json!({"action": "drain", "region": "ap-south-1"}),
            ErrorCode::UnknownRegion,
        ),
        (json!({"hello": "world"}), ErrorCode::InvalidEvent),
    ] {
        let report = failover.handle(event.clone(), "x").await;
        assert_eq!(codes(&report), [code], "{event}");
        assert!(report.changes.is_empty() && !report.applied);
    }
    assert_eq!(zone_records(&cfg).await, before);
}

#[tokio::test]
async fn every_country_and_five_regions_build_and_fail_over() {
    let (zone_id, zone_name) = hosted_zone().await;
    let config = every_country_config(&zone_id, &zone_name);
    let cfg = parsed(&config);
    assert!(
        config.to_string().len() > 4_096,
        "more than a parameter or an environment holds"
    );
    let failover = failover(&config).await;
    let first = failover.handle(json!({"action": "reconcile"}), "big").await;
    assert!(
        first.applied && first.errors.is_empty(),
        "{:?}",
        first.errors
    );
    assert!(first.change_ids.len() >= 2, "split to Route 53's limits");
    let records = zone_records(&cfg).await;
    // 250 aliases; 3 regions each: 3 primaries and 3 secondaries.
    assert_eq!(records.len(), 250 * 7);
    let targets = expected_targets(&cfg, &[]);
    assert_eq!(answers_from(&cfg, records.clone(), &[]), targets);
    // The data plane alone, eu-west-1 down.
    assert_eq!(
        answers_from(&cfg, records, &["eu-west-1"]),
        expected_targets(&cfg, &["eu-west-1"])
    );

    let drain = failover
        .handle(
            json!({"action": "drain", "region": "eu-west-1"}),
            "big-drain",
        )
        .await;
    assert!(
        drain.applied && drain.errors.is_empty(),
        "{:?}",
        drain.errors
    );
    assert_eq!(
        answers(&cfg, &[]).await,
        expected_targets(&cfg, &["eu-west-1"])
    );
    let again = failover
        .handle(json!({"action": "reconcile"}), "big-again")
        .await;
    assert!(again.changes.is_empty());
}
