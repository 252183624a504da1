//! The `geoprov` operator CLI, run as a process against moto.

use std::path::PathBuf;

use geoprov_tests::cli::Geoprov;
use geoprov_tests::{aws_env, moto, unique_table, TEST_REGION};
use serde_json::Value;

/// `geoprov` against a fresh table in moto.
fn cli_with_table() -> Geoprov {
    let mut env = aws_env(&moto().endpoint, TEST_REGION);
    env.insert("TABLE_NAME".into(), unique_table("cli"));
    let cli = Geoprov::new(env);
    cli.ok(&["registry", "create-table"]);
    cli
}

fn manifest_file(name: &str, lines: &[String]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geoprov-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn create_table_is_idempotent() {
    let cli = cli_with_table();
    let again = cli.ok(&["registry", "create-table"]);
    assert_eq!(again["created"], false);
}

#[test]
fn imports_ten_thousand_devices_and_reimports_idempotently() {
    let cli = cli_with_table();
    let lines: Vec<String> = (0..10_000)
        .map(|i| {
            let region = if i % 2 == 0 { "eu-west-1" } else { "us-east-1" };
            format!(
                r#"{{"serialNumber":"SN-{i:05}","allowedRegions":["{region}"],"maxProvisions":{},"attributes":{{"model":"X{}"}}}}"#,
                1 + i % 3,
                i % 7
            )
        })
        .collect();
    let file = manifest_file("ten-thousand.jsonl", &lines);
    let path = file.to_str().unwrap();

    let summary = cli.ok(&["registry", "import", path]);
    assert_eq!(summary["imported"], 10_000);
    assert_eq!(summary["invalid"], 0);

    for (serial, quota, model) in [
        ("SN-00000", 1, "X0"),
        ("SN-09999", 1, "X3"),
        ("SN-04711", 2, "X0"),
    ] {
        let shown = cli.ok(&["registry", "show", serial]);
        assert_eq!(shown["profile"]["serialNumber"], serial);
        assert_eq!(shown["profile"]["maxProvisions"], quota);
        assert_eq!(shown["profile"]["attributes"]["model"], model);
        assert_eq!(shown["provisioning"]["provisionCount"], 0);
    }

    let again = cli.ok(&["registry", "import", path]);
    assert_eq!(again["imported"], 10_000);
    let shown = cli.ok(&["registry", "show", "SN-09999"]);
    assert_eq!(
        shown["profile"]["allowedRegions"],
        serde_json::json!(["us-east-1"])
    );
}

#[test]
fn a_manifest_with_bad_lines_imports_nothing_and_names_line_and_field() {
    let cli = cli_with_table();
    let file = manifest_file(
        "bad.jsonl",
        &[
            r#"{"serialNumber":"SN-GOOD-1"}"#.into(),
            r#"{"serialNumber":"SN-BAD","maxProvisions":-1}"#.into(),
            r#"{"serialNumber":"SN-GOOD-2","allowedRegions":["eu-west-1"]}"#.into(),
            r#"{"serialNumber":"SN-TYPO","alowedRegions":["eu-west-1"]}"#.into(),
        ],
    );
    let path = file.to_str().unwrap();
    let out = cli.run(&["registry", "import", path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: maxProvisions"), "{stderr}");
    assert!(
        stderr.contains("line 4: alowedRegions: unknown field"),
        "{stderr}"
    );
    assert!(!cli.run(&["registry", "show", "SN-GOOD-1"]).status.success());

    let out = cli.run(&["registry", "import", "--skip-invalid", path]);
    assert!(
        !out.status.success(),
        "skipped lines still fail the command"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["imported"], 2);
    assert_eq!(summary["invalid"], 2);
    cli.ok(&["registry", "show", "SN-GOOD-2"]);
    assert!(!cli.run(&["registry", "show", "SN-BAD"]).status.success());
}

#[test]
fn show_and_audit_refuse_an_invalid_serial_and_report_an_unknown_one() {
    let cli = cli_with_table();
    let out = cli.run(&["registry", "show", "SN 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid serial number"));
    let out = cli.run(&["registry", "show", "SN-NOPE"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SN-NOPE is not in the registry"));
    assert_eq!(cli.ok(&["audit", "SN-NOPE"]), serde_json::json!([]));
}
