//! cert-issuer against moto: a root CA made by `geoprov pca create-local-ca`,
//! the device registry, the issuance ledger and the audit log in DynamoDB.
//! moto's ACM PCA really signs, but ignores TemplateArn, Validity and the
//! IdempotencyToken and never says RequestInProgress: those are covered in
//! `issuer_pca_sdk_boundary.rs`.

use std::process::Command;

use aws_sdk_dynamodb::types::AttributeValue;
use cert_issuer::ledger::{DynamoLedger, IssuanceLedger, IssuanceStatus, issuance_count_pk};
use cert_issuer::response::{ErrorCode, ItemResponse, Response};
use geoprov_shared::audit::Decision;
use geoprov_shared::device::{DeviceProfile, DeviceStatus, PublicKeyFingerprint, SerialNumber};
use geoprov_tests::audit_decisions;
use geoprov_tests::certs::device_csr;
use geoprov_tests::issuer::{LocalCa, issuer, issuer_with_profiles, local_ca};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

fn one(response: Response) -> ItemResponse {
    match response {
        Response::One(item) => item,
        other => panic!("one item expected: {other:?}"),
    }
}

fn issued(item: &ItemResponse) -> &cert_issuer::response::Issued {
    match item {
        ItemResponse::Issued(issued) => issued,
        refused => panic!("issued expected: {refused:?}"),
    }
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("PEM").into_contents()
}

/// `openssl verify` of the certificate against the CA.
fn openssl_verify(ca: &LocalCa, certificate_pem: &str) {
    let dir = std::env::temp_dir().join(geoprov_tests::unique_table("openssl-verify"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.certificate_pem).unwrap();
    std::fs::write(dir.join("device.pem"), certificate_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", "ca.pem", "device.pem"])
        .current_dir(&dir)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn issues_a_certificate_that_verifies_against_the_ca_and_carries_the_csr() {
    let ca = local_ca();
    let (issuer, registry, calls) = issuer(&ca, &[("SN-1", DeviceStatus::Allowed)], 8).await;
    let csr = device_csr("SN-1");

    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-1", "csrPem": csr.pem, "validityDays": 30}),
            "r1",
        )
        .await);
    let issued = issued(&item);
    assert_eq!(issued.serial_number, "SN-1");
    assert!(
        issued
            .certificate_arn
            .starts_with(&format!("{}/certificate/", ca.arn))
    );
    assert_eq!(
        issued.certificate_chain_pem.trim(),
        ca.certificate_pem.trim()
    );
    assert_eq!(calls.issued(), 1);

    openssl_verify(&ca, &issued.certificate_pem);
    let cert_der = der(&issued.certificate_pem);
    let ca_der = der(&ca.certificate_pem);
    let (_, certificate) = X509Certificate::from_der(&cert_der).unwrap();
    let (_, ca_certificate) = X509Certificate::from_der(&ca_der).unwrap();
    certificate
        .verify_signature(Some(ca_certificate.public_key()))
        .expect("signed by the CA");
    assert_eq!(
        certificate.public_key().raw,
        csr.spki_der.as_slice(),
        "the CSR's key"
    );
    let cns: Vec<&str> = certificate
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap())
        .collect();
    assert_eq!(cns, ["SN-1"]);
    assert_eq!(certificate.issuer(), ca_certificate.subject());
    let not_after = certificate
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(issued.not_after, not_after);

    // The ledger holds the issuance under the request's hash; the audit log has it.
    let ledger =
        cert_issuer::ledger::DynamoLedger::new(registry.client().clone(), registry.table());
    let csr_sha = csr_sha256(&csr.pem);
    let entry = ledger.get(&csr_sha).await.unwrap().expect("ledger entry");
    assert_eq!(entry.status, IssuanceStatus::Issued);
    assert_eq!(
        entry.certificate_arn.as_deref(),
        Some(issued.certificate_arn.as_str())
    );
    assert_eq!(entry.not_after.as_deref(), Some(not_after.as_str()));
    assert_eq!(
        audit_decisions(&registry, "SN-1").await,
        [(Decision::Allow, "ISSUED".to_owned())]
    );
    let events = registry
        .audit_events(&SerialNumber::try_from("SN-1").unwrap())
        .await
        .unwrap();
    assert_eq!(
        events[0].certificate_id.as_deref(),
        Some(hex::encode(Sha256::digest(&cert_der)).as_str()),
        "the audit names the certificate by its AWS IoT certificate id"
    );
}

