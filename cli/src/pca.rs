//! `geoprov pca create-local-ca`: a root CA in ACM Private CA, in one command,
//! for local runs and tests (an emulator through `AWS_ENDPOINT_URL`).

use std::time::{Duration, Instant};

use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityStatus,
    CertificateAuthorityType, KeyAlgorithm, SigningAlgorithm, Validity, ValidityPeriodType,
};
use clap::Subcommand;
use geoprov_shared::aws;

use crate::error::CliError;
use crate::output::print_json;

const ROOT_TEMPLATE: &str = "arn:aws:acm-pca:::template/RootCACertificate/V1";
/// How long to wait for ACM PCA at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("ACM PCA {step}: {message}")]
pub struct PcaSetupError {
    step: &'static str,
    message: String,
}

fn fail(step: &'static str, message: impl Into<String>) -> PcaSetupError {
    PcaSetupError {
        step,
        message: message.into(),
    }
}

fn sdk_fail<E: std::error::Error + 'static>(step: &'static str, err: E) -> PcaSetupError {
    fail(step, DisplayErrorContext(err).to_string())
}

#[derive(Subcommand)]
pub enum Command {
    /// Create an ACTIVE root CA (create, sign its CSR, import the certificate)
    /// and print its ARN and certificate (JSON).
    CreateLocalCa {
        #[arg(long, default_value = "geoprov local root CA")]
        common_name: String,
        /// EC_prime256v1, EC_secp384r1, RSA_2048, RSA_3072 or RSA_4096.
        #[arg(long, default_value = "EC_prime256v1")]
        key_algorithm: String,
        #[arg(long, default_value_t = 10)]
        validity_years: u32,
    },
}

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::CreateLocalCa {
            common_name,
            key_algorithm,
            validity_years,
        } => {
            let sdk = aws::load_sdk_config().await?;
            let key = key_algorithm_named(key_algorithm)?;
            let client = Client::new(&sdk);
            let ca = create_local_ca(&client, &common_name, key, validity_years).await?;
            print_json(&ca);
            Ok(())
        }
    }
}

/// `--key-algorithm`: one of the key algorithms a root CA here may have.
fn key_algorithm_named(name: String) -> Result<KeyAlgorithm, CliError> {
    Ok(match name.as_str() {
        "EC_prime256v1" => KeyAlgorithm::EcPrime256v1,
        "EC_secp384r1" => KeyAlgorithm::EcSecp384r1,
        "RSA_2048" => KeyAlgorithm::Rsa2048,
        "RSA_3072" => KeyAlgorithm::Rsa3072,
        "RSA_4096" => KeyAlgorithm::Rsa4096,
        _ => return Err(CliError::KeyAlgorithm(name)),
    })
}

/// A root CA that is ACTIVE, with its certificate.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalCa {
    pub certificate_authority_arn: String,
    pub certificate_pem: String,
    pub key_algorithm: String,
}

/// Calls `attempt` until it succeeds, every 500 ms while ACM PCA answers
/// RequestInProgressException, for at most `STEP_TIMEOUT`.
async fn until_ready<T, E, R, F, Fut>(step: &'static str, attempt: F) -> Result<T, PcaSetupError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.code() == Some("RequestInProgressException") => {
                if started.elapsed() >= STEP_TIMEOUT {
                    return Err(fail(step, "still in progress after 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(sdk_fail(step, e)),
        }
    }
}

/// The signing algorithm of a root CA's own certificate.
fn signing_for(key: &KeyAlgorithm) -> SigningAlgorithm {
    match key {
        KeyAlgorithm::EcSecp384r1 => SigningAlgorithm::Sha384Withecdsa,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            SigningAlgorithm::Sha256Withrsa
        }
        _ => SigningAlgorithm::Sha256Withecdsa,
    }
}

