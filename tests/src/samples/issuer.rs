//! The real `cert-issuer` binary under the Runtime API emulator, its registry
//! seeded by the real `geoprov`, its CA made by `geoprov pca create-local-ca`,
//! invoked with every sample event in `events/cert-issuer/`.

use std::collections::BTreeMap;

use crate::cli::Geoprov;
use crate::issuer::local_ca;
use crate::lambda::RuntimeEmulator;
use crate::{aws_env, moto, unique_table, workspace_binary, workspace_root};
use serde::Deserialize;
use serde_json::Value;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Deserialize)]
struct Expectations {
    environment: BTreeMap<String, String>,
    events: BTreeMap<String, Value>,
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("PEM").into_contents()
}

/// Checks one answer against its expectation: `null` for an issued
/// certificate (which must be signed by the CA), else the error code.
fn check_item(name: &str, item: &Value, expected: &Value, ca_der: &[u8]) {
    match expected {
        Value::Object(refusal) if refusal.contains_key("refusedToDevice") => {
            // The function error IoT passes to the device: a stable type and
            // one constant text, nothing of the registry or the code.
            assert_eq!(
                item["errorType"], refusal["refusedToDevice"],
                "{name}: {item}"
            );
            assert_eq!(
                item["errorMessage"],
                cert_issuer::provider::REFUSED_TEXT,
                "{name}: {item}"
            );
        }
        Value::Object(provider) => {
            // IoT's certificate-provider answer: only the certificate.
            let keys: Vec<&String> = item.as_object().expect("an object").keys().collect();
            assert_eq!(keys, ["certificatePem"], "{name}: {item}");
            let serial = &provider["certificateProviderFor"];
            let mut with_serial = item.clone();
            with_serial["serialNumber"] = serial.clone();
            check_item(name, &with_serial, &Value::Null, ca_der);
        }
        Value::Null => {
            let pem_text = item["certificatePem"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no certificate: {item}"));
            let cert_der = der(pem_text);
            let (_, certificate) = X509Certificate::from_der(&cert_der).unwrap();
            let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
            certificate
                .verify_signature(Some(ca.public_key()))
                .unwrap_or_else(|e| panic!("{name}: not signed by the CA: {e}"));
            let cn = certificate.subject().iter_common_name().next().unwrap();
            assert_eq!(
                Some(cn.as_str().unwrap()),
                item["serialNumber"].as_str(),
                "{name}"
            );
        }
        code => assert_eq!(&item["error"]["code"], code, "{name}: {item}"),
    }
}

/// Runs every sample event of `events/cert-issuer/` through the real binary,
/// whose AWS requests are signed with `function_key` (so a recording of
/// moto's requests tells them apart), and checks each answer.
pub async fn run(function_key: &str) {
    let root = workspace_root();
    let fixtures = root.join("tests/fixtures/cert-issuer");
    let expectations: Expectations =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let mut samples: Vec<String> = std::fs::read_dir(root.join("events/cert-issuer"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    samples.sort();
    let covered: Vec<String> = expectations.events.keys().cloned().collect();
    assert_eq!(samples, covered, "every sample event needs an expectation");

    let ca = local_ca();
    let region = &expectations.environment["AWS_REGION"];
    let mut env = aws_env(&moto().endpoint, region);
    env.insert("TABLE_NAME".into(), unique_table("issuer-binary"));
    let cli = Geoprov::new(env.clone());
    cli.ok(&["registry", "create-table"]);
    cli.ok(&[
        "registry",
        "import",
        fixtures.join("registry.jsonl").to_str().unwrap(),
    ]);

    env.extend(expectations.environment.clone());
    env.insert("PCA_ARN".into(), ca.arn.clone());
    env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("cert-issuer"), &env);
    let ca_der = der(&ca.certificate_pem);

    for (name, expected) in &expectations.events {
        let payload: Value = serde_json::from_slice(
            &std::fs::read(root.join("events/cert-issuer").join(name)).unwrap(),
        )
        .unwrap();
        let (_, answer) = emulator.invoke_raw(&payload);
        match expected {
            Value::Array(items) => {
                let results = answer["results"].as_array().expect("a batch answer");
                assert_eq!(results.len(), items.len(), "{name}: {answer}");
                for (item, expected) in results.iter().zip(items) {
                    check_item(name, item, expected, &ca_der);
                }
            }
            expected => check_item(name, &answer, expected, &ca_der),
        }
        assert!(function.exited().is_none(), "the function exited on {name}");
    }

    // The same request again: the same certificate, from the ledger.
    let issue: Value =
        serde_json::from_slice(&std::fs::read(root.join("events/cert-issuer/issue.json")).unwrap())
            .unwrap();
    let first = emulator.invoke(&issue);
    let again = emulator.invoke(&issue);
    assert_eq!(first["certificateArn"], again["certificateArn"]);
    assert!(first["certificateArn"].is_string(), "{first}");

    // The refusal on the provider path counts against its claim
    // certificate, as the hook's denials do: the claim-abuse alarm covers
    // both.
    let refused_claims: Vec<String> = function
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|doc| doc.get("ClaimDenials").is_some())
        .map(|doc| {
            assert_eq!(
                doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
                serde_json::json!(["service", "ClaimCertificateId"]),
                "{doc}"
            );
            doc["ClaimCertificateId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        refused_claims,
        [expectations.environment["TRUSTED_CLAIM_CERTIFICATE_IDS"].clone()]
    );

    // Nothing of a CSR or a certificate reaches the log.
    let log = function.output();
    assert!(!log.contains("BEGIN CERTIFICATE"), "a PEM body in the log");
    assert!(log.contains("certificate issued"), "{log}");
}
