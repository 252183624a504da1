//! Planning time of the failover planner for 250 locations and 5 regions
//! (`cargo bench -p endpoint-failover --bench planner`). Prints a table.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use endpoint_failover::config::{FailoverConfig, GeoLocation, Location, RegionTarget};
use endpoint_failover::health::RegionHealth;
use endpoint_failover::planner::{plan, Observed};
use geoprov_shared::device::RegionName;

const REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "sa-east-1",
    "eu-central-1",
];
const LOCATIONS: usize = 250;
const RUNS: usize = 5_000;

fn config() -> FailoverConfig {
    let region = |r: &str| RegionName::try_from(r).unwrap();
    let locations = (0..LOCATIONS)
        .map(|i| Location {
            set_identifier: format!("location {i}"),
            geo_location: if i == 0 {
                GeoLocation::default_location()
            } else {
                // Two upper-case letters per location; the planner never reads them.
                let code = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8];
                GeoLocation::country(std::str::from_utf8(&code).unwrap())
            },
            preference: (0..3).map(|k| region(REGIONS[(i + k) % 5])).collect(),
        })
        .collect();
    FailoverConfig {
        hosted_zone_id: "Z0123456789".into(),
        record_name: "global.iot.example.com".into(),
        ttl: 60,
        regions: REGIONS
            .iter()
            .map(|r| {
                (
                    region(r),
                    RegionTarget {
                        endpoint: format!("abc123-ats.iot.{r}.amazonaws.com"),
                        health_check_id: format!("hc-{r}"),
                        alarm_name: format!("geoprov-health-{r}"),
                    },
                )
            })
            .collect(),
        locations,
        fail_after: 2,
        recover_after: 3,
        min_change_interval_seconds: 60,
    }
}

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
    let config = config();
    let by_region = |down: &[&str]| -> BTreeMap<String, String> {
        config
            .locations
            .iter()
            .map(|l| {
                let target = l
                    .preference
                    .iter()
                    .find(|r| !down.contains(&r.as_str()))
                    .unwrap();
                (
                    l.set_identifier.clone(),
                    config.regions[target].endpoint.clone(),
                )
            })
            .collect()
    };
    let healthy = BTreeMap::new();
    let one_down: BTreeMap<RegionName, RegionHealth> = BTreeMap::from([(
        RegionName::try_from("eu-west-1").unwrap(),
        RegionHealth {
            healthy: false,
            ..Default::default()
        },
    )]);
    let all_healthy_records = by_region(&[]);
    let failed_over_records = by_region(&["eu-west-1"]);
    let last_change = BTreeMap::new();
    let none = BTreeMap::new();

    println!(
        "failover planner, {LOCATIONS} locations x {} regions, {RUNS} runs each (microseconds)",
        REGIONS.len()
    );
    println!(
        "| {:<34} | changes | {:>8} | {:>8} | {:>8} | {:>8} |",
        "case", "min", "p50", "p99", "mean"
    );
    println!(
        "|{:-<36}|---------|----------|----------|----------|----------|",
        ""
    );
    let observed = |records, health| Observed {
        records,
        health,
        last_change: &last_change,
        now: 1_800_000_000,
    };
    measure(
        "no records yet (first reconcile)",
        &config,
        observed(&none, &healthy),
    );
    measure(
        "steady state, nothing to change",
        &config,
        observed(&all_healthy_records, &healthy),
    );
    measure(
        "eu-west-1 down, 50 records move",
        &config,
        observed(&all_healthy_records, &one_down),
    );
    measure(
        "eu-west-1 back, 50 records return",
        &config,
        observed(&failed_over_records, &healthy),
    );
}
