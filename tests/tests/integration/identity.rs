//! `geoprov identity coverage` against moto: two regions' IoT made from
//! `template.yaml` (`local_iot_stack.py`), the fleet CA registered as
//! `geoprov setup ca` registers it, a registry, and a failover
//! configuration whose EU location can fail over from one region to the
//! other. Clean, it reports no gap; then each gap injected on purpose is
//! named with its location, region and devices.

use aws_sdk_iot::Client as IotClient;
use geoprov_tests::certs::device_ca;
use geoprov_tests::emulator::{WorkDir, geoprov, iot_stack, register_fleet_ca};
use geoprov_tests::failover::config_json;
use geoprov_tests::{moto, sdk_config, unique_table};
use serde_json::{Value, json};

const WEST: &str = "eu-west-3";
const CENTRAL: &str = "eu-north-1";

/// The stack's IoT resources and the fleet CA in `region`; the CA's id.
async fn region_with_ca(region: &str, ca_pem: &str, dir: &WorkDir) -> (IotClient, String) {
    iot_stack(
        region,
        &[(
            "PcaArn",
            &format!(
                "arn:aws:acm-pca:{region}:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555"
            ),
        )],
        &dir.path().join(format!("emulator-{region}.json")),
    );
    let iot = IotClient::new(&sdk_config(&moto().endpoint, region).await);
    let ca_id = register_fleet_ca(&iot, ca_pem).await;
    (iot, ca_id)
}

fn gaps(report: &Value) -> Vec<(String, String, String)> {
    report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let what = match g["group"].as_str() {
                Some(group) => format!("{} {group}", g["missing"].as_str().unwrap()),
                None => g["missing"].as_str().unwrap().to_owned(),
            };
            (
                g["location"].as_str().unwrap().to_owned(),
                g["region"].as_str().unwrap().to_owned(),
                what,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_is_clean_on_a_whole_deployment_and_names_each_gap_made_on_purpose() {
    let dir = WorkDir::new("identity");
    let ca = device_ca();
    let (west, ca_id) = region_with_ca(WEST, &ca.pem, &dir).await;
    let (central, central_ca_id) = region_with_ca(CENTRAL, &ca.pem, &dir).await;
    assert_eq!(
        ca_id, central_ca_id,
        "the same CA has the same id everywhere"
    );

    let table = unique_table("identity");
    let cli = geoprov(WEST, &table, &moto().endpoint);
    cli.ok(&["registry", "create-table"]);
    let manifest = dir.path().join("manifest.jsonl");
    let lines = [
        json!({"serialNumber": "SN-ID-1"}),
        json!({"serialNumber": "SN-ID-2", "thingGroup": "geoprov-sensors"}),
        json!({"serialNumber": "SN-ID-3", "allowedRegions": [WEST, CENTRAL]}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&manifest, text.join("\n") + "\n").unwrap();
    let regions = format!("{WEST},{CENTRAL}");
    cli.ok(&[
        "registry",
        "import",
        "--regions",
        &regions,
        manifest.to_str().unwrap(),
    ]);

    // EU prefers WEST and fails over to CENTRAL; the rest of the world
    // only ever gets CENTRAL.
    let config = config_json(
        "Z0IDENTITYCOVERAGE",
        "example.com",
        &[(WEST, "hc-west"), (CENTRAL, "hc-central")],
        &[
            ("eu", json!({"ContinentCode": "EU"}), &[WEST, CENTRAL]),
            ("default", json!({"CountryCode": "*"}), &[CENTRAL]),
        ],
    );
    let config_file = dir.path().join("failover.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let coverage = [
        "identity",
        "coverage",
        "--config",
        config_file.to_str().unwrap(),
        "--ca-certificate-id",
        &ca_id,
    ];

    let clean = cli.ok(&coverage);
    assert_eq!(clean["gaps"], json!([]), "{clean}");
    assert_eq!(
        clean["reachable"]["eu"],
        json!({"preferred": WEST, "regions": [CENTRAL, WEST]})
    );
    assert_eq!(clean["reachable"]["default"]["regions"], json!([CENTRAL]));
    assert_eq!(clean["devices"], 3);

    // A CA missing in one region, a thing group missing in the other, and
    // a device the registry pins to WEST although EU can fail to CENTRAL.
    central
        .update_ca_certificate()
        .certificate_id(&ca_id)
        .new_status(aws_sdk_iot::types::CaCertificateStatus::Inactive)
        .send()
        .await
        .unwrap();
    central
        .delete_ca_certificate()
        .certificate_id(&ca_id)
        .send()
        .await
        .unwrap();
    west.delete_thing_group()
        .thing_group_name("geoprov-sensors")
        .send()
        .await
        .unwrap();
    let pinned = dir.path().join("pinned.jsonl");
    std::fs::write(
        &pinned,
        json!({"serialNumber": "SN-ID-3", "allowedRegions": [WEST]}).to_string() + "\n",
    )
    .unwrap();
    cli.ok(&["registry", "import", pinned.to_str().unwrap()]);

    let out = cli.run(&coverage);
    assert!(!out.status.success(), "gaps exit non-zero");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let named = gaps(&report);
    let expect = |location: &str, region: &str, what: &str| {
        assert!(
            named.contains(&(location.to_owned(), region.to_owned(), what.to_owned())),
            "{location} -> {region}: {what} not in {named:?}"
        );
    };
    // Every device that can be answered with CENTRAL lacks the CA there.
    expect("eu", CENTRAL, "FLEET_CA");
    expect("default", CENTRAL, "FLEET_CA");
    expect("eu", WEST, "THING_GROUP geoprov-sensors");
    expect("eu", CENTRAL, "REGISTRY_EXCLUDES_REGION");
    assert_eq!(named.len(), 4, "{named:?}");
    let excluded = report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["missing"] == "REGISTRY_EXCLUDES_REGION")
        .unwrap();
    assert_eq!(excluded["examples"], json!(["SN-ID-3"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 identity coverage gap(s)"));
}