/// Creates a root CA, has it sign its own CSR with the root template, and
/// imports that certificate: the CA is then ACTIVE.
pub async fn create_local_ca(
    client: &Client,
    common_name: &str,
    key_algorithm: KeyAlgorithm,
    validity_years: u32,
) -> Result<LocalCa, PcaSetupError> {
    let signing = signing_for(&key_algorithm);
    let arn = create_root(client, common_name, &key_algorithm, &signing).await?;
    let certificate_arn = issue_own_certificate(client, &arn, signing, validity_years).await?;
    let certificate = until_ready("GetCertificate", || {
        client
            .get_certificate()
            .certificate_authority_arn(&arn)
            .certificate_arn(&certificate_arn)
            .send()
    })
    .await?
    .certificate()
    .unwrap_or_default()
    .to_owned();
    import_own_certificate(client, &arn, &certificate).await?;
    Ok(LocalCa {
        certificate_authority_arn: arn,
        certificate_pem: certificate,
        key_algorithm: key_algorithm.as_str().to_owned(),
    })
}

/// CreateCertificateAuthority for a root CA; its ARN.
async fn create_root(
    client: &Client,
    common_name: &str,
    key_algorithm: &KeyAlgorithm,
    signing: &SigningAlgorithm,
) -> Result<String, PcaSetupError> {
    let configuration = CertificateAuthorityConfiguration::builder()
        .key_algorithm(key_algorithm.clone())
        .signing_algorithm(signing.clone())
        .subject(
            Asn1Subject::builder()
                .common_name(common_name)
                .organization("geoprov")
                .build(),
        )
        .build()
        .map_err(|e| fail("CreateCertificateAuthority", e.to_string()))?;
    client
        .create_certificate_authority()
        .certificate_authority_configuration(configuration)
        .certificate_authority_type(CertificateAuthorityType::Root)
        .send()
        .await
        .map_err(|e| sdk_fail("CreateCertificateAuthority", e))?
        .certificate_authority_arn()
        .map(str::to_owned)
        .ok_or_else(|| fail("CreateCertificateAuthority", "no ARN in the answer"))
}

/// The CA's CSR, once ready, signed by the CA with the root template; the
/// certificate's ARN.
async fn issue_own_certificate(
    client: &Client,
    arn: &str,
    signing: SigningAlgorithm,
    validity_years: u32,
) -> Result<String, PcaSetupError> {
    let csr = until_ready("GetCertificateAuthorityCsr", || {
        client
            .get_certificate_authority_csr()
            .certificate_authority_arn(arn)
            .send()
    })
    .await?
    .csr()
    .unwrap_or_default()
    .to_owned();
    let validity = Validity::builder()
        .value(i64::from(validity_years))
        .r#type(ValidityPeriodType::Years)
        .build()
        .map_err(|e| fail("IssueCertificate", e.to_string()))?;
    client
        .issue_certificate()
        .certificate_authority_arn(arn)
        .csr(Blob::new(csr.into_bytes()))
        .signing_algorithm(signing)
        .template_arn(ROOT_TEMPLATE)
        .validity(validity)
        .send()
        .await
        .map_err(|e| sdk_fail("IssueCertificate", e))?
        .certificate_arn()
        .map(str::to_owned)
        .ok_or_else(|| fail("IssueCertificate", "no certificate ARN in the answer"))
}

/// Imports the CA's own certificate, and checks that the CA is then ACTIVE.
async fn import_own_certificate(
    client: &Client,
    arn: &str,
    certificate: &str,
) -> Result<(), PcaSetupError> {
    client
        .import_certificate_authority_certificate()
        .certificate_authority_arn(arn)
        .certificate(Blob::new(certificate.as_bytes()))
        .send()
        .await
        .map_err(|e| sdk_fail("ImportCertificateAuthorityCertificate", e))?;
    let status = client
        .describe_certificate_authority()
        .certificate_authority_arn(arn)
        .send()
        .await
        .map_err(|e| sdk_fail("DescribeCertificateAuthority", e))?
        .certificate_authority()
        .and_then(|ca| ca.status().cloned());
    if status != Some(CertificateAuthorityStatus::Active) {
        return Err(fail(
            "DescribeCertificateAuthority",
            format!("the CA is {status:?} after import, not ACTIVE"),
        ));
    }
    Ok(())
}
