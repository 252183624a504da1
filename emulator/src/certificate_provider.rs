//! IoT's certificate provider, as the IoT developer guide's "Self-managed
//! certificate signing using AWS IoT Core certificate provider" page and the
//! API reference's CreateCertificateProvider describe it:
//! - with a provider for `CreateCertificateFromCsr` in the account, every
//!   fleet-provisioning `CreateCertificateFromCsr` invokes its Lambda
//!   function instead of IoT signing the CSR ("all calls to this MQTT API
//!   will invoke the certificate provider to issue the certificate");
//! - the function gets `{"certificateSigningRequest", "principalId",
//!   "clientId"}` (the CSR, the connection's certificate id and client id)
//!   and answers `{"certificatePem"}`;
//! - "You can only create one certificate provider per AWS account": the
//!   emulator's configuration names at most one, and only for
//!   `CreateCertificateFromCsr`, the one operation the API accepts.
//!
//! Where the guide is silent the emulator is strict: the function has the
//! 5 s IoT gives a pre-provisioning hook; a function error, a timeout, or an
//! answer that is not a certificate for the CSR's own key is a rejection,
//! and nothing is registered.

use serde::Deserialize;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The `certificateProvider` entry of the emulator's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateProviderConfig {
    pub certificate_provider_name: String,
    /// The function, by the name the emulator's `--lambda` entries use.
    pub function_name: String,
    pub account_default_for_operations: Vec<String>,
}

impl CertificateProviderConfig {
    /// The configuration as IoT would take it: a name of the API's pattern
    /// and `CreateCertificateFromCsr`, the only operation it accepts.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.certificate_provider_name;
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_=,@-".contains(c));
        if !name_ok {
            return Err(format!(
                "certificate provider name {name:?} is not 1 to 128 of [\\w=,@-]"
            ));
        }
        if self.account_default_for_operations != ["CreateCertificateFromCsr"] {
            return Err(format!(
                "certificate provider {name}: accountDefaultForOperations must be [\"CreateCertificateFromCsr\"], not {:?}",
                self.account_default_for_operations
            ));
        }
        Ok(())
    }
}

/// The function's input for a CSR from the connection of `certificate_id`
/// and `client_id`.
pub fn request(csr_pem: &str, certificate_id: &str, client_id: &str) -> Value {
    json!({
        "certificateSigningRequest": csr_pem,
        "principalId": certificate_id,
        "clientId": client_id,
    })
}

/// Why a provider's answer is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the certificate provider's answer has no certificatePem")]
    NoCertificate,
    #[error("the certificate provider's certificatePem is not one PEM certificate")]
    NotACertificate,
    #[error("the certificate provider's certificate is not for the CSR's key")]
    OtherKey,
    #[error("the CSR does not parse")]
    BadCsr,
}

/// The certificate in the function's answer, which must be for the CSR's
/// own public key (a provider that signs another key would hand the device
/// a certificate it cannot use).
pub fn certificate(answer: &Value, csr_pem: &str) -> Result<String, AnswerError> {
    let pem_text = answer
        .get("certificatePem")
        .and_then(Value::as_str)
        .ok_or(AnswerError::NoCertificate)?;
    let parsed = pem::parse(pem_text).map_err(|_| AnswerError::NotACertificate)?;
    if parsed.tag() != "CERTIFICATE" {
        return Err(AnswerError::NotACertificate);
    }
    let (_, cert) =
        X509Certificate::from_der(parsed.contents()).map_err(|_| AnswerError::NotACertificate)?;
    let csr = pem::parse(csr_pem).map_err(|_| AnswerError::BadCsr)?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr.contents())
            .map_err(|_| AnswerError::BadCsr)?;
    if cert.public_key().raw != csr.certification_request_info.subject_pki.raw {
        return Err(AnswerError::OtherKey);
    }
    Ok(pem_text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr(key: &KeyPair) -> String {
        CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn self_signed(key: &KeyPair) -> String {
        CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(key)
            .unwrap()
            .pem()
    }

    #[test]
    fn the_function_gets_the_csr_the_principal_and_the_client_id() {
        // "the Lambda function accepts a CSR and returns a signed client certificate"
        assert_eq!(
            request("CSR", "abc", "prov-1"),
            json!({"certificateSigningRequest": "CSR", "principalId": "abc", "clientId": "prov-1"})
        );
    }

    #[test]
    fn a_certificate_for_the_csrs_key_is_taken_and_any_other_answer_is_not() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let csr = csr(&key);
        let mine = self_signed(&key);
        assert_eq!(
            certificate(&json!({"certificatePem": mine}), &csr).as_deref(),
            Ok(mine.as_str())
        );
        let theirs = self_signed(&other);
        assert_eq!(
            certificate(&json!({"certificatePem": theirs}), &csr),
            Err(AnswerError::OtherKey)
        );
        assert_eq!(
            certificate(&json!({"certificate": mine}), &csr),
            Err(AnswerError::NoCertificate)
        );
        assert_eq!(
            certificate(&json!({"certificatePem": csr}), &csr),
            Err(AnswerError::NotACertificate)
        );
        assert_eq!(
            certificate(&json!({"certificatePem": "junk"}), &csr),
            Err(AnswerError::NotACertificate)
        );
    }

    #[test]
    fn only_create_certificate_from_csr_and_a_name_of_the_apis_pattern_are_accepted() {
        // "Valid value: CreateCertificateFromCsr"; name pattern [\w=,@-]+, 1 to 128.
        let config = |name: &str, ops: &[&str]| CertificateProviderConfig {
            certificate_provider_name: name.into(),
            function_name: "CertIssuerFunction".into(),
            account_default_for_operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(
            config("geoprov-us-east-1", &["CreateCertificateFromCsr"])
                .validate()
                .is_ok()
        );
        assert!(
            config("geoprov us", &["CreateCertificateFromCsr"])
                .validate()
                .is_err()
        );
        assert!(
            config("", &["CreateCertificateFromCsr"])
                .validate()
                .is_err()
        );
        assert!(
            config("p", &["CreateKeysAndCertificate"])
                .validate()
                .is_err()
        );
        assert!(config("p", &[]).validate().is_err());
    }
}
