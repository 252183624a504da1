//! Phase 3b, identity coverage: once the fleet CA is registered in both
//! regions, `geoprov identity coverage` must find every device a usable
//! identity wherever DNS may send it; then, with the CA set INACTIVE in
//! us-east-1 on purpose, it must name that gap for every location that
//! can be answered with us-east-1, and the CA is set ACTIVE again.

use aws_sdk_iot::types::CaCertificateStatus;
use serde_json::Value;

use super::{Demo, REGIONS, target};

const US: &str = "us-east-1";

impl Demo {
    /// `geoprov identity coverage` clean, then with one gap made on purpose.
    pub fn identity_coverage(&mut self) {
        println!("\n3b. identity coverage: every device usable wherever DNS may send it");
        let clean = self.coverage();
        let gaps = clean["gaps"].as_array().map_or(0, Vec::len);
        self.expect(
            gaps == 0,
            format!("identity coverage: {}", clean["summary"]),
        );
        for (location, reach) in clean["reachable"].as_object().into_iter().flatten() {
            println!(
                "  {location}: {} (preferred {})",
                reach["regions"], reach["preferred"]
            );
        }
        println!("  {} devices, {gaps} gap", clean["devices"]);

        self.set_ca_status(CaCertificateStatus::Inactive);
        let broken = self.coverage();
        self.set_ca_status(CaCertificateStatus::Active);
        let named: Vec<(String, String)> = broken["gaps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["missing"] == "FLEET_CA_INACTIVE")
            .map(|g| (g["location"].to_string(), g["region"].to_string()))
            .collect();
        let reaching_us = clean["reachable"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, reach)| {
                reach["regions"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == US))
            })
            .count();
        self.expect(
            !named.is_empty()
                && named.len() == reaching_us
                && named.iter().all(|(_, region)| region.contains(US)),
            format!(
                "identity coverage with the CA INACTIVE in {US}: {}",
                broken["summary"]
            ),
        );
        for line in broken["summary"].as_array().into_iter().flatten() {
            println!(
                "  with the CA INACTIVE in {US} on purpose: {}",
                line.as_str().unwrap_or_default()
            );
        }
    }

    /// The report, whatever the exit status (a gap is a non-zero exit).
    fn coverage(&self) -> Value {
        let config = self.plane.config_path.to_str().expect("a UTF-8 path");
        let out = self.geoprov(REGIONS[1]).run(&[
            "identity",
            "coverage",
            "--config",
            config,
            "--ca-certificate-id",
            &self.plane.pki.ca_id,
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let _ = std::fs::write(
            target().join("demo-identity-coverage.log"),
            [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        );
        report
    }

    fn set_ca_status(&self, status: CaCertificateStatus) {
        self.rt
            .block_on(
                self.aws.iot[US]
                    .update_ca_certificate()
                    .certificate_id(&self.plane.pki.ca_id)
                    .new_status(status)
                    .send(),
            )
            .expect("UpdateCACertificate");
    }
}
