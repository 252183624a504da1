//! What the cert issuer answers, per request.

use serde::Serialize;

/// Why a request got no certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Missing fields, wrong JSON types, a bad serial, a batch too large.
    InvalidRequest,
    /// Not one parsable PEM CSR.
    InvalidCsr,
    /// The CSR's signature does not verify with its key: no proof of possession.
    BadSignature,
    /// The subject's CN is not the serial number.
    SubjectMismatch,
    /// Anything but EC P-256/P-384 or RSA >= 2048.
    WeakKey,
    /// The CSR asks for CA rights.
    CaRequested,
    /// Proof of possession by a hash other than SHA-2.
    WeakSignature,
    /// A subjectAltName, an extension outside the allow-list, a second
    /// extension request, or an attribute other than extensionRequest.
    ExtensionNotAllowed,
    UnknownDevice,
    DeviceBlocked,
    ValidityTooLong,
    /// The CSR's key is not the factory key recorded for the device.
    KeyMismatch,
    /// The device has certificates for as many CSRs as it may.
    QuotaExceeded,
    /// Not started before the invocation's time ran out: send it again.
    RetryLater,
    /// Certificate provider: the connection's claim certificate is not one
    /// the hook trusts.
    UntrustedClaim,
    /// Certificate provider: the device has no factory key on record and
    /// `REQUIRE_FACTORY_KEY` holds.
    NoFactoryKey,
    /// Certificate provider: the device may not use this region
    /// (`allowedRegions`).
    RegionNotAllowed,
    /// ACM PCA refused, or did not issue within the deadline.
    IssuanceFailed,
}

/// The issuer's code for a refusal by the device rules
/// (`geoprov_device_rules::rules::{standing, factory_key}`).
pub fn error_code(reason: geoprov_device_rules::Reason) -> ErrorCode {
    use geoprov_device_rules::Reason;
    match reason {
        Reason::UnknownDevice => ErrorCode::UnknownDevice,
        Reason::RegionNotAllowed => ErrorCode::RegionNotAllowed,
        Reason::KeyMismatch => ErrorCode::KeyMismatch,
        Reason::NoFactoryKey => ErrorCode::NoFactoryKey,
        Reason::QuotaExceeded => ErrorCode::QuotaExceeded,
        Reason::UntrustedClaim => ErrorCode::UntrustedClaim,
        // Anything else the rules refuse is a device that may not have a
        // certificate: fail closed.
        _ => ErrorCode::DeviceBlocked,
    }
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidCsr => "INVALID_CSR",
            ErrorCode::BadSignature => "BAD_SIGNATURE",
            ErrorCode::SubjectMismatch => "SUBJECT_MISMATCH",
            ErrorCode::WeakKey => "WEAK_KEY",
            ErrorCode::CaRequested => "CA_REQUESTED",
            ErrorCode::WeakSignature => "WEAK_SIGNATURE",
            ErrorCode::ExtensionNotAllowed => "EXTENSION_NOT_ALLOWED",
            ErrorCode::UnknownDevice => "UNKNOWN_DEVICE",
            ErrorCode::DeviceBlocked => "DEVICE_BLOCKED",
            ErrorCode::ValidityTooLong => "VALIDITY_TOO_LONG",
            ErrorCode::KeyMismatch => "KEY_MISMATCH",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::RetryLater => "RETRY_LATER",
            ErrorCode::UntrustedClaim => "UNTRUSTED_CLAIM",
            ErrorCode::NoFactoryKey => "NO_FACTORY_KEY",
            ErrorCode::RegionNotAllowed => "REGION_NOT_ALLOWED",
            ErrorCode::IssuanceFailed => "ISSUANCE_FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub serial_number: String,
    pub certificate_pem: String,
    pub certificate_chain_pem: String,
    pub certificate_arn: String,
    /// RFC 3339, UTC.
    pub not_after: String,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ItemResponse {
    Issued(Issued),
    Refused {
        #[serde(rename = "serialNumber")]
        serial_number: Option<String>,
        error: ErrorBody,
    },
}

impl ItemResponse {
    pub fn refused(serial: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        ItemResponse::Refused {
            serial_number: serial.map(str::to_owned),
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ItemResponse::Issued(_) => None,
            ItemResponse::Refused { error, .. } => Some(error.code),
        }
    }
}

/// The function's answer: one item, or `{"results": [...]}` in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    One(ItemResponse),
    Batch { results: Vec<ItemResponse> },
}
