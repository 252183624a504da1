//! What moto's ACM PCA cannot do, tested at the SDK boundary with
//! aws-smithy-mocks: RequestInProgress while issuing, throttling (as the JSON
//! error ACM PCA sends, through the client's own retry policy), and that the
//! template, validity, signing algorithm and idempotency token are the ones
//! geoprov asks for. The device registry and the ledger stay in moto.

use std::time::Duration;

use aws_sdk_acmpca::operation::describe_certificate_authority::DescribeCertificateAuthorityOutput;
use aws_sdk_acmpca::operation::get_certificate::{GetCertificateError, GetCertificateOutput};
use aws_sdk_acmpca::operation::issue_certificate::IssueCertificateOutput;
use aws_sdk_acmpca::types::error::RequestInProgressException;
use aws_sdk_acmpca::types::{
    CertificateAuthority, CertificateAuthorityConfiguration, CertificateAuthorityStatus,
    KeyAlgorithm, SigningAlgorithm, ValidityPeriodType,
};
use aws_sdk_acmpca::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cert_issuer::handler::{idempotency_token, CertIssuer};
use cert_issuer::ledger::{DynamoLedger, IssuanceLedger, IssuanceStatus};
use cert_issuer::pca::{SdkPca, END_ENTITY_CLIENT_AUTH_TEMPLATE};
use cert_issuer::response::{ErrorCode, ItemResponse, Response};
use geoprov_shared::device::{DeviceProfile, SerialNumber};
use geoprov_shared::registry::DynamoRegistry;
use geoprov_tests::certs::device_csr;
use geoprov_tests::fresh_registry;
use geoprov_tests::issuer::limits;
use serde_json::json;
use sha2::{Digest, Sha256};

const CA_ARN: &str =
    "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
const CERT_ARN: &str = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555/certificate/0123456789abcdef";

fn mocked(rules: &[&Rule]) -> SdkPca {
    let client: Client = mock_client!(aws_sdk_acmpca, RuleMode::MatchAny, rules, |c| c
        .retry_config(cert_issuer::pca_retry_config()));
    SdkPca::new(client, CA_ARN)
}

fn describe(key: KeyAlgorithm, status: CertificateAuthorityStatus) -> Rule {
    mock!(Client::describe_certificate_authority).then_output(move || {
        DescribeCertificateAuthorityOutput::builder()
            .certificate_authority(
                CertificateAuthority::builder()
                    .arn(CA_ARN)
                    .status(status.clone())
                    .certificate_authority_configuration(
                        CertificateAuthorityConfiguration::builder()
                            .key_algorithm(key.clone())
                            .signing_algorithm(SigningAlgorithm::Sha384Withecdsa)
                            .subject(aws_sdk_acmpca::types::Asn1Subject::builder().build())
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
    })
}

/// A certificate for `serial` signed by a throwaway CA, as ACM PCA would return it.
fn certificate_for(serial: &str) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, serial);
    (params.signed_by(&key, &ca).unwrap().pem(), ca.pem())
}

fn in_progress() -> GetCertificateError {
    GetCertificateError::RequestInProgressException(
        RequestInProgressException::builder()
            .message("The request is in progress.")
            .build(),
    )
}

fn certificate_output(pem: &(String, String)) -> Rule {
    let (certificate, chain) = pem.clone();
    mock!(Client::get_certificate).then_output(move || {
        GetCertificateOutput::builder()
            .certificate(&certificate)
            .certificate_chain(&chain)
            .build()
    })
}

async fn registry_with_sn1() -> DynamoRegistry {
    let registry = fresh_registry("issuer-mocked").await;
    registry
        .put_profiles(&[DeviceProfile::allowed(
            SerialNumber::try_from("SN-1").unwrap(),
        )])
        .await
        .unwrap();
    registry
}

fn issuer(
    pca: SdkPca,
    registry: &DynamoRegistry,
    deadline: Duration,
) -> CertIssuer<SdkPca, DynamoLedger, DynamoRegistry> {
    let mut limits = limits(8);
    limits.issue_deadline = deadline;
    CertIssuer::new(
        pca,
        DynamoLedger::new(registry.client().clone(), registry.table()),
        registry.clone(),
        limits,
    )
}

