//! The control plane's pure parts for 250 locations (every country code and
//! the default) and 5 regions: planning the record tree, and the Route 53
//! answer model resolving every location over it. `cargo bench -p
//! geoprov-tests --bench failover_planner`; prints a table. Pure: no moto.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use geoprov_failover::config::FailoverConfig;
use geoprov_failover::tree::{apply, plan};
use geoprov_shared::device::RegionName;
use geoprov_tests::failover::every_country_config;
use route53_answer::{ClientLocation, RecordSet, Zone};

const RUNS: usize = 500;

type Admitted<'a> = &'a dyn Fn(&RegionName) -> bool;
type Healthy<'a> = &'a dyn Fn(&str) -> bool;

fn timed(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// One row; `per_run` is how many of the rate's unit one run does (1 for a
/// plan, 250 for the answers of every location).
fn row(name: &str, count: usize, unit: &str, per_run: usize, times: &[Duration]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = us(times[times.len() / 2]);
    println!(
        "| {name:<44} | {count:>6} {unit:<8} | {:>9.1} | {p50:>9.1} | {:>9.1} | {:>12.0} |",
        us(times[0]),
        us(times[times.len() * 99 / 100]),
        per_run as f64 / (p50 / 1e6),
    );
}

fn main() {
    let document = every_country_config("Z0123456789", "example.com");
    let config = FailoverConfig::from_json(&document.to_string()).unwrap();
    let all = |_: &RegionName| true;
    let no_eu = |r: &RegionName| r.as_str() != "eu-west-1";
    let built: Vec<RecordSet> = apply(&[], &plan(&config, &[], &all).changes);

    println!(
        "record tree and answer model: {} locations, {} regions, {} records; {RUNS} runs each (microseconds; per second: plans, answers or indexings)",
        config.locations.len(),
        config.regions.len(),
        built.len()
    );
    println!(
        "| {:<44} | {:<15} | {:>9} | {:>9} | {:>9} | {:>12} |",
        "case", "work", "min", "p50", "p99", "per second"
    );
    println!(
        "|{:-<46}|{:-<17}|{:-<11}|{:-<11}|{:-<11}|{:-<14}|",
        "", "", "", "", "", ""
    );

    let cases: [(&str, &[RecordSet], Admitted); 3] = [
        ("plan: first reconcile (empty zone)", &[], &all),
        ("plan: steady (nothing to change)", &built, &all),
        ("plan: eu-west-1 out of every chain", &built, &no_eu),
    ];
    for (name, current, admitted) in cases {
        let changes = plan(&config, current, admitted).changes.len();
        let times = timed(RUNS, || {
            black_box(plan(black_box(&config), black_box(current), admitted));
        });
        row(name, changes, "changes", 1, &times);
    }

    let zone = Zone::new(built.clone());
    let clients: Vec<_> = config
        .locations
        .iter()
        .map(|l| ClientLocation::within(&l.geo_location))
        .collect();
    let healthy = |_: &str| true;
    let down: BTreeSet<&str> = ["hc-eu-west-1"].into();
    let one_down = |id: &str| !down.contains(id);
    let health: [(&str, Healthy); 2] = [
        ("answers: every location, all healthy", &healthy),
        ("answers: every location, eu-west-1 unhealthy", &one_down),
    ];
    for (name, healthy) in health {
        let times = timed(RUNS, || {
            for client in &clients {
                black_box(zone.resolve(black_box(&config.record_name), client, healthy));
            }
        });
        row(name, clients.len(), "answers", clients.len(), &times);
    }
    let index = timed(RUNS / 10, || {
        black_box(Zone::new(black_box(built.clone())));
    });
    row(
        "index the zone (Zone::new)",
        built.len(),
        "records",
        1,
        &index,
    );
}
