//! End to end: `scripts/demo.py`, the scenario of `make demo`, smaller (40
//! devices, 10 JITP certificates) and with the debug binaries `make test`
//! builds. Two regions, the three real functions under the Runtime API
//! emulator, moto for AWS: stand up, provision by location, JITP, an outage
//! of us-east-1 and its recovery. The script checks every decision against
//! the manifest; this test checks its exit status and its report.

use std::process::Command;

use geoprov_tests::{python, unique_table, workspace_root};
use serde_json::Value;

#[test]
fn the_two_region_scenario_meets_every_expectation() {
    let report = std::env::temp_dir().join(unique_table("demo-report") + ".json");
    let out = Command::new(python())
        .arg(workspace_root().join("scripts/demo.py"))
        .args([
            "--devices",
            "40",
            "--jitp",
            "10",
            "--profile",
            "debug",
            "--report",
        ])
        .arg(&report)
        .current_dir(workspace_root())
        .output()
        .expect("run scripts/demo.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report_path = report;
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_path);
    assert_eq!(report["failures"], serde_json::json!([]));
    assert_eq!(report["devices"].as_object().unwrap().len(), 40);
    assert_eq!(report["certificates"]["verified"], 10);

    // The DNS story: created, failed over, held for recoverAfter, failed back.
    let moves: Vec<Vec<(String, String)>> = report["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            change["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["setIdentifier"].as_str().unwrap().to_owned(),
                        c["to"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    let na = "US East IoT Global Endpoint".to_owned();
    assert_eq!(moves.len(), 4, "{moves:?}");
    assert_eq!(moves[0].len(), 2);
    assert_eq!(moves[1], [(na.clone(), "eu-west-1".to_owned())]);
    assert!(moves[2].is_empty());
    assert_eq!(moves[3], [(na, "us-east-1".to_owned())]);

    // EU-pinned devices only ever in eu-west-1; wave 2 in eu-west-1.
    for (serial, device) in report["devices"].as_object().unwrap() {
        if device["kind"].as_str().unwrap().starts_with("eu") {
            assert_eq!(device["region"], "eu-west-1", "{serial}");
        }
        if device["kind"] == "na-late" {
            assert_eq!(device["region"], "eu-west-1", "{serial}");
            assert_eq!(device["allowed"], true, "{serial}");
        }
    }
}