fn one(response: Response) -> ItemResponse {
    match response {
        Response::One(item) => item,
        other => panic!("{other:?}"),
    }
}

fn csr_sha(pem_text: &str) -> String {
    hex::encode(Sha256::digest(pem::parse(pem_text).unwrap().contents()))
}

#[tokio::test]
async fn issues_with_the_template_validity_algorithm_and_token_and_polls_while_in_progress() {
    let registry = registry_with_sn1().await;
    let (first, second) = (device_csr("SN-1"), device_csr("SN-1"));
    let tokens = [
        idempotency_token("SN-1", &csr_sha(&first.pem)),
        idempotency_token("SN-1", &csr_sha(&second.pem)),
    ];
    let describe = describe(
        KeyAlgorithm::EcSecp384r1,
        CertificateAuthorityStatus::Active,
    );
    let issue = mock!(Client::issue_certificate)
        .match_requests(move |r| {
            r.template_arn() == Some(END_ENTITY_CLIENT_AUTH_TEMPLATE)
                && r.api_passthrough()
                    .and_then(|p| p.subject())
                    .and_then(|s| s.common_name())
                    == Some("SN-1")
                && r.signing_algorithm() == Some(&SigningAlgorithm::Sha384Withecdsa)
                && r.validity()
                    .is_some_and(|v| v.value() == 30 && v.r#type() == &ValidityPeriodType::Days)
                && tokens
                    .iter()
                    .any(|t| r.idempotency_token() == Some(t.as_str()))
                && r.certificate_authority_arn() == Some(CA_ARN)
        })
        .then_output(|| {
            IssueCertificateOutput::builder()
                .certificate_arn(CERT_ARN)
                .build()
        });
    let pem = certificate_for("SN-1");
    let (certificate, chain) = pem.clone();
    let get = mock!(Client::get_certificate)
        .sequence()
        .error(in_progress)
        .times(2)
        .output(move || {
            GetCertificateOutput::builder()
                .certificate(&certificate)
                .certificate_chain(&chain)
                .build()
        })
        .repeatedly()
        .build();
    let issuer = issuer(
        mocked(&[&describe, &issue, &get]),
        &registry,
        Duration::from_secs(10),
    );

    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-1", "csrPem": first.pem, "validityDays": 30}),
            "r1",
        )
        .await);
    let ItemResponse::Issued(issued) = &item else {
        panic!("{item:?}")
    };
    assert_eq!(issued.certificate_arn, CERT_ARN);
    assert_eq!(issued.certificate_pem, pem.0);
    assert_eq!(issue.num_calls(), 1);
    assert_eq!(
        get.num_calls(),
        3,
        "two RequestInProgress, then the certificate"
    );
    assert_eq!(describe.num_calls(), 1);

    // The CA's key is read once per execution environment.
    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-1", "csrPem": second.pem, "validityDays": 30}),
            "r2",
        )
        .await);
    assert!(item.error_code().is_none(), "{item:?}");
    assert_eq!(issue.num_calls(), 2);
    assert_eq!(describe.num_calls(), 1);
}

#[tokio::test]
async fn throttling_is_retried_within_the_clients_bound() {
    let registry = registry_with_sn1().await;
    let throttling =
        Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned());
    let describe = describe(
        KeyAlgorithm::EcPrime256v1,
        CertificateAuthorityStatus::Active,
    );
    let issue = mock!(Client::issue_certificate)
        .sequence()
        .http_status(400, throttling.clone())
        .times(2)
        .output(|| {
            IssueCertificateOutput::builder()
                .certificate_arn(CERT_ARN)
                .build()
        })
        .build();
    let pem = certificate_for("SN-1");
    let get = certificate_output(&pem);
    let issuer_ = issuer(
        mocked(&[&describe, &issue, &get]),
        &registry,
        Duration::from_secs(20),
    );
    let item = one(issuer_
        .handle(
            json!({"serialNumber": "SN-1", "csrPem": device_csr("SN-1").pem}),
            "r1",
        )
        .await);
    assert!(item.error_code().is_none(), "{item:?}");
    assert_eq!(issue.num_calls(), 3);

    // Throttled on every attempt: ISSUANCE_FAILED, and the ledger keeps the
    // issuance PENDING without an ARN, so a later retry can finish it.
    let always = mock!(Client::issue_certificate)
        .sequence()
        .http_status(400, throttling)
        .repeatedly()
        .build();
    let describe = describe_again();
    let issuer_ = issuer(
        mocked(&[&describe, &always]),
        &registry,
        Duration::from_secs(20),
    );
    let csr = device_csr("SN-1");
    let item = one(issuer_
        .handle(json!({"serialNumber": "SN-1", "csrPem": csr.pem}), "r2")
        .await);
    assert_eq!(
        item.error_code(),
        Some(ErrorCode::IssuanceFailed),
        "{item:?}"
    );
    assert_eq!(always.num_calls(), cert_issuer::PCA_MAX_ATTEMPTS as usize);
    let ledger = DynamoLedger::new(registry.client().clone(), registry.table());
    let entry = ledger.get(&csr_sha(&csr.pem)).await.unwrap().unwrap();
    assert_eq!(entry.status, IssuanceStatus::Pending);
    assert_eq!(entry.certificate_arn, None);
}

