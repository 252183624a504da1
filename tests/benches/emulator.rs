//! Fleet provisioning through one geoprov-iot-emu (release) over TLS on
//! loopback, with the real hook (release, 4 environments) behind
//! cargo-lambda's Runtime API emulator, IoT in one moto and the table in
//! another. Each device connects with the claim, gets a certificate (made
//! by IoT, or from its CSR), runs RegisterThing and disconnects; the time
//! is from the TCP connect to the accepted RegisterThing. Prints, for each
//! path and number of devices in flight, provisionings per second and the
//! p50 and p99 of connect-to-provisioned. Run with `make bench-emulator`.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoprov_tests::emulator::{FactoryKey, FleetRegion, WorkDir, factory_key, setup_claim};
use serde_json::{Value, json};

/// Devices per row; each row has a table, a hook and an emulator of its own,
/// so that moto's table (copied whole for each item of a transaction) is the
/// same size in every row.
const DEVICES: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Row {
    rate: f64,
    p50: Duration,
    p99: Duration,
    denied: Vec<String>,
}

async fn row(
    fleet: &Arc<FleetRegion>,
    prefix: &str,
    keys: Option<Arc<Vec<FactoryKey>>>,
    in_flight: usize,
) -> Row {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DEVICES {
        let fleet = fleet.clone();
        let keys = keys.clone();
        let semaphore = semaphore.clone();
        let serial = format!("{prefix}-{i:03}");
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.unwrap();
            let begun = Instant::now();
            let key = keys.as_ref().map(|k| &k[i]);
            let outcome = fleet.provision(&serial, key).await;
            (
                serial,
                begun.elapsed(),
                outcome.err().map(|e| e.to_string()),
            )
        });
    }
    let mut latencies = Vec::with_capacity(DEVICES);
    let mut denied = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (serial, elapsed, error) = joined.unwrap();
        match error {
            None => latencies.push(elapsed),
            Some(error) => {
                // The hook's own reason, from its audit event.
                let reasons = fleet.audit_reasons(&serial).await;
                let reason = reasons.last().map(|(r, _)| r.clone()).unwrap_or_default();
                denied.push(format!("{serial}: {reason}: {error}"));
            }
        }
    }
    let total = started.elapsed();
    latencies.sort();
    Row {
        rate: latencies.len() as f64 / total.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        denied,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = [
        ("keys", 1),
        ("keys", 8),
        ("keys", 32),
        ("csr", 1),
        ("csr", 8),
        ("csr", 32),
    ];
    let keys: Vec<Arc<Vec<FactoryKey>>> = (0..3)
        .map(|_| Arc::new((0..DEVICES).map(|_| factory_key()).collect()))
        .collect();
    let tables = geoprov_tests::launch_moto(None);
    let claim_dir = WorkDir::new("bench-emulator-claim");
    let claim = setup_claim(&["eu-west-1"], claim_dir.path());

    println!(
        "fleet provisioning through one geoprov-iot-emu: {DEVICES} devices a row, real hook (4 environments), moto"
    );
    println!("| path | in flight | provisionings/s | p50 connect-to-provisioned | p99 | denied |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut denials = Vec::new();
    for (r, (path, in_flight)) in rows.iter().enumerate() {
        let prefix = format!("SN-BENCH-{r}");
        let keys = (*path == "csr").then(|| keys[r - 3].clone());
        let manifest: Vec<Value> = (0..DEVICES)
            .map(|i| {
                let mut line =
                    json!({"serialNumber": format!("{prefix}-{i:03}"), "status": "ALLOWED"});
                if let Some(keys) = &keys {
                    line["publicKeySha256"] = json!(keys[i].spki_sha256);
                }
                line
            })
            .collect();
        // The emulator's own rate, not IoT's quotas (RegisterThing 10/s).
        let fleet = Arc::new(FleetRegion::start_with_args(
            "eu-west-1",
            &manifest,
            WorkDir::new("bench-emulator"),
            claim.clone(),
            &tables.endpoint,
            &["--no-quotas"],
        ));
        let result = row(&fleet, &prefix, keys, *in_flight).await;
        println!(
            "| {} | {in_flight} | {:.1} | {:.0} ms | {:.0} ms | {} |",
            if *path == "csr" {
                "CreateCertificateFromCsr"
            } else {
                "CreateKeysAndCertificate"
            },
            result.rate,
            result.p50.as_secs_f64() * 1000.0,
            result.p99.as_secs_f64() * 1000.0,
            result.denied.len(),
        );
        denials.extend(result.denied);
    }
    for denial in denials.iter().take(10) {
        println!("denied: {denial}");
    }
}
