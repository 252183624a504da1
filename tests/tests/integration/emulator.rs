//! geoprov-iot-emu with real devices over TLS on loopback: the regional
//! stack's IoT resources made in moto from `template.yaml`, the real hook
//! binary behind cargo-lambda's Runtime API emulator, and the `geoprov`
//! device client. Each test uses a region of its own in moto.

use std::collections::BTreeMap;

use aws_sdk_iot::Client as IotClient;
use geoprov_device::provision::{ProvisionError, Provisioned, provision};
use geoprov_device::{Device, DeviceError, Identity};
use geoprov_tests::certs::device_ca;
use geoprov_tests::emulator::{
    Emulator, FactoryKey, FleetRegion, WorkDir, certificate_id, certificate_status, factory_key,
    geoprov, invoke_url, iot_stack, register_fleet_ca, setup_claim,
};
use geoprov_tests::{moto, sdk_config};
use serde_json::{Value, json};

fn assert_rejected(
    outcome: Result<Provisioned, ProvisionError>,
    operation: &str,
    code: &str,
) -> String {
    match outcome {
        Err(ProvisionError::Rejected {
            operation: op,
            code: c,
            message,
            ..
        }) if op == operation && c == code => message,
        other => panic!("expected {operation} rejected with {code}, got {other:?}"),
    }
}

async fn thing_exists(iot: &IotClient, name: &str) -> bool {
    iot.describe_thing().thing_name(name).send().await.is_ok()
}

