//! `geoprov identity coverage` against moto: two regions' IoT made from
//! `template.yaml` (`local_iot_stack.py`), the fleet CA registered as
//! `geoprov setup ca` registers it, a registry, and a failover
//! configuration whose EU location can fail over from one region to the
//! other. Clean, it reports no gap; then each gap injected on purpose is
//! named with its location, region and devices. The account's one IoT
//! certificate provider is the stack's in one region (the stack with
//! EnableCertificateProvider=true; IoT refuses a second one in the account):
//! coverage reports each region's provider, warns of the region without
//! geoprov's, and gives notice of another provider, none of it a gap.

use std::process::Command;

use aws_sdk_iot::Client as IotClient;
use aws_sdk_iot::types::CertificateProviderOperation;
use geoprov_tests::certs::device_ca;
use geoprov_tests::emulator::{WorkDir, geoprov, iot_stack, register_fleet_ca};
use geoprov_tests::failover::config_json;
use geoprov_tests::{aws_env, moto, python, sdk_config, unique_table, workspace_root};
use serde_json::{Value, json};

const WEST: &str = "eu-west-3";
const CENTRAL: &str = "eu-north-1";

fn pca_arn(region: &str) -> String {
    format!(
        "arn:aws:acm-pca:{region}:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555"
    )
}

/// The stack's IoT resources (with its certificate provider or without,
/// whatever the template's default) and the fleet CA in `region`; the CA's
/// id.
async fn region_with_ca(
    region: &str,
    provider: bool,
    ca_pem: &str,
    dir: &WorkDir,
) -> (IotClient, String) {
    let config = dir.path().join(format!("emulator-{region}.json"));
    let parameters = [
        ("PcaArn", pca_arn(region)),
        ("EnableCertificateProvider", provider.to_string()),
    ];
    let parameters: Vec<(&str, &str)> = parameters.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let made = iot_stack(region, &parameters, &config);
    let emulator: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let name = format!("geoprov-{region}");
    if provider {
        assert_eq!(made["certificateProviders"], json!([name]), "{made}");
        assert_eq!(
            emulator["certificateProvider"],
            json!({
                "certificateProviderName": name,
                "functionName": "CertIssuerFunction",
                "accountDefaultForOperations": ["CreateCertificateFromCsr"],
            })
        );
        // Made again, as a second deployment of the stack: left as it is.
        assert_eq!(iot_stack(region, &parameters, &config), made);
    } else {
        assert_eq!(made["certificateProviders"], json!([]), "{made}");
        assert!(emulator.get("certificateProvider").is_none(), "{emulator}");
    }
    let iot = IotClient::new(&sdk_config(&moto().endpoint, region).await);
    let ca_id = register_fleet_ca(&iot, ca_pem).await;
    (iot, ca_id)
}

/// `local_iot_stack.py` in `region` with the certificate provider, where
/// the account has one already: it fails as the stack would.
fn a_second_provider_fails_the_stack(region: &str, dir: &WorkDir) {
    let out = Command::new(python())
        .arg(workspace_root().join("scripts/local_iot_stack.py"))
        .args(["--endpoint", &moto().endpoint, "--region", region, "--out"])
        .arg(dir.path().join("second-provider.json"))
        .args(["--parameter", &format!("PcaArn={}", pca_arn(region))])
        .args(["--parameter", "EnableCertificateProvider=true"])
        .envs(aws_env(&moto().endpoint, region))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second provider in the account is refused"
    );
    assert!(
        stderr.contains("one certificate provider per AWS account")
            && stderr.contains("EnableCertificateProvider=false"),
        "{stderr}"
    );
}

/// The lines of `stderr` that start with `prefix`.
fn lines_with(stderr: &[u8], prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
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
    // The account's one certificate provider is the stack's in WEST.
    let (west, ca_id) = region_with_ca(WEST, true, &ca.pem, &dir).await;
    let (central, central_ca_id) = region_with_ca(CENTRAL, false, &ca.pem, &dir).await;
    a_second_provider_fails_the_stack(CENTRAL, &dir);
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

    let out = cli.run(&coverage);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(clean["gaps"], json!([]), "{clean}");
    assert_eq!(
        clean["reachable"]["eu"],
        json!({"preferred": WEST, "regions": [CENTRAL, WEST]})
    );
    assert_eq!(clean["reachable"]["default"]["regions"], json!([CENTRAL]));
    assert_eq!(clean["devices"], 3);
    // geoprov's provider in WEST; none in CENTRAL, where devices can be
    // answered: a warning, not a gap.
    assert_eq!(
        clean["certificateProviders"],
        json!({
            WEST: {
                "provider": "GEOPROV",
                "name": format!("geoprov-{WEST}"),
                "functionArn": format!("arn:aws:lambda:{WEST}:123456789012:function:CertIssuerFunction"),
            },
            CENTRAL: {"provider": "NONE"},
        })
    );
    assert_eq!(
        clean["providerNotices"],
        json!([{
            "notice": "NO_GEOPROV_PROVIDER",
            "region": CENTRAL,
            "accountProvider": format!("geoprov-{WEST} in {WEST}"),
        }])
    );
    let warnings = lines_with(&out.stderr, "warning: ");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&format!(
        "warning: {CENTRAL}: no geoprov certificate provider"
    )));
    assert_eq!(clean["notices"], json!(warnings));

    // Another provider takes the account's one, in CENTRAL: a notice naming
    // it and its function, with what to do; still no gap.
    west.delete_certificate_provider()
        .certificate_provider_name(format!("geoprov-{WEST}"))
        .send()
        .await
        .unwrap();
    let acme = format!("arn:aws:lambda:{CENTRAL}:123456789012:function:acme-signer");
    central
        .create_certificate_provider()
        .certificate_provider_name("acme-signer")
        .lambda_function_arn(&acme)
        .account_default_for_operations(CertificateProviderOperation::CreateCertificateFromCsr)
        .send()
        .await
        .unwrap();
    let out = cli.run(&coverage);
    assert!(out.status.success(), "a foreign provider is no gap");
    let foreign: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(foreign["gaps"], json!([]));
    assert_eq!(
        foreign["certificateProviders"][WEST],
        json!({"provider": "NONE"})
    );
    assert_eq!(
        foreign["certificateProviders"][CENTRAL],
        json!({"provider": "OTHER", "name": "acme-signer", "functionArn": acme})
    );
    assert_eq!(
        foreign["providerNotices"][0],
        json!({"notice": "FOREIGN_PROVIDER", "region": CENTRAL, "name": "acme-signer", "functionArn": acme})
    );
    let notices = lines_with(&out.stderr, "notice: ");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains(&acme)
            && notices[0].contains("EnableCertificateProvider=false")
            && notices[0].contains(&format!(
                "aws iot delete-certificate-provider --certificate-provider-name acme-signer --region {CENTRAL}"
            )),
        "{}",
        notices[0]
    );
    assert_eq!(
        lines_with(&out.stderr, "warning: ").len(),
        1,
        "WEST has none"
    );

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
