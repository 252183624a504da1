//! The CSR policy: what a certificate signing request must be before it is
//! sent to ACM Private CA. Pure: parsing and signature checks only.
//!
//! The checks run in this order, the first failure giving the code:
//! `INVALID_CSR` (not one parsable PEM CSR), `WEAK_KEY` (anything but EC
//! P-256/P-384 or RSA >= 2048 bits), `WEAK_SIGNATURE` (proof of possession by
//! anything but SHA-2 with ECDSA or PKCS#1 v1.5: SHA-1 and MD5 are refused),
//! `BAD_SIGNATURE` (no proof of possession of the key), `SUBJECT_MISMATCH` (the
//! subject's one CN is not the serial), `CA_REQUESTED` (basicConstraints
//! CA:TRUE, keyUsage keyCertSign or cRLSign, in any extension request),
//! `EXTENSION_NOT_ALLOWED` (any attribute but one single-valued
//! extensionRequest, any subjectAltName, any extension outside the client
//! allow-list: keyUsage, extendedKeyUsage clientAuth, basicConstraints CA:FALSE,
//! each at most once). The key is checked before the signature so that a key
//! geoprov refuses is named as such, even where the signature scheme cannot be
//! verified at all (P-192, RSA-1024).
//!
//! Every extension request is read, not only the first: x509-parser's
//! `requested_extensions()` stops at the first, so a second extensionRequest
//! could otherwise carry CA:TRUE past the check. Nothing the CSR asks for is
//! passed to ACM PCA anyway (the issuer sets subject and extensions, see
//! `pca`); the policy refuses such CSRs so that a device asking for more than a
//! client certificate is told so and audited.

use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Header, Oid};
use x509_parser::certification_request::{X509CertificationRequest, X509CertificationRequestInfo};
use x509_parser::cri_attributes::ExtensionRequest;
use x509_parser::extensions::{ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_PKCS9_EXTENSION_REQUEST, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::response::ErrorCode;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest PEM accepted, in bytes: a CSR is a few kilobytes at most.
pub const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

/// The device key a CSR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcP256,
    EcP384,
    Rsa { bits: usize },
}

/// A CSR that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    /// The CSR as PEM, re-encoded from the DER that was checked (what is
    /// sent to ACM PCA is exactly what was checked).
    pub pem: String,
    /// Lower-case hex SHA-256 of the CSR's CertificationRequestInfo (its
    /// subject, key and requested extensions: what a certificate for it
    /// says), not of its signature: the ledger key. ECDSA signs anew each
    /// time, so a device that signs its request again (a retry after a lost
    /// answer, the canary's probe each minute) makes the same request, and
    /// gets the same certificate without spending its allowance or ACM PCA.
    pub sha256: String,
    /// Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo: what the
    /// registry's factory key (`publicKeySha256`) is compared with.
    pub public_key_sha256: String,
    pub key: KeyKind,
}

/// Why a CSR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Checks `csr_pem` for the device `serial`.
pub fn check(serial: &str, csr_pem: &str) -> Result<CheckedCsr, Refusal> {
    let der = decode_pem(csr_pem)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| refuse(ErrorCode::InvalidCsr, format!("not a PKCS#10 CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(refuse(
            ErrorCode::InvalidCsr,
            "trailing bytes after the CSR",
        ));
    }
    let info = &csr.certification_request_info;
    let key = key_kind(&info.subject_pki)?;
    signature_algorithm(&csr.signature_algorithm.algorithm)?;
    csr.verify_signature().map_err(|e| {
        refuse(
            ErrorCode::BadSignature,
            format!(
                "the CSR's signature does not verify with its own key ({e}): no proof of possession"
            ),
        )
    })?;
    let common_names: Vec<&str> = info
        .subject
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap_or("<not a string>"))
        .collect();
    if common_names != [serial] {
        return Err(refuse(
            ErrorCode::SubjectMismatch,
            format!(
                "the subject must have exactly one CN, the serial number {serial:?}; it has {common_names:?}"
            ),
        ));
    }
    check_requested_extensions(info)?;
    Ok(CheckedCsr {
        pem: encode_pem(&der),
        sha256: hex::encode(Sha256::digest(info.raw)),
        public_key_sha256: hex::encode(Sha256::digest(info.subject_pki.raw)),
        key,
    })
}

