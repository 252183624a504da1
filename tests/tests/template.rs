//! template.yaml against the code: the provisioning template bodies are valid
//! JSON and reference only what they declare, the hook's parameterOverrides
//! are declared in the fleet template, and every function gets exactly the
//! environment variables its configuration reads. (`make lint-template` runs
//! `sam validate --lint`, cfn-lint and checkov on the same file.)

use std::collections::BTreeSet;

use geoprov_shared::config::Env;
use geoprov_tests::{template_facts, workspace_root};
use serde_json::Value;

fn facts() -> Value {
    template_facts()
}

/// Every `{"Ref": name}` in a provisioning template body.
fn refs(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("Ref") {
                found.insert(name.clone());
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

fn declared(body: &Value, section: &str) -> BTreeSet<String> {
    body[section]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn provisioning_templates_are_json_and_reference_only_what_they_declare() {
    let facts = facts();
    let templates = facts["provisioningTemplates"].as_object().unwrap();
    assert_eq!(
        templates.keys().collect::<Vec<_>>(),
        ["FleetProvisioningTemplate", "JitpCaCertificate"]
    );
    for (name, text) in templates {
        let body: Value = serde_json::from_str(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let known: BTreeSet<String> = declared(&body, "Parameters")
            .union(&declared(&body, "Resources"))
            .cloned()
            .collect();
        let mut used = BTreeSet::new();
        refs(&body["Resources"], &mut used);
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{name} references undeclared {unknown:?}"
        );
        for resource in ["thing", "certificate", "policy"] {
            assert!(
                body["Resources"][resource].is_object(),
                "{name}: no {resource}"
            );
        }
        assert_eq!(
            body["Resources"]["certificate"]["Properties"]["Status"],
            "ACTIVE"
        );
    }
}

#[test]
fn the_hooks_parameter_overrides_are_declared_in_the_fleet_template() {
    let facts = facts();
    let fleet: Value = serde_json::from_str(
        facts["provisioningTemplates"]["FleetProvisioningTemplate"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let parameters = declared(&fleet, "Parameters");
    // What the hook answers to the sample events, and what the device sends.
    let expected: Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("tests/fixtures/pre-provisioning-hook/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let mut overridden = BTreeSet::from(["SerialNumber".to_owned()]);
    for event in expected["events"].as_object().unwrap().values() {
        if let Some(overrides) = event["response"]["parameterOverrides"].as_object() {
            overridden.extend(overrides.keys().cloned());
        }
    }
    assert!(overridden.contains("Region") && overridden.contains("ThingGroupName"));
    let undeclared: Vec<&String> = overridden.difference(&parameters).collect();
    assert!(
        undeclared.is_empty(),
        "the fleet template lacks {undeclared:?}"
    );
}

fn names(facts: &Value, binary: &str) -> BTreeSet<String> {
    facts["environment"][binary]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// What a configuration reads, less what Lambda sets itself.
fn read_by(env: &Env) -> BTreeSet<String> {
    let mut read = env.names_read();
    read.remove("AWS_REGION");
    read
}

#[test]
fn every_function_gets_exactly_the_environment_it_reads() {
    let facts = facts();
    let failover_config = serde_json::json!({
        "hostedZoneId": "Z1", "recordName": "global.iot.example.com", "ttl": 60,
        "regions": {"eu-west-1": {"endpoint": "a-ats.iot.eu-west-1.amazonaws.com", "healthCheckId": "h", "alarmName": "geoprov-health-eu-west-1"}},
        "locations": [{"setIdentifier": "Default", "geoLocation": {"CountryCode": "*"}, "preference": ["eu-west-1"]}],
        "failAfter": 2, "recoverAfter": 3, "minChangeIntervalSeconds": 60
    })
    .to_string();
    let pca = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
    let all = [
        ("AWS_REGION", "eu-west-1"),
        ("TABLE_NAME", "geoprov"),
        ("HOOK_DEADLINE_MS", "3000"),
        ("REQUIRE_CLIENT_ID_MATCH", "true"),
        ("DEFAULT_MAX_PROVISIONS", "3"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", "abc"),
        ("FAILOVER_CONFIG", failover_config.as_str()),
        ("INSYNC_TIMEOUT_SECONDS", "60"),
        ("LOCK_WAIT_SECONDS", "30"),
        ("PCA_ARN", pca),
        ("PCA_REGION", "eu-central-1"),
        ("MAX_VALIDITY_DAYS", "365"),
        ("DEFAULT_VALIDITY_DAYS", "365"),
        ("ISSUE_CONCURRENCY", "8"),
        ("ISSUE_DEADLINE_MS", "20000"),
    ];

    let env = Env::from_pairs(all);
    pre_provisioning_hook::HookConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "pre-provisioning-hook"));

    let env = Env::from_pairs(all);
    endpoint_failover::config::FunctionConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "endpoint-failover"));

    let env = Env::from_pairs(all);
    cert_issuer::config::IssuerConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "cert-issuer"));
}
