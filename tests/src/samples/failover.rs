//! The real `endpoint-failover` binary under the Runtime API emulator,
//! configured through its environment as template.yaml does, its hosted zone,
//! health checks and table in moto, invoked with every sample event in
//! `events/endpoint-failover/` in the order of the fixture.

use std::collections::BTreeMap;

use crate::failover::{health_check, records_by_region, two_region_config_with_checks};
use crate::lambda::RuntimeEmulator;
use crate::{aws_env, moto, unique_table, workspace_binary, workspace_root};
use endpoint_failover::config::FailoverConfig;
use serde::Deserialize;
use serde_json::Value;

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

/// Runs every sample event of `events/endpoint-failover/` through the real binary,
/// whose AWS requests are signed with `function_key` (so a recording of
/// moto's requests tells them apart), and checks each answer.
pub async fn run(function_key: &str) {
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
    let sdk = crate::sdk_config(&moto().endpoint, region).await;
    geoprov_shared::table::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .unwrap();
    env.insert("TABLE_NAME".into(), table);
    env.insert("FAILOVER_CONFIG".into(), config.to_string());
    env.extend(expectations.environment.clone());

    env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
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
