//! Fleet provisioning through one geoprov-iot-emu (release) over TLS on
//! loopback, with the real hook (release, 4 environments) behind
//! cargo-lambda's Runtime API emulator, IoT in one moto and the table in
//! another. Each device connects with the claim, gets a certificate (made
//! by IoT, or from its CSR), runs RegisterThing and disconnects; the time
//! is from the TCP connect to the accepted RegisterThing. Prints, for each
//! path and number of devices in flight, provisionings per second and the
//! p50 and p99 of connect-to-provisioned. Run with `make bench-emulator`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoprov_tests::emulator::{factory_key, setup_claim, FactoryKey, FleetRegion, WorkDir};
use serde_json::{json, Value};

/// Devices per row.
const DEVICES: usize = 120;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn row(fleet: &Arc<FleetRegion>, prefix: &str, keys: Option<Arc<Vec<FactoryKey>>>, in_flight: usize) -> (f64, Duration, Duration) {
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
            fleet
                .provision(&serial, key)
                .await
                .unwrap_or_else(|e| panic!("{serial}: {e}"));
            begun.elapsed()
        });
    }
    let mut latencies = Vec::with_capacity(DEVICES);
    while let Some(joined) = tasks.join_next().await {
        latencies.push(joined.unwrap());
    }
    let total = started.elapsed();
    latencies.sort();
    (
        DEVICES as f64 / total.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = [("keys", 1), ("keys", 8), ("keys", 32), ("csr", 1), ("csr", 8), ("csr", 32)];
    let keys: Vec<Arc<Vec<FactoryKey>>> = (0..3)
        .map(|_| Arc::new((0..DEVICES).map(|_| factory_key()).collect()))
        .collect();
    let mut manifest: Vec<Value> = Vec::new();
    for (r, (path, _)) in rows.iter().enumerate() {
        for i in 0..DEVICES {
            let mut line = json!({"serialNumber": format!("SN-BENCH-{r}-{i:03}"), "status": "ALLOWED"});
            if *path == "csr" {
                line["publicKeySha256"] = json!(keys[r - 3][i].spki_sha256);
            }
            manifest.push(line);
        }
    }
    let tables = geoprov_tests::launch_moto(None);
    let dir = WorkDir::new("bench-emulator");
    let claim = setup_claim(&["eu-west-1"], dir.path());
    let fleet = Arc::new(FleetRegion::start_with("eu-west-1", &manifest, dir, claim, &tables.endpoint));

    println!("fleet provisioning through one geoprov-iot-emu: {DEVICES} devices a row, real hook (4 environments), moto");
    println!("| path | in flight | provisionings/s | p50 connect-to-provisioned | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (r, (path, in_flight)) in rows.iter().enumerate() {
        let keys = (*path == "csr").then(|| keys[r - 3].clone());
        let (rate, p50, p99) = row(&fleet, &format!("SN-BENCH-{r}"), keys, *in_flight).await;
        println!(
            "| {} | {in_flight} | {rate:.1} | {:.0} ms | {:.0} ms |",
            if *path == "csr" { "CreateCertificateFromCsr" } else { "CreateKeysAndCertificate" },
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
}
