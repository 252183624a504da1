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

/// A refusal: the function fails, and IoT rejects CreateCertificateFromCsr.
/// The message is the caller-facing code and short reason only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderRefusal {
    pub code: &'static str,
    pub message: String,
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
