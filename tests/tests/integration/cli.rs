//! The `geoprov` operator CLI, run as a process against moto.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_iot::types::{DomainConfigurationStatus, ServiceType};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier};
use geoprov_failover::config::{ConfigSource, FailoverConfig};
use geoprov_failover::route53::{self as failover_route53, Retry, Route53, SdkRoute53};
use geoprov_failover::{config_store, tree};
use geoprov_tests::cli::Geoprov;
use geoprov_tests::{TEST_REGION, aws_env, moto, sdk_config, unique_table};
use serde_json::{Value, json};

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
        assert_eq!(shown["provisioning"]["regions"], json!({}));
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

/// `geoprov` against moto, with no table.
fn cli() -> Geoprov {
    Geoprov::new(aws_env(&moto().endpoint, TEST_REGION))
}

fn endpoint(region: &str) -> String {
    format!("abc123-ats.iot.{region}.amazonaws.com")
}

/// A two-region FAILOVER_CONFIG: North America prefers us-east-1, every
/// other place eu-west-1, each falling back on the other.
fn failover_config(zone_id: &str, zone_name: &str) -> Value {
    json!({
        "hostedZoneId": zone_id,
        "recordName": format!("global.iot.{zone_name}"),
        "ttl": 60,
        "regions": {
            "us-east-1": {"endpoint": endpoint("us-east-1"), "healthCheckId": "hc-us-east-1", "alarmName": "geoprov-health-us-east-1"},
            "eu-west-1": {"endpoint": endpoint("eu-west-1"), "healthCheckId": "hc-eu-west-1", "alarmName": "geoprov-health-eu-west-1"}
        },
        "locations": [
            {"setIdentifier": "US East IoT Global Endpoint", "geoLocation": {"ContinentCode": "NA"}, "preference": ["us-east-1", "eu-west-1"]},
            {"setIdentifier": "Default IoT Global Endpoint", "geoLocation": {"CountryCode": "*"}, "preference": ["eu-west-1", "us-east-1"]}
        ],
        "failAfter": 2,
        "recoverAfter": 3,
        "minChangeIntervalSeconds": 60
    })
}

/// The two-region configuration with a country location per two-letter
/// code (AA, AB, ...) until its pretty-printed text has `bytes` or more.
fn failover_config_of_at_least(zone_name: &str, bytes: usize) -> String {
    let mut config = failover_config("Z0123456789", zone_name);
    for (i, code) in (b'A'..=b'Z')
        .flat_map(|a| (b'A'..=b'Z').map(move |b| format!("{}{}", a as char, b as char)))
        .enumerate()
    {
        let text = serde_json::to_string_pretty(&config).unwrap();
        if text.len() >= bytes {
            return text;
        }
        config["locations"].as_array_mut().unwrap().push(json!({
            "setIdentifier": format!("Country {code} IoT Global Endpoint {i}"),
            "geoLocation": {"CountryCode": code},
            "preference": ["eu-west-1", "us-east-1"]
        }));
    }
    unreachable!("676 countries are more than enough")
}

fn text_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geoprov-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A command that must fail: exit code 1, nothing on stdout; its stderr.
fn refused(cli: &Geoprov, args: &[&str]) -> String {
    let out = cli.run(args);
    assert_eq!(out.status.code(), Some(1), "geoprov {args:?} must fail");
    assert!(
        out.stdout.is_empty(),
        "geoprov {args:?} printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_reaches_moto_and_nothing_else() {
    let cli = cli();
    assert_eq!(cli.env["AWS_ENDPOINT_URL"], moto().endpoint);
    assert_eq!(cli.env["AWS_EC2_METADATA_DISABLED"], "true");
    assert!(
        cli.env.keys().all(|k| k.starts_with("AWS_")),
        "{:?}",
        cli.env.keys()
    );
}

#[test]
fn validate_accepts_a_valid_failover_config_and_counts_it() {
    let text =
        serde_json::to_string_pretty(&failover_config("Z0123456789", "example.com")).unwrap();
    let file = text_file("valid-failover.json", &text);
    let summary = cli().ok(&["failover", "config", "validate", file.to_str().unwrap()]);
    assert_eq!(
        summary,
        json!({"valid": true, "regions": 2, "locations": 2, "bytes": text.len()})
    );
}

#[test]
fn validate_refuses_an_unknown_region_in_a_preference_and_names_the_field() {
    let mut config = failover_config("Z0123456789", "example.com");
    config["locations"][0]["preference"][1] = json!("ap-south-1");
    let file = text_file("unknown-region.json", &config.to_string());
    let stderr = refused(
        &cli(),
        &["failover", "config", "validate", file.to_str().unwrap()],
    );
    assert!(stderr.contains("locations[0].preference[1]"), "{stderr}");
    assert!(stderr.contains("ap-south-1"), "{stderr}");

    let missing = refused(
        &cli(),
        &[
            "failover",
            "config",
            "validate",
            "/nonexistent/failover.json",
        ],
    );
    assert!(
        missing.contains("cannot read /nonexistent/failover.json"),
        "{missing}"
    );
}

/// The regions of the two-region failover configuration.
const FAILOVER_REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

async fn iot(region: &str) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::new(&sdk_config(&moto().endpoint, region).await)
}

