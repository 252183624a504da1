//! `geoprov setup claim` and `geoprov setup ca` against moto's IoT in two
//! regions: registered in both, ACTIVE, idempotent, the claim key private;
//! the CA fetched from moto's ACM PCA, registered for JITR (no template) and repaired.
//!
//! moto ids a certificate as AWS IoT does (SHA-256 of its DER), and keeps a
//! CA's auto-registration status and certificate mode: corrections of the
//! launcher (tests/support/moto_launcher.py). This binary's moto records
//! every request, so a test can read what was asked of IoT where moto does
//! not keep it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_sdk_iot::types::{
    AutoRegistrationStatus, CaCertificateStatus, CertificateMode, CertificateStatus,
    RegistrationConfig,
};
use base64::Engine;
use geoprov_tests::cli::Geoprov;
use geoprov_tests::{Moto, aws_env, free_port, launch_moto, sdk_config, unique_table};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
/// Where the tests' ACM Private CAs live: neither the CLI's default region
/// nor a region the CA is registered in, so the CLI must take it from the ARN.
const PCA_REGION: &str = "eu-central-1";

struct IotMoto {
    endpoint: String,
    recording: PathBuf,
    _server: Moto,
}

/// A moto of this binary's own, recording requests (to see what was sent
/// where moto does not report it back).
fn moto() -> &'static IotMoto {
    static MOTO: OnceLock<IotMoto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let recording = std::env::temp_dir().join(unique_table("setup-recording") + ".jsonl");
        let server = launch_moto(Some(&recording));
        IotMoto {
            endpoint: server.endpoint.clone(),
            recording,
            _server: server,
        }
    })
}

fn geoprov() -> Geoprov {
    // The default region is none of those set up, so nothing lands there by
    // accident.
    Geoprov::new(aws_env(&moto().endpoint, "ap-southeast-2"))
}

async fn iot(region: &str) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::new(&sdk_config(&moto().endpoint, region).await)
}

fn fresh_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_table(prefix));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn der_id(pem_text: &str) -> String {
    let block = pem::parse(pem_text).expect("PEM");
    assert_eq!(block.tag(), "CERTIFICATE");
    hex::encode(Sha256::digest(block.contents()))
}

fn setup_claim(dir: &Path, regions: &str) -> Value {
    geoprov().ok(&[
        "setup",
        "claim",
        "--regions",
        regions,
        "--out-dir",
        dir.to_str().expect("UTF-8 path"),
    ])
}

async fn claim_status(region: &str, id: &str) -> Option<CertificateStatus> {
    match iot(region)
        .await
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(found) => Some(
            found
                .certificate_description()
                .and_then(|d| d.status())
                .expect("status")
                .clone(),
        ),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(e) => panic!("DescribeCertificate in {region}: {e:?}"),
    }
}

