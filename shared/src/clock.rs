//! Wall-clock timestamps as the table and the audit log store them (RFC 3339, UTC).

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Now, as RFC 3339 with nanoseconds, so audit sort keys order by time.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Formats a UTC instant as RFC 3339.
pub fn format_rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Milliseconds since the Unix epoch, as EMF wants them.
pub fn now_epoch_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
