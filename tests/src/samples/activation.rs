//! The real `device-activation` binary under cargo-lambda's Runtime API
//! emulator, its table in moto seeded with the real `geoprov` CLI, moto's IoT
//! holding the fixture CA and the devices' certificates PENDING_ACTIVATION,
//! invoked with every sample event in `events/device-activation/`.

use std::collections::BTreeMap;

use crate::cli::Geoprov;
use crate::lambda::RuntimeEmulator;
use crate::{aws_env, moto, sdk_config, unique_table, workspace_binary, workspace_root};
use aws_sdk_iot::types::{CertificateMode, CertificateStatus};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Expectations {
    environment: BTreeMap<String, String>,
    events: BTreeMap<String, Value>,
}

/// Runs every sample event of `events/device-activation/` through the real
/// binary, whose AWS requests are signed with `function_key`, and checks
/// each answer and what it left in IoT.
pub async fn run(function_key: &str) {
    let root = workspace_root();
    let fixtures = root.join("tests/fixtures/device-activation");
    let expectations: Expectations =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let env_of = &expectations.environment;
    let region = &env_of["AWS_REGION"];
    let mut env = aws_env(&moto().endpoint, region);
    env.insert("TABLE_NAME".into(), unique_table("activation-binary"));
    let cli = Geoprov::new(env.clone());
    cli.ok(&["registry", "create-table"]);
    cli.ok(&[
        "registry",
        "import",
        fixtures.join("registry.jsonl").to_str().unwrap(),
    ]);

    // The regional stack's IoT resources, the CA registered for JITR, and
    // what IoT does on each device's first connect.
    let iot = aws_sdk_iot::Client::new(&sdk_config(&moto().endpoint, region).await);
    crate::emulator::activation_resources(
        &iot,
        &env_of["THING_TYPE_NAME"],
        &env_of["DEFAULT_THING_GROUP"],
        &env_of["DEVICE_POLICY_NAME"],
    )
    .await;
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap();
    let ca = read("ca.pem");
    crate::emulator::made_or_exists(
        iot.register_ca_certificate()
            .ca_certificate(&ca)
            .set_as_active(true)
            .allow_auto_registration(true)
            .certificate_mode(CertificateMode::SniOnly)
            .send()
            .await,
    );
    for serial in ["SN-JITR-0001", "SN-JITR-0002", "SN-JITR-0003"] {
        iot.register_certificate()
            .certificate_pem(read(&format!("{serial}.pem")))
            .ca_certificate_pem(&ca)
            .status(CertificateStatus::PendingActivation)
            .send()
            .await
            .unwrap_or_else(|e| panic!("register {serial}: {e:?}"));
    }
    // A thing left from an earlier provisioning of the device: of the
    // device type (a thing of another type is refused, THING_TYPE_MISMATCH).
    iot.create_thing()
        .thing_name("SN-JITR-0003")
        .thing_type_name(&env_of["THING_TYPE_NAME"])
        .send()
        .await
        .unwrap();

    let emulator = RuntimeEmulator::start();
    let mut function_env = env.clone();
    function_env.extend(expectations.environment.clone());
    function_env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
    let mut function = emulator.run_function(&workspace_binary("device-activation"), &function_env);

    let mut events: Vec<_> = std::fs::read_dir(root.join("events/device-activation"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    events.sort();
    let names: Vec<String> = events
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        expectations.events.keys().cloned().collect::<Vec<_>>(),
        "every sample event needs an expectation"
    );
    for (path, name) in events.iter().zip(&names) {
        let payload: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let answer = emulator.invoke(&payload);
        let expected = &expectations.events[name];
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&answer[key], value, "{name}: {answer}");
        }
        assert!(function.exited().is_none(), "the function exited on {name}");
    }

    let status = |serial: &str| {
        let id = crate::emulator::certificate_id(&read(&format!("{serial}.pem")));
        let iot = iot.clone();
        async move { crate::emulator::certificate_status(&iot, &id).await }
    };
    assert_eq!(status("SN-JITR-0001").await, "ACTIVE");
    assert_eq!(status("SN-JITR-0002").await, "PENDING_ACTIVATION");
    assert_eq!(status("SN-JITR-0003").await, "ACTIVE");
    let thing = iot
        .describe_thing()
        .thing_name("SN-JITR-0003")
        .send()
        .await
        .unwrap();
    assert_eq!(
        thing.thing_type_name(),
        Some(env_of["THING_TYPE_NAME"].as_str())
    );
    assert_eq!(thing.attributes().unwrap()["region"], region.as_str());
}
