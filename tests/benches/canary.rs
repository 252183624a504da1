//! The region canary (release) against one geoprov-iot-emu (release) over
//! TLS on loopback, with the real hook behind cargo-lambda's Runtime API
//! emulator and IoT, SSM and the table in moto. Prints:
//!
//! - cold start: from spawning the binary to the answer of its first
//!   scheduled run (init, the SSM read, and the probe), over 20 processes;
//! - warm runs: p50 and p99 over 100 runs of the whole probe, with and
//!   without the provisioning round trip, and of each latency it reports.
//!
//! Run with `make bench-canary`.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use geoprov_tests::canary::{CanaryRegion, scheduled_event};
use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::workspace_binary;
use serde_json::Value;

const COLD: usize = 20;
const WARM: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(label: &str, mut values: Vec<f64>) {
    values.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} |",
        values.len(),
        percentile(&values, 0.5),
        percentile(&values, 0.99),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

fn field(reports: &[Value], step: &str) -> Vec<f64> {
    reports
        .iter()
        .filter_map(|r| {
            r["steps"]
                .as_array()?
                .iter()
                .filter(|s| s["step"] == step && s["ok"] == true)
                .map(|s| s["latencyMs"].as_f64())
                .next()
                .flatten()
        })
        .collect()
}

fn warm(region: &CanaryRegion, provisioning: bool) -> Vec<Value> {
    let mut env = region.environment(20_000, true);
    env.insert("CANARY_PROVISIONING".into(), provisioning.to_string());
    let function = region.function(&env);
    function.run(); // the cold run
    let reports: Vec<Value> = (0..WARM).map(|_| function.run()).collect();
    let failed = reports.iter().filter(|r| r["success"] != true).count();
    assert_eq!(failed, 0, "{failed} warm runs failed");
    reports
}

#[tokio::main]
async fn main() {
    let region = CanaryRegion::start("eu-west-1");

    let env = region.environment(20_000, true);
    let mut cold = Vec::new();
    let mut cold_probe = Vec::new();
    for _ in 0..COLD {
        let runtime = RuntimeEmulator::start();
        let started = Instant::now();
        let _process = runtime.run_function(&workspace_binary("region-canary"), &env);
        let report = runtime.invoke(&scheduled_event());
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(report["success"], true, "{report:#}");
        cold_probe.push(report["elapsedMs"].as_f64().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let with = warm(&region, true);
    let without = warm(&region, false);

    println!(
        "\nregion-canary (release) against geoprov-iot-emu (release), moto, loopback TLS, 2 cores"
    );
    println!("\n| measure (ms) | runs | p50 | p99 | max |\n|---|---:|---:|---:|---:|");
    row(
        "cold start: spawn to first report (init + SSM read + probe with provisioning)",
        cold,
    );
    row("  of which the first probe itself (elapsedMs)", cold_probe);
    let elapsed = |reports: &[Value]| -> Vec<f64> {
        reports
            .iter()
            .map(|r| r["elapsedMs"].as_f64().unwrap())
            .collect()
    };
    row(
        "warm run, connect + round trip (elapsedMs)",
        elapsed(&without),
    );
    row(
        "warm run, + provisioning and cleanup (elapsedMs)",
        elapsed(&with),
    );
    row("  connect (TCP, TLS, CONNACK)", field(&with, "connect"));
    row("  round trip (PUBLISH to echo)", {
        let publish = field(&with, "publish");
        let echo = field(&with, "echo");
        publish.iter().zip(&echo).map(|(p, e)| p + e).collect()
    });
    row(
        "  provision (claim connect, CSR, RegisterThing with the hook)",
        field(&with, "provision"),
    );
    row(
        "  cleanup (detach, delete certificate and thing in moto)",
        field(&with, "cleanup"),
    );
}
