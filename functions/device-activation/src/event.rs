//! The registration event IoT publishes on
//! `$aws/events/certificates/registered/<caCertificateId>`:
//! `certificateId`, `caCertificateId`, `timestamp`, `certificateStatus`,
//! `awsAccountId`, `certificateRegistrationTimestamp` (IoT developer guide,
//! just-in-time registration).

use serde::Deserialize;
use serde_json::Value;

/// The status IoT gives an auto-registered certificate.
pub const PENDING_ACTIVATION: &str = "PENDING_ACTIVATION";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredEvent {
    pub certificate_id: String,
    pub ca_certificate_id: String,
    pub certificate_status: String,
    #[serde(default)]
    pub aws_account_id: Option<String>,
}

/// Why a payload is no registration event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a certificate registration event: {0}")]
pub struct NotAnEvent(pub String);

impl RegisteredEvent {
    pub fn parse(payload: Value) -> Result<Self, NotAnEvent> {
        let event: RegisteredEvent =
            serde_json::from_value(payload).map_err(|e| NotAnEvent(e.to_string()))?;
        // A certificate id is the hex SHA-256 of the certificate.
        for (name, id) in [
            ("certificateId", &event.certificate_id),
            ("caCertificateId", &event.ca_certificate_id),
        ] {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(NotAnEvent(format!("{name} is not a certificate id")));
            }
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_iots_event_and_refuses_anything_else() {
        let id = "ab".repeat(32);
        let event = RegisteredEvent::parse(json!({
            "certificateId": id, "caCertificateId": "cd".repeat(32),
            "timestamp": 1_700_000_000, "certificateStatus": "PENDING_ACTIVATION",
            "awsAccountId": "123456789012",
            "certificateRegistrationTimestamp": "1700000000"
        }))
        .unwrap();
        assert_eq!(event.certificate_id, id);
        assert_eq!(event.certificate_status, PENDING_ACTIVATION);
        for bad in [
            json!({}),
            json!({"certificateId": "x", "caCertificateId": "cd".repeat(32), "certificateStatus": "PENDING_ACTIVATION"}),
            json!([1]),
        ] {
            assert!(RegisteredEvent::parse(bad).is_err());
        }
    }
}
