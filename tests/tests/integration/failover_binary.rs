//! The real `endpoint-failover` binary with every sample event
//! (`geoprov_tests::samples::failover`), and a cold start that fails on a bad
//! FAILOVER_CONFIG.

use geoprov_tests::failover::{config_json, hosted_zone};
use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, moto, workspace_binary};
use serde_json::json;

#[tokio::test]
async fn every_sample_event_gives_its_expected_report() {
    geoprov_tests::samples::failover::run("testing").await;
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
