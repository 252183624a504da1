//! What moto's ACM PCA cannot do, tested at the SDK boundary with
//! aws-smithy-mocks: RequestInProgress while issuing, throttling (as the JSON
//! error ACM PCA sends, through the client's own retry policy), a slow CA
//! against the invocation's deadline, the idempotency window, and that the
//! template, subject, validity, signing algorithm and idempotency token are
//! the ones geoprov asks for. The device registry and the ledger stay in moto.

use std::time::Duration;

use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::operation::describe_certificate_authority::DescribeCertificateAuthorityOutput;
use aws_sdk_acmpca::operation::get_certificate::{GetCertificateError, GetCertificateOutput};
use aws_sdk_acmpca::operation::issue_certificate::IssueCertificateOutput;
use aws_sdk_acmpca::types::error::RequestInProgressException;
use aws_sdk_acmpca::types::{
    CertificateAuthority, CertificateAuthorityConfiguration, CertificateAuthorityStatus,
    KeyAlgorithm, SigningAlgorithm, ValidityPeriodType,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use cert_issuer::handler::{CertIssuer, Deadline, FINISH_MARGIN, idempotency_token};
use cert_issuer::ledger::{
    Begun, DynamoLedger, IssuanceLedger, IssuanceStatus, LedgerEntry, Quota,
};
use cert_issuer::pca::{END_ENTITY_CLIENT_AUTH_TEMPLATE, SdkPca};
use cert_issuer::response::{ErrorCode, ItemResponse, Response};
use geoprov_shared::device::{DeviceProfile, SerialNumber};
use geoprov_shared::registry::DynamoRegistry;
use geoprov_tests::certs::device_csr;
use geoprov_tests::fresh_registry;
use geoprov_tests::issuer::limits;
use serde_json::json;
use sha2::{Digest, Sha256};

const CA_ARN: &str = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
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

fn item_text(item: &ItemResponse) -> String {
    serde_json::to_string(item).unwrap()
}

fn csr_sha(pem_text: &str) -> String {
    // The ledger's key: the CSR's CertificationRequestInfo, not its signature.
    use x509_parser::prelude::FromDer;
    let der = pem::parse(pem_text).unwrap().into_contents();
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    hex::encode(Sha256::digest(csr.certification_request_info.raw))
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
        error.message.contains("did not issue in time"),
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
    // The caller gets a short reason; the CA's ARN and ACM PCA's message
    // stay in the log.
    assert_eq!(error.message, "ACM PCA refused the request");
    assert!(!item_text(&item).contains(CA_ARN));
    assert_eq!(issue.num_calls(), 0);
}

/// A fake: ACM PCA through the aws-smithy-mocks client, each IssueCertificate
/// taking `delay` first, as a throttled or distant CA would.
struct SlowPca {
    inner: SdkPca,
    delay: Duration,
}

impl cert_issuer::pca::CertificateAuthority for SlowPca {
    async fn issue(
        &self,
        csr_pem: &str,
        common_name: &str,
        validity_days: u32,
        idempotency_token: &str,
    ) -> Result<String, cert_issuer::pca::PcaError> {
        tokio::time::sleep(self.delay).await;
        self.inner
            .issue(csr_pem, common_name, validity_days, idempotency_token)
            .await
    }

    async fn fetch(
        &self,
        certificate_arn: &str,
    ) -> Result<Option<cert_issuer::pca::CertificatePem>, cert_issuer::pca::PcaError> {
        self.inner.fetch(certificate_arn).await
    }
}

#[tokio::test]
async fn a_batch_stops_starting_items_before_the_invocation_deadline() {
    let registry = registry_with_sn1().await;
    let describe = describe(
        KeyAlgorithm::EcPrime256v1,
        CertificateAuthorityStatus::Active,
    );
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let issue = {
        let counter = counter.clone();
        mock!(Client::issue_certificate).then_output(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            IssueCertificateOutput::builder()
                .certificate_arn(format!("{CERT_ARN}{n:02}"))
                .build()
        })
    };
    let get = certificate_output(&certificate_for("SN-1"));
    let mut limits = limits(1);
    limits.issue_deadline = Duration::from_secs(1);
    let issuer = CertIssuer::new(
        SlowPca {
            inner: mocked(&[&describe, &issue, &get]),
            delay: Duration::from_millis(400),
        },
        DynamoLedger::new(registry.client().clone(), registry.table()),
        registry.clone(),
        limits,
    );
    let csrs: Vec<String> = (0..4).map(|_| device_csr("SN-1").pem).collect();
    let requests: Vec<_> = csrs
        .iter()
        .map(|csr| json!({"serialNumber": "SN-1", "csrPem": csr}))
        .collect();
    // The Lambda context's deadline: room for one item and a little more
    // (an item needs its 1 s issue deadline plus FINISH_MARGIN).
    let deadline =
        Deadline::after(Duration::from_secs(1) + FINISH_MARGIN + Duration::from_millis(300));
    let Response::Batch { results } = issuer
        .handle_until(json!({ "requests": requests }), "r1", Some(deadline))
        .await
    else {
        panic!("a batch answer")
    };
    let codes: Vec<Option<ErrorCode>> = results.iter().map(ItemResponse::error_code).collect();
    let issued = codes.iter().take_while(|c| c.is_none()).count();
    assert!(issued >= 1, "{codes:?}");
    assert!(
        codes[issued..]
            .iter()
            .all(|c| *c == Some(ErrorCode::RetryLater)),
        "issued items first, then RETRY_LATER: {codes:?}"
    );
    assert!(
        issued < csrs.len(),
        "the deadline stopped the batch: {codes:?}"
    );
    assert_eq!(issue.num_calls(), issued);
    // What was issued is in the ledger with its ARN; what was not started
    // left nothing, and is no audited decision.
    let ledger = DynamoLedger::new(registry.client().clone(), registry.table());
    for (csr, code) in csrs.iter().zip(&codes) {
        let entry = ledger.get(&csr_sha(csr)).await.unwrap();
        match code {
            None => assert!(entry.unwrap().certificate_arn.is_some()),
            Some(_) => assert!(entry.is_none()),
        }
    }
    let audited = registry
        .audit_events(&SerialNumber::try_from("SN-1").unwrap())
        .await
        .unwrap();
    assert_eq!(audited.len(), issued, "only the issued items are audited");
}