/// A zone name no other test uses: the domain configurations for its global
/// name (`global.iot.<zone>`) are this test's alone.
fn unique_zone(prefix: &str) -> String {
    format!("{}.example.com", unique_table(prefix))
}

/// An ENABLED DATA domain configuration for `domain_name` in `region`, as
/// the regional stack makes one; its name.
async fn domain_configuration(region: &str, domain_name: &str, service: ServiceType) -> String {
    let name = unique_table("geoprov-global");
    iot(region)
        .await
        .create_domain_configuration()
        .domain_configuration_name(&name)
        .domain_name(domain_name)
        .server_certificate_arns(format!(
            "arn:aws:acm:{region}:123456789012:certificate/{name}"
        ))
        .service_type(service)
        .send()
        .await
        .expect("create domain configuration in moto");
    name
}

async fn set_domain_configuration_status(
    region: &str,
    name: &str,
    status: DomainConfigurationStatus,
) {
    iot(region)
        .await
        .update_domain_configuration()
        .domain_configuration_name(name)
        .domain_configuration_status(status)
        .send()
        .await
        .expect("update domain configuration in moto");
}

/// A unique zone whose global name every failover region serves.
async fn served_zone(prefix: &str) -> String {
    let zone = unique_zone(prefix);
    for region in FAILOVER_REGIONS {
        domain_configuration(region, &format!("global.iot.{zone}"), ServiceType::Data).await;
    }
    zone
}

async fn s3_bucket() -> (aws_sdk_s3::Client, String) {
    let sdk = sdk_config(&moto().endpoint, TEST_REGION).await;
    let s3 = aws_sdk_s3::Client::new(&sdk);
    let bucket = unique_table("geoprov-cli-config");
    s3.create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(TEST_REGION))
                .build(),
        )
        .send()
        .await
        .expect("create bucket in moto");
    (s3, bucket)
}

#[tokio::test]
async fn put_stores_a_failover_config_in_s3_that_the_function_loads() {
    let (s3, bucket) = s3_bucket().await;
    let zone = served_zone("s3-put").await;
    let text = failover_config_of_at_least(&zone, 12_000);
    let file = text_file("s3-failover.json", &text);
    let to = format!("s3://{bucket}/failover/config.json");

    let stored = cli().ok(&[
        "failover",
        "config",
        "put",
        file.to_str().unwrap(),
        "--to",
        &to,
    ]);
    assert_eq!(stored["stored"], to.as_str());
    assert_eq!(stored["bytes"], text.len());
    for region in FAILOVER_REGIONS {
        assert!(
            stored["domainConfigurations"][region].is_string(),
            "{stored:#}"
        );
    }

    let object = s3
        .get_object()
        .bucket(&bucket)
        .key("failover/config.json")
        .send()
        .await
        .expect("the stored object");
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.as_ref(), text.as_bytes());

    let sdk = sdk_config(&moto().endpoint, TEST_REGION).await;
    // The function pins the bucket's owner: its own account loads it, any
    // other is refused (moto's account is 123456789012).
    let source = |owner: &str| ConfigSource::S3 {
        bucket: bucket.clone(),
        key: "failover/config.json".into(),
        expected_owner: Some(owner.into()),
    };
    let loaded = config_store::load(&source("123456789012"), &sdk)
        .await
        .expect("the function loads it");
    assert_eq!(loaded, FailoverConfig::from_json(&text).unwrap());
    let elsewhere = config_store::load(&source("111122223333"), &sdk)
        .await
        .expect_err("a bucket of another account serves nothing");
    assert!(
        elsewhere.to_string().contains("AccessDenied"),
        "{elsewhere}"
    );
}

