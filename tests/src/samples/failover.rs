//! The real `endpoint-failover` binary under the Runtime API emulator,
//! configured through its environment as global.yaml does (its configuration
//! in S3, and once in SSM), its hosted zone, region alarms and table in moto,
//! invoked with every sample event in `events/endpoint-failover/` in the
//! order of the fixture. Alarm events get the time of their sending, as
//! EventBridge would give them.

use std::collections::BTreeMap;

use crate::failover::{
    answers, event_time, region_alarm, set_region_alarm, state_timestamp, two_region_config,
};
use crate::lambda::RuntimeEmulator;
use crate::{aws_env, moto, unique_table, workspace_binary, workspace_root};
use geoprov_failover::config::FailoverConfig;
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
    /// How many zone changes the report plans.
    changes: usize,
    errors: Vec<String>,
    /// Each location's chain after the invocation.
    chains: BTreeMap<String, Vec<String>>,
    /// What a resolver of each location gets from moto's records, all health
    /// checks healthy.
    answers: BTreeMap<String, String>,
}

/// The chain of each location in a report.
fn chains(report: &Value) -> BTreeMap<String, Vec<String>> {
    report["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let chain = l["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["inChain"] == true)
                .map(|s| s["region"].as_str().unwrap().to_owned())
                .collect();
            (l["setIdentifier"].as_str().unwrap().to_owned(), chain)
        })
        .collect()
}

/// The configuration stored in S3 and SSM in moto; returns both references.
async fn store_config(config: &Value) -> (String, String) {
    let sdk = crate::sdk_config(&moto().endpoint, "us-east-1").await;
    let bucket = unique_table("geoprov-config");
    aws_sdk_s3::Client::new(&sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket in moto");
    let s3 = geoprov_failover::config::ConfigSource::parse(&format!("s3://{bucket}/failover.json"))
        .unwrap();
    let ssm_name = format!("/{}/failover", unique_table("geoprov"));
    let ssm = geoprov_failover::config::ConfigSource::parse(&format!("ssm:{ssm_name}")).unwrap();
    let text = config.to_string();
    for source in [&s3, &ssm] {
        geoprov_failover::config_store::put(source, &text, &sdk)
            .await
            .expect("store the configuration in moto");
    }
    (
        format!("s3://{bucket}/failover.json"),
        format!("ssm:{ssm_name}"),
    )
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

    let config = two_region_config().await;
    let parsed = FailoverConfig::from_json(&config.to_string()).unwrap();
    for region in ["us-east-1", "eu-west-1"] {
        region_alarm(region).await;
        set_region_alarm(region, "OK").await;
    }
    let (in_s3, in_ssm) = store_config(&config).await;

    let region = &expectations.environment["AWS_REGION"];
    let mut env = aws_env(&moto().endpoint, region);
    let table = unique_table("failover-binary");
    let sdk = crate::sdk_config(&moto().endpoint, region).await;
    geoprov_shared::table::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .unwrap();
    env.insert("TABLE_NAME".into(), table);
    env.extend(expectations.environment.clone());
    env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());

    // A cold start with the configuration in SSM answers a status.
    env.insert("FAILOVER_CONFIG".into(), in_ssm);
    let emulator = RuntimeEmulator::start();
    let mut from_ssm = emulator.run_function(&workspace_binary("endpoint-failover"), &env);
    let status = emulator.invoke(&serde_json::json!({"action": "status"}));
    assert_eq!(status["trigger"], "STATUS", "{status}");
    assert!(status["errors"].as_array().unwrap().is_empty(), "{status}");
    assert!(from_ssm.exited().is_none());
    drop(from_ssm);
    drop(emulator);

    // The sequence, with the configuration in S3.
    env.insert("FAILOVER_CONFIG".into(), in_s3);
    // As the global stack sets it: the account the bucket must belong to
    // (moto's).
    env.insert("CONFIG_BUCKET_OWNER".into(), "123456789012".into());
    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("endpoint-failover"), &env);

    for step in &expectations.sequence {
        let path = root.join("events/endpoint-failover").join(&step.event);
        let mut payload: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if payload.get("time").is_some() {
            payload["time"] = Value::String(event_time(0));
        }
        if payload["detail"]["state"].get("timestamp").is_some() {
            payload["detail"]["state"]["timestamp"] = Value::String(state_timestamp(0));
        }
        let report = emulator.invoke(&payload);
        let name = &step.event;
        assert_eq!(report["trigger"], step.trigger, "{name}: {report}");
        assert_eq!(report["dryRun"], step.dry_run, "{name}: {report}");
        assert_eq!(report["applied"], step.applied, "{name}: {report}");
        assert_eq!(report["health"], step.health, "{name}: {report}");
        assert_eq!(
            report["changes"].as_array().unwrap().len(),
            step.changes,
            "{name}: {report}"
        );
        let codes: Vec<&str> = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, step.errors, "{name}: {report}");
        if step.trigger != "INVALID_EVENT" && !step.errors.contains(&"UNKNOWN_ALARM".to_owned()) {
            assert_eq!(chains(&report), step.chains, "{name}: {report}");
        }
        if step.applied {
            assert_eq!(report["insync"], true, "{name}: {report}");
            assert!(report["changeId"].is_string(), "{name}: {report}");
        }
        assert_eq!(answers(&parsed, &[]).await, step.answers, "{name}");
        assert!(function.exited().is_none(), "the function exited on {name}");
    }
}
