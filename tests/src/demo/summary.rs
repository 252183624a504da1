//! The end: the things moto's IoT holds against the decisions, the summary
//! tables, and the JSON report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::report::Report;
use super::{Demo, REGIONS};

impl Demo {
    /// What moto's IoT holds in each region, against the decisions.
    pub fn count_things(&mut self) {
        let serials: BTreeSet<String> = self.report.devices.keys().cloned().collect();
        for region in REGIONS {
            let held = self.rt.block_on(things_of(&self.aws.iot[region], &serials));
            let allowed = allowed_in(&self.report, region);
            self.report.things.insert(region.to_owned(), held);
            self.expect(
                held == allowed,
                format!("{region}: {held} things in IoT, {allowed} devices allowed"),
            );
        }
    }
}

/// How many of `serials` are things in `iot`.
async fn things_of(iot: &aws_sdk_iot::Client, serials: &BTreeSet<String>) -> usize {
    let mut held = 0;
    let mut token = None;
    loop {
        let page = iot
            .list_things()
            .max_results(250)
            .set_next_token(token)
            .send()
            .await
            .expect("list the things");
        held += page
            .things()
            .iter()
            .filter(|t| t.thing_name().is_some_and(|n| serials.contains(n)))
            .count();
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return held;
        }
    }
}

fn allowed_in(report: &Report, region: &str) -> usize {
    report
        .devices
        .values()
        .filter(|d| d.region == region && d.allowed)
        .count()
}

/// The last check (no EU-pinned device in us-east-1), the summary tables,
/// and the report written to `path`; the report, its failures every
/// expectation not met.
pub fn summary(mut report: Report, mut failures: Vec<String>, path: &Path) -> Report {
    let eu_in_us: Vec<&String> = report
        .devices
        .iter()
        .filter(|(_, d)| d.kind.starts_with("eu") && d.region == "us-east-1" && d.allowed)
        .map(|(serial, _)| serial)
        .collect();
    if !eu_in_us.is_empty() {
        failures.push(format!(
            "EU-pinned devices provisioned in us-east-1: {eu_in_us:?}"
        ));
    }
    print_devices(&report);
    print_steps(&report);
    report.failures = failures;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the report's directory");
    }
    let text = serde_json::to_string_pretty(&report).expect("the report as JSON");
    std::fs::write(path, text).expect("write the report");
    println!("\nreport: {}", path.display());
    if report.failures.is_empty() {
        println!("every expectation met");
    } else {
        println!("{} expectation(s) failed:", report.failures.len());
        for failure in report.failures.iter().take(20) {
            println!("  - {failure}");
        }
    }
    report
}

/// Devices and things per region, and the decisions' reasons.
fn print_devices(report: &Report) {
    println!("\nsummary");
    println!(
        "  {:<10} {:>7} {:>7} {:>6}",
        "region", "devices", "allowed", "denied"
    );
    for region in REGIONS {
        let mine = report
            .devices
            .values()
            .filter(|d| d.region == region)
            .count();
        let allowed = allowed_in(report, region);
        println!(
            "  {region:<10} {mine:>7} {allowed:>7} {:>6}",
            mine - allowed
        );
    }
    println!(
        "\n  {:<10} {:>13} {:>7}",
        "region", "things in IoT", "allowed"
    );
    for region in REGIONS {
        let things = report.things.get(region).copied().unwrap_or_default();
        println!(
            "  {region:<10} {things:>13} {:>7}",
            allowed_in(report, region)
        );
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for device in report.devices.values() {
        *reasons.entry(device.reason.as_str()).or_default() += 1;
    }
    println!("\n  {:<20} {:>5}", "reason", "count");
    for (reason, count) in reasons {
        println!("  {reason:<20} {count:>5}");
    }
}

/// The attacker's attempts, the certificates, and the DNS steps.
fn print_steps(report: &Report) {
    println!("\n  {:<45} answer", "attacker with the claim key");
    for step in &report.attacker {
        let answer = if step.allowed { "ALLOWED" } else { "refused" };
        println!("  {:<45} {answer} ({})", step.attempt, step.reason);
    }
    let c = &report.certificates;
    println!(
        "\n  certificates: {} requested, {} issued, {} verified against the CA, batch {} s",
        c.requested, c.issued, c.verified, c.batch_seconds
    );
    println!(
        "\n  {:<24} {:<14} {:>7} {:<10} {:<10} {:>6}",
        "DNS step", "via", "records", "NA", "EU", "ms"
    );
    for step in &report.dns {
        let written = if step.applied { step.changes } else { 0 };
        println!(
            "  {:<24} {:<14} {written:>7} {:<10} {:<10} {:>6.0}",
            step.event,
            step.via,
            step.north_america,
            step.europe,
            step.seconds * 1000.0
        );
    }
}
