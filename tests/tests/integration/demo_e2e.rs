//! End to end: `geoprov-demo` (`geoprov_tests::demo`), the scenario of
//! `make demo`, smaller (40
//! devices, 10 JITR certificates, 3 of them connecting) and with the debug
//! binaries `make test` builds. Two regions, the four real functions under
//! the Runtime API emulator, one geoprov-iot-emu per region, moto for AWS,
//! devices over MQTT with mutual TLS: stand up, provision by location, JITR,
//! an outage of us-east-1 with Route 53's API down, its recovery, and a
//! drain. The demo checks every decision against the manifest; this test
//! checks its exit status and its report.

use std::process::Command;

use geoprov_tests::{unique_table, workspace_binary, workspace_root};
use serde_json::Value;

#[test]
fn the_two_region_scenario_meets_every_expectation() {
    let report = std::env::temp_dir().join(unique_table("demo-report") + ".json");
    let out = Command::new(workspace_binary("geoprov-demo"))
        .args([
            "--devices",
            "40",
            "--jitr",
            "10",
            "--jitr-connect",
            "3",
            "--profile",
            "debug",
            "--report",
        ])
        .arg(&report)
        .current_dir(workspace_root())
        .output()
        .expect("run geoprov-demo");
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
    // Devices over MQTT: every allowed one connected with its certificate,
    // and moto's IoT holds exactly the allowed devices' things.
    let devices = report["devices"].as_object().unwrap();
    for (serial, device) in devices {
        if device["allowed"] == true {
            assert_eq!(device["connected"], true, "{serial}");
        }
    }
    let allowed = |region: &str| {
        devices
            .values()
            .filter(|d| d["allowed"] == true && d["region"] == region)
            .count()
    };
    assert_eq!(
        report["things"],
        serde_json::json!({"us-east-1": allowed("us-east-1"), "eu-west-1": allowed("eu-west-1")})
    );
    assert!(
        devices
            .values()
            .any(|d| d["csr"] == true && d["allowed"] == true)
    );
    assert!(
        devices
            .values()
            .any(|d| d["csr"] == false && d["allowed"] == true)
    );
    let jitr = report["jitrConnections"].as_array().unwrap();
    assert_eq!(jitr.len(), 3);
    for connection in jitr {
        assert_eq!(connection["connected"], true, "{connection}");
    }

    // The attacker with the claim key: every attempt refused, by the rule
    // meant for it.
    let attacker: Vec<(bool, &str)> = report["attacker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["allowed"].as_bool().unwrap(),
                a["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attacker,
        [
            (false, "KEY_MISMATCH"),
            (false, "UNEXPECTED_PARAMETER"),
            (false, "CLIENT_ID_MISMATCH"),
            (false, "CONNECT refused by the claim policy")
        ]
    );

    // The DNS story: the tree built; us-east-1 down with Route 53's API, and
    // North America moved by health alone; the API back and us-east-1 out of
    // the chains; recoverAfter 2 and the failback hold; a drain and undrain.
    let steps: Vec<(String, String, bool, String, String)> = report["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap().to_owned();
            (
                text("event"),
                text("via"),
                s["applied"].as_bool().unwrap(),
                text("northAmerica"),
                text("europe"),
            )
        })
        .collect();
    let step = |event: &str, via: &str, applied: bool, na: &str, eu: &str| {
        (
            event.to_owned(),
            via.to_owned(),
            applied,
            na.to_owned(),
            eu.to_owned(),
        )
    };
    let (us, eu) = ("us-east-1", "eu-west-1");
    assert_eq!(
        steps,
        [
            step("first reconcile", "control plane", true, us, eu),
            step("ALARM us-east-1", "data plane", false, eu, eu),
            step("API back: schedule", "control plane", true, eu, eu),
            step("OK us-east-1 (1 of 2)", "control plane", false, eu, eu),
            step("OK us-east-1 (2 of 2)", "control plane", false, eu, eu),
            step("schedule, 3 s later", "control plane", true, us, eu),
            step("drain eu-west-1", "control plane", true, us, us),
            step("undrain eu-west-1", "control plane", true, us, eu),
        ]
    );
    assert_eq!(
        report["dns"][1]["errors"],
        serde_json::json!(["ROUTE53_FAILED"])
    );
    assert_eq!(report["dns"][4]["held"], serde_json::json!(["us-east-1"]));

    // Health as Route 53 computes it from the canaries' datapoints, minute
    // by minute (`geoprov failover health`): at stand-up each region proved
    // 4 good minutes (a new window counts the minutes before it as failed);
    // the outage took 2 failed minutes of us-east-1 (connect refused) to
    // make its health check unhealthy, and the recovery 4 good ones in a
    // row (the window 2 of 5: N-M+1). The alarm the failover reads agreed
    // with the health check every minute (the script checks it).
    let minutes = |phase: &str| -> Vec<(bool, Option<String>, u64, String, String, String)> {
        report["canary"][phase]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let us = &m["regions"]["us-east-1"];
                (
                    us["success"].as_bool().unwrap(),
                    us["failedStep"].as_str().map(str::to_owned),
                    us["failuresInWindow"].as_u64().unwrap(),
                    us["health"].as_str().unwrap().to_owned(),
                    us["alarm"].as_str().unwrap().to_owned(),
                    m["northAmerica"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect()
    };
    let run = |ok: bool, failures: u64, health: &str, alarm: &str, na: &str| {
        let step = (!ok).then(|| "connect".to_owned());
        (
            ok,
            step,
            failures,
            health.to_owned(),
            alarm.to_owned(),
            na.to_owned(),
        )
    };
    let stand_up = minutes("standUp");
    assert_eq!(stand_up.len(), 4, "{stand_up:?}");
    assert_eq!(stand_up[3].3, "HEALTHY");
    assert_eq!(
        minutes("outage"),
        [
            run(false, 1, "HEALTHY", "OK", us),
            run(false, 2, "UNHEALTHY", "ALARM", eu),
        ]
    );
    assert_eq!(
        minutes("recovery"),
        [
            run(true, 2, "UNHEALTHY", "ALARM", eu),
            run(true, 2, "UNHEALTHY", "ALARM", eu),
            run(true, 2, "UNHEALTHY", "ALARM", eu),
            run(true, 1, "HEALTHY", "OK", eu),
        ]
    );

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
