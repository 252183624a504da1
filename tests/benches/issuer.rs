//! cert-issuer benchmark (`make bench-issuer`): CSR validations per second
//! (the pure policy), and the wall time of a 500-CSR batch through the
//! release binary under the Runtime API emulator against moto, at
//! ISSUE_CONCURRENCY 1, 8 and 32. Prints tables.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cert_issuer::csr::check;
use geoprov_shared::device::{DeviceProfile, SerialNumber};
use geoprov_tests::certs::device_csr;
use geoprov_tests::issuer::{PCA_REGION, local_ca};
use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, fresh_registry, moto, workspace_binary, workspace_root};
use serde_json::{Value, json};

const BATCH: usize = 500;

fn validations_per_second(name: &str, serial: &str, csrs: &[String]) {
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let mut checked = 0usize;
    while started.elapsed() < budget {
        for csr in csrs {
            black_box(check(serial, black_box(csr)).expect("a valid CSR"));
            checked += 1;
        }
    }
    let rate = checked as f64 / started.elapsed().as_secs_f64();
    println!(
        "| {name:<22} | {checked:>9} | {rate:>12.0} | {:>10.1} |",
        1e6 / rate
    );
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        workspace_root()
            .join("functions/cert-issuer/tests/fixtures")
            .join(name),
    )
    .expect("fixture CSR")
}

#[tokio::main]
async fn main() {
    println!("CSR policy (parse, key, signature, subject, extensions), 2 s per key type");
    println!(
        "| {:<22} | {:>9} | {:>12} | {:>10} |",
        "key", "checked", "per second", "µs each"
    );
    println!("|------------------------|-----------|--------------|------------|");
    let p256: Vec<String> = (0..100).map(|_| device_csr("SN-1").pem).collect();
    validations_per_second("EC P-256", "SN-1", &p256);
    validations_per_second("RSA 2048", "SN-1", &[fixture("csr-rsa2048.pem")]);
    validations_per_second("RSA 3072", "SN-1", &[fixture("csr-rsa3072.pem")]);

    let ca = local_ca();
    let serials: Vec<String> = (0..BATCH).map(|i| format!("SN-BENCH-{i:04}")).collect();
    let profiles: Vec<DeviceProfile> = serials
        .iter()
        .map(|s| DeviceProfile::allowed(SerialNumber::try_from(s.as_str()).unwrap()))
        .collect();

    println!();
    println!(
        "a batch of {BATCH} CSRs (EC P-256), release binary, cargo-lambda emulator, moto on loopback"
    );
    println!(
        "| {:>11} | {:>8} | {:>14} | {:>6} |",
        "concurrency", "wall (s)", "certificates/s", "issued"
    );
    println!("|-------------|----------|----------------|--------|");
    for concurrency in [1, 8, 32] {
        // A fresh table per run: moto slows down as a table grows.
        let registry = fresh_registry("bench-issuer").await;
        registry.put_profiles(&profiles).await.unwrap();
        let mut env = aws_env(&moto().endpoint, "eu-west-1");
        env.insert("TABLE_NAME".into(), registry.table().to_owned());
        env.insert("PCA_ARN".into(), ca.arn.clone());
        env.insert("PCA_REGION".into(), PCA_REGION.into());
        env.insert("ISSUE_CONCURRENCY".into(), concurrency.to_string());
        env.insert("ISSUE_DEADLINE_MS".into(), "60000".into());
        let emulator = RuntimeEmulator::start();
        let _function = emulator.run_function(&workspace_binary("cert-issuer"), &env);
        // A fresh CSR per device and run, so no answer comes from the ledger.
        let requests: Vec<Value> = serials
            .iter()
            .map(|s| json!({"serialNumber": s, "csrPem": device_csr(s).pem}))
            .collect();
        // Warm the function (cold start and the CA's key algorithm) first.
        emulator.invoke(&json!({"requests": []}));
        let started = Instant::now();
        let answer = emulator.invoke(&json!({ "requests": requests }));
        let wall = started.elapsed().as_secs_f64();
        let issued = answer["results"]
            .as_array()
            .expect("a batch answer")
            .iter()
            .filter(|r| r["certificateArn"].is_string())
            .count();
        println!(
            "| {concurrency:>11} | {wall:>8.2} | {:>14.1} | {issued:>6} |",
            issued as f64 / wall
        );
    }
}
