//! The ACM Private CA adapter: issue a certificate for a checked CSR and
//! fetch it once ACM PCA has signed it.

use std::future::Future;

use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    ApiPassthrough, Asn1Subject, CertificateAuthorityStatus, KeyAlgorithm, SigningAlgorithm,
    Validity, ValidityPeriodType,
};
use tokio::sync::OnceCell;

/// The ACM PCA template for device (client authentication) certificates.
///
/// From the AWS Private CA template definitions: every EndEntityClientAuth
/// variant fixes basicConstraints CA:FALSE, keyUsage (critical) digital
/// signature and key encipherment, and extendedKeyUsage TLS web client
/// authentication; the template's values override anything requested. The
/// `_APIPassthrough` variant takes the Subject from the API first ("Passthrough
/// from API or CSR"), so the issuer sets the subject to `CN=<serial>` itself,
/// and it passes no other CSR extension through (unlike `_CSRPassthrough`).
/// Every variant still copies a CSR's subjectAltName when the API sets none,
/// which is why the CSR policy refuses any subjectAltName before a CSR gets
/// here.
pub const END_ENTITY_CLIENT_AUTH_TEMPLATE: &str =
    "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1";

/// A certificate and its chain, as ACM PCA returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePem {
    pub certificate: String,
    pub chain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ACM PCA {operation}: {message}")]
pub struct PcaError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
}

impl PcaError {
    fn sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        PcaError {
            operation,
            code: err.code().map(str::to_owned),
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    fn other(operation: &'static str, message: impl Into<String>) -> Self {
        PcaError {
            operation,
            code: None,
            message: message.into(),
        }
    }
}

/// What the issuer needs from ACM PCA.
pub trait CertificateAuthority {
    /// IssueCertificate for the subject `CN=<common_name>`; returns the
    /// certificate ARN.
    fn issue(
        &self,
        csr_pem: &str,
        common_name: &str,
        validity_days: u32,
        idempotency_token: &str,
    ) -> impl Future<Output = Result<String, PcaError>> + Send;

    /// GetCertificate; `None` while ACM PCA says RequestInProgress.
    fn fetch(
        &self,
        certificate_arn: &str,
    ) -> impl Future<Output = Result<Option<CertificatePem>, PcaError>> + Send;
}

/// The signing algorithm that fits a CA key.
pub fn signing_algorithm(key: &KeyAlgorithm) -> Option<SigningAlgorithm> {
    match key {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            Some(SigningAlgorithm::Sha256Withrsa)
        }
        KeyAlgorithm::EcPrime256v1 => Some(SigningAlgorithm::Sha256Withecdsa),
        KeyAlgorithm::EcSecp384r1 => Some(SigningAlgorithm::Sha384Withecdsa),
        KeyAlgorithm::EcSecp521r1 => Some(SigningAlgorithm::Sha512Withecdsa),
        KeyAlgorithm::Sm2 => Some(SigningAlgorithm::Sm3Withsm2),
        KeyAlgorithm::MlDsa44 => Some(SigningAlgorithm::MlDsa44),
        KeyAlgorithm::MlDsa65 => Some(SigningAlgorithm::MlDsa65),
        KeyAlgorithm::MlDsa87 => Some(SigningAlgorithm::MlDsa87),
        _ => None,
    }
}

/// ACM PCA through the AWS SDK. The CA's signing algorithm is read once,
/// from DescribeCertificateAuthority, on first use.
#[derive(Debug)]
pub struct SdkPca {
    client: Client,
    ca_arn: String,
    signing: OnceCell<SigningAlgorithm>,
}

impl SdkPca {
    pub fn new(client: Client, ca_arn: impl Into<String>) -> Self {
        SdkPca {
            client,
            ca_arn: ca_arn.into(),
            signing: OnceCell::new(),
        }
    }

    async fn signing_algorithm(&self) -> Result<SigningAlgorithm, PcaError> {
        const OP: &str = "DescribeCertificateAuthority";
        self.signing
            .get_or_try_init(|| async {
                let described = self
                    .client
                    .describe_certificate_authority()
                    .certificate_authority_arn(&self.ca_arn)
                    .send()
                    .await
                    .map_err(|e| PcaError::sdk(OP, e))?;
                let ca = described
                    .certificate_authority()
                    .ok_or_else(|| PcaError::other(OP, "no certificate authority in the answer"))?;
                if ca.status() != Some(&CertificateAuthorityStatus::Active) {
                    return Err(PcaError::other(
                        OP,
                        format!("the CA is {:?}, not ACTIVE", ca.status()),
                    ));
                }
                let key = ca
                    .certificate_authority_configuration()
                    .map(|c| c.key_algorithm())
                    .ok_or_else(|| PcaError::other(OP, "the CA has no configuration"))?;
                signing_algorithm(key).ok_or_else(|| {
                    PcaError::other(OP, format!("no signing algorithm known for a {key} CA key"))
                })
            })
            .await
            .cloned()
    }
}

impl CertificateAuthority for SdkPca {
    async fn issue(
        &self,
        csr_pem: &str,
        common_name: &str,
        validity_days: u32,
        idempotency_token: &str,
    ) -> Result<String, PcaError> {
        const OP: &str = "IssueCertificate";
        let signing = self.signing_algorithm().await?;
        let validity = Validity::builder()
            .value(i64::from(validity_days))
            .r#type(ValidityPeriodType::Days)
            .build()
            .map_err(|e| PcaError::other(OP, e.to_string()))?;
        let issued = self
            .client
            .issue_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .csr(Blob::new(csr_pem.as_bytes()))
            .signing_algorithm(signing)
            .template_arn(END_ENTITY_CLIENT_AUTH_TEMPLATE)
            .api_passthrough(
                ApiPassthrough::builder()
                    .subject(Asn1Subject::builder().common_name(common_name).build())
                    .build(),
            )
            .validity(validity)
            .idempotency_token(idempotency_token)
            .send()
            .await
            .map_err(|e| PcaError::sdk(OP, e))?;
        issued
            .certificate_arn()
            .map(str::to_owned)
            .ok_or_else(|| PcaError::other(OP, "no certificate ARN in the answer"))
    }

    async fn fetch(&self, certificate_arn: &str) -> Result<Option<CertificatePem>, PcaError> {
        const OP: &str = "GetCertificate";
        let result = self
            .client
            .get_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .certificate_arn(certificate_arn)
            .send()
            .await;
        match result {
            Ok(output) => {
                let certificate = output
                    .certificate()
                    .ok_or_else(|| PcaError::other(OP, "no certificate in the answer"))?;
                Ok(Some(CertificatePem {
                    certificate: certificate.to_owned(),
                    chain: output.certificate_chain().unwrap_or_default().to_owned(),
                }))
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_request_in_progress_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(PcaError::sdk(OP, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ca_key_gets_the_signing_algorithm_that_fits_it() {
        assert_eq!(
            signing_algorithm(&KeyAlgorithm::EcPrime256v1),
            Some(SigningAlgorithm::Sha256Withecdsa)
        );
        assert_eq!(
            signing_algorithm(&KeyAlgorithm::EcSecp384r1),
            Some(SigningAlgorithm::Sha384Withecdsa)
        );
        assert_eq!(
            signing_algorithm(&KeyAlgorithm::Rsa4096),
            Some(SigningAlgorithm::Sha256Withrsa)
        );
        assert_eq!(signing_algorithm(&KeyAlgorithm::from("FUTURE_KEY")), None);
    }
}