#[tokio::test]
async fn the_same_request_twice_gives_the_same_certificate_and_issues_once() {
    let ca = local_ca();
    let (issuer, _registry, calls) = issuer(&ca, &[("SN-1", DeviceStatus::Allowed)], 8).await;
    let request = json!({"serialNumber": "SN-1", "csrPem": device_csr("SN-1").pem});

    let first = one(issuer.handle(request.clone(), "r1").await);
    let second = one(issuer.handle(request, "r2").await);
    assert_eq!(
        issued(&first).certificate_arn,
        issued(&second).certificate_arn
    );
    assert_eq!(
        issued(&first).certificate_pem,
        issued(&second).certificate_pem
    );
    assert_eq!(calls.issued(), 1, "one IssueCertificate for both");

    // Concurrent repeats of a new CSR also end with one certificate.
    let request = json!({"serialNumber": "SN-1", "csrPem": device_csr("SN-1").pem});
    let (a, b, c) = tokio::join!(
        issuer.handle(request.clone(), "c1"),
        issuer.handle(request.clone(), "c2"),
        issuer.handle(request.clone(), "c3"),
    );
    let arns: Vec<String> = [a, b, c]
        .into_iter()
        .map(|r| issued(&one(r)).certificate_arn.clone())
        .collect();
    assert!(arns.iter().all(|arn| *arn == arns[0]), "{arns:?}");
    assert_eq!(calls.issued(), 2);
}

#[tokio::test]
async fn unknown_and_blocked_devices_get_nothing_from_the_ca() {
    let ca = local_ca();
    let (issuer, registry, calls) = issuer(
        &ca,
        &[
            ("SN-BLOCKED", DeviceStatus::Blocked),
            ("SN-REVOKED", DeviceStatus::Revoked),
            ("SN-OPERATOR", DeviceStatus::Allowed),
        ],
        8,
    )
    .await;
    // An operator's block, beside an ALLOWED profile.
    registry
        .block(
            &SerialNumber::try_from("SN-OPERATOR").unwrap(),
            &geoprov_shared::device::OperatorBlock {
                reason: "returned to the factory".into(),
                blocked_at: "2026-11-30T00:00:00Z".into(),
            },
        )
        .await
        .unwrap();
    let ledger =
        cert_issuer::ledger::DynamoLedger::new(registry.client().clone(), registry.table());
    for (serial, code) in [
        ("SN-UNKNOWN", ErrorCode::UnknownDevice),
        ("SN-BLOCKED", ErrorCode::DeviceBlocked),
        ("SN-REVOKED", ErrorCode::DeviceBlocked),
        ("SN-OPERATOR", ErrorCode::DeviceBlocked),
    ] {
        let csr = device_csr(serial);
        let item = one(issuer
            .handle(json!({"serialNumber": serial, "csrPem": csr.pem}), "r")
            .await);
        assert_eq!(item.error_code(), Some(code), "{serial}");
        let csr_sha = hex::encode(Sha256::digest(der(&csr.pem)));
        assert!(
            ledger.get(&csr_sha).await.unwrap().is_none(),
            "{serial}: no ledger entry"
        );
        assert_eq!(
            audit_decisions(&registry, serial).await,
            [(Decision::Deny, code.as_str().to_owned())]
        );
    }
    assert_eq!(calls.issued(), 0, "nothing reached ACM PCA");
}

