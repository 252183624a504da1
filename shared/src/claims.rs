//! Trusted claim certificates, kept in the table (`pk = CLAIMS`,
//! `sk = CLAIM#<certificate id>`) so they can be added, rotated and retired
//! without a redeploy. The hook trusts a claim certificate that is in its
//! bootstrap list (`TRUSTED_CLAIM_CERTIFICATE_IDS`) or in the table, inside
//! its window and not retired.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// What was read of the table's trusted claim certificates.
#[derive(Debug, Clone, Copy)]
pub enum ClaimsRead<'a> {
    /// Nothing yet: the table has never answered.
    Never,
    /// A read that is no longer current (the table did not answer since):
    /// its retirements and windows still hold, its additions no more.
    Stale(&'a [TrustedClaim]),
    /// A current read.
    Fresh(&'a [TrustedClaim]),
}

/// The claim certificates trusted at `now`, the one rule of the hook and of
/// the certificate provider; `None` when nothing may be trusted because the
/// table has never been read (fail closed: a retirement may be there).
/// - A bootstrap id (the stack's `TRUSTED_CLAIM_CERTIFICATE_IDS`) is trusted
///   unless the table has an entry for it that does not trust it now
///   (retired, outside its window, or an item that does not parse, which
///   counts as retired): the table's word on an id is the last.
/// - A table entry trusted now is trusted too, while the read is current.
pub fn effective_trust(
    bootstrap: &BTreeSet<String>,
    read: ClaimsRead<'_>,
    now: OffsetDateTime,
) -> Option<BTreeSet<String>> {
    let (claims, fresh) = match read {
        ClaimsRead::Never => return None,
        ClaimsRead::Stale(claims) => (claims, false),
        ClaimsRead::Fresh(claims) => (claims, true),
    };
    let entry_trusts = |id: &str| {
        let entries: Vec<&TrustedClaim> =
            claims.iter().filter(|c| c.certificate_id == id).collect();
        entries.is_empty() || entries.iter().all(|c| c.trusted_at(now))
    };
    let mut trusted: BTreeSet<String> = bootstrap
        .iter()
        .filter(|id| entry_trusts(id))
        .cloned()
        .collect();
    if fresh {
        trusted.extend(
            trusted_ids(claims, now)
                .into_iter()
                .filter(|id| entry_trusts(id)),
        );
    }
    Some(trusted)
}

/// The entry that stands for a `CLAIM#<id>` item that does not parse: the
/// id retired, so that a bad item never widens trust, for that id or any.
pub fn unreadable_claim(certificate_id: &str) -> TrustedClaim {
    TrustedClaim {
        certificate_id: certificate_id.to_owned(),
        not_before: String::new(),
        not_after: String::new(),
        retired_at: Some("unreadable".to_owned()),
        added_at: String::new(),
        note: Some("the item does not parse; it counts as retired".to_owned()),
    }
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
        assert!(
            !claim(
                "2026-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                Some("2026-11-30T11:00:00Z")
            )
            .trusted_at(now)
        );
        assert!(!claim("yesterday", "2027-01-01T00:00:00Z", None).trusted_at(now));
    }

    fn entry(id: &str, from: &str, until: &str, retired: Option<&str>) -> TrustedClaim {
        TrustedClaim {
            certificate_id: id.into(),
            ..claim(from, until, retired)
        }
    }

    #[test]
    fn nothing_is_trusted_before_the_table_was_read() {
        let bootstrap: BTreeSet<String> = ["b".repeat(64)].into();
        let now = datetime!(2026-11-30 12:00 UTC);
        assert_eq!(effective_trust(&bootstrap, ClaimsRead::Never, now), None);
        assert_eq!(
            effective_trust(&bootstrap, ClaimsRead::Fresh(&[]), now),
            Some(bootstrap.clone())
        );
    }

    /// The table's word on a bootstrap id is the last: retired, outside its
    /// window, or unreadable, it is not trusted, fresh or stale.
    #[test]
    fn a_table_entry_governs_a_bootstrap_id_too() {
        let (b, c, d, e) = (
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
            "e".repeat(64),
        );
        let bootstrap: BTreeSet<String> = [b.clone(), c.clone(), d.clone(), e.clone()].into();
        let now = datetime!(2026-11-30 12:00 UTC);
        let table = [
            entry(
                &b,
                "2026-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                Some("2026-11-01T00:00:00Z"),
            ),
            entry(&c, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", None),
            unreadable_claim(&d),
            entry(
                &"f".repeat(64),
                "2026-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                None,
            ),
        ];
        let fresh = effective_trust(&bootstrap, ClaimsRead::Fresh(&table), now).unwrap();
        assert_eq!(fresh, [e.clone(), "f".repeat(64)].into());
        let stale = effective_trust(&bootstrap, ClaimsRead::Stale(&table), now).unwrap();
        assert_eq!(stale, [e].into(), "a stale read adds nothing");
    }

    #[test]
    fn certificate_ids_are_64_lower_case_hex() {
        assert!(is_certificate_id(&"0f".repeat(32)));
        assert!(!is_certificate_id(&"0F".repeat(32)));
        assert!(!is_certificate_id("abc"));
    }
}
