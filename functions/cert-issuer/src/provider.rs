//! AWS IoT Core's certificate provider: with an `AWS::IoT::CertificateProvider`
//! for `CreateCertificateFromCsr` in the account and region, fleet
//! provisioning's CreateCertificateFromCsr invokes this function instead of
//! signing with Amazon's CA (IoT developer guide, "Self-managed certificate
//! signing using AWS IoT Core certificate provider"). The event carries the
//! CSR, the principal of the connection that asked (the claim certificate)
//! and its MQTT client id; the answer is `{"certificatePem": ...}`, and a
//! function error is IoT's rejection of the request.
//!
//! The CSR policy, the registry rules, the quota and the ledger are the
//! issuer's; only the serial comes from elsewhere: the provisioning client-id
//! convention (`<PROVISIONING_CLIENT_ID_PREFIX><serial>`, the hook's rule 8)
//! gives it, and the CSR's CN must be it. The hook still decides at
//! RegisterThing; a certificate minted here stays PENDING_ACTIVATION until
//! then, and is recorded in the ledger like any other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// IoT's event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEvent {
    pub certificate_signing_request: String,
    pub principal_id: String,
    pub client_id: String,
}

/// What IoT expects back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderAnswer {
    #[serde(rename = "certificatePem")]
    pub certificate_pem: String,
}

/// A refusal: the function fails, and IoT rejects CreateCertificateFromCsr,
/// passing the function's error on to the device. Anyone may hold the claim
/// key, so what the device sees tells nothing of the registry: one constant
/// text, and `RETRY_LATER` apart from it so that a device backs off and
/// tries again when the refusal is no verdict. The code and the detail are
/// in the audit event and the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.public_text())]
pub struct ProviderRefusal {
    /// The issuer's error code (audit and log only).
    pub code: &'static str,
    /// Why (audit and log only).
    pub message: String,
}

/// What a device is told of every refusal that is a verdict.
pub const REFUSED_TEXT: &str = "REFUSED: the certificate request was refused";
/// What a device is told when it may try again.
pub const RETRY_LATER_TEXT: &str = "RETRY_LATER: the certificate request could not be answered now";

impl ProviderRefusal {
    /// Whether the refusal is no verdict on the device: the registry, the
    /// ledger or ACM PCA could not answer in time.
    pub fn retry_later(&self) -> bool {
        matches!(self.code, "RETRY_LATER" | "ISSUANCE_FAILED")
    }

    /// The only text IoT, and so the device, gets.
    pub fn public_text(&self) -> &'static str {
        match self.retry_later() {
            true => RETRY_LATER_TEXT,
            false => REFUSED_TEXT,
        }
    }
}

/// The Lambda error IoT sees: a stable type and the constant text, never a
/// Rust type name or the registry's state.
impl From<ProviderRefusal> for lambda_runtime::Diagnostic {
    fn from(refusal: ProviderRefusal) -> Self {
        lambda_runtime::Diagnostic {
            error_type: match refusal.retry_later() {
                true => "RetryLater".to_owned(),
                false => "CertificateRequestRefused".to_owned(),
            },
            error_message: refusal.public_text().to_owned(),
        }
    }
}

/// Whether `payload` is IoT's certificate-provider event rather than an
/// issuer request.
pub fn is_provider_event(payload: &Value) -> bool {
    payload.get("certificateSigningRequest").is_some()
}

/// The serial a provisioning client id names, if it follows the convention.
pub fn serial_from_client_id<'a>(client_id: &'a str, prefix: &str) -> Option<&'a str> {
    client_id
        .strip_prefix(prefix)
        .filter(|serial| !serial.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every verdict reads the same to the device; only a refusal that is no
    /// verdict says to try again. Neither carries the code or the detail.
    #[test]
    fn a_device_learns_nothing_from_a_refusal() {
        let refusal = |code: &'static str| ProviderRefusal {
            code,
            message: format!("SN-1 is {code}"),
        };
        for code in [
            "UNKNOWN_DEVICE",
            "DEVICE_BLOCKED",
            "KEY_MISMATCH",
            "NO_FACTORY_KEY",
            "QUOTA_EXCEEDED",
            "REGION_NOT_ALLOWED",
            "UNTRUSTED_CLAIM",
            "SUBJECT_MISMATCH",
        ] {
            let diagnostic = lambda_runtime::Diagnostic::from(refusal(code));
            assert_eq!(refusal(code).to_string(), REFUSED_TEXT);
            assert_eq!(diagnostic.error_type, "CertificateRequestRefused");
            assert_eq!(diagnostic.error_message, REFUSED_TEXT);
        }
        for code in ["RETRY_LATER", "ISSUANCE_FAILED"] {
            let diagnostic = lambda_runtime::Diagnostic::from(refusal(code));
            assert_eq!(diagnostic.error_type, "RetryLater");
            assert_eq!(diagnostic.error_message, RETRY_LATER_TEXT);
            assert!(!diagnostic.error_message.contains("SN-1"));
        }
    }

    #[test]
    fn reads_iot_events_and_the_serial_behind_the_prefix() {
        let event: ProviderEvent = serde_json::from_value(json!({
            "certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----",
            "principalId": "abc",
            "clientId": "prov-SN-1"
        }))
        .unwrap();
        assert_eq!(
            serial_from_client_id(&event.client_id, "prov-"),
            Some("SN-1")
        );
        assert_eq!(serial_from_client_id("SN-1", "prov-"), None);
        assert_eq!(serial_from_client_id("prov-", "prov-"), None);
        assert!(is_provider_event(&json!({"certificateSigningRequest": 1})));
        assert!(!is_provider_event(
            &json!({"serialNumber": "SN-1", "csrPem": "x"})
        ));
        let answer = serde_json::to_value(ProviderAnswer {
            certificate_pem: "PEM".into(),
        })
        .unwrap();
        assert_eq!(answer, json!({"certificatePem": "PEM"}));
    }
}