#[tokio::test]
async fn a_batch_of_200_is_answered_in_order_with_bad_items_refused_in_place() {
    let ca = local_ca();
    let serials: Vec<String> = (0..200).map(|i| format!("SN-B{i:03}")).collect();
    let devices: Vec<(&str, DeviceStatus)> = serials
        .iter()
        .map(|s| (s.as_str(), DeviceStatus::Allowed))
        .collect();
    let (issuer, _registry, calls) = issuer(&ca, &devices, 8).await;

    let mut expected = Vec::new();
    let requests: Vec<Value> = serials
        .iter()
        .enumerate()
        .map(|(i, serial)| {
            let (request, code) = match i % 25 {
                3 => (json!({"serialNumber": format!("SN-X{i}"), "csrPem": device_csr(&format!("SN-X{i}")).pem}), Some(ErrorCode::UnknownDevice)),
                7 => (json!({"serialNumber": serial, "csrPem": "not a csr"}), Some(ErrorCode::InvalidCsr)),
                11 => (json!({"serialNumber": serial, "csrPem": device_csr("SN-OTHER").pem}), Some(ErrorCode::SubjectMismatch)),
                19 => (json!({"serialNumber": serial, "csrPem": device_csr(serial).pem, "validityDays": 366}), Some(ErrorCode::ValidityTooLong)),
                23 => (json!({"serialNumber": serial}), Some(ErrorCode::InvalidRequest)),
                _ => (json!({"serialNumber": serial, "csrPem": device_csr(serial).pem}), None),
            };
            expected.push(code);
            request
        })
        .collect();

    let Response::Batch { results } = issuer
        .handle(json!({ "requests": requests }), "batch")
        .await
    else {
        panic!("a batch answer")
    };
    assert_eq!(results.len(), 200);
    for (i, (result, code)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(result.error_code(), *code, "item {i}");
        if code.is_none() {
            assert_eq!(
                issued(result).serial_number,
                serials[i],
                "item {i} in order"
            );
        }
    }
    let good = expected.iter().filter(|c| c.is_none()).count();
    assert_eq!(good, 160);
    assert_eq!(calls.issued(), good);
    assert!(
        calls.max_in_flight() <= 8,
        "concurrency {}",
        calls.max_in_flight()
    );
    assert!(calls.max_in_flight() > 1, "issued concurrently");
}

fn profile(serial: &str) -> DeviceProfile {
    DeviceProfile::allowed(SerialNumber::try_from(serial).unwrap())
}

/// The ledger's key: the SHA-256 of the CSR's CertificationRequestInfo
/// (what is certified), not of the signature, which ECDSA makes anew.
fn csr_sha256(pem_text: &str) -> String {
    use x509_parser::prelude::FromDer;
    let der = der(pem_text);
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    hex::encode(Sha256::digest(csr.certification_request_info.raw))
}

#[tokio::test]
async fn the_factory_key_binds_the_certificate_and_the_ledger_records_the_allowed_regions() {
    let ca = local_ca();
    let factory = device_csr("SN-BOUND");
    let bound = DeviceProfile {
        public_key_sha256: Some(
            PublicKeyFingerprint::try_from(hex::encode(Sha256::digest(&factory.spki_der))).unwrap(),
        ),
        allowed_regions: Some(["eu-west-1".try_into().unwrap()].into()),
        ..profile("SN-BOUND")
    };
    let (issuer, registry, calls) = issuer_with_profiles(&ca, &[bound], 4).await;
    let ledger = DynamoLedger::new(registry.client().clone(), registry.table());

    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-BOUND", "csrPem": factory.pem}),
            "r1",
        )
        .await);
    openssl_verify(&ca, &issued(&item).certificate_pem);
    let entry = ledger
        .get(&csr_sha256(&factory.pem))
        .await
        .unwrap()
        .expect("a ledger entry");
    assert_eq!(entry.allowed_regions, Some(vec!["eu-west-1".to_owned()]));
    assert_eq!(entry.region.as_deref(), Some("eu-west-1"));

    // Another key, though a perfect CSR for the serial: refused before ACM PCA.
    let other = device_csr("SN-BOUND");
    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-BOUND", "csrPem": other.pem}),
            "r2",
        )
        .await);
    assert_eq!(item.error_code(), Some(ErrorCode::KeyMismatch));
    assert!(ledger.get(&csr_sha256(&other.pem)).await.unwrap().is_none());
    assert_eq!(calls.issued(), 1);
    assert_eq!(
        audit_decisions(&registry, "SN-BOUND").await,
        [
            (Decision::Allow, "ISSUED".to_owned()),
            (Decision::Deny, "KEY_MISMATCH".to_owned())
        ]
    );
}

