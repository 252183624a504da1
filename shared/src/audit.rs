//! Audit events: one append-only record per decision a function takes.

use serde::{Deserialize, Serialize};

/// Longest string an audit field keeps; request fields are attacker-supplied.
const MAX_FIELD_CHARS: usize = 256;

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Allow,
    Deny,
}

/// One decision, as the audit log keeps it. It never holds certificate
/// bodies or key material: only identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// What was decided, e.g. `PROVISIONING_DECISION`.
    pub kind: String,
    /// The serial as presented (it may be invalid, hence a plain string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    pub decision: Decision,
    /// The reason code, e.g. `QUOTA_EXCEEDED`.
    pub reason: String,
    /// A human-readable explanation of the reason.
    pub detail: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub request_id: String,
    /// RFC 3339, UTC.
    pub time: String,
}

impl AuditEvent {
    /// Cuts every free-text field to a bounded length, so a hostile request
    /// cannot grow the audit log or the logs without limit.
    pub fn bounded(mut self) -> Self {
        for field in [
            &mut self.serial_number,
            &mut self.certificate_id,
            &mut self.claim_certificate_id,
            &mut self.client_id,
        ] {
            if let Some(value) = field.as_mut() {
                truncate_chars(value, MAX_FIELD_CHARS);
            }
        }
        truncate_chars(&mut self.detail, MAX_FIELD_CHARS);
        truncate_chars(&mut self.request_id, MAX_FIELD_CHARS);
        self
    }
}

/// At most the first 256 characters of a request-derived text, for a log
/// line: the bound the audit keeps, so a hostile request (a serial or a
/// parameter name up to an MQTT payload) cannot grow the logs without limit.
pub fn bounded_field(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((idx, _)) = s.char_indices().nth(max) {
        s.truncate(idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_field_is_cut_on_a_char_boundary() {
        assert_eq!(bounded_field("SN-1"), "SN-1");
        let long = "é".repeat(1000);
        assert_eq!(bounded_field(&long).chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn bounded_cuts_long_fields_on_char_boundaries() {
        let event = AuditEvent {
            kind: "PROVISIONING_DECISION".into(),
            serial_number: Some("é".repeat(300)),
            decision: Decision::Deny,
            reason: "BAD_PARAMETERS".into(),
            detail: "x".repeat(1000),
            region: "eu-west-1".into(),
            certificate_id: None,
            claim_certificate_id: None,
            client_id: Some("c".into()),
            request_id: "r".into(),
            time: "2026-01-01T00:00:00Z".into(),
        }
        .bounded();
        assert_eq!(event.serial_number.unwrap().chars().count(), 256);
        assert_eq!(event.detail.len(), 256);
        assert_eq!(event.client_id.as_deref(), Some("c"));
    }
}