/// A self-signed certificate IoT has never seen.
/// The reasons audited for `serial`, once there is one: activation runs
/// after IoT drops the connection, as an asynchronous invocation.
async fn audit_reasons_until(region: &str, table: &str, serial: &str) -> Vec<String> {
    let config = sdk_config(&moto().endpoint, region).await;
    let registry = geoprov_shared::registry::DynamoRegistry::new(
        aws_sdk_dynamodb::Client::new(&config),
        table,
    );
    let serial = geoprov_shared::device::SerialNumber::try_from(serial).unwrap();
    for _ in 0..100 {
        let events = registry.audit_events(&serial).await.unwrap();
        if !events.is_empty() {
            return events.into_iter().map(|e| e.reason).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("nothing audited for {serial}");
}

fn stranger() -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stranger");
    Identity {
        certificate_pem: params.self_signed(&key).unwrap().pem(),
        private_key_pem: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_refuses_a_wrong_sni_an_unknown_certificate_and_a_claim_outside_its_topics() {
    let fleet = FleetRegion::start("eu-north-1", &[]);
    let claim = &fleet.claim.identity;

    // SNI must be a configured domain name.
    let wrong = Device::connect(
        &fleet.emulator.endpoint_named("other.example.com"),
        claim,
        "prov-SN-1",
    )
    .await;
    assert!(
        matches!(wrong, Err(DeviceError::Tls(_))),
        "{:?}",
        wrong.err()
    );
    // A certificate IoT does not know is closed without a CONNACK.
    let unknown = Device::connect(&fleet.emulator.endpoint(), &stranger(), "prov-SN-1").await;
    assert!(
        matches!(unknown, Err(DeviceError::ConnectRefused)),
        "{:?}",
        unknown.err()
    );
    // The claim connects only as a provisioning client id.
    let as_device = Device::connect(&fleet.emulator.endpoint(), claim, "SN-1").await;
    assert!(
        matches!(as_device, Err(DeviceError::ConnectRefused)),
        "{:?}",
        as_device.err()
    );

    // The claim may use the provisioning topics, and nothing else.
    let mut device = Device::connect(&fleet.emulator.endpoint(), claim, "prov-SN-1")
        .await
        .unwrap();
    device
        .subscribe(&[
            "$aws/certificates/create/json/accepted",
            "$aws/certificates/create/json/rejected",
        ])
        .await
        .unwrap();
    let publish = device.publish("devices/SN-1/hello", b"hi".to_vec()).await;
    assert!(
        matches!(publish, Err(DeviceError::Closed(_))),
        "{publish:?}"
    );

    // No one answers for IoT: a claim holder publishing a forged answer to
    // devices provisioning now is disconnected, and the answer goes nowhere.
    let mut victim = Device::connect(&fleet.emulator.endpoint(), claim, "prov-SN-2")
        .await
        .unwrap();
    victim
        .subscribe(&["$aws/certificates/create/json/accepted"])
        .await
        .unwrap();
    let mut forger = Device::connect(&fleet.emulator.endpoint(), claim, "prov-SN-3")
        .await
        .unwrap();
    let forged = forger
        .publish("$aws/certificates/create/json/accepted", b"{}".to_vec())
        .await;
    assert!(matches!(forged, Err(DeviceError::Closed(_))), "{forged:?}");
    let nothing = victim
        .receive(std::time::Duration::from_millis(500), |_| true)
        .await;
    assert!(
        matches!(nothing, Err(DeviceError::Timeout(..))),
        "{nothing:?}"
    );
    // A PUBLISH names a topic, not a filter.
    let mut wild = Device::connect(&fleet.emulator.endpoint(), claim, "prov-SN-4")
        .await
        .unwrap();
    let published = wild
        .publish("$aws/certificates/create/+", b"{}".to_vec())
        .await;
    assert!(
        matches!(published, Err(DeviceError::Closed(_))),
        "{published:?}"
    );

    let mut device = Device::connect(&fleet.emulator.endpoint(), claim, "prov-SN-1")
        .await
        .unwrap();
    let subscribe = device.subscribe(&["devices/#"]).await;
    assert!(
        matches!(subscribe, Err(DeviceError::Closed(_))),
        "{subscribe:?}"
    );

    // The refusals are the emulator's, and it says why.
    let log = fleet.emulator.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("publish refused by policy"), "{log}");
    assert!(log.contains("subscribe refused by policy"), "{log}");
    assert!(log.contains("is not registered"), "{log}");
    assert!(log.contains("do not allow iot:Connect"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_provisions_a_device_by_iot_made_keys_and_by_csr_and_the_device_owns_its_topics() {
    let csr_key = factory_key();
    let manifest = [
        json!({"serialNumber": "SN-KEYS-1", "status": "ALLOWED", "thingGroup": "geoprov-sensors",
               "attributes": {"model": "X1", "firmware": "1.0.0"}}),
        json!({"serialNumber": "SN-CSR-1", "status": "ALLOWED", "publicKeySha256": csr_key.spki_sha256}),
        json!({"serialNumber": "SN-CLI-1", "status": "ALLOWED"}),
    ];
    let fleet = FleetRegion::start("eu-west-2", &manifest);
    let iot = fleet.iot().await;

    let by_keys = fleet.provision("SN-KEYS-1", None).await.unwrap();
    let by_csr = fleet.provision("SN-CSR-1", Some(&csr_key)).await.unwrap();
    assert_eq!(by_keys.thing_name, "SN-KEYS-1");
    assert_eq!(by_csr.thing_name, "SN-CSR-1");
    assert_eq!(by_keys.device_configuration, json!({"region": "eu-west-2"}));
    // The CSR's key stayed on the device: the certificate is for it.
    assert_eq!(by_csr.identity.private_key_pem, csr_key.pem);

    for (device, group, attributes) in [
        (
            &by_keys,
            "geoprov-sensors",
            json!({"serialNumber": "SN-KEYS-1", "region": "eu-west-2", "model": "X1", "firmware": "1.0.0"}),
        ),
        (
            &by_csr,
            "geoprov-devices",
            json!({"serialNumber": "SN-CSR-1", "region": "eu-west-2", "model": "", "firmware": ""}),
        ),
    ] {
        let name = &device.thing_name;
        let thing = iot.describe_thing().thing_name(name).send().await.unwrap();
        assert_eq!(thing.thing_type_name(), Some("geoprov-device"));
        // The hook's overrides: the region and the manifest's attributes,
        // whatever the device sent.
        let held: BTreeMap<String, String> = thing
            .attributes()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let expected: BTreeMap<String, String> = serde_json::from_value(attributes).unwrap();
        assert_eq!(held, expected, "{name}");
        let groups = iot
            .list_thing_groups_for_thing()
            .thing_name(name)
            .send()
            .await
            .unwrap();
        let groups: Vec<_> = groups
            .thing_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .collect();
        assert_eq!(groups, vec![group], "{name}");
        assert_eq!(
            certificate_status(&iot, &device.certificate_id).await,
            "ACTIVE"
        );
        let arn = format!(
            "arn:aws:iot:eu-west-2:123456789012:cert/{}",
            device.certificate_id
        );
        let policies = iot
            .list_attached_policies()
            .target(&arn)
            .send()
            .await
            .unwrap();
        let policies: Vec<_> = policies
            .policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect();
        assert_eq!(policies, vec!["geoprov-DevicePolicy"]);
        let things = iot
            .list_principal_things()
            .principal(&arn)
            .send()
            .await
            .unwrap();
        assert_eq!(things.things(), std::slice::from_ref(name));
        // The hook was called once, with this certificate, and allowed it.
        assert_eq!(
            fleet.audit_reasons(name).await,
            vec![("ALLOWED".to_owned(), Some(device.certificate_id.clone()))]
        );
    }

    // Each device uses its own topics, and not another's.
    let endpoint = fleet.emulator.endpoint();
    let mut device = Device::connect(&endpoint, &by_csr.identity, "SN-CSR-1")
        .await
        .unwrap();
    device.subscribe(&["devices/SN-CSR-1/hello"]).await.unwrap();
    device
        .publish("devices/SN-CSR-1/hello", b"hi".to_vec())
        .await
        .unwrap();
    let message = device
        .receive(std::time::Duration::from_secs(5), |t| {
            t == "devices/SN-CSR-1/hello"
        })
        .await
        .unwrap();
    assert_eq!(&message.payload[..], b"hi");
    let other = device
        .publish("devices/SN-KEYS-1/hello", b"hi".to_vec())
        .await;
    assert!(matches!(other, Err(DeviceError::Closed(_))), "{other:?}");
    // A certificate connects only as its own thing.
    let as_other = Device::connect(&endpoint, &by_csr.identity, "SN-KEYS-1").await;
    assert!(
        matches!(as_other, Err(DeviceError::ConnectRefused)),
        "{:?}",
        as_other.err()
    );

    // The reference client: provision by CSR, then connect.
    provision_and_connect_with_the_cli(&fleet, "SN-CLI-1");
}

fn provision_and_connect_with_the_cli(fleet: &FleetRegion, serial: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = fleet.dir.path();
    let ca = dir.join("server-ca-cli.pem");
    std::fs::write(&ca, &fleet.emulator.server_ca_pem).unwrap();
    let devices = dir.join("devices");
    let (claim_cert, claim_key) = (dir.join("claim.pem"), dir.join("claim.key"));
    let cli = geoprov(&fleet.region, &fleet.table, &fleet.table_endpoint);
    let address = fleet.emulator.mqtt.to_string();
    let common = [
        "--endpoint",
        geoprov_tests::emulator::GLOBAL_NAME,
        "--connect-to",
        &address,
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    let mut args = vec!["device", "provision"];
    args.extend(common);
    args.extend([
        "--claim-cert",
        claim_cert.to_str().unwrap(),
        "--claim-key",
        claim_key.to_str().unwrap(),
        "--serial",
        serial,
        "--csr",
        "--out-dir",
        devices.to_str().unwrap(),
    ]);
    let out = cli.ok(&args);
    assert_eq!(out["thingName"], serial);
    assert_eq!(out["region"], fleet.region.as_str());
    let key_file = out["keyFile"].as_str().unwrap();
    let certificate_file = out["certificateFile"].as_str().unwrap();
    for file in [key_file, certificate_file] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert_eq!(
        certificate_id(&std::fs::read_to_string(certificate_file).unwrap()),
        out["certificateId"]
    );
    let run = cli.run(&args);
    let printed =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        !printed.contains("PRIVATE KEY"),
        "a key reached the output: {printed}"
    );

    let mut args = vec!["device", "connect"];
    args.extend(common);
    args.extend([
        "--cert",
        certificate_file,
        "--key",
        key_file,
        "--client-id",
        serial,
    ]);
    let report = cli.ok(&args);
    assert_eq!(
        report,
        json!({"connected": true, "attempts": 1, "subscribe": "allowed", "publish": "allowed", "receive": "allowed"})
    );
}

/// A function endpoint that answers after 6 s (a fake: no real function
/// can be told to sleep); serves one invocation, then stops.
fn slow_function() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buffer = [0u8; 16 * 1024];
            let _ = stream.read(&mut buffer);
            std::thread::sleep(std::time::Duration::from_secs(6));
            let body = r#"{"allowProvisioning": true}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}/2015-03-31/functions/_/invocations")
}

/// The emulator configuration of `fleet` with the fleet template changed by `change`.
fn changed_template(
    fleet: &FleetRegion,
    name: &str,
    change: impl Fn(&mut Value),
) -> std::path::PathBuf {
    let original: Value =
        serde_json::from_slice(&std::fs::read(fleet.dir.path().join("emulator.json")).unwrap())
            .unwrap();
    let mut config = original.clone();
    for template in config["templates"].as_array_mut().unwrap() {
        if template["templateName"] == "geoprov-fleet" {
            let mut body: Value =
                serde_json::from_str(template["templateBody"].as_str().unwrap()).unwrap();
            change(&mut body);
            template["templateBody"] = Value::String(body.to_string());
        }
    }
    let path = fleet.dir.path().join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_thing_is_rejected_for_a_denial_a_slow_hook_an_expired_token_and_a_template_iot_refuses()
 {
    let manifest = [
        json!({"serialNumber": "SN-REJ-ATTRS", "status": "ALLOWED"}),
        json!({"serialNumber": "SN-REJ-SLOW", "status": "ALLOWED"}),
        json!({"serialNumber": "SN-REJ-TOKEN", "status": "ALLOWED"}),
        json!({"serialNumber": "SN-REJ-GROUP", "status": "ALLOWED", "thingGroup": "geoprov-sensors-gone"}),
    ];
    let fleet = FleetRegion::start("eu-west-3", &manifest);
    let iot = fleet.iot().await;

    // The hook denies a device the registry does not know.
    let message = assert_rejected(
        fleet.provision("SN-REJ-UNKNOWN", None).await,
        "RegisterThing",
        "AccessDenied",
    );
    assert!(message.starts_with("ACCESS_DENIED"), "{message}");
    assert!(!thing_exists(&iot, "SN-REJ-UNKNOWN").await);
    assert_eq!(
        fleet.audit_reasons("SN-REJ-UNKNOWN").await[0].0,
        "UNKNOWN_DEVICE"
    );

    // A thing group that no longer exists: nothing is made.
    iot.delete_thing_group()
        .thing_group_name("geoprov-sensors-gone")
        .send()
        .await
        .unwrap();
    let message = assert_rejected(
        fleet.provision("SN-REJ-GROUP", None).await,
        "RegisterThing",
        "InvalidParameters",
    );
    assert!(
        message.contains("thing group geoprov-sensors-gone does not exist"),
        "{message}"
    );
    assert!(!thing_exists(&iot, "SN-REJ-GROUP").await);

    // A template that gives a thing without a type four attributes.
    let untyped = changed_template(&fleet, "untyped.json", |body| {
        body["Resources"]["thing"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("ThingTypeName");
    });
    // A second emulator of the region, with that template, and the same hook.
    let hook_url = invoke_url(&fleet.runtime);
    let second = Emulator::start(
        "eu-west-3",
        &untyped,
        &[("PreProvisioningHookFunction", hook_url)],
        fleet.dir.path(),
    );
    let request = fleet.request("SN-REJ-ATTRS", None);
    let outcome = provision(&second.endpoint(), &fleet.claim.identity, &request).await;
    let message = assert_rejected(outcome, "RegisterThing", "InvalidParameters");
    assert!(message.contains("at most 3 attributes"), "{message}");
    assert!(!thing_exists(&iot, "SN-REJ-ATTRS").await);
    drop(second);

    // A hook that answers after IoT's 5 s is ACCESS_DENIED.
    let slow = Emulator::start(
        "eu-west-3",
        &fleet.dir.path().join("emulator.json"),
        &[("PreProvisioningHookFunction", slow_function())],
        fleet.dir.path(),
    );
    let request = fleet.request("SN-REJ-SLOW", None);
    let message = assert_rejected(
        provision(&slow.endpoint(), &fleet.claim.identity, &request).await,
        "RegisterThing",
        "AccessDenied",
    );
    assert!(message.contains("5 s"), "{message}");
    assert!(!thing_exists(&iot, "SN-REJ-SLOW").await);
    drop(slow);

    // The hookTimeout fault: the hook is not called, and IoT's 5 s pass.
    fleet.emulator.faults(json!({"hookTimeout": true}));
    let message = assert_rejected(
        fleet.provision("SN-REJ-SLOW", None).await,
        "RegisterThing",
        "AccessDenied",
    );
    assert!(message.contains("5 s"), "{message}");
    assert!(fleet.audit_reasons("SN-REJ-SLOW").await.is_empty());
    fleet.emulator.faults(json!({"hookTimeout": false}));

    // A certificate ownership token is good for an hour.
    let endpoint = fleet.emulator.endpoint();
    let mut device = Device::connect(&endpoint, &fleet.claim.identity, "prov-SN-REJ-TOKEN")
        .await
        .unwrap();
    let create = "$aws/certificates/create/json";
    let register = "$aws/provisioning-templates/geoprov-fleet/provision/json";
    device
        .subscribe(&[
            &format!("{create}/accepted"),
            &format!("{register}/accepted"),
            &format!("{register}/rejected"),
        ])
        .await
        .unwrap();
    device.publish(create, b"{}".to_vec()).await.unwrap();
    let created = device
        .receive(std::time::Duration::from_secs(10), |t| {
            t.starts_with(create)
        })
        .await
        .unwrap()
        .json()
        .unwrap();
    let certificate = created["certificateId"].as_str().unwrap().to_owned();
    assert_eq!(
        certificate_status(&iot, &certificate).await,
        "PENDING_ACTIVATION"
    );
    fleet.emulator.advance_clock(3601);
    device
        .publish(
            register,
            json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "SN-REJ-TOKEN"}})
                .to_string(),
        )
        .await
        .unwrap();
    let answer = device
        .receive(std::time::Duration::from_secs(10), |t| {
            t.starts_with(register)
        })
        .await
        .unwrap();
    assert_eq!(answer.topic, format!("{register}/rejected"));
    let body = answer.json().unwrap();
    assert_eq!(
        body["errorCode"], "InvalidCertificateOwnershipToken",
        "{body}"
    );
    assert!(
        body["errorMessage"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(body["statusCode"], 400);
    assert!(!thing_exists(&iot, "SN-REJ-TOKEN").await);
    assert_eq!(
        certificate_status(&iot, &certificate).await,
        "PENDING_ACTIVATION"
    );
}

/// JITR through the emulator: the stack's topic rule hands IoT's
/// registration event to the real device-activation binary, which applies
/// the registry's device rules before anything is activated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitr_activates_a_certificate_only_where_the_registry_allows_then_it_connects() {
    let region = "ap-northeast-1";
    let dir = WorkDir::new("jitr");
    let config = dir.path().join("emulator.json");
    iot_stack(
        region,
        &[
            (
                "PcaArn",
                "arn:aws:acm-pca:ap-northeast-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555",
            ),
            // JITR alone: no certificate provider to run.
            ("EnableCertificateProvider", "false"),
        ],
        &config,
    );
    let iot = IotClient::new(&sdk_config(&moto().endpoint, region).await);
    let ca = device_ca();
    // As `geoprov setup ca` registers it: auto-registration, no template.
    let ca_id = register_fleet_ca(&iot, &ca.pem).await;
    let allowed = ca.sign("SN-JITR-1");
    let elsewhere = ca.sign("SN-JITR-EU");
    let blocked = ca.sign("SN-JITR-BLOCKED");
    let table = geoprov_tests::unique_table("jitr");
    let cli = geoprov(region, &table, &moto().endpoint);
    cli.ok(&["registry", "create-table"]);
    let manifest = dir.path().join("manifest.jsonl");
    let lines = [
        json!({"serialNumber": "SN-JITR-1", "allowedRegions": [region], "publicKeySha256": allowed.spki_sha256}),
        json!({"serialNumber": "SN-JITR-EU", "allowedRegions": ["eu-west-1"], "publicKeySha256": elsewhere.spki_sha256}),
        json!({"serialNumber": "SN-JITR-BLOCKED", "status": "BLOCKED", "publicKeySha256": blocked.spki_sha256}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&manifest, text.join("\n") + "\n").unwrap();
    cli.ok(&["registry", "import", manifest.to_str().unwrap()]);
    let runtime = geoprov_tests::lambda::RuntimeEmulator::start();
    let mut env = geoprov_tests::aws_env(&moto().endpoint, region);
    for (k, v) in [
        ("TABLE_NAME", table.as_str()),
        ("DEVICE_POLICY_NAME", "geoprov-DevicePolicy"),
        ("THING_TYPE_NAME", "geoprov-device"),
        ("DEFAULT_THING_GROUP", "geoprov-devices"),
        ("FLEET_CA_CERTIFICATE_IDS", ca_id.as_str()),
    ] {
        env.insert(k.into(), v.into());
    }
    let _activation =
        runtime.run_function(&geoprov_tests::workspace_binary("device-activation"), &env);
    let emulator = Emulator::start(
        region,
        &config,
        &[("DeviceActivationFunction", invoke_url(&runtime))],
        dir.path(),
    );

    // Pinned to eu-west-1, or blocked: dropped on every connect, never
    // activated here, each connect's event denied and audited.
    for (signed, serial, reason) in [
        (&elsewhere, "SN-JITR-EU", "REGION_NOT_ALLOWED"),
        (&blocked, "SN-JITR-BLOCKED", "DEVICE_BLOCKED"),
    ] {
        let device = Identity {
            certificate_pem: signed.certificate_pem.clone(),
            private_key_pem: signed.private_key_pem.clone(),
        };
        let refused = Device::connect_retrying(&emulator.endpoint(), &device, serial, 3).await;
        assert!(refused.is_err(), "{serial} connected");
        let id = certificate_id(&signed.certificate_pem);
        assert_eq!(certificate_status(&iot, &id).await, "PENDING_ACTIVATION");
        assert!(
            iot.describe_thing()
                .thing_name(serial)
                .send()
                .await
                .is_err()
        );
        let reasons = audit_reasons_until(region, &table, serial).await;
        assert!(reasons.iter().all(|r| r == reason), "{serial}: {reasons:?}");
    }

    // An observer that may see every event.
    let observer = stranger();
    let observer_cert = iot
        .register_certificate_without_ca()
        .certificate_pem(&observer.certificate_pem)
        .status(aws_sdk_iot::types::CertificateStatus::Active)
        .send()
        .await
        .unwrap();
    iot.create_policy()
        .policy_name("test-observer")
        .policy_document(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}).to_string())
        .send()
        .await
        .unwrap();
    iot.attach_policy()
        .policy_name("test-observer")
        .target(observer_cert.certificate_arn().unwrap())
        .send()
        .await
        .unwrap();
    let mut watcher = Device::connect(&emulator.endpoint(), &observer, "test-observer")
        .await
        .unwrap();
    watcher
        .subscribe(&[
            "$aws/events/certificates/registered/+",
            "$aws/events/presence/+/+",
        ])
        .await
        .unwrap();

    let device = Identity {
        certificate_pem: allowed.certificate_pem.clone(),
        private_key_pem: allowed.private_key_pem.clone(),
    };
    let id = certificate_id(&device.certificate_pem);
    let first = Device::connect(&emulator.endpoint(), &device, "SN-JITR-1").await;
    assert!(
        matches!(first, Err(DeviceError::ConnectRefused)),
        "{:?}",
        first.err()
    );
    let event = watcher
        .receive(std::time::Duration::from_secs(10), |t| {
            t.starts_with("$aws/events/certificates/registered/")
        })
        .await
        .unwrap();
    assert_eq!(
        event.topic,
        format!("$aws/events/certificates/registered/{ca_id}")
    );
    let event = event.json().unwrap();
    assert_eq!(event["certificateId"], id.as_str());
    assert_eq!(event["caCertificateId"], ca_id.as_str());
    assert_eq!(event["certificateStatus"], "PENDING_ACTIVATION");

    let (mut connected, attempts) =
        Device::connect_retrying(&emulator.endpoint(), &device, "SN-JITR-1", 6)
            .await
            .unwrap();
    assert!((1..=6).contains(&attempts), "{attempts}");
    assert_eq!(certificate_status(&iot, &id).await, "ACTIVE");
    let thing = iot
        .describe_thing()
        .thing_name("SN-JITR-1")
        .send()
        .await
        .unwrap();
    assert_eq!(thing.thing_type_name(), Some("geoprov-device"));
    assert_eq!(thing.attributes().unwrap()["region"], region);
    let arn = format!("arn:aws:iot:{region}:123456789012:cert/{id}");
    let things = iot
        .list_principal_things()
        .principal(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(things.things(), ["SN-JITR-1".to_owned()]);
    connected
        .subscribe(&["devices/SN-JITR-1/hello"])
        .await
        .unwrap();
    connected
        .publish("devices/SN-JITR-1/hello", b"up".to_vec())
        .await
        .unwrap();
    connected
        .receive(std::time::Duration::from_secs(5), |t| {
            t == "devices/SN-JITR-1/hello"
        })
        .await
        .unwrap();
    connected.disconnect().await;

    // Lifecycle events of the device's session.
    let connected_event = watcher
        .receive(std::time::Duration::from_secs(5), |t| {
            t == "$aws/events/presence/connected/SN-JITR-1"
        })
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(connected_event["principalIdentifier"], id.as_str());
    assert_eq!(connected_event["eventType"], "connected");
    let gone = watcher
        .receive(std::time::Duration::from_secs(5), |t| {
            t == "$aws/events/presence/disconnected/SN-JITR-1"
        })
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(gone["clientInitiatedDisconnect"], true);
    assert_eq!(gone["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");

    // Faults for outage tests: refused connections.
    emulator.faults(json!({"refuseConnections": true}));
    let refused = Device::connect(&emulator.endpoint(), &device, "SN-JITR-1").await;
    assert!(
        matches!(
            refused,
            Err(DeviceError::Tls(_)) | Err(DeviceError::ConnectRefused)
        ),
        "{:?}",
        refused.err()
    );
    emulator.faults(json!({"refuseConnections": false}));
    let mut back = Device::connect(&emulator.endpoint(), &device, "SN-JITR-1")
        .await
        .unwrap();

    // Stalled publishes: no PUBACK while the fault holds, then the publish
    // goes through.
    back.subscribe(&["devices/SN-JITR-1/hello"]).await.unwrap();
    emulator.faults(json!({"stallPublishes": true}));
    let stalled = back
        .publish("devices/SN-JITR-1/hello", b"late".to_vec())
        .await;
    assert!(
        matches!(stalled, Err(DeviceError::Timeout(..))),
        "{stalled:?}"
    );
    emulator.faults(json!({"stallPublishes": false}));
    let late = back
        .receive(std::time::Duration::from_secs(5), |t| {
            t == "devices/SN-JITR-1/hello"
        })
        .await
        .unwrap();
    assert_eq!(&late.payload[..], b"late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_provision_at_once_across_two_regions_as_the_manifest_says() {
    const DEVICES: usize = 200;
    let regions = ["ca-central-1", "sa-east-1"];
    // One claim, registered in both regions, as `geoprov setup claim` does.
    let claim_dir = WorkDir::new("claim");
    let claim = setup_claim(&regions, claim_dir.path());
    let keys: Vec<FactoryKey> = (0..DEVICES / 2).map(|_| factory_key()).collect();
    let serial = |i: usize| format!("SN-MANY-{i:03}");
    // Every fifth device is blocked; of the rest, every fifth may provision
    // only in the first region.
    let manifest: Vec<Value> = (0..DEVICES)
        .map(|i| {
            let mut line = json!({"serialNumber": serial(i), "status": if i % 5 == 0 { "BLOCKED" } else { "ALLOWED" }});
            if i % 5 == 1 {
                line["allowedRegions"] = json!([regions[0]]);
            }
            if i % 2 == 1 {
                line["publicKeySha256"] = json!(keys[i / 2].spki_sha256);
            }
            line
        })
        .collect();
    // Each region's table in a moto of its own: one moto serves one request
    // at a time, and copies a whole table for each item of a transaction,
    // so the hooks' calls would otherwise queue behind every IoT call of 200
    // devices, and behind the other region's hooks, past their 3 s deadline
    // on a loaded 2-core machine (in AWS, DynamoDB and IoT do not share a
    // queue, and each region has its own replica).
    let tables: Vec<_> = regions
        .iter()
        .map(|_| geoprov_tests::launch_moto(None))
        .collect();
    let fleets: Vec<std::sync::Arc<FleetRegion>> = regions
        .iter()
        .zip(&tables)
        .map(|(r, tables)| {
            std::sync::Arc::new(FleetRegion::start_with(
                r,
                &manifest,
                WorkDir::new("many"),
                claim.clone(),
                &tables.endpoint,
            ))
        })
        .collect();

    let keys = std::sync::Arc::new(keys);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DEVICES {
        let fleet = fleets[i % 2].clone();
        let keys = keys.clone();
        let serial = serial(i);
        tasks.spawn(async move {
            let key = (i % 2 == 1).then(|| &keys[i / 2]);
            let outcome = fleet.provision(&serial, key).await;
            (i, outcome)
        });
    }
    let mut provisioned_in = [0usize; 2];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) = joined.unwrap();
        let region = i % 2;
        let allowed = i % 5 != 0 && !(i % 5 == 1 && region == 1);
        match (allowed, outcome) {
            (true, Ok(device)) => {
                assert_eq!(device.thing_name, serial(i));
                provisioned_in[region] += 1;
            }
            (
                false,
                Err(ProvisionError::Rejected {
                    operation, code, ..
                }),
            ) if operation == "RegisterThing" && code == "AccessDenied" => {
                // Denied by the rule the manifest calls for, not by chance.
                let expected = if i % 5 == 0 {
                    "DEVICE_BLOCKED"
                } else {
                    "REGION_NOT_ALLOWED"
                };
                let reasons = fleets[region].audit_reasons(&serial(i)).await;
                assert_eq!(
                    reasons.last().map(|r| r.0.as_str()),
                    Some(expected),
                    "device {i}"
                );
            }
            (allowed, outcome) => {
                let reasons = fleets[region].audit_reasons(&serial(i)).await;
                eprintln!("device {i}: audit {reasons:?}");
                for fleet in &fleets {
                    eprintln!("--- {}\n{}", fleet.region, fleet.emulator.log());
                }
                panic!(
                    "device {i} in {}: expected allowed={allowed}, got {outcome:?}",
                    regions[region]
                )
            }
        }
    }
    let expected: Vec<usize> = (0..2)
        .map(|r| {
            (0..DEVICES)
                .filter(|i| i % 2 == r && i % 5 != 0 && !(i % 5 == 1 && r == 1))
                .count()
        })
        .collect();
    assert_eq!(provisioned_in.to_vec(), expected);
    // What moto's IoT holds in each region, not what the test believes.
    for (r, fleet) in fleets.iter().enumerate() {
        let iot = fleet.iot().await;
        let mut things = 0;
        let mut token = None;
        loop {
            let page = iot
                .list_things()
                .set_next_token(token)
                .max_results(250)
                .send()
                .await
                .unwrap();
            things += page
                .things()
                .iter()
                .filter(|t| t.thing_name().is_some_and(|n| n.starts_with("SN-MANY-")))
                .count();
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(things, expected[r], "{}", regions[r]);
    }
}

/// The claim policy the stack makes: with RequireFactoryKey (the default)
/// it offers CreateCertificateFromCsr only, since a key IoT makes can never
/// be on record; without it, CreateKeysAndCertificate too. Made from
/// `template.yaml` in moto, as CloudFormation would make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_policy_offers_iot_made_keys_only_where_no_factory_key_is_required() {
    let dir = WorkDir::new("claim-policy");
    // One region each way, the claim registered in both.
    let regions = [("us-west-1", "true"), ("us-west-2", "false")];
    let claim = setup_claim(&regions.map(|(r, _)| r), dir.path());
    let mut documents = Vec::new();
    for (region, required) in regions {
        iot_stack(
            region,
            &[
                ("ClaimCertificateId", &claim.certificate_id),
                ("RequireFactoryKey", required),
            ],
            &dir.path().join(format!("emulator-{region}.json")),
        );
        let iot = IotClient::new(&sdk_config(&moto().endpoint, region).await);
        let policy = iot
            .get_policy()
            .policy_name("geoprov-ClaimPolicy")
            .send()
            .await
            .unwrap();
        documents.push(policy.policy_document().unwrap().to_owned());
    }
    let [required, not_required] = [&documents[0], &documents[1]];
    for document in [required, not_required] {
        assert!(
            document.contains("topic/$aws/certificates/create-from-csr/*"),
            "{document}"
        );
    }
    assert!(!required.contains("certificates/create/*"), "{required}");
    assert!(
        not_required.contains("topic/$aws/certificates/create/*"),
        "{not_required}"
    );
    assert!(
        not_required.contains("topicfilter/$aws/certificates/create/*"),
        "{not_required}"
    );
}
