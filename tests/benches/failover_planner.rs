//! Planning time of the failover planner for 250 locations (every country
//! code and the default) and 5 regions. `cargo bench -p geoprov-tests --bench
//! failover_planner`; prints a table. Pure: no moto.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use endpoint_failover::config::FailoverConfig;
use endpoint_failover::health::RegionHealth;
use endpoint_failover::planner::{plan, Observed};
use geoprov_shared::device::RegionName;
use geoprov_tests::failover::{every_country_config, expected_targets};

const RUNS: usize = 5_000;

fn measure(name: &str, config: &FailoverConfig, observed: Observed<'_>) {
    let changes = plan(config, observed).changes.len();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            black_box(plan(black_box(config), black_box(observed)));
            started.elapsed()
        })
        .collect();
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / RUNS as f64;
    println!(
        "| {name:<34} | {changes:>7} | {:>8.1} | {:>8.1} | {:>8.1} | {mean:>8.1} |",
        us(times[0]),
        us(times[RUNS / 2]),
        us(times[RUNS * 99 / 100]),
    );
}

fn main() {
    let document = every_country_config("Z0123456789", "example.com");
    let config = FailoverConfig::from_json(&document.to_string()).unwrap();
    let values = |down: &[&str]| -> BTreeMap<String, String> {
        expected_targets(&config, down)
            .into_iter()
            .map(|(id, region)| {
                let endpoint = config.regions[&RegionName::try_from(region.as_str()).unwrap()]
                    .endpoint
                    .clone();
                (id, endpoint)
            })
            .collect()
    };
    let healthy = BTreeMap::new();
    let one_down = BTreeMap::from([(
        RegionName::try_from("eu-west-1").unwrap(),
        RegionHealth {
            healthy: false,
            ..Default::default()
        },
    )]);
    let (all_up, failed_over, none) = (values(&[]), values(&["eu-west-1"]), BTreeMap::new());
    let last_change = BTreeMap::new();
    let observed = |records, health| Observed {
        records,
        health,
        last_change: &last_change,
        now: 1_800_000_000,
    };

    println!(
        "failover planner, {} locations x {} regions, {RUNS} runs each (microseconds)",
        config.locations.len(),
        config.regions.len()
    );
    println!(
        "| {:<34} | changes | {:>8} | {:>8} | {:>8} | {:>8} |",
        "case", "min", "p50", "p99", "mean"
    );
    println!(
        "|{:-<36}|---------|----------|----------|----------|----------|",
        ""
    );
    measure(
        "no records yet (first reconcile)",
        &config,
        observed(&none, &healthy),
    );
    measure(
        "steady state, nothing to change",
        &config,
        observed(&all_up, &healthy),
    );
    measure(
        "eu-west-1 down, 50 records move",
        &config,
        observed(&all_up, &one_down),
    );
    measure(
        "eu-west-1 back, 50 records return",
        &config,
        observed(&failed_over, &healthy),
    );
}
