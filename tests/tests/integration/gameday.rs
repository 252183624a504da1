//! The game day (`geoprov_tests::gameday`, `make gameday`) at a small
//! scale: 200 devices over three locations and two regions, half by claim
//! (fleet-CA certificates from the issuer as us-east-1's certificate
//! provider), half by JITR, with IoT's quotas at a fifth of the published
//! rates. us-east-1 fails, the health check turns as Route 53 computes it,
//! North America's devices re-home to eu-west-1 by JITR, and go home after
//! the failback. The goals: no claim used after onboarding, no extra quota
//! unit, exactly one decision audited per re-homed device, none stranded,
//! every device home again.

use std::process::Command;

use geoprov_tests::demo::DEMO_DIR_VARIABLE;
use geoprov_tests::emulator::WorkDir;
use geoprov_tests::{workspace_binary, workspace_root};
use serde_json::{Value, json};

#[test]
fn two_hundred_devices_lose_their_region_and_rehome_without_the_claim() {
    // Its own files: the demo may run beside it.
    let dir = WorkDir::new("gameday");
    let report = dir.path().join("gameday-report.json");
    let picture = dir.path().join("gameday.png");
    let out = Command::new(workspace_binary("geoprov-gameday"))
        .args(["--devices", "200", "--profile", "debug", "--report"])
        .arg(&report)
        .arg("--picture")
        .arg(&picture)
        .env(DEMO_DIR_VARIABLE, dir.path())
        .current_dir(workspace_root())
        .output()
        .expect("run geoprov-gameday");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["failures"], json!([]), "{stdout}");
    assert_eq!(report["devices"], 200);
    assert_eq!(
        report["onboarded"],
        json!({"eu-west-1": 100, "us-east-1": 100})
    );
    // Every North American device was cut off, and each came back by JITR.
    assert_eq!(report["rehome"]["devices"], 100);
    assert_eq!(report["rehome"]["stranded"], 0);
    assert_eq!(report["claimUsesAfterOnboarding"], 0);
    assert_eq!(report["quotaUse"]["extra"], 0);
    assert_eq!(report["audit"], json!({"1": 100}));
    assert_eq!(report["stranded"], 0);
    assert_eq!(report["failback"]["notHome"], 0);
    // Route 53's minutes: M bad canary minutes to unhealthy.
    assert_eq!(report["detectionMinutes"], 2);
    // eu-west-1 made one auto-registration per re-homed device.
    let spent = &report["quotaUse"]["spent"]["eu-west-1"];
    assert_eq!(spent["autoRegistration"], 100, "{spent}");
    // geoprov plan predicted the re-homing from the same fleet, rates and
    // backoff: at least its floor (units over rates), p50 before p99.
    let predicted = &report["prediction"];
    let (p50, p99, all, floor) = (
        predicted["p50Seconds"].as_f64().unwrap(),
        predicted["p99Seconds"].as_f64().unwrap(),
        predicted["allSeconds"].as_f64().unwrap(),
        predicted["floorSeconds"].as_f64().unwrap(),
    );
    assert!(
        floor > 0.0 && p50 <= p99 && p99 <= all && all >= floor,
        "{predicted}"
    );
    // The picture is a PNG.
    let png = std::fs::read(&picture).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
