//! Trusted claim certificates, kept in the table (`pk = CLAIMS`,
//! `sk = CLAIM#<certificate id>`) so they can be added, rotated and retired
//! without a redeploy. The hook trusts a claim certificate that is in its
//! bootstrap list (`TRUSTED_CLAIM_CERTIFICATE_IDS`) or in the table, inside
//! its window and not retired.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const CLAIMS_PK: &str = "CLAIMS";
pub const CLAIM_SK_PREFIX: &str = "CLAIM#";

pub fn claim_sk(certificate_id: &str) -> String {
    format!("{CLAIM_SK_PREFIX}{certificate_id}")
}

/// Whether `id` is an IoT certificate id: 64 lower-case hex digits.
pub fn is_certificate_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One trusted claim certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedClaim {
    pub certificate_id: String,
    /// RFC 3339: trusted from.
    pub not_before: String,
    /// RFC 3339: trusted until (exclusive).
    pub not_after: String,
    /// RFC 3339: retired by an operator; never trusted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
    /// RFC 3339.
    pub added_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TrustedClaim {
    /// Trusted at `now`: inside its window and not retired. A window that
    /// does not parse trusts nothing (fail closed).
    pub fn trusted_at(&self, now: OffsetDateTime) -> bool {
        let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
        match (parse(&self.not_before), parse(&self.not_after)) {
            (Some(from), Some(until)) => self.retired_at.is_none() && from <= now && now < until,
            _ => false,
        }
    }
}

/// The ids trusted at `now`.
pub fn trusted_ids(claims: &[TrustedClaim], now: OffsetDateTime) -> BTreeSet<String> {
    claims
        .iter()
        .filter(|c| c.trusted_at(now))
        .map(|c| c.certificate_id.clone())
        .collect()
}

/// The claim certificates trusted at `now`: the bootstrap list (the
/// stack's `TRUSTED_CLAIM_CERTIFICATE_IDS`) less the ones the table has
/// retired, and, when the table was read (`table` is `Some`), the ones it
/// trusts now. Never more trust than was granted.
pub fn effective_trust(
    bootstrap: &BTreeSet<String>,
    claims: &[TrustedClaim],
    table_read: bool,
    now: OffsetDateTime,
) -> BTreeSet<String> {
    let retired: BTreeSet<&str> = claims
        .iter()
        .filter(|c| c.retired_at.is_some())
        .map(|c| c.certificate_id.as_str())
        .collect();
    let mut trusted: BTreeSet<String> = bootstrap
        .iter()
        .filter(|id| !retired.contains(id.as_str()))
        .cloned()
        .collect();
    if table_read {
        trusted.extend(trusted_ids(claims, now));
    }
    trusted
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn claim(from: &str, until: &str, retired: Option<&str>) -> TrustedClaim {
        TrustedClaim {
            certificate_id: "a".repeat(64),
            not_before: from.into(),
            not_after: until.into(),
            retired_at: retired.map(str::to_owned),
            added_at: from.into(),
            note: None,
        }
    }

    #[test]
    fn trusted_only_inside_the_window_and_never_once_retired() {
        let now = datetime!(2026-11-30 12:00 UTC);
        assert!(claim("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", None).trusted_at(now));
        assert!(!claim("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", None).trusted_at(now));
        assert!(!claim("2026-01-01T00:00:00Z", "2026-11-30T12:00:00Z", None).trusted_at(now));
        assert!(!claim(
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            Some("2026-11-30T11:00:00Z")
        )
        .trusted_at(now));
        assert!(!claim("yesterday", "2027-01-01T00:00:00Z", None).trusted_at(now));
    }

    #[test]
    fn certificate_ids_are_64_lower_case_hex() {
        assert!(is_certificate_id(&"0f".repeat(32)));
        assert!(!is_certificate_id(&"0F".repeat(32)));
        assert!(!is_certificate_id("abc"));
    }
}