fn describe_again() -> Rule {
    describe(
        KeyAlgorithm::EcPrime256v1,
        CertificateAuthorityStatus::Active,
    )
}

#[tokio::test]
async fn still_in_progress_at_the_deadline_fails_and_a_retry_returns_the_same_certificate() {
    let registry = registry_with_sn1().await;
    let csr = device_csr("SN-1");
    let request = json!({"serialNumber": "SN-1", "csrPem": csr.pem});
    let describe = describe_again();
    let issue = mock!(Client::issue_certificate).then_output(|| {
        IssueCertificateOutput::builder()
            .certificate_arn(CERT_ARN)
            .build()
    });
    let pending = mock!(Client::get_certificate)
        .sequence()
        .error(in_progress)
        .repeatedly()
        .build();
    let slow = issuer(
        mocked(&[&describe, &issue, &pending]),
        &registry,
        Duration::from_millis(700),
    );
    let item = one(slow.handle(request.clone(), "r1").await);
    let ItemResponse::Refused { error, .. } = &item else {
        panic!("{item:?}")
    };
    assert_eq!(error.code, ErrorCode::IssuanceFailed);
    assert!(
        error.message.contains("did not issue within 700 ms"),
        "{}",
        error.message
    );
    assert!(pending.num_calls() >= 2);

    // Later the certificate is ready: the retry finds the ARN in the ledger
    // and does not ask ACM PCA for another certificate.
    let describe = describe_again();
    let no_issue = mock!(Client::issue_certificate).then_output(|| {
        IssueCertificateOutput::builder()
            .certificate_arn("must-not-be-used")
            .build()
    });
    let ready = certificate_output(&certificate_for("SN-1"));
    let later = issuer(
        mocked(&[&describe, &no_issue, &ready]),
        &registry,
        Duration::from_secs(10),
    );
    let item = one(later.handle(request, "r2").await);
    let ItemResponse::Issued(issued) = &item else {
        panic!("{item:?}")
    };
    assert_eq!(issued.certificate_arn, CERT_ARN);
    assert_eq!(no_issue.num_calls(), 0);
}

#[tokio::test]
async fn a_ca_that_is_not_active_issues_nothing() {
    let registry = registry_with_sn1().await;
    let describe = describe(
        KeyAlgorithm::EcPrime256v1,
        CertificateAuthorityStatus::Disabled,
    );
    let issue = mock!(Client::issue_certificate).then_output(|| {
        IssueCertificateOutput::builder()
            .certificate_arn(CERT_ARN)
            .build()
    });
    let issuer = issuer(
        mocked(&[&describe, &issue]),
        &registry,
        Duration::from_secs(5),
    );
    let item = one(issuer
        .handle(
            json!({"serialNumber": "SN-1", "csrPem": device_csr("SN-1").pem}),
            "r1",
        )
        .await);
    let ItemResponse::Refused { error, .. } = &item else {
        panic!("{item:?}")
    };
    assert_eq!(error.code, ErrorCode::IssuanceFailed);
    assert!(error.message.contains("not ACTIVE"), "{}", error.message);
    assert_eq!(issue.num_calls(), 0);
}