#[tokio::test]
async fn put_refuses_an_invalid_config_and_stores_nothing() {
    let (s3, bucket) = s3_bucket().await;
    let mut config = failover_config("Z0123456789", "example.com");
    config["locations"][0]["preference"][1] = json!("ap-south-1");
    let file = text_file("invalid-put.json", &config.to_string());
    let to = format!("s3://{bucket}/failover/invalid.json");

    let stderr = refused(
        &cli(),
        &[
            "failover",
            "config",
            "put",
            file.to_str().unwrap(),
            "--to",
            &to,
        ],
    );
    assert!(stderr.contains("locations[0].preference[1]"), "{stderr}");
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("failover/invalid.json")
        .send()
        .await
        .expect_err("nothing was stored");
    assert!(err.into_service_error().is_no_such_key());

    // A valid document, but a destination the function cannot read from.
    let valid = text_file(
        "valid-put.json",
        &failover_config("Z0123456789", "example.com").to_string(),
    );
    for bad in [
        "s3://bucket-only",
        "ssm:",
        "{\"inline\": true}",
        "file.json",
    ] {
        let stderr = refused(
            &cli(),
            &[
                "failover",
                "config",
                "put",
                valid.to_str().unwrap(),
                "--to",
                bad,
            ],
        );
        assert!(stderr.contains("--to"), "{bad}: {stderr}");
    }
}

