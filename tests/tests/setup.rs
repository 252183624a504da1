//! `geoprov setup claim` and `geoprov setup ca` against moto's IoT in two
//! regions: registered in both, ACTIVE, idempotent, the claim key private.
//!
//! moto ids a certificate as AWS IoT does (SHA-256 of its DER): the launcher
//! turns moto's `use_valid_cert` on. This binary runs a moto of its own that
//! records every request, so a test can read what was asked of IoT where moto
//! does not keep it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_sdk_iot::types::{AutoRegistrationStatus, CaCertificateStatus, CertificateStatus};
use base64::Engine;
use geoprov_tests::cli::Geoprov;
use geoprov_tests::{aws_env, sdk_config, unique_table};
use serde_json::Value;
use sha2::{Digest, Sha256};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

struct IotMoto {
    moto: geoprov_tests::Moto,
    recording: PathBuf,
}

impl std::ops::Deref for IotMoto {
    type Target = geoprov_tests::Moto;
    fn deref(&self) -> &geoprov_tests::Moto {
        &self.moto
    }
}

/// A moto of this binary's own, recording requests (to see what was sent
/// where moto does not report it back).
fn moto() -> &'static IotMoto {
    static MOTO: OnceLock<IotMoto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let recording = std::env::temp_dir().join(unique_table("setup-recording") + ".jsonl");
        IotMoto {
            moto: geoprov_tests::launch_moto(Some(&recording)),
            recording,
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
        assert!(entry["certificateArn"]
            .as_str()
            .unwrap()
            .contains(&format!(":iot:{region}:")));
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

fn self_signed_pem(common_name: &str, is_ca: bool) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.self_signed(&key).expect("self-sign").pem()
}

#[tokio::test]
async fn half_a_claim_pair_is_refused_and_nothing_is_registered() {
    let pem_text = self_signed_pem("left-over claim", false);
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

/// A RegisterCACertificate request as moto recorded it.
#[derive(Debug)]
struct RecordedRegistration {
    /// Path and query: setAsActive and allowAutoRegistration travel there.
    url: String,
    /// Its credential scope names the region.
    authorization: String,
    body: Value,
}

/// The RegisterCACertificate requests moto recorded for a CA.
fn recorded_ca_registrations(pem_text: &str) -> Vec<RecordedRegistration> {
    let text = std::fs::read_to_string(&moto().recording).expect("moto recording");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| {
            entry["method"] == "POST"
                && entry["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/cacertificate"))
        })
        .filter_map(|entry| {
            let body = entry["body"].as_str()?;
            let body = if entry["body_encoded"] == true {
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .ok()?,
                )
                .ok()?
            } else {
                body.to_owned()
            };
            let body: Value = serde_json::from_str(&body).ok()?;
            (body["caCertificate"] == pem_text).then(|| RecordedRegistration {
                url: entry["url"].as_str().unwrap_or("").to_owned(),
                authorization: entry["headers"]["Authorization"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                body,
            })
        })
        .collect()
}

#[tokio::test]
async fn ca_is_registered_in_both_regions_once() {
    let ca_pem = self_signed_pem("geoprov test CA", true);
    let dir = fresh_dir("setup-ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let template_file = dir.join("jitp.json");
    let template_body = r#"{"Resources":{"thing":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Ref":"AWS::IoT::Certificate::CommonName"}}}}}"#;
    std::fs::write(&template_file, template_body).unwrap();
    let role = "arn:aws:iam::123456789012:role/geoprov-jitp";
    let args = [
        "setup",
        "ca",
        "--ca-pem",
        ca_file.to_str().unwrap(),
        "--regions",
        "us-east-1,eu-west-1",
        "--registration-role-arn",
        role,
        "--template-body-file",
        template_file.to_str().unwrap(),
    ];

    let first = geoprov().ok(&args);
    let id = der_id(&ca_pem);
    for region in REGIONS {
        assert_eq!(first["regions"][region]["certificateId"], id.as_str());
        assert_eq!(first["regions"][region]["created"], true, "{region}");
        let described = iot(region)
            .await
            .describe_ca_certificate()
            .certificate_id(&id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeCACertificate in {region}: {e:?}"));
        let description = described.certificate_description().expect("description");
        assert_eq!(description.status(), Some(&CaCertificateStatus::Active));
        // moto 5 keeps no auto-registration status (nor certificate mode):
        // its description leaves it out, so the request is checked below.
        assert!(matches!(
            description.auto_registration_status(),
            None | Some(AutoRegistrationStatus::Enable)
        ));
        let config = described.registration_config().expect("registrationConfig");
        assert_eq!(config.template_body(), Some(template_body));
        assert_eq!(config.role_arn(), Some(role));
    }

    let requests = recorded_ca_registrations(&ca_pem);
    assert_eq!(requests.len(), 2, "one registration per region");
    for region in REGIONS {
        let request = requests
            .iter()
            .find(|r| r.authorization.contains(&format!("/{region}/iot/")))
            .unwrap_or_else(|| panic!("no registration signed for {region}: {requests:?}"));
        assert!(
            request.url.contains("allowAutoRegistration=true")
                && request.url.contains("setAsActive=true"),
            "{}",
            request.url
        );
        assert_eq!(request.body["certificateMode"], "SNI_ONLY");
    }

    let second = geoprov().ok(&args);
    for region in REGIONS {
        assert_eq!(second["regions"][region]["created"], false, "{region}");
        assert_eq!(second["regions"][region]["certificateId"], id.as_str());
    }
    assert_eq!(recorded_ca_registrations(&ca_pem).len(), 2);
}

#[test]
fn setup_ca_refuses_a_file_that_is_not_a_certificate() {
    let dir = fresh_dir("setup-ca-bad");
    let file = dir.join("key.pem");
    // A key-shaped PEM made here (no key is kept in the tree, not even a fake).
    let label = ["PRIVATE", "KEY"].join(" ");
    std::fs::write(
        &file,
        format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n"),
    )
    .unwrap();
    let out = geoprov().run(&[
        "setup",
        "ca",
        "--ca-pem",
        file.to_str().unwrap(),
        "--regions",
        "us-east-1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a CERTIFICATE"), "{stderr}");
    assert!(!stderr.contains("AAAA"), "{stderr}");
}