#[tokio::test]
async fn claim_certificate_is_active_in_both_regions_and_its_key_is_private() {
    let dir = fresh_dir("setup-claim");
    let out = geoprov().run(&[
        "setup",
        "claim",
        "--regions",
        "us-east-1,eu-west-1",
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PRIVATE KEY"));
    let report: Value = serde_json::from_str(&stdout).expect("JSON");

    let key_path = dir.join("claim.key");
    let pem_path = dir.join("claim.pem");
    assert_eq!(report["privateKey"], key_path.to_str().unwrap());
    assert_eq!(report["certificatePem"], pem_path.to_str().unwrap());
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "claim.key mode {mode:o}");
    let key = pem::parse(std::fs::read(&key_path).unwrap()).expect("claim.key is PEM");
    assert!(key.tag().ends_with("PRIVATE KEY"), "{}", key.tag());
    let pem_text = std::fs::read_to_string(&pem_path).unwrap();
    let (_, certificate) =
        x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("claim.pem is PEM");
    certificate.parse_x509().expect("claim.pem is X.509");

    let id = der_id(&pem_text);
    for region in REGIONS {
        let entry = &report["regions"][region];
        assert_eq!(entry["certificateId"], id.as_str(), "{region}: {report}");
        assert_eq!(entry["created"], true, "{region}");
        assert!(
            entry["certificateArn"]
                .as_str()
                .unwrap()
                .contains(&format!(":iot:{region}:"))
        );
        assert_eq!(
            claim_status(region, &id).await,
            Some(CertificateStatus::Active),
            "{region}"
        );
    }
}

#[tokio::test]
async fn a_second_claim_run_reuses_the_files_and_registers_nothing() {
    let dir = fresh_dir("setup-claim-again");
    let first = setup_claim(&dir, "us-east-1,eu-west-1");
    let key = std::fs::read(dir.join("claim.key")).unwrap();
    let pem_bytes = std::fs::read(dir.join("claim.pem")).unwrap();

    let second = setup_claim(&dir, "us-east-1,eu-west-1");
    for region in REGIONS {
        assert_eq!(second["regions"][region]["created"], false, "{region}");
        assert_eq!(
            second["regions"][region]["certificateId"],
            first["regions"][region]["certificateId"]
        );
        assert_eq!(
            second["regions"][region]["certificateArn"],
            first["regions"][region]["certificateArn"]
        );
    }
    assert_eq!(std::fs::read(dir.join("claim.key")).unwrap(), key);
    assert_eq!(std::fs::read(dir.join("claim.pem")).unwrap(), pem_bytes);
}

#[tokio::test]
async fn a_rerun_reactivates_the_certificate_and_registers_it_in_a_new_region() {
    let dir = fresh_dir("setup-claim-repair");
    let first = setup_claim(&dir, "us-east-1,eu-west-1");
    let id = first["regions"]["eu-west-1"]["certificateId"]
        .as_str()
        .unwrap()
        .to_owned();
    iot("eu-west-1")
        .await
        .update_certificate()
        .certificate_id(&id)
        .new_status(CertificateStatus::Inactive)
        .send()
        .await
        .expect("deactivate");

    let second = setup_claim(&dir, "us-east-1,eu-west-1,ap-northeast-1");
    assert_eq!(second["regions"]["eu-west-1"]["created"], false);
    assert_eq!(second["regions"]["ap-northeast-1"]["created"], true);
    assert_eq!(second["regions"]["ap-northeast-1"]["certificateId"], id);
    for region in ["us-east-1", "eu-west-1", "ap-northeast-1"] {
        assert_eq!(
            claim_status(region, &id).await,
            Some(CertificateStatus::Active),
            "{region}"
        );
    }
}

fn self_signed_pem(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.self_signed(&key).expect("self-sign").pem()
}

#[tokio::test]
async fn half_a_claim_pair_is_refused_and_nothing_is_registered() {
    let pem_text = self_signed_pem("left-over claim");
    let id = der_id(&pem_text);
    for (present, absent) in [("claim.pem", "claim.key"), ("claim.key", "claim.pem")] {
        let dir = fresh_dir("setup-claim-half");
        // Any PEM will do: the command must refuse before reading it.
        std::fs::write(dir.join(present), &pem_text).unwrap();
        let out = geoprov().run(&[
            "setup",
            "claim",
            "--regions",
            "us-east-1,eu-west-1",
            "--out-dir",
            dir.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{present} alone was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(present) && stderr.contains(absent) && stderr.contains("does not"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
        assert!(!dir.join(absent).exists(), "{absent} was written");
        assert_eq!(
            std::fs::read_to_string(dir.join(present)).unwrap(),
            pem_text
        );
    }
    for region in REGIONS {
        assert_eq!(claim_status(region, &id).await, None, "{region}");
    }
}

/// An IoT request as moto recorded it.
#[derive(Debug)]
struct RecordedRequest {
    /// Path and query: setAsActive, allowAutoRegistration, newStatus and
    /// newAutoRegistrationStatus travel there.
    url: String,
    /// Its credential scope names the region.
    authorization: String,
    body: Value,
}

impl RecordedRequest {
    fn signed_for(&self, region: &str) -> bool {
        self.authorization.contains(&format!("/{region}/iot/"))
    }
}

fn recorded_requests(method: &str, path: &str) -> Vec<RecordedRequest> {
    let text = std::fs::read_to_string(&moto().recording).expect("moto recording");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| {
            entry["method"] == method
                && entry["url"].as_str().is_some_and(|u| {
                    let path_of = u.split('?').next().unwrap_or("");
                    path_of.ends_with(path)
                })
        })
        .map(|entry| {
            let raw = entry["body"].as_str().unwrap_or("");
            let body = if entry["body_encoded"] == true {
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            } else {
                raw.to_owned()
            };
            RecordedRequest {
                url: entry["url"].as_str().unwrap_or("").to_owned(),
                authorization: entry["headers"]["Authorization"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
            }
        })
        .collect()
}

/// The RegisterCACertificate requests moto recorded for the CA `id`.
fn recorded_ca_registrations(id: &str) -> Vec<RecordedRequest> {
    recorded_requests("POST", "/cacertificate")
        .into_iter()
        .filter(|r| r.body["caCertificate"].as_str().map(der_id).as_deref() == Some(id))
        .collect()
}

/// The UpdateCACertificate requests moto recorded for the CA `id`.
fn recorded_ca_updates(id: &str) -> Vec<RecordedRequest> {
    recorded_requests("PUT", &format!("/cacertificate/{id}"))
}

/// A new ACTIVE root CA in moto's ACM PCA in `PCA_REGION`: its ARN and the
/// IoT id of its certificate.
fn local_ca() -> (String, String) {
    let pca = Geoprov::new(aws_env(&moto().endpoint, PCA_REGION));
    let ca = pca.ok(&[
        "pca",
        "create-local-ca",
        "--common-name",
        "geoprov setup test CA",
    ]);
    let arn = ca["certificateAuthorityArn"]
        .as_str()
        .expect("ARN")
        .to_owned();
    assert!(arn.contains(&format!(":acm-pca:{PCA_REGION}:")), "{arn}");
    (
        arn,
        der_id(ca["certificatePem"].as_str().expect("certificatePem")),
    )
}

fn setup_ca(args: &[&str]) -> Value {
    let out = geoprov().run(&[&["setup", "ca"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "geoprov setup ca {args:?}: {stderr}");
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    serde_json::from_str(&stdout).expect("geoprov prints JSON")
}

/// The CA's registration in `region` as IoT describes it: status,
/// auto-registration, mode and the template its registrationConfig names.
async fn ca_registration(
    region: &str,
    id: &str,
) -> (
    CaCertificateStatus,
    AutoRegistrationStatus,
    CertificateMode,
    Option<String>,
) {
    let described = iot(region)
        .await
        .describe_ca_certificate()
        .certificate_id(id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeCACertificate in {region}: {e:?}"));
    let description = described.certificate_description().expect("description");
    let config = described.registration_config();
    assert_eq!(config.and_then(|c| c.template_body()), None, "{region}");
    (
        description.status().expect("status").clone(),
        description
            .auto_registration_status()
            .expect("autoRegistrationStatus")
            .clone(),
        description
            .certificate_mode()
            .expect("certificateMode")
            .clone(),
        config.and_then(|c| c.template_name()).map(str::to_owned),
    )
}

/// Ready for JITR: active, auto-registration on, SNI only, no template.
fn jitr_ready() -> (
    CaCertificateStatus,
    AutoRegistrationStatus,
    CertificateMode,
    Option<String>,
) {
    (
        CaCertificateStatus::Active,
        AutoRegistrationStatus::Enable,
        CertificateMode::SniOnly,
        None,
    )
}

#[tokio::test]
async fn pca_certificate_is_registered_for_jitr_in_both_regions_and_a_rerun_leaves_it() {
    let (arn, id) = local_ca();
    let args = ["--pca-arn", &arn, "--regions", "us-east-1,eu-west-1"];

    let first = setup_ca(&args);
    assert_eq!(first["pcaArn"], arn.as_str());
    for region in REGIONS {
        let entry = &first["regions"][region];
        assert_eq!(entry["certificateId"], id.as_str(), "{first:#}");
        assert_eq!(entry["outcome"], "created", "{region}");
        assert!(entry.get("repaired").is_none(), "{entry}");
        assert!(
            entry["certificateArn"]
                .as_str()
                .unwrap()
                .contains(&format!(":iot:{region}:"))
        );
        assert_eq!(ca_registration(region, &id).await, jitr_ready());
    }

    let registrations = recorded_ca_registrations(&id);
    assert_eq!(registrations.len(), 2, "one registration per region");
    for region in REGIONS {
        let request = registrations
            .iter()
            .find(|r| r.signed_for(region))
            .unwrap_or_else(|| panic!("no registration signed for {region}: {registrations:?}"));
        assert!(
            request.url.contains("allowAutoRegistration=true")
                && request.url.contains("setAsActive=true"),
            "{}",
            request.url
        );
        assert_eq!(request.body["certificateMode"], "SNI_ONLY");
        // No template: JITP would activate whatever the CA signed.
        assert!(
            request.body.get("registrationConfig").is_none(),
            "{:?}",
            request.body
        );
    }

    let second = setup_ca(&args);
    for region in REGIONS {
        let entry = &second["regions"][region];
        assert_eq!(entry["outcome"], "left", "{region}: {second:#}");
        assert_eq!(entry["certificateId"], id.as_str());
        assert_eq!(
            entry["certificateArn"],
            first["regions"][region]["certificateArn"]
        );
    }
    assert_eq!(
        recorded_ca_registrations(&id).len(),
        2,
        "nothing registered"
    );
    assert!(recorded_ca_updates(&id).is_empty(), "nothing updated");
}

#[tokio::test]
async fn a_rerun_repairs_auto_registration_status_and_a_jitp_template_and_registers_a_new_region() {
    let (arn, id) = local_ca();
    setup_ca(&["--pca-arn", &arn, "--regions", "us-east-1,eu-west-1"]);
    iot("us-east-1")
        .await
        .update_ca_certificate()
        .certificate_id(&id)
        .new_auto_registration_status(AutoRegistrationStatus::Disable)
        .send()
        .await
        .expect("disable auto-registration");
    // As a JITP setup left it: a template, and the CA deactivated besides.
    iot("eu-west-1")
        .await
        .update_ca_certificate()
        .certificate_id(&id)
        .new_status(CaCertificateStatus::Inactive)
        .registration_config(
            RegistrationConfig::builder()
                .template_name("geoprov-jitp")
                .build(),
        )
        .send()
        .await
        .expect("deactivate, JITP template");
    assert_eq!(
        ca_registration("us-east-1", &id).await.1,
        AutoRegistrationStatus::Disable,
        "moto keeps the disabled auto-registration"
    );
    let updates_before = recorded_ca_updates(&id).len();

    let regions = "us-east-1,eu-west-1,ap-northeast-1";
    let repaired = setup_ca(&["--pca-arn", &arn, "--regions", regions]);
    let entry = |region: &str| repaired["regions"][region].clone();
    assert_eq!(entry("us-east-1")["outcome"], "repaired", "{repaired:#}");
    assert_eq!(
        entry("us-east-1")["repaired"],
        json!(["autoRegistrationStatus"])
    );
    assert_eq!(entry("eu-west-1")["outcome"], "repaired", "{repaired:#}");
    assert_eq!(
        entry("eu-west-1")["repaired"],
        json!(["status", "registrationConfig"])
    );
    assert_eq!(entry("ap-northeast-1")["outcome"], "created");
    for region in ["us-east-1", "eu-west-1", "ap-northeast-1"] {
        assert_eq!(entry(region)["certificateId"], id.as_str());
        let (status, auto, _, template) = ca_registration(region, &id).await;
        assert_eq!(
            (status, auto, template),
            (
                CaCertificateStatus::Active,
                AutoRegistrationStatus::Enable,
                None
            ),
            "{region}"
        );
    }
    // One UpdateCACertificate per repaired region, none for the new one.
    let updates = recorded_ca_updates(&id);
    let repairs = &updates[updates_before..];
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    let us = repairs.iter().find(|r| r.signed_for("us-east-1")).unwrap();
    assert!(
        us.url.contains("newAutoRegistrationStatus=ENABLE"),
        "{}",
        us.url
    );
    assert!(!us.url.contains("newStatus"), "{}", us.url);
    let eu = repairs.iter().find(|r| r.signed_for("eu-west-1")).unwrap();
    assert!(eu.url.contains("newStatus=ACTIVE"), "{}", eu.url);
    assert_eq!(eu.body["registrationConfig"], json!({}));

    let again = setup_ca(&["--pca-arn", &arn, "--regions", regions]);
    for region in ["us-east-1", "eu-west-1", "ap-northeast-1"] {
        assert_eq!(again["regions"][region]["outcome"], "left", "{again:#}");
    }
    assert_eq!(recorded_ca_updates(&id).len(), updates_before + 2);
}

#[tokio::test]
async fn the_pca_region_can_be_given() {
    let (arn, id) = local_ca();
    // The CA is not in the region given: ACM PCA's error, nothing registered.
    let out = geoprov().run(&[
        "setup",
        "ca",
        "--pca-arn",
        &arn,
        "--pca-region",
        "eu-west-1",
        "--regions",
        "us-east-1",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ACM PCA GetCertificateAuthorityCertificate in eu-west-1"),
        "{stderr}"
    );
    assert!(recorded_ca_registrations(&id).is_empty());

    let setup = setup_ca(&[
        "--pca-arn",
        &arn,
        "--pca-region",
        PCA_REGION,
        "--regions",
        "us-east-1",
    ]);
    assert_eq!(setup["regions"]["us-east-1"]["outcome"], "created");
    assert_eq!(ca_registration("us-east-1", &id).await, jitr_ready());
}

#[test]
fn setup_ca_refuses_a_bad_arn_or_region_before_any_call() {
    // Nothing listens here: a call would fail otherwise than the refusal.
    let unreachable = Geoprov::new(aws_env(
        &format!("http://127.0.0.1:{}", free_port()),
        "eu-west-1",
    ));
    let good = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/0b1c2d3e-4f50";
    for (args, expected) in [
        (
            vec![
                "--pca-arn",
                "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e",
            ],
            "not acm-pca",
        ),
        (vec!["--pca-arn", "geoprov-ca"], "not an ARN"),
        (
            vec![
                "--pca-arn",
                "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/",
            ],
            "not a certificate authority id",
        ),
        (
            vec!["--pca-arn", good, "--pca-region", "Europe"],
            "--pca-region",
        ),
    ] {
        let args = [&["setup", "ca", "--regions", "us-east-1"][..], &args].concat();
        let out = unreachable.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("dispatch failure"), "{args:?}: {stderr}");
    }
}

#[test]
fn setup_ca_names_a_pca_that_does_not_exist() {
    let arn = format!(
        "arn:aws:acm-pca:{PCA_REGION}:123456789012:certificate-authority/{}",
        unique_table("absent")
    );
    let out = geoprov().run(&["setup", "ca", "--pca-arn", &arn, "--regions", "us-east-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "ACM PCA GetCertificateAuthorityCertificate in {PCA_REGION}"
        )),
        "{stderr}"
    );
}

/// moto as it ships, without the launcher's corrections: its certificate
/// ids are not the SHA-256 of the DER that `setup` computes, as a registry
/// that names certificates otherwise would. Stopped when dropped.
struct PlainMoto {
    endpoint: String,
    child: std::process::Child,
}

impl PlainMoto {
    fn start() -> Self {
        let port = geoprov_tests::free_port();
        let server = geoprov_tests::python()
            .parent()
            .expect("the venv's bin")
            .join("moto_server");
        let child = std::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        PlainMoto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for PlainMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `setup` command can be run again: where IoT answers that the claim
/// certificate is already registered (its id not the one `setup` computed),
/// the certificate it names is checked to be the same one and taken as
/// present.
#[tokio::test]
async fn a_second_claim_run_takes_an_already_registered_answer_as_present() {
    let plain = PlainMoto::start();
    let cli = Geoprov::new(aws_env(&plain.endpoint, "ap-southeast-2"));
    let dir = fresh_dir("setup-claim-plain");
    let args = [
        "setup",
        "claim",
        "--regions",
        "eu-west-1",
        "--out-dir",
        dir.to_str().unwrap(),
    ];
    let first = cli.ok(&args);
    let second = cli.ok(&args);
    let (a, b) = (
        &first["regions"]["eu-west-1"],
        &second["regions"]["eu-west-1"],
    );
    assert_eq!(b["created"], false, "{second}");
    assert_eq!(b["certificateId"], a["certificateId"], "{second}");
    assert_eq!(b["certificateArn"], a["certificateArn"], "{second}");
}