#[tokio::test]
async fn a_pending_issuance_is_looked_up_within_the_idempotency_window_and_renewed_after_it() {
    let registry = registry_with_sn1().await;
    let ledger = DynamoLedger::new(registry.client().clone(), registry.table());
    let ago = |d: Duration| {
        (time::OffsetDateTime::now_utc() - d)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    // Two issuances whose invocations died after `begin`: one a minute ago
    // (ACM PCA still knows its token), one ten minutes ago (it does not).
    let (recent, old) = (device_csr("SN-1").pem, device_csr("SN-1").pem);
    for (csr, age, token) in [
        (&recent, Duration::from_secs(60), "recent-token"),
        (&old, Duration::from_secs(600), "old-token"),
    ] {
        let entry = LedgerEntry {
            serial_number: "SN-1".into(),
            status: IssuanceStatus::Pending,
            idempotency_token: token.into(),
            certificate_arn: None,
            certificate_serial: None,
            not_after: None,
            requested_at: ago(age),
            issued_at: None,
            region: Some("eu-west-1".into()),
            allowed_regions: None,
        };
        let quota = Quota {
            serial: "SN-1",
            region: "eu-west-1",
            max: 5,
        };
        assert_eq!(
            ledger.begin(&csr_sha(csr), &entry, &quota).await.unwrap(),
            Begun::Started
        );
    }
    let describe = describe(
        KeyAlgorithm::EcPrime256v1,
        CertificateAuthorityStatus::Active,
    );
    // Within the window the old token is the look-up: ACM PCA answers the
    // certificate it issued then. After it, the token must be a new one.
    let same_token = mock!(Client::issue_certificate)
        .match_requests(|r| r.idempotency_token() == Some("recent-token"))
        .then_output(|| {
            IssueCertificateOutput::builder()
                .certificate_arn(CERT_ARN)
                .build()
        });
    let new_token = mock!(Client::issue_certificate)
        .match_requests(|r| {
            r.idempotency_token()
                .is_some_and(|t| t != "old-token" && t != "recent-token" && t.len() == 32)
        })
        .then_output(|| {
            IssueCertificateOutput::builder()
                .certificate_arn(format!("{CERT_ARN}ff"))
                .build()
        });
    let get = certificate_output(&certificate_for("SN-1"));
    let issuer = issuer(
        mocked(&[&describe, &same_token, &new_token, &get]),
        &registry,
        Duration::from_secs(5),
    );
    for csr in [&recent, &old] {
        let item = one(issuer
            .handle(json!({"serialNumber": "SN-1", "csrPem": csr}), "r")
            .await);
        assert!(item.error_code().is_none(), "{item:?}");
    }
    assert_eq!(same_token.num_calls(), 1);
    assert_eq!(new_token.num_calls(), 1);
    let renewed = ledger.get(&csr_sha(&old)).await.unwrap().unwrap();
    assert_ne!(renewed.idempotency_token, "old-token");
    assert_eq!(
        renewed.certificate_arn.as_deref(),
        Some(format!("{CERT_ARN}ff").as_str())
    );
}
