//! What resolvers get (`geoprov dns resolve` over moto's records and the
//! health checks' status), and one failover invocation checked by it.

use std::time::Instant;

use serde_json::Value;

use super::report::DnsRecord;
use super::{Demo, RECORD, REGIONS, endpoint, round};

/// How North America's answer moves: the failover rewriting records (the
/// control plane), or Route 53 answering by health alone (the data plane,
/// the failover's Route 53 API unreachable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    ControlPlane,
    DataPlane,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::ControlPlane => "control plane",
            Via::DataPlane => "data plane",
        }
    }
}

impl Demo {
    /// The region a resolver in `country` gets now: `geoprov dns resolve`
    /// over moto's records, the health checks of the regions that are down
    /// unhealthy.
    pub fn resolve(&self, country: &str) -> String {
        let mut args = vec![
            "dns",
            "resolve",
            "--zone-id",
            self.plane.zone_id.as_str(),
            "--name",
            RECORD,
            "--country",
            country,
        ];
        for region in self.clock.down() {
            args.push("--unhealthy");
            args.push(&self.plane.checks[region]);
        }
        let answer = self.geoprov("us-east-1").ok(&args)["answer"].clone();
        answer
            .as_str()
            .and_then(|a| {
                REGIONS
                    .into_iter()
                    .find(|r| endpoint(r) == a.trim_end_matches('.'))
            })
            .map_or_else(|| format!("(no answer: {answer})"), str::to_owned)
    }

    /// One failover invocation, then what North America and an EU country
    /// resolve to, which must be `expect`. Through the data plane, the
    /// failover runs with Route 53's API down and must say so.
    pub fn dns_step(&mut self, what: &str, event: &Value, via: Via, expect: (&str, &str)) {
        let started = Instant::now();
        let report = match via {
            Via::ControlPlane => self.stack.failover.invoke(event),
            Via::DataPlane => self.stack.failover_without_api.invoke(event),
        };
        let seconds = started.elapsed().as_secs_f64();
        // With eu-west-1 drained the residency location has no region left:
        // the failover says so, and its chain stays (residency over service).
        let errors: Vec<String> = list(&report["errors"])
            .iter()
            .filter(|e| {
                !(e["code"] == "NO_HEALTHY_REGION"
                    && e["setIdentifier"] == super::RESIDENCY_LOCATION)
            })
            .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
            .collect();
        let applied = super::health::truthy(&report["applied"]);
        if via == Via::DataPlane {
            self.expect(
                errors.iter().any(|e| e == "ROUTE53_FAILED") && !applied,
                format!("{what}: with Route 53's API down the failover must report ROUTE53_FAILED: {errors:?}"),
            );
        } else {
            self.expect(
                errors.is_empty(),
                format!("{what}: failover errors {}", report["errors"]),
            );
        }
        let (na, eu) = (self.resolve("US"), self.resolve("DE"));
        let held: Vec<String> = list(&report["deferred"])
            .iter()
            .map(|d| d["region"].as_str().unwrap_or_default().to_owned())
            .collect();
        let note = if held.is_empty() {
            String::new()
        } else {
            format!("; held out until stable: {}", held.join(", "))
        };
        println!(
            "  {what}: health {}; North America -> {na}, Europe -> {eu} (via {}){note}",
            report["health"],
            via.label()
        );
        self.expect(
            (na.as_str(), eu.as_str()) == expect,
            format!("after {what}: NA {na}, EU {eu}, expected {expect:?}"),
        );
        self.report.dns.push(DnsRecord {
            event: what.to_owned(),
            via: via.label().to_owned(),
            changes: list(&report["changes"]).len(),
            applied,
            errors,
            held,
            north_america: na,
            europe: eu,
            seconds: round(seconds, 3),
        });
    }
}

/// A JSON array's items (none when absent).
fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}
