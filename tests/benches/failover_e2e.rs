//! End-to-end control-plane time: the release `endpoint-failover` binary
//! under the Runtime API emulator, 250 locations and 5 regions in moto (1,500
//! records). From the moment an ALARM (or OK) event is sent to the moment the
//! record tree in moto's Route 53 gives every location the answer the new
//! health calls for (read with the Route 53 answer model, every health check
//! healthy, so only the tree's change shows). The data plane's failover (the
//! health checks on the records) needs no call and is not timed here. Run with
//! `make bench-failover`; prints a table.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use geoprov_failover::config::FailoverConfig;
use geoprov_tests::failover::{
    FIVE_REGIONS, alarm_event, answers, every_country_config, expected_targets, hosted_zone,
};
use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, moto, unique_table, workspace_binary};
use serde_json::{Value, json};

const ROUNDS: usize = 10;

struct Sample {
    invoke: Duration,
    visible: Duration,
    changes: usize,
}

async fn send(
    emulator: &RuntimeEmulator,
    config: &FailoverConfig,
    event: &Value,
    expect: &BTreeMap<String, String>,
) -> Sample {
    let started = Instant::now();
    let report = emulator.invoke(event);
    let invoke = started.elapsed();
    assert_eq!(report["errors"], json!([]), "{report}");
    loop {
        if &answers(config, &[]).await == expect {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "records never changed"
        );
    }
    Sample {
        invoke,
        visible: started.elapsed(),
        changes: report["changes"].as_array().map_or(0, Vec::len),
    }
}

fn row(case: &str, samples: &[Sample]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut invoke: Vec<f64> = samples.iter().map(|s| ms(s.invoke)).collect();
    let mut visible: Vec<f64> = samples.iter().map(|s| ms(s.visible)).collect();
    invoke.sort_by(f64::total_cmp);
    visible.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "| {case:<30} | {:>4} | {:>7} | {:>9.1} | {:>9.1} | {:>10.1} | {:>10.1} | {:>10.1} |",
        samples.len(),
        samples[0].changes,
        pct(&invoke, 50),
        pct(&invoke, 95),
        pct(&visible, 50),
        pct(&visible, 95),
        visible[visible.len() - 1],
    );
}

#[tokio::main]
async fn main() {
    let (zone_id, zone_name) = hosted_zone().await;
    let document = every_country_config(&zone_id, &zone_name);
    let config = FailoverConfig::from_json(&document.to_string()).unwrap();

    let mut env = aws_env(&moto().endpoint, "us-east-1");
    let table = unique_table("bench-failover");
    let sdk = geoprov_tests::sdk_config(&moto().endpoint, "us-east-1").await;
    geoprov_shared::table::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .unwrap();
    env.insert("TABLE_NAME".into(), table);
    env.insert("FAILOVER_CONFIG".into(), document.to_string());
    let emulator = RuntimeEmulator::start();
    let _function = emulator.run_function(&workspace_binary("endpoint-failover"), &env);

    let first = send(
        &emulator,
        &config,
        &json!({"action": "reconcile"}),
        &expected_targets(&config, &[]),
    )
    .await;
    let (mut alarm, mut ok) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let region = FIVE_REGIONS[round % FIVE_REGIONS.len()];
        alarm.push(
            send(
                &emulator,
                &config,
                &alarm_event(region, "ALARM"),
                &expected_targets(&config, &[region]),
            )
            .await,
        );
        ok.push(
            send(
                &emulator,
                &config,
                &alarm_event(region, "OK"),
                &expected_targets(&config, &[]),
            )
            .await,
        );
    }

    println!(
        "endpoint-failover end to end: release binary, cargo-lambda emulator, moto; {} locations, {} regions (milliseconds)",
        config.locations.len(),
        config.regions.len()
    );
    println!(
        "| {:<30} | runs | changes | invoke p50 | invoke p95 | visible p50 | visible p95 | visible max |",
        "event"
    );
    println!(
        "|{:-<32}|------|---------|-----------|-----------|------------|------------|------------|",
        ""
    );
    row("reconcile, no records yet", &[first]);
    row("ALARM: a region out of 150 chains", &alarm);
    row("OK: the region back in", &ok);
}