/// Proof of possession by SHA-2 only.
fn signature_algorithm(algorithm: &Oid<'_>) -> Result<(), Refusal> {
    let accepted = [
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512,
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
    ];
    match accepted.contains(algorithm) {
        true => Ok(()),
        false => Err(refuse(
            ErrorCode::WeakSignature,
            format!(
                "the CSR is signed with {algorithm}; sign it with SHA-256 or stronger (ECDSA or RSA PKCS#1 v1.5)"
            ),
        )),
    }
}

/// Every extension of every extension request, CA rights first (so that a
/// second request carrying CA:TRUE is named as such), then the shape: one
/// single-valued extensionRequest, no other attribute, allow-listed
/// extensions only, each at most once.
fn check_requested_extensions(info: &X509CertificationRequestInfo<'_>) -> Result<(), Refusal> {
    let mut requests: Vec<Vec<X509Extension<'_>>> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for attribute in info.attributes() {
        if attribute.oid != OID_PKCS9_EXTENSION_REQUEST {
            others.push(attribute.oid.to_id_string());
            continue;
        }
        requests.push(single_extension_request(attribute.value)?);
    }
    let extensions = || requests.iter().flatten();
    for extension in extensions() {
        ca_rights(extension)?;
    }
    if requests.len() > 1 {
        return Err(refuse(
            ErrorCode::ExtensionNotAllowed,
            format!(
                "the CSR has {} extensionRequest attributes; at most one is allowed",
                requests.len()
            ),
        ));
    }
    if !others.is_empty() {
        return Err(refuse(
            ErrorCode::ExtensionNotAllowed,
            format!("the CSR has attributes {others:?}; only extensionRequest is allowed"),
        ));
    }
    let mut seen: Vec<&Oid<'_>> = Vec::new();
    for extension in extensions() {
        if seen.contains(&&extension.oid) {
            return Err(refuse(
                ErrorCode::ExtensionNotAllowed,
                format!("the CSR requests extension {} twice", extension.oid),
            ));
        }
        seen.push(&extension.oid);
        allowed_extension(extension)?;
    }
    Ok(())
}

/// The extensions of an extensionRequest attribute whose SET holds exactly
/// one value. x509-parser reads only the first value of the SET and cuts
/// `value` after it, so a SET whose header announces more than `value` holds
/// has further values.
fn single_extension_request(value: &[u8]) -> Result<Vec<X509Extension<'_>>, Refusal> {
    let (content, header) = Header::from_der(value)
        .map_err(|e| refuse(ErrorCode::InvalidCsr, format!("extensionRequest: {e}")))?;
    let announced = header.length().definite().unwrap_or(usize::MAX);
    let (rest, request) = ExtensionRequest::from_der(content)
        .map_err(|e| refuse(ErrorCode::InvalidCsr, format!("extensionRequest: {e}")))?;
    if announced != content.len() || !rest.is_empty() {
        return Err(refuse(
            ErrorCode::ExtensionNotAllowed,
            "an extensionRequest attribute with more than one value",
        ));
    }
    Ok(request.extensions)
}

/// basicConstraints CA:TRUE, keyUsage keyCertSign or cRLSign.
fn ca_rights(extension: &X509Extension<'_>) -> Result<(), Refusal> {
    match extension.parsed_extension() {
        ParsedExtension::BasicConstraints(bc) if bc.ca => Err(refuse(
            ErrorCode::CaRequested,
            "the CSR requests basicConstraints CA:TRUE",
        )),
        ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => Err(refuse(
            ErrorCode::CaRequested,
            "the CSR requests keyUsage keyCertSign or cRLSign",
        )),
        _ => Ok(()),
    }
}

