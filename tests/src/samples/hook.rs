//! The real `pre-provisioning-hook` binary under cargo-lambda's Runtime API
//! emulator, its table in moto seeded with the real `geoprov` CLI, invoked
//! with every sample event in `events/pre-provisioning-hook/`.

use std::collections::BTreeMap;

use crate::cli::Geoprov;
use crate::lambda::RuntimeEmulator;
use crate::{aws_env, moto, sdk_config, unique_table, workspace_binary, workspace_root};
use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::DynamoRegistry;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Expectations {
    environment: BTreeMap<String, String>,
    events: BTreeMap<String, Expected>,
}

#[derive(Deserialize)]
struct Expected {
    reason: String,
    response: Value,
}

/// Runs every sample event of `events/pre-provisioning-hook/` through the real binary,
/// whose AWS requests are signed with `function_key` (so a recording of
/// moto's requests tells them apart), and checks each answer.
pub async fn run(function_key: &str) {
    let root = workspace_root();
    let fixtures = root.join("tests/fixtures/pre-provisioning-hook");
    let expectations: Expectations =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let region = &expectations.environment["AWS_REGION"];
    let mut env = aws_env(&moto().endpoint, region);
    let table = unique_table("hook-binary");
    env.insert("TABLE_NAME".into(), table.clone());

    let cli = Geoprov::new(env.clone());
    cli.ok(&["registry", "create-table"]);
    let manifest = fixtures.join("registry.jsonl");
    // The manifest names thing groups: the import creates them in the region.
    cli.ok(&[
        "registry",
        "import",
        "--regions",
        region,
        manifest.to_str().unwrap(),
    ]);

    let emulator = RuntimeEmulator::start();
    let mut function_env = env.clone();
    function_env.extend(expectations.environment.clone());
    function_env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
    let mut function =
        emulator.run_function(&workspace_binary("pre-provisioning-hook"), &function_env);

    let config = sdk_config(&moto().endpoint, region).await;
    let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(&config), &table);

    let mut events: Vec<_> = std::fs::read_dir(root.join("events/pre-provisioning-hook"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    events.sort();
    assert!(events.len() >= 8, "sample events missing: {events:?}");
    let mut denials_by_claim: BTreeMap<String, usize> = BTreeMap::new();
    for path in events {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let expected = expectations
            .events
            .get(&name)
            .unwrap_or_else(|| panic!("no expectation for events/pre-provisioning-hook/{name}"));
        let payload: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();

        let response = emulator.invoke(&payload);
        assert_eq!(response, expected.response, "{name}");
        if expected.reason != "ALLOWED" {
            // Only a certificate id becomes a dimension.
            if let Some(claim) = payload["claimCertificateId"]
                .as_str()
                .filter(|c| geoprov_shared::claims::is_certificate_id(c))
            {
                *denials_by_claim.entry(claim.to_owned()).or_default() += 1;
            }
        }
        assert!(function.exited().is_none(), "the function exited on {name}");

        if let Some(serial) = payload
            .pointer("/parameters/SerialNumber")
            .and_then(Value::as_str)
        {
            let audit = registry
                .audit_events(&SerialNumber::try_from(serial).unwrap())
                .await
                .unwrap();
            let event = audit
                .iter()
                .rev()
                .find(|e| e.certificate_id.as_deref() == payload["certificateId"].as_str())
                .unwrap_or_else(|| panic!("{name}: no audit event"));
            assert_eq!(event.reason, expected.reason, "{name}");
        }
    }

    // Every log line is bounded, whatever the request held: the oversized
    // event's 20,000-character parameter name is cut as the audit cuts it.
    let output = function.output();
    let decisions: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|doc| doc["fields"]["message"] == "provisioning decision")
        .collect();
    assert!(!decisions.is_empty(), "{output}");
    for doc in &decisions {
        for field in ["serial_number", "certificate_id", "detail"] {
            let value = doc["fields"][field].as_str().unwrap_or_default();
            assert!(
                value.chars().count() <= 256,
                "{field}: {} chars",
                value.len()
            );
        }
    }
    let longest = output.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");

    // The abuse sentinel: one ClaimDenials per denial, by claim certificate,
    // in the EMF lines the stack's alarm reads.
    let mut emitted: BTreeMap<String, usize> = BTreeMap::new();
    for line in function.output().lines() {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if doc.get("ClaimDenials").is_some() {
            let dimensions = &doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
            assert!(
                dimensions
                    .as_array()
                    .unwrap()
                    .contains(&Value::from("ClaimCertificateId")),
                "{line}"
            );
            let claim = doc["ClaimCertificateId"].as_str().unwrap().to_owned();
            *emitted.entry(claim).or_default() += 1;
        }
    }
    assert_eq!(emitted, denials_by_claim);
}
