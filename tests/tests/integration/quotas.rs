//! IoT's rate quotas in geoprov-iot-emu (`emulator/src/quotas.rs`), with the
//! real hook and the device client: over a rate the emulator refuses as IoT
//! does (a CONNECT closed without a CONNACK; a provisioning call rejected
//! 429 `ThrottlingException`), and a device backs off with full jitter and
//! gets through. The rates are IoT's published defaults scaled down
//! (`--quota-scale`) so that a dozen devices meet them.

use std::sync::Arc;

use aws_sdk_iot::Client as IotClient;
use geoprov_device::{Device, DeviceError, Identity};
use geoprov_tests::certs::device_ca;
use geoprov_tests::emulator::{
    Emulator, FleetRegion, WorkDir, certificate_id, certificate_status, iot_stack,
    register_fleet_ca,
};
use geoprov_tests::{moto, sdk_config};
use serde_json::{Value, json};

fn manifest(prefix: &str, devices: usize) -> Vec<Value> {
    (0..devices)
        .map(|i| json!({"serialNumber": format!("{prefix}-{i:02}"), "status": "ALLOWED"}))
        .collect()
}

fn quota(quotas: &Value, name: &str, field: &str) -> u64 {
    quotas["quotas"][name][field]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}.{field} in {quotas}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_provisioning_rates_calls_are_throttled_and_devices_back_off_and_get_through() {
    const DEVICES: usize = 12;
    // Scale 0.2: certificate creation 3 and RegisterThing 2 per second.
    let fleet = Arc::new(FleetRegion::start_with_quota_scale(
        "ap-south-1",
        &manifest("SN-QUOTA", DEVICES),
        "0.2",
    ));

    // The refusal itself: six CreateKeysAndCertificate at once, against a
    // bucket of three.
    let topic = "$aws/certificates/create/json";
    let (accepted, rejected) = (format!("{topic}/accepted"), format!("{topic}/rejected"));
    let mut raw = Device::connect(
        &fleet.emulator.endpoint(),
        &fleet.claim.identity,
        "prov-SN-QUOTA-RAW",
    )
    .await
    .unwrap();
    raw.subscribe(&[&accepted, &rejected]).await.unwrap();
    let burst = std::time::Instant::now();
    for _ in 0..6 {
        raw.publish(topic, b"{}".to_vec()).await.unwrap();
    }
    let (mut made, mut throttled) = (0, 0);
    for _ in 0..6 {
        let answer = raw
            .receive(std::time::Duration::from_secs(30), |t| {
                t == accepted || t == rejected
            })
            .await
            .unwrap();
        let body = answer.json().unwrap();
        if answer.topic == rejected {
            assert_eq!(body["statusCode"], 429, "{body}");
            assert_eq!(body["errorCode"], "ThrottlingException", "{body}");
            assert!(body.get("certificateId").is_none());
            throttled += 1;
        } else {
            assert!(body["certificateId"].is_string());
            made += 1;
        }
    }
    // A bucket of 3 refilled at 3 per second while the burst lasted.
    let room = 3 + (3.0 * burst.elapsed().as_secs_f64()).ceil() as u64;
    raw.disconnect().await;
    assert!(
        throttled >= 1 && made <= room,
        "{made} made (room for {room}), {throttled} throttled"
    );

    // A fleet at once: every device gets through by backing off.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DEVICES {
        let fleet = fleet.clone();
        tasks.spawn(async move { fleet.provision(&format!("SN-QUOTA-{i:02}"), None).await });
    }
    let mut retried = 0;
    while let Some(joined) = tasks.join_next().await {
        // Each of its two calls got through within THROTTLED_ATTEMPTS.
        let device = joined.unwrap().expect("provisioned after backing off");
        retried += device.throttled;
    }
    assert!(retried > 0, "twelve devices at once stay under the rates");

    // Throttled requests spent nothing: IoT made one certificate and one
    // thing per device, and the emulator counted every refusal the devices saw.
    let quotas = fleet.emulator.quotas();
    assert_eq!(quota(&quotas, "registerThing", "spent"), DEVICES as u64);
    assert_eq!(
        quota(&quotas, "createCertificate", "spent"),
        DEVICES as u64 + made
    );
    assert_eq!(
        quota(&quotas, "createCertificate", "throttled")
            + quota(&quotas, "registerThing", "throttled"),
        throttled + u64::from(retried),
        "{quotas}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connect_rate_a_connect_is_closed_without_connack_and_a_device_retries_through() {
    // Scale 0.004: CONNECT 2 per second.
    let fleet = Arc::new(FleetRegion::start_with_quota_scale(
        "ap-northeast-2",
        &manifest("SN-CONNECT", 1),
        "0.004",
    ));
    let endpoint = fleet.emulator.endpoint();
    let mut refused = 0;
    let burst = std::time::Instant::now();
    for i in 0..6 {
        match Device::connect(&endpoint, &fleet.claim.identity, &format!("prov-burst-{i}")).await {
            Ok(device) => device.disconnect().await,
            Err(DeviceError::ConnectRefused) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // A bucket of 2 refilled at 2 per second while the burst lasted.
    let room = 2 + (2.0 * burst.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        refused >= 1 && 6 - refused <= room,
        "six CONNECTs at once, room for {room}: {refused} refused"
    );
    assert_eq!(
        quota(&fleet.emulator.quotas(), "connect", "throttled"),
        refused
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let fleet = fleet.clone();
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            Device::connect_retrying(
                &endpoint,
                &fleet.claim.identity,
                &format!("prov-retry-{i}"),
                30,
            )
            .await
        });
    }
    let mut attempts = 0;
    while let Some(joined) = tasks.join_next().await {
        let (device, took) = joined.unwrap().expect("connected after backing off");
        attempts += took;
        device.disconnect().await;
    }
    assert!(
        attempts > 6,
        "six devices at once over a rate of two per second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_auto_registration_rate_a_certificate_is_registered_only_on_a_later_connect() {
    let region = "ap-southeast-2";
    let dir = WorkDir::new("auto-registration");
    let config = dir.path().join("emulator.json");
    iot_stack(region, &[], &config);
    let iot = IotClient::new(&sdk_config(&moto().endpoint, region).await);
    let ca = device_ca();
    register_fleet_ca(&iot, &ca.pem).await;
    // Scale 1/15: one auto-registration a second (CONNECT 33 a second).
    let emulator = Emulator::start_with_args(
        region,
        &config,
        &[],
        dir.path(),
        &["--quota-scale", "0.0667"],
    );
    let endpoint = emulator.endpoint();
    let devices: Vec<(String, Identity)> = ["SN-AUTO-1", "SN-AUTO-2"]
        .iter()
        .map(|serial| {
            let signed = ca.sign(serial);
            (
                certificate_id(&signed.certificate_pem),
                Identity {
                    certificate_pem: signed.certificate_pem,
                    private_key_pem: signed.private_key_pem,
                },
            )
        })
        .collect();
    let registered = |id: &str| {
        let iot = iot.clone();
        let id = id.to_owned();
        async move {
            iot.describe_certificate()
                .certificate_id(id)
                .send()
                .await
                .is_ok()
        }
    };

    // Both first connections are dropped: the first registers its
    // certificate, the second is over the rate and registers nothing.
    let burst = std::time::Instant::now();
    for (serial, (_, identity)) in ["SN-AUTO-1", "SN-AUTO-2"].iter().zip(&devices) {
        let refused = Device::connect(&endpoint, identity, serial).await;
        assert!(
            matches!(refused, Err(DeviceError::ConnectRefused)),
            "{serial}"
        );
    }
    let within_a_second = burst.elapsed() < std::time::Duration::from_millis(900);
    assert!(registered(&devices[0].0).await);
    if within_a_second {
        assert!(!registered(&devices[1].0).await, "registered over the rate");
        assert_eq!(
            quota(&emulator.quotas(), "autoRegistration", "throttled"),
            1
        );
    }

    // A second later the bucket holds a unit again: the next connection
    // registers it (and is dropped: it is pending activation, which no
    // function gives here).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = Device::connect(&endpoint, &devices[1].1, "SN-AUTO-2").await;
    assert!(matches!(again, Err(DeviceError::ConnectRefused)));
    assert!(registered(&devices[1].0).await);
    assert_eq!(
        certificate_status(&iot, &devices[1].0).await,
        "PENDING_ACTIVATION"
    );
}