#[tokio::test]
async fn the_issuance_quota_counts_distinct_csrs_over_every_region() {
    let ca = local_ca();
    let limited = DeviceProfile {
        max_certificates: Some(3),
        ..profile("SN-QUOTA")
    };
    let (issuer, registry, calls) = issuer_with_profiles(&ca, &[limited], 6).await;
    // One certificate was issued in another region already.
    registry
        .client()
        .put_item()
        .table_name(registry.table())
        .item("pk", AttributeValue::S(issuance_count_pk("SN-QUOTA")))
        .item("sk", AttributeValue::S("REGION#us-east-1".into()))
        .item("count", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();

    let first = device_csr("SN-QUOTA");
    let request = |csr: &str| json!({"serialNumber": "SN-QUOTA", "csrPem": csr});
    let item = one(issuer.handle(request(&first.pem), "r1").await);
    let arn = issued(&item).certificate_arn.clone();
    // The same CSR again is the same certificate, not counted.
    for again in 0..3 {
        let item = one(issuer
            .handle(request(&first.pem), &format!("again-{again}"))
            .await);
        assert_eq!(issued(&item).certificate_arn, arn);
    }
    // Six distinct CSRs at once: one unit of quota is left, and exactly one
    // of them takes it.
    let csrs: Vec<String> = (0..6).map(|_| device_csr("SN-QUOTA").pem).collect();
    let batch: Vec<Value> = csrs.iter().map(|c| request(c)).collect();
    let Response::Batch { results } = issuer.handle(json!({ "requests": batch }), "b").await else {
        panic!("a batch answer")
    };
    let codes: Vec<Option<ErrorCode>> = results.iter().map(ItemResponse::error_code).collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Some(ErrorCode::QuotaExceeded))
            .count(),
        5,
        "{codes:?}"
    );
    assert_eq!(calls.issued(), 2, "ACM PCA saw only what the quota allowed");
    let ledger = DynamoLedger::new(registry.client().clone(), registry.table());
    let mut recorded = 0;
    for csr in &csrs {
        recorded += usize::from(ledger.get(&csr_sha256(csr)).await.unwrap().is_some());
    }
    assert_eq!(recorded, 1, "a refused CSR leaves no ledger entry");
}

/// The SubjectPublicKeyInfo DER and the CN of a PEM certificate or CSR.
fn key_and_cn(pem_text: &str) -> (Vec<u8>, String) {
    let der = der(pem_text);
    match pem::parse(pem_text).unwrap().tag() {
        "CERTIFICATE" => {
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap();
            (
                cert.public_key().raw.to_vec(),
                cn.as_str().unwrap().to_owned(),
            )
        }
        _ => {
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            let info = csr.certification_request_info;
            let cn = info.subject.iter_common_name().next().unwrap();
            (
                info.subject_pki.raw.to_vec(),
                cn.as_str().unwrap().to_owned(),
            )
        }
    }
}