/// The extensions a client certificate's CSR may carry.
fn allowed_extension(extension: &X509Extension<'_>) -> Result<(), Refusal> {
    let not_allowed = |what: String| {
        Err(refuse(
            ErrorCode::ExtensionNotAllowed,
            format!(
                "the CSR requests {what}; only keyUsage, extendedKeyUsage clientAuth and basicConstraints CA:FALSE are allowed"
            ),
        ))
    };
    let oid = &extension.oid;
    match extension.parsed_extension() {
        ParsedExtension::ParseError { error } => Err(refuse(
            ErrorCode::InvalidCsr,
            format!("extension {oid} does not parse: {error}"),
        )),
        _ if *oid == OID_X509_EXT_SUBJECT_ALT_NAME => {
            not_allowed("a subjectAltName (names are the issuer's to set)".into())
        }
        ParsedExtension::ExtendedKeyUsage(eku) if *oid == OID_X509_EXT_EXTENDED_KEY_USAGE => {
            let only_client = eku.client_auth
                && !(eku.any
                    || eku.server_auth
                    || eku.code_signing
                    || eku.email_protection
                    || eku.time_stamping
                    || eku.ocsp_signing)
                && eku.other.is_empty();
            match only_client {
                true => Ok(()),
                false => not_allowed("an extendedKeyUsage other than clientAuth".into()),
            }
        }
        ParsedExtension::KeyUsage(_) if *oid == OID_X509_EXT_KEY_USAGE => Ok(()),
        ParsedExtension::BasicConstraints(_) if *oid == OID_X509_EXT_BASIC_CONSTRAINTS => Ok(()),
        _ => not_allowed(format!("extension {oid}")),
    }
}

fn decode_pem(csr_pem: &str) -> Result<Vec<u8>, Refusal> {
    if csr_pem.trim().is_empty() {
        return Err(refuse(ErrorCode::InvalidCsr, "csrPem is empty"));
    }
    if csr_pem.len() > MAX_CSR_PEM_BYTES {
        return Err(refuse(
            ErrorCode::InvalidCsr,
            format!("csrPem is over {MAX_CSR_PEM_BYTES} bytes"),
        ));
    }
    let (rest, pem) = x509_parser::pem::parse_x509_pem(csr_pem.trim().as_bytes())
        .map_err(|e| refuse(ErrorCode::InvalidCsr, format!("not PEM: {e}")))?;
    if !matches!(
        pem.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(refuse(
            ErrorCode::InvalidCsr,
            format!("PEM label is {:?}, not CERTIFICATE REQUEST", pem.label),
        ));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(refuse(ErrorCode::InvalidCsr, "more than one PEM block"));
    }
    Ok(pem.contents)
}

fn encode_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE REQUEST", der), config)
}

fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, Refusal> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyKind::EcP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyKind::EcP384),
            Some(c) => Err(refuse(
                ErrorCode::WeakKey,
                format!("EC curve {c} is not accepted; use P-256 or P-384"),
            )),
            None => Err(refuse(ErrorCode::WeakKey, "EC key without a named curve")),
        };
    }
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
            _ => return Err(refuse(ErrorCode::InvalidCsr, "unparsable RSA public key")),
        };
        return match bits >= MIN_RSA_BITS {
            true => Ok(KeyKind::Rsa { bits }),
            false => Err(refuse(
                ErrorCode::WeakKey,
                format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"),
            )),
        };
    }
    Err(refuse(
        ErrorCode::WeakKey,
        format!(
            "key algorithm {algorithm} is not accepted; use EC P-256/P-384 or RSA >= {MIN_RSA_BITS}"
        ),
    ))
}

/// The bit length of a big-endian unsigned integer.
fn modulus_bits(modulus: &[u8]) -> usize {
    let significant: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    significant.len() * 8 - significant[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignores_leading_zero_bytes() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }

    fn csr(serial: &str, key: &rcgen::KeyPair) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, serial);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_request_signed_again_has_the_same_ledger_key_and_another_request_does_not() {
        let key = rcgen::KeyPair::generate().unwrap();
        let (first, again) = (csr("SN-1", &key), csr("SN-1", &key));
        // ECDSA's signatures differ: the PEMs do.
        assert_ne!(first, again);
        let (a, b) = (
            check("SN-1", &first).unwrap(),
            check("SN-1", &again).unwrap(),
        );
        assert_eq!(a.sha256, b.sha256);
        let other_key = check("SN-1", &csr("SN-1", &rcgen::KeyPair::generate().unwrap())).unwrap();
        assert_ne!(a.sha256, other_key.sha256);
        let other_serial = check("SN-2", &csr("SN-2", &key)).unwrap();
        assert_ne!(a.sha256, other_serial.sha256);
    }
}
