//! The region canary against the emulator, with the real `region-canary`
//! and `pre-provisioning-hook` binaries: every step succeeds and the metric
//! line says `CanarySuccess 1`; the provisioning probe leaves no thing,
//! certificate, audit event or quota use behind; with the emulator refusing
//! connections, stalling publishes or timing the hook out, the run reports
//! 0 within its budget and names the step; `geoprov canary run` does the
//! same probe from a laptop.

use std::time::Duration;

use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry};
use geoprov_tests::canary::CanaryRegion;
use geoprov_tests::emulator::{GLOBAL_NAME, geoprov};
use geoprov_tests::{moto, sdk_config};

use serde_json::{Value, json};

// Each test has a region of its own: the canary's SSM path, thing and
// probe serial are per region, and the tests of this binary share moto.
const REGION: &str = "eu-west-1";
const FAULT_REGION: &str = "eu-central-1";
const WINDOW_REGION: &str = "us-west-2";

fn steps(report: &Value) -> Vec<(String, bool)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_owned(), s["ok"] == true))
        .collect()
}

/// The certificates in IoT whose key hashes to `spki_sha256` (the tests of
/// this binary share moto, so a count would race).
async fn certificates_of_key(region: &CanaryRegion, spki_sha256: &str) -> Vec<String> {
    let iot = region.fleet.iot().await;
    let mut found = Vec::new();
    let mut marker = None;
    loop {
        let page = iot
            .list_certificates()
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        for certificate in page.certificates() {
            let id = certificate.certificate_id().unwrap();
            let Ok(described) = iot.describe_certificate().certificate_id(id).send().await else {
                continue;
            };
            let pem = described
                .certificate_description()
                .and_then(|d| d.certificate_pem())
                .unwrap_or_default();
            if pre_provisioning_hook::rules::spki_sha256(pem).as_deref() == Ok(spki_sha256) {
                found.push(id.to_owned());
            }
        }
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            return found;
        }
    }
}

#[tokio::test]
async fn the_canary_connects_round_trips_and_provisions_and_leaves_nothing_behind() {
    let region = CanaryRegion::start(REGION);
    let serial = geoprov_canary::provisioning_serial(REGION);
    assert_eq!(region.setup[REGION]["provisioningSerial"], serial.as_str());
    assert_eq!(region.setup[REGION]["certificateCreated"], true);

    // A window item that does not parse (a hand edit, a bad write) is
    // replaced by a new window, not kept for ever.
    let table_sdk = sdk_config(&region.fleet.table_endpoint, REGION).await;
    aws_sdk_dynamodb::Client::new(&table_sdk)
        .put_item()
        .table_name(&region.fleet.table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CANARY#{REGION}")),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("WINDOW".into()),
        )
        .item(
            "minutes",
            aws_sdk_dynamodb::types::AttributeValue::S("garbage".into()),
        )
        .send()
        .await
        .unwrap();
    let function = region.function(&region.environment(20_000, true));
    // Two minutes in a row of a new window (5 minutes): the minutes before
    // the first run count as failures until runs replace them.
    let first_minute = 29_000_000;
    for run in 0..2 {
        let report = function.run_at(first_minute + run);
        assert_eq!(
            report["window"],
            json!({"minute": first_minute + run, "size": 5, "failures": 4 - run}),
            "{report:#}"
        );
        assert_eq!(report["success"], true, "run {run}: {report:#}");
        assert_eq!(
            steps(&report),
            [
                "resolve",
                "connect",
                "subscribe",
                "publish",
                "echo",
                "provision",
                "cleanup"
            ]
            .map(|s| (s.to_owned(), true))
            .to_vec(),
            "{report:#}"
        );
    }
    let lines = function.metric_lines();
    assert_eq!(lines.len(), 2, "one metric line a run");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["CanarySuccess"], 1.0, "{line}");
        // The datapoint the health alarm reads, stamped with the run's minute.
        assert_eq!(line["CanaryFailuresInWindow"], 4.0 - i as f64, "{line}");
        assert_eq!(
            line["_aws"]["Timestamp"],
            (first_minute + i as i64) * 60_000,
            "{line}"
        );
        assert_eq!(line["Region"], REGION);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Region"]])
        );
        for metric in ["ConnectLatency", "RoundTripLatency", "ProvisionLatency"] {
            assert!(line[metric].as_f64().unwrap() > 0.0, "{metric}: {line}");
        }
    }
    // No key in the log.
    let log = function.process.output();
    assert!(!log.contains("PRIVATE KEY"), "a key in the function's log");

    // Nothing behind: no thing, no certificate, no audit event, no quota.
    let iot = region.fleet.iot().await;
    let thing = iot.describe_thing().thing_name(&serial).send().await;
    assert!(thing.is_err(), "the probe's thing is left: {thing:?}");
    assert!(region.fleet.audit_reasons(&serial).await.is_empty());
    let config = sdk_config(&region.fleet.table_endpoint, REGION).await;
    let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(&config), &region.fleet.table);
    let record = registry
        .device(&SerialNumber::try_from(serial.as_str()).unwrap())
        .await
        .unwrap()
        .expect("setup canary registered the serial");
    assert_eq!(record.provisioning.total(), 0, "the probe used quota");
    let key = record
        .profile
        .public_key_sha256
        .expect("the provisioning key's hash");
    assert_eq!(
        certificates_of_key(&region, key.as_str()).await,
        Vec::<String>::new(),
        "a probe certificate is left"
    );
    // The canary's own thing stays, with its certificate.
    iot.describe_thing()
        .thing_name(geoprov_canary::thing_name(REGION))
        .send()
        .await
        .unwrap();

    // Anyone holding the claim key may try the reserved serial: without
    // the canary's provisioning key it is refused, and audited.
    let attacker = region.fleet.provision(&serial, None).await;
    assert!(attacker.is_err(), "{attacker:?}");
    let reasons: Vec<String> = region
        .fleet
        .audit_reasons(&serial)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    assert_eq!(reasons, ["KEY_MISMATCH"]);

    // The same probe from a laptop.
    let cli = geoprov(REGION, &region.fleet.table, &region.fleet.table_endpoint);
    let out = cli.run(&[
        "canary",
        "run",
        "--region",
        REGION,
        "--server-name",
        GLOBAL_NAME,
        "--endpoint",
        &region.fleet.emulator.mqtt.to_string(),
        "--provision-template",
        "geoprov-fleet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], true, "{report:#}");
    let table = String::from_utf8_lossy(&out.stderr);
    for step in ["connect", "echo", "provision", "cleanup"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(step) && l.contains(" ok ")),
            "{table}"
        );
    }
    assert!(
        !table.contains("PRIVATE KEY")
            && !String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY")
    );
}