#[tokio::test]
async fn as_iots_certificate_provider_the_issuer_signs_the_csr_once_within_iots_5_seconds() {
    let ca = local_ca();
    let sample: Value = serde_json::from_slice(
        &std::fs::read(
            geoprov_tests::workspace_root().join("events/cert-issuer/certificate-provider.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let csr = sample["certificateSigningRequest"]
        .as_str()
        .unwrap()
        .to_owned();
    let serial = "SN-JITP-0005";
    let factory = cert_issuer::csr::check(serial, &csr)
        .unwrap()
        .public_key_sha256;
    let profiles = [
        DeviceProfile {
            public_key_sha256: Some(PublicKeyFingerprint::try_from(factory).unwrap()),
            ..profile(serial)
        },
        profile("SN-NOKEY"),
        // Pinned to another region: refused before the ledger or the quota.
        DeviceProfile {
            allowed_regions: Some(["ap-southeast-2".try_into().unwrap()].into()),
            ..profile("SN-ELSEWHERE")
        },
    ];
    let (issuer, registry, calls) = issuer_with_profiles(&ca, &profiles, 4).await;
    assert_eq!(sample["principalId"], geoprov_tests::issuer::CLAIM_ID);

    let started = std::time::Instant::now();
    let answer = issuer
        .provide(sample.clone(), "p1")
        .await
        .expect("a certificate");
    let took = started.elapsed();
    // IoT waits 5 s for a certificate provider: this is its contract, not a
    // benchmark (moto on loopback answers in milliseconds).
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    openssl_verify(&ca, &answer.certificate_pem);
    assert_eq!(key_and_cn(&answer.certificate_pem), key_and_cn(&csr));

    // The same CSR again: the same certificate, from the ledger.
    let again = issuer.provide(sample.clone(), "p2").await.expect("again");
    assert_eq!(again.certificate_pem, answer.certificate_pem);
    assert_eq!(calls.issued(), 1);

    // Refused: a CSR the policy refuses; a client id outside the
    // convention; a claim certificate the hook does not trust; a device
    // with no factory key on record (anyone may hold the claim key).
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut event = sample.clone();
        change(&mut event);
        event
    };
    for (event, code) in [
        (
            refused(&|e| e["certificateSigningRequest"] = json!(device_csr("SN-OTHER").pem)),
            "SUBJECT_MISMATCH",
        ),
        (
            refused(&|e| e["clientId"] = json!(serial)),
            "INVALID_REQUEST",
        ),
        (
            refused(&|e| e["principalId"] = json!("0".repeat(64))),
            "UNTRUSTED_CLAIM",
        ),
        (
            refused(&|e| {
                e["clientId"] = json!("prov-SN-NOKEY");
                e["certificateSigningRequest"] = json!(device_csr("SN-NOKEY").pem);
            }),
            "NO_FACTORY_KEY",
        ),
        (json!({"certificateSigningRequest": 7}), "INVALID_REQUEST"),
        (
            refused(&|e| {
                e["clientId"] = json!("prov-SN-ELSEWHERE");
                e["certificateSigningRequest"] = json!(device_csr("SN-ELSEWHERE").pem);
            }),
            "REGION_NOT_ALLOWED",
        ),
    ] {
        let refusal = issuer.provide(event, "p3").await.unwrap_err();
        assert_eq!(refusal.code, code);
        // What IoT passes to the device is the same for every verdict: no
        // walking the serial space with the claim key.
        assert_eq!(refusal.to_string(), cert_issuer::provider::REFUSED_TEXT);
    }
    assert_eq!(
        audit_decisions(&registry, "SN-ELSEWHERE").await,
        [(Decision::Deny, "REGION_NOT_ALLOWED".to_owned())]
    );
    assert_eq!(calls.issued(), 1);
    let events = registry
        .audit_events(&SerialNumber::try_from(serial).unwrap())
        .await
        .unwrap();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["ISSUED", "ISSUED", "SUBJECT_MISMATCH", "UNTRUSTED_CLAIM"]
    );
    // The audit names the connection: its client id and claim certificate.
    assert!(
        events
            .iter()
            .all(|e| e.client_id.as_deref() == Some("prov-SN-JITP-0005"))
    );
    assert_eq!(events[3].claim_certificate_id, Some("0".repeat(64)));
    assert_eq!(
        audit_decisions(&registry, "SN-NOKEY").await,
        [(Decision::Deny, "NO_FACTORY_KEY".to_owned())]
    );
}