async fn ssm_tier(ssm: &aws_sdk_ssm::Client, name: &str) -> Option<ParameterTier> {
    let described = ssm
        .describe_parameters()
        .parameter_filters(
            ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .values(name)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("DescribeParameters");
    let [parameter] = described.parameters() else {
        panic!("{name}: {:?}", described.parameters());
    };
    parameter.tier().cloned()
}

#[tokio::test]
async fn put_to_ssm_asks_for_intelligent_tiering_and_refuses_what_only_s3_holds() {
    let sdk = sdk_config(&moto().endpoint, TEST_REGION).await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let cli = cli();
    let prefix = format!("/{}", unique_table("geoprov-cli"));
    let zone = served_zone("ssm-put").await;

    // Intelligent-Tiering whatever the size: SSM picks the tier, so a
    // document may grow past the standard tier and shrink again (a
    // parameter asked for as advanced can never go back to standard; moto
    // does not enforce that, so the request's tier is what is checked).
    for (bytes, tier) in [
        (2_000, ParameterTier::IntelligentTiering),
        (6_000, ParameterTier::IntelligentTiering),
    ] {
        let text = failover_config_of_at_least(&zone, bytes);
        assert!(text.len() < 8192, "{}", text.len());
        let file = text_file(&format!("ssm-{bytes}.json"), &text);
        let name = format!("{prefix}/failover-{bytes}");
        let to = format!("ssm:{name}");
        let stored = cli.ok(&[
            "failover",
            "config",
            "put",
            file.to_str().unwrap(),
            "--to",
            &to,
        ]);
        assert_eq!(stored["bytes"], text.len());

        let value = ssm
            .get_parameter()
            .name(&name)
            .send()
            .await
            .expect("the stored parameter")
            .parameter
            .and_then(|p| p.value);
        assert_eq!(value.as_deref(), Some(text.as_str()));
        assert_eq!(ssm_tier(&ssm, &name).await, Some(tier), "{bytes} bytes");
        let loaded = config_store::load(&ConfigSource::Ssm { name }, &sdk)
            .await
            .expect("the function loads it");
        assert_eq!(loaded, FailoverConfig::from_json(&text).unwrap());
    }

    let text = failover_config_of_at_least(&zone, 9_000);
    let file = text_file("ssm-9000.json", &text);
    let name = format!("{prefix}/failover-9000");
    let stderr = refused(
        &cli,
        &[
            "failover",
            "config",
            "put",
            file.to_str().unwrap(),
            "--to",
            &format!("ssm:{name}"),
        ],
    );
    assert!(stderr.contains("s3://"), "{stderr}");
    let err = ssm
        .get_parameter()
        .name(&name)
        .send()
        .await
        .expect_err("nothing was stored");
    assert!(err.into_service_error().is_parameter_not_found());
}

/// A new hosted zone in moto holding the failover's record tree for the
/// two-region configuration; its id and the global name.
async fn zone_with_failover_tree() -> (String, String) {
    let sdk = sdk_config(&moto().endpoint, TEST_REGION).await;
    let client = failover_route53::client(&sdk);
    let zone_name = format!("{}.example.com", unique_table("cli-zone"));
    let zone = client
        .create_hosted_zone()
        .name(&zone_name)
        .caller_reference(&zone_name)
        .send()
        .await
        .expect("create hosted zone in moto");
    let zone_id = zone
        .hosted_zone()
        .expect("hosted zone")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();

    let config =
        FailoverConfig::from_json(&failover_config(&zone_id, &zone_name).to_string()).unwrap();
    let plan = tree::plan(&config, &[], &|_| true);
    assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
    let route53 = SdkRoute53::new(
        client,
        Retry {
            attempts: 4,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(50),
        },
    );
    for batch in tree::batches(&plan.changes) {
        route53
            .change(&zone_id, &plan.changes[batch])
            .await
            .expect("write the record tree");
    }
    (zone_id, config.record_name)
}

#[tokio::test]
async fn dns_resolve_follows_the_failover_tree_in_moto() {
    let (zone_id, name) = zone_with_failover_tree().await;
    let cli = cli();
    let resolve = |extra: &[&str]| {
        let mut args = vec!["dns", "resolve", "--zone-id", &zone_id, "--name", &name];
        args.extend_from_slice(extra);
        cli.ok(&args)
    };

    let us = resolve(&["--country", "us"]);
    assert_eq!(us["answer"], endpoint("us-east-1"), "{us:#}");
    let path = us["path"].as_array().unwrap();
    assert!(path.len() >= 2, "{us:#}");
    assert_eq!(path[0]["policy"], "GEOLOCATION", "{us:#}");
    assert!(us.get("noAnswer").is_none(), "{us:#}");

    let us_down = resolve(&["--country", "US", "--unhealthy", "hc-us-east-1"]);
    assert_eq!(us_down["answer"], endpoint("eu-west-1"), "{us_down:#}");
    assert!(
        us_down["path"]
            .as_array()
            .unwrap()
            .iter()
            .any(|hop| hop["why"].as_str().unwrap().contains("SECONDARY")),
        "{us_down:#}"
    );

    // With every region down, the chain's last hop keeps North America on
    // its first region rather than leaving it unanswered.
    let all_down = resolve(&[
        "--country",
        "US",
        "--unhealthy",
        "hc-us-east-1",
        "hc-eu-west-1",
    ]);
    assert_eq!(all_down["answer"], endpoint("us-east-1"), "{all_down:#}");

    let fr = resolve(&["--country", "FR"]);
    assert_eq!(fr["answer"], endpoint("eu-west-1"), "{fr:#}");
    let nowhere = resolve(&[]);
    assert_eq!(nowhere["answer"], endpoint("eu-west-1"), "{nowhere:#}");
    let state = resolve(&["--country", "us", "--subdivision", "wa"]);
    assert_eq!(state["answer"], endpoint("us-east-1"), "{state:#}");
    let continent = resolve(&["--continent", "na"]);
    assert_eq!(continent["answer"], endpoint("us-east-1"), "{continent:#}");
}

#[tokio::test]
async fn dns_resolve_reports_no_answer_with_success_and_aws_errors_with_failure() {
    let (zone_id, name) = zone_with_failover_tree().await;
    let cli = cli();
    let absent = format!("absent.{name}");
    let none = cli.ok(&["dns", "resolve", "--zone-id", &zone_id, "--name", &absent]);
    assert_eq!(none["answer"], Value::Null, "{none:#}");
    assert_eq!(none["noAnswer"]["reason"], "NO_RECORD", "{none:#}");

    let stderr = refused(
        &cli,
        &[
            "dns",
            "resolve",
            "--zone-id",
            "ZNOSUCHZONE",
            "--name",
            &name,
        ],
    );
    assert!(stderr.contains("ZNOSUCHZONE"), "{stderr}");

    let stderr = refused(
        &cli,
        &[
            "dns",
            "resolve",
            "--zone-id",
            &zone_id,
            "--name",
            &name,
            "--country",
            "USA",
        ],
    );
    assert!(stderr.contains("--country"), "{stderr}");
}

#[tokio::test]
async fn check_regions_names_each_region_without_an_enabled_domain_configuration() {
    let zone = unique_zone("check-regions");
    let name = format!("global.iot.{zone}");
    let text = serde_json::to_string_pretty(&failover_config("Z0123456789", &zone)).unwrap();
    let file = text_file(&format!("{zone}.json"), &text);
    let path = file.to_str().unwrap();
    let cli = cli();
    let check = ["failover", "config", "validate", path, "--check-regions"];

    // Without the check, the document alone is valid.
    let unchecked = cli.ok(&["failover", "config", "validate", path]);
    assert!(
        unchecked.get("domainConfigurations").is_none(),
        "{unchecked}"
    );

    let stderr = refused(&cli, &check);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(
        stderr.contains("us-east-1") && stderr.contains("eu-west-1"),
        "{stderr}"
    );
    assert!(stderr.contains("TLS"), "{stderr}");

    // us-east-1 serves the name. eu-west-1 has one for another name, a
    // disabled one for it, and a credential provider one for it: none
    // serves devices.
    let us = domain_configuration("us-east-1", &name, ServiceType::Data).await;
    domain_configuration("eu-west-1", &format!("other.{zone}"), ServiceType::Data).await;
    let eu = domain_configuration("eu-west-1", &name, ServiceType::Data).await;
    set_domain_configuration_status("eu-west-1", &eu, DomainConfigurationStatus::Disabled).await;
    let credentials =
        domain_configuration("eu-west-1", &name, ServiceType::CredentialProvider).await;
    let stderr = refused(&cli, &check);
    assert!(
        stderr.contains(&format!("{name} in eu-west-1 (")),
        "{stderr}"
    );
    assert!(!stderr.contains("us-east-1"), "{stderr}");
    assert!(
        stderr.contains(&format!("{eu} is DISABLED, DATA")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{credentials} is ENABLED, CREDENTIAL_PROVIDER")),
        "{stderr}"
    );

    set_domain_configuration_status("eu-west-1", &eu, DomainConfigurationStatus::Enabled).await;
    let checked = cli.ok(&check);
    assert_eq!(
        checked,
        json!({
            "valid": true, "regions": 2, "locations": 2, "bytes": text.len(),
            "domainConfigurations": {"us-east-1": us, "eu-west-1": eu}
        })
    );
}

#[tokio::test]
async fn put_refuses_a_config_whose_region_does_not_serve_the_name_and_stores_nothing() {
    let (s3, bucket) = s3_bucket().await;
    let zone = unique_zone("put-unserved");
    let name = format!("global.iot.{zone}");
    domain_configuration("us-east-1", &name, ServiceType::Data).await;
    let file = text_file(
        &format!("{zone}.json"),
        &failover_config("Z0123456789", &zone).to_string(),
    );
    let to = format!("s3://{bucket}/failover/unserved.json");

    let stderr = refused(
        &cli(),
        &[
            "failover",
            "config",
            "put",
            file.to_str().unwrap(),
            "--to",
            &to,
        ],
    );
    assert!(stderr.contains(&format!("{name} in eu-west-1")), "{stderr}");
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("failover/unserved.json")
        .send()
        .await
        .expect_err("nothing was stored");
    assert!(err.into_service_error().is_no_such_key());
}

async fn thing_group_exists(region: &str, group: &str) -> bool {
    match iot(region)
        .await
        .describe_thing_group()
        .thing_group_name(group)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            false
        }
        Err(e) => panic!("DescribeThingGroup {group} in {region}: {e:?}"),
    }
}

