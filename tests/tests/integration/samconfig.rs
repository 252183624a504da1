//! samconfig.toml as SAM CLI reads it: every `parameter_overrides` value,
//! parsed by the installed SAM CLI's own `--parameter-overrides` option
//! (`CfnParameterOverridesType`, via `scripts/samconfig_overrides.py`),
//! arrives whole. SAM's tokeniser ends an unquoted value at the first space or
//! double quote and drops the rest without an error, so a PEM or a JSON value
//! pasted unquoted would reach CloudFormation cut short.

use std::path::{Path, PathBuf};
use std::process::Command;

use geoprov_tests::{template_facts, workspace_root};
use serde_json::{Map, Value};

/// The SAM venv's Python, which has the pinned aws-sam-cli.
fn sam_python() -> PathBuf {
    let python = workspace_root().join(".venv-sam/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make lint-template`, which creates the SAM venv (.venv-sam)",
        python.display()
    );
    python
}

/// `{env: {command: {"parsed": {..}, "expected": {..}}}}` for a samconfig file.
fn overrides(samconfig: &Path) -> Map<String, Value> {
    let out = Command::new(sam_python())
        .arg(workspace_root().join("scripts/samconfig_overrides.py"))
        .arg(samconfig)
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .expect("run scripts/samconfig_overrides.py");
    assert!(
        out.status.success(),
        "scripts/samconfig_overrides.py {}: {}",
        samconfig.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("the script prints JSON") {
        Value::Object(envs) => envs,
        other => panic!("expected an object of envs, got {other}"),
    }
}

/// Every (env, command) whose parsed overrides differ from what is written.
fn cut_values(envs: &Map<String, Value>) -> Vec<String> {
    let mut cut = Vec::new();
    for (env, commands) in envs {
        for (command, check) in commands.as_object().expect("commands object") {
            let expected = check["expected"].as_object().expect("expected object");
            let parsed = check["parsed"].as_object().expect("parsed object");
            for (key, written) in expected {
                if parsed.get(key) != Some(written) {
                    cut.push(format!(
                        "[{env}.{command}] {key}: written {written}, SAM reads {}",
                        parsed.get(key).unwrap_or(&Value::Null)
                    ));
                }
            }
            for key in parsed.keys().filter(|k| !expected.contains_key(*k)) {
                cut.push(format!(
                    "[{env}.{command}] SAM reads a parameter {key} that no entry sets"
                ));
            }
        }
    }
    cut
}

#[test]
fn every_parameter_override_arrives_whole() {
    let envs = overrides(&workspace_root().join("samconfig.toml"));

    for env in ["us-east-1", "eu-west-1", "global"] {
        assert!(
            envs.get(env)
                .and_then(|c| c.get("deploy"))
                .is_some_and(|d| !d["parsed"].as_object().expect("parsed").is_empty()),
            "samconfig.toml has no parameter_overrides for `sam deploy --config-env {env}`"
        );
    }

    let cut = cut_values(&envs);
    assert!(
        cut.is_empty(),
        "values SAM CLI does not read whole (quote them: KEY=\"value\"):\n{}",
        cut.join("\n")
    );

    for (env, commands) in &envs {
        for (command, check) in commands.as_object().expect("commands object") {
            let parsed = check["parsed"].as_object().expect("parsed object");
            assert_eq!(parsed, check["expected"].as_object().unwrap());
            for (key, value) in parsed {
                assert!(
                    value.as_str().is_some_and(|v| !v.is_empty()),
                    "[{env}.{command}] {key} is empty"
                );
            }
        }
    }
}

/// The check can fail: values with a space or a JSON object, unquoted, are
/// cut by SAM's tokeniser and the comparison names them.
#[test]
fn unquoted_space_and_json_are_caught() {
    let dir = std::env::temp_dir().join(format!("geoprov-samconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sample = dir.join("samconfig.toml");
    std::fs::write(
        &sample,
        "version = 0.1\n\
         [sample.deploy.parameters]\n\
         parameter_overrides = [\"A=has space\", \"B={\\\"json\\\": 1}\"]\n",
    )
    .expect("write sample samconfig");

    let envs = overrides(&sample);
    std::fs::remove_dir_all(&dir).ok();

    let check = &envs["sample"]["deploy"];
    assert_eq!(check["expected"]["A"], "has space");
    assert_eq!(check["expected"]["B"], "{\"json\": 1}");
    assert_eq!(check["parsed"]["A"], "has", "SAM ends a value at a space");
    assert_eq!(check["parsed"]["B"], "{", "SAM ends a value at a quote");
    let cut = cut_values(&envs);
    assert_eq!(cut.len(), 2, "both values are reported cut: {cut:?}");
}

/// samconfig.toml itself, as JSON (read by Python's tomllib).
fn samconfig() -> Value {
    let out = Command::new(sam_python())
        .args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(workspace_root().join("samconfig.toml"))
        .output()
        .expect("read samconfig.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The envs, the template each deploys, and the parameters SAM reads.
#[test]
fn every_env_deploys_without_a_prompt_with_its_architecture_and_its_templates_parameters() {
    let config = samconfig();
    let envs = overrides(&workspace_root().join("samconfig.toml"));
    let facts = template_facts();
    for (env, template) in [
        ("us-east-1", "template.yaml"),
        ("eu-west-1", "template.yaml"),
        ("global", "global.yaml"),
    ] {
        let deploy = &config[env]["deploy"]["parameters"];
        assert_eq!(
            deploy["confirm_changeset"],
            Value::Bool(false),
            "[{env}.deploy] must not wait for a prompt (confirm_changeset = false)"
        );
        // The architecture is in the env's own lists, build and deploy alike:
        // a command-line override would replace the whole list.
        let built = &envs[env]["build"]["parsed"]["Architecture"];
        let deployed = &envs[env]["deploy"]["parsed"]["Architecture"];
        assert!(
            built.is_string() && built == deployed,
            "[{env}] Architecture: build {built}, deploy {deployed}"
        );
        let declared: Vec<&str> = facts["parameters"][template]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for command in ["build", "deploy"] {
            for key in envs[env][command]["parsed"].as_object().unwrap().keys() {
                assert!(
                    declared.contains(&key.as_str()),
                    "[{env}.{command}] sets {key}, which {template} does not declare"
                );
            }
        }
    }
}
