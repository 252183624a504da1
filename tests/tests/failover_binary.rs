//! The real `endpoint-failover` binary under cargo-lambda's Runtime API
//! emulator, configured through its environment as template.yaml does, its
//! hosted zone, health checks and table in moto, invoked with every sample
//! event in `events/endpoint-failover/` in the order of the fixture.

use std::collections::BTreeMap;

use endpoint_failover::config::FailoverConfig;
use geoprov_tests::failover::{
    config_json, health_check, hosted_zone, records_by_region, two_region_config_with_checks,
};
use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, moto, unique_table, workspace_binary, workspace_root};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Expectations {
    environment: BTreeMap<String, String>,
    sequence: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    event: String,
    trigger: String,
    dry_run: bool,
    applied: bool,
    health: Value,
    changes: Value,
    errors: Vec<String>,
    records: BTreeMap<String, String>,
}

#[tokio::test]
async fn every_sample_event_gives_its_expected_report() {
    let root = workspace_root();
    let expectations: Expectations = serde_json::from_slice(
        &std::fs::read(root.join("tests/fixtures/endpoint-failover/expected.json")).unwrap(),
    )
    .unwrap();
    let mut samples: Vec<String> = std::fs::read_dir(root.join("events/endpoint-failover"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    samples.sort();
    let mut covered: Vec<String> = expectations
        .sequence
        .iter()
        .map(|s| s.event.clone())
        .collect();
    covered.sort();
    covered.dedup();
    assert_eq!(
        samples, covered,
        "every sample event needs an expected report"
    );

    let (us, eu) = (
        health_check("us-east-1").await,
        health_check("eu-west-1").await,
    );
    let config = two_region_config_with_checks(&us, &eu).await;
    let parsed = FailoverConfig::from_json(&config.to_string()).unwrap();

    let region = &expectations.environment["AWS_REGION"];
    let mut env = aws_env(&moto().endpoint, region);
    let table = unique_table("failover-binary");
    let sdk = geoprov_tests::sdk_config(&moto().endpoint, region).await;
    geoprov_shared::table::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .unwrap();
    env.insert("TABLE_NAME".into(), table);
    env.insert("FAILOVER_CONFIG".into(), config.to_string());
    env.extend(expectations.environment.clone());

    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("endpoint-failover"), &env);

    for step in &expectations.sequence {
        let path = root.join("events/endpoint-failover").join(&step.event);
        let payload: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let report = emulator.invoke(&payload);
        let name = &step.event;
        assert_eq!(report["trigger"], step.trigger, "{name}: {report}");
        assert_eq!(report["dryRun"], step.dry_run, "{name}: {report}");
        assert_eq!(report["applied"], step.applied, "{name}: {report}");
        assert_eq!(report["health"], step.health, "{name}: {report}");
        assert_eq!(report["changes"], step.changes, "{name}: {report}");
        let codes: Vec<&str> = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, step.errors, "{name}: {report}");
        if step.applied {
            assert_eq!(report["insync"], true, "{name}: {report}");
            assert!(report["changeId"].is_string(), "{name}: {report}");
        }
        assert_eq!(records_by_region(&parsed).await, step.records, "{name}");
        assert!(function.exited().is_none(), "the function exited on {name}");
    }
}

#[tokio::test]
async fn a_bad_failover_config_stops_the_cold_start_naming_the_field() {
    let (zone_id, zone_name) = hosted_zone().await;
    let mut config = config_json(
        &zone_id,
        &zone_name,
        &[("us-east-1", "hc-1"), ("eu-west-1", "hc-2")],
        &[(
            "Default IoT Global Endpoint",
            json!({"CountryCode": "*"}),
            &["eu-west-1", "ap-south-1"],
        )],
    );
    config["ttl"] = json!(60);
    let mut env = aws_env(&moto().endpoint, "us-east-1");
    env.insert("TABLE_NAME".into(), "unused".into());
    env.insert("FAILOVER_CONFIG".into(), config.to_string());
    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("endpoint-failover"), &env);
    let status = function.wait_exit(std::time::Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "cold start must fail: {status:?}"
    );
    let log = function.output();
    assert!(
        log.contains("locations[0].preference[1]") && log.contains("ap-south-1"),
        "{log}"
    );
}