#[tokio::test]
async fn import_creates_the_thing_groups_the_manifest_names_in_every_region_first() {
    let cli = cli_with_table();
    let sensors = unique_table("geoprov-sensors");
    let gateways = unique_table("geoprov-gateways");
    iot("us-east-1")
        .await
        .create_thing_group()
        .thing_group_name(&gateways)
        .send()
        .await
        .expect("create thing group in moto");
    let file = manifest_file(
        &format!("{sensors}.jsonl"),
        &[
            format!(r#"{{"serialNumber":"SN-G1","thingGroup":"{sensors}"}}"#),
            format!(r#"{{"serialNumber":"SN-G2","thingGroup":"{gateways}"}}"#),
            format!(r#"{{"serialNumber":"SN-G3","thingGroup":"{sensors}"}}"#),
            r#"{"serialNumber":"SN-G4","thingGroup":"geoprov-devices"}"#.into(),
            r#"{"serialNumber":"SN-G5"}"#.into(),
        ],
    );
    let args = [
        "registry",
        "import",
        "--regions",
        "us-east-1,eu-west-1",
        file.to_str().unwrap(),
    ];

    let out = cli.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("created thing group(s) {sensors} in us-east-1")),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary["imported"], 5);
    assert_eq!(
        summary["thingGroups"],
        json!({
            "us-east-1": {"created": [&sensors], "existing": [&gateways]},
            "eu-west-1": {"created": [&gateways, &sensors], "existing": []},
        })
    );
    for region in ["us-east-1", "eu-west-1"] {
        for group in [&sensors, &gateways] {
            assert!(
                thing_group_exists(region, group).await,
                "{group} in {region}"
            );
        }
        // The regional stack's group is the stack's to make.
        assert!(
            !thing_group_exists(region, "geoprov-devices").await,
            "{region}"
        );
    }
    let shown = cli.ok(&["registry", "show", "SN-G1"]);
    assert_eq!(shown["profile"]["thingGroup"], sensors.as_str());

    let again = cli.ok(&args);
    assert_eq!(
        again["thingGroups"],
        json!({
            "us-east-1": {"created": [], "existing": [&gateways, &sensors]},
            "eu-west-1": {"created": [], "existing": [&gateways, &sensors]},
        })
    );
}

#[tokio::test]
async fn import_without_regions_refuses_a_manifest_naming_groups_and_writes_nothing() {
    let cli = cli_with_table();
    let sensors = unique_table("geoprov-sensors");
    let gateways = unique_table("geoprov-gateways");
    let file = manifest_file(
        &format!("{gateways}.jsonl"),
        &[
            r#"{"serialNumber":"SN-R1"}"#.into(),
            format!(r#"{{"serialNumber":"SN-R2","thingGroup":"{sensors}"}}"#),
            r#"{"serialNumber":"SN-R3","thingGroup":"geoprov-devices"}"#.into(),
            format!(r#"{{"serialNumber":"SN-R4","thingGroup":"{gateways}"}}"#),
        ],
    );
    let stderr = refused(&cli, &["registry", "import", file.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("{gateways}, {sensors}")),
        "{stderr}"
    );
    assert!(stderr.contains("--regions"), "{stderr}");
    assert!(!stderr.contains("geoprov-devices"), "{stderr}");
    for serial in ["SN-R1", "SN-R2"] {
        assert!(!cli.run(&["registry", "show", serial]).status.success());
    }
    for region in ["us-east-1", TEST_REGION] {
        assert!(!thing_group_exists(region, &sensors).await, "{region}");
    }

    // The stack's own group needs no --regions.
    let stack_group_only = manifest_file(
        &format!("{gateways}-stack.jsonl"),
        &[r#"{"serialNumber":"SN-R3","thingGroup":"geoprov-devices"}"#.into()],
    );
    let summary = cli.ok(&["registry", "import", stack_group_only.to_str().unwrap()]);
    assert_eq!(summary["imported"], 1);
    assert!(summary.get("thingGroups").is_none(), "{summary}");
}

#[test]
fn import_warns_about_and_counts_devices_without_a_factory_key() {
    let cli = cli_with_table();
    let key = "ab".repeat(32);
    let file = manifest_file(
        "keys.jsonl",
        &[
            format!(r#"{{"serialNumber":"SN-K1","publicKeySha256":"{key}"}}"#),
            r#"{"serialNumber":"SN-K2"}"#.to_owned(),
            r#"{"serialNumber":"SN-K3"}"#.to_owned(),
        ],
    );
    let out = cli.run(&["registry", "import", file.to_str().unwrap()]);
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["withoutFactoryKey"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 device(s) have no factory key"),
        "{stderr}"
    );
    // A manifest cannot set the profile's version: the registry does.
    let file = manifest_file(
        "version.jsonl",
        &[r#"{"serialNumber":"SN-V","version":"1"}"#.to_owned()],
    );
    let message = refused(&cli, &["registry", "import", file.to_str().unwrap()]);
    assert!(message.contains("version"), "{message}");
}

#[test]
fn a_block_outlives_a_re_import_until_unblocked() {
    let cli = cli_with_table();
    let file = manifest_file("block.jsonl", &[r#"{"serialNumber":"SN-BL"}"#.to_owned()]);
    let path = file.to_str().unwrap();
    cli.ok(&["registry", "import", path]);
    let version = cli.ok(&["registry", "show", "SN-BL"])["profile"]["version"].clone();
    let blocked = cli.ok(&["registry", "block", "SN-BL", "--reason", "reported stolen"]);
    assert_eq!(blocked["blocked"]["reason"], "reported stolen");
    cli.ok(&["registry", "import", path]);
    let shown = cli.ok(&["registry", "show", "SN-BL"]);
    assert_eq!(shown["block"]["reason"], "reported stolen");
    assert_ne!(shown["profile"]["version"], version);
    cli.ok(&["registry", "unblock", "SN-BL"]);
    assert!(
        cli.ok(&["registry", "show", "SN-BL"])
            .get("block")
            .is_none()
    );
    for args in [
        ["registry", "block", "SN-NONE", "--reason", "x"],
        ["registry", "block", "SN-BL", "--reason", " "],
    ] {
        refused(&cli, &args);
    }
}

#[tokio::test]
async fn claim_certificates_are_added_listed_retired_and_deactivated_in_every_region() {
    let cli = cli_with_table();
    // A claim certificate registered in two regions' IoT, as setup claim does.
    let made = iot("us-east-1")
        .await
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await
        .unwrap();
    let id = made.certificate_id().unwrap().to_owned();
    iot("eu-west-1")
        .await
        .register_certificate_without_ca()
        .certificate_pem(made.certificate_pem().unwrap())
        .status(aws_sdk_iot::types::CertificateStatus::Active)
        .send()
        .await
        .unwrap();

    let added = cli.ok(&[
        "claim",
        "add",
        &id,
        "--not-after",
        "2099-01-01T00:00:00Z",
        "--note",
        "factory line 1",
    ]);
    assert_eq!(added["added"], true);
    let again = cli.ok(&["claim", "add", &id, "--not-after", "2099-01-01T00:00:00Z"]);
    assert_eq!(again["added"], false);
    let listed = cli.ok(&["claim", "list"]);
    assert_eq!(listed[0]["certificateId"], id.as_str());
    assert_eq!(listed[0]["trustedNow"], true);

    let deactivated = cli.ok(&[
        "claim",
        "deactivate",
        &id,
        "--regions",
        "us-east-1,eu-west-1",
    ]);
    assert_eq!(deactivated["retired"], true);
    assert_eq!(deactivated["inactiveIn"], json!(["us-east-1", "eu-west-1"]));
    for region in ["us-east-1", "eu-west-1"] {
        let described = iot(region)
            .await
            .describe_certificate()
            .certificate_id(&id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            described.certificate_description().unwrap().status(),
            Some(&aws_sdk_iot::types::CertificateStatus::Inactive),
            "{region}"
        );
    }
    let listed = cli.ok(&["claim", "list"]);
    assert_eq!(listed[0]["trustedNow"], false);
    assert!(listed[0]["retiredAt"].is_string());
    assert_eq!(cli.ok(&["claim", "retire", &id])["retired"], false);

    for args in [
        vec![
            "claim",
            "add",
            "not-an-id",
            "--not-after",
            "2099-01-01T00:00:00Z",
        ],
        vec!["claim", "add", &id, "--not-after", "tomorrow"],
        vec![
            "claim",
            "add",
            &id,
            "--not-before",
            "2030-01-01T00:00:00Z",
            "--not-after",
            "2029-01-01T00:00:00Z",
        ],
    ] {
        refused(&cli, &args);
    }
    // Retiring an id the table never had records it retired: that overrides
    // the hook's bootstrap list too.
    let unknown = "f".repeat(64);
    assert_eq!(cli.ok(&["claim", "retire", &unknown])["retired"], true);
    let listed = cli.ok(&["claim", "list"]);
    let tombstone = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["certificateId"] == unknown.as_str())
        .unwrap();
    assert_eq!(tombstone["trustedNow"], false);
}

#[tokio::test]
async fn audit_reports_a_quota_overshoot_across_regions() {
    use geoprov_shared::device::{RegionName, SerialNumber};
    use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry, ProvisioningCommit};
    let cli = cli_with_table();
    let file = manifest_file(
        "overshoot.jsonl",
        &[r#"{"serialNumber":"SN-OVER","maxProvisions":1}"#.to_owned()],
    );
    cli.ok(&["registry", "import", file.to_str().unwrap()]);
    let table = cli.env["TABLE_NAME"].clone();
    let registry = DynamoRegistry::new(
        aws_sdk_dynamodb::Client::new(&sdk_config(&moto().endpoint, TEST_REGION).await),
        table,
    );
    let serial = SerialNumber::try_from("SN-OVER").unwrap();
    // Two regions, each committing inside the replication lag of the other:
    // each within its own limit, together over the quota.
    for (region, cert) in [("eu-west-1", "a"), ("us-east-1", "b")] {
        let device = registry.device(&serial).await.unwrap().unwrap();
        let commit = ProvisioningCommit {
            serial: serial.clone(),
            certificate_id: cert.into(),
            region: RegionName::try_from(region).unwrap(),
            region_limit: 1,
            profile_version: device.profile.version,
            guard: device.provisioning.guard,
            at: "2026-11-30T12:00:00Z".into(),
        };
        let mut audit: geoprov_shared::audit::AuditEvent = serde_json::from_value(json!({
            "kind": "PROVISIONING_DECISION", "serialNumber": "SN-OVER", "decision": "ALLOW",
            "reason": "ALLOWED", "detail": "every rule passed", "region": region,
            "requestId": format!("r-{region}"), "time": "2026-11-30T12:00:00Z"
        }))
        .unwrap();
        audit.certificate_id = Some(cert.into());
        registry.record_provisioning(&commit, &audit).await.unwrap();
    }
    let events = cli.ok(&["audit", "SN-OVER"]);
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "QUOTA_OVERSHOOT");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("2 provisionings"),
        "{last}"
    );
}

/// `geoprov plan` as a binary: the table names each phase's bottleneck and
/// the increases a target calls for; `--json` gives the same plan.
#[test]
fn plan_prints_each_phase_with_its_bottleneck_and_what_a_target_needs() {
    let dir = tempfile_dir("plan");
    let config = geoprov_tests::failover::config_json(
        "Z0PLAN",
        "example.com",
        &[("us-east-1", "hc-us"), ("eu-west-1", "hc-eu")],
        &[
            (
                "na",
                json!({"ContinentCode": "NA"}),
                &["us-east-1", "eu-west-1"],
            ),
            (
                "default",
                json!({"CountryCode": "*"}),
                &["eu-west-1", "us-east-1"],
            ),
        ],
    );
    let config_file = dir.join("failover.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let fleet_file = dir.join("fleet.json");
    std::fs::write(
        &fleet_file,
        json!({"locations": {
            "na": {"devices": 12000, "route": "claim-fleet-ca"},
            "default": {"devices": 6000, "route": "claim-amazon-ca"},
        }})
        .to_string(),
    )
    .unwrap();
    let cli = Geoprov::new(Default::default());
    let args = [
        "plan",
        "--config",
        config_file.to_str().unwrap(),
        "--fleet",
        fleet_file.to_str().unwrap(),
        "--target-minutes",
        "10",
    ];
    let out = cli.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    // 12,000 RegisterThing at 10 per second: 20 minutes at the floor, more
    // once devices retry.
    assert!(
        table.lines().any(|l| l.starts_with("onboard")
            && l.contains("us-east-1")
            && l.contains("20.0")
            && l.contains("registerThing (10)")),
        "{table}"
    );
    // Losing us-east-1: North America re-homes by JITR with no claim use.
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rehome after losing us-east-1")
                && l.contains("eu-west-1")
                && l.contains("updateCertificate (10)")
                && l.trim_end().ends_with(" 0")),
        "{table}"
    );
    // 12,000 in 10 minutes is 20 per second at the floor; the simulated
    // devices need some slack above it, and the raised rates meet the target.
    let raised: f64 = table
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "to meet the target in \"onboard\": raise registerThing in us-east-1 from 10 to ",
            )
        })
        .and_then(|rest| rest.strip_suffix(" per second"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{table}"));
    assert!((20.0..=30.0).contains(&raised), "{table}");
    assert!(
        table.contains("\"onboard\" with those rates:") && table.contains("meets the target"),
        "{table}"
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let phases = cli.ok(&json_args);
    assert_eq!(phases[0]["name"], "onboard");
    assert_eq!(phases.as_array().unwrap().len(), 5);

    let unknown = dir.join("unknown.json");
    std::fs::write(
        &unknown,
        json!({"locations": {"mars": {"devices": 1, "route": "jitr"}}}).to_string(),
    )
    .unwrap();
    let out = cli.run(&[
        "plan",
        "--config",
        config_file.to_str().unwrap(),
        "--fleet",
        unknown.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"mars\""));
}

fn tempfile_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_table(label));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