/// A window that cannot be kept fails closed: the run publishes every
/// minute of the window as failed, and says why.
#[tokio::test]
async fn a_window_that_cannot_be_kept_publishes_the_whole_window_as_failed() {
    let region = CanaryRegion::start(WINDOW_REGION);
    let mut env = region.environment(20_000, true);
    env.insert("TABLE_NAME".into(), "geoprov-no-such-table".into());
    let function = region.function(&env);
    let report = function.run_at(29_000_000);
    assert_eq!(
        report["success"], true,
        "the probe itself passed: {report:#}"
    );
    assert_eq!(report["window"]["failures"], 5, "{report:#}");
    assert!(
        report["window"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("GetItem")),
        "{report:#}"
    );
    let lines = function.metric_lines();
    assert_eq!(lines[0]["CanaryFailuresInWindow"], 5.0);
}

/// Runs the canary with `fault` set, and checks it failed at `step` within
/// its budget.
fn fails_at(region: &CanaryRegion, budget_ms: u64, fault: &str, step: &str) -> Value {
    region.fleet.emulator.faults(json!({fault: true}));
    let function = region.function(&region.environment(budget_ms, true));
    let started = std::time::Instant::now();
    let report = function.run();
    let took = started.elapsed();
    region.fleet.emulator.faults(json!({fault: false}));
    assert_eq!(report["success"], false, "{fault}: {report:#}");
    assert_eq!(report["failedStep"], step, "{fault}: {report:#}");
    // A failed minute: with every other minute of its window failed or
    // missing, the whole window counts.
    assert_eq!(report["window"]["failures"], 5, "{fault}: {report:#}");
    // The budget, and the cleanup's bound (it runs after the budget), and
    // the invocation's own overhead on a loaded machine.
    let bound = Duration::from_millis(budget_ms)
        + geoprov_canary::probe::CLEANUP_LIMIT
        + Duration::from_secs(3);
    assert!(took <= bound, "{fault}: the run took {took:?}");
    let elapsed = Duration::from_secs_f64(report["elapsedMs"].as_f64().unwrap() / 1000.0);
    let probe_ms: f64 = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] != "cleanup")
        .map(|s| s["latencyMs"].as_f64().unwrap())
        .sum();
    assert!(
        probe_ms <= budget_ms as f64 + 50.0,
        "{fault}: the steps took {probe_ms} ms of a {budget_ms} ms budget"
    );
    assert!(elapsed <= bound, "{fault}: {elapsed:?}");
    let lines = function.metric_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["CanarySuccess"], 0.0);
    assert_eq!(lines[0]["failedStep"], step);
    report
}

/// The step `name` of `report` failed with an error that mentions `text`.
fn error_mentions(report: &Value, name: &str, text: &str) {
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report:#}"));
    assert_eq!(step["ok"], false, "{step}");
    assert!(step["error"].as_str().unwrap().contains(text), "{step}");
}

#[tokio::test]
async fn under_each_fault_the_canary_reports_zero_within_its_budget_and_names_the_step() {
    let _ = moto();
    let region = CanaryRegion::start(FAULT_REGION);

    // The emulator closes the connection at the handshake.
    let refused = fails_at(&region, 5_000, "refuseConnections", "connect");
    error_mentions(&refused, "connect", "TLS");
    // No PUBACK: the step ends with the budget.
    let stalled = fails_at(&region, 4_000, "stallPublishes", "publish");
    error_mentions(&stalled, "publish", "budget");
    // IoT's answer when the hook does not answer within 5 s.
    let hook = fails_at(&region, 15_000, "hookTimeout", "provision");
    error_mentions(&hook, "provision", "RegisterThing");
    // Even then the cleanup ran, and the serial's denial by deadline is
    // IoT's (the hook was never asked), so nothing is audited.
    let cleanup = hook["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(cleanup["step"], "cleanup");
    assert_eq!(cleanup["ok"], true, "{cleanup}");
    let serial = geoprov_canary::provisioning_serial(FAULT_REGION);
    assert!(region.fleet.audit_reasons(&serial).await.is_empty());
    // The refused and stalled runs cleaned up too (the cleanup runs
    // whenever the provisioning probe is on).
    for report in [&refused, &stalled] {
        let last = report["steps"].as_array().unwrap().last().unwrap();
        assert_eq!(last["step"], "cleanup", "{report:#}");
    }

    // Healthy again once the faults are gone.
    let function = region.function(&region.environment(20_000, true));
    assert_eq!(function.run()["success"], true);
}
