//! The CSR policy with CSRs made in the test by rcgen, and (for the keys
//! rcgen cannot make: RSA, P-192) by openssl, kept in `tests/fixtures/`.

use cert_issuer::csr::{check, KeyKind};
use cert_issuer::response::ErrorCode;
use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};

fn csr_with(
    alg: &'static SignatureAlgorithm,
    cn: &str,
    edit: impl FnOnce(&mut CertificateParams),
) -> String {
    let key = KeyPair::generate_for(alg).expect("key pair");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    edit(&mut params);
    params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM")
}

fn p256(cn: &str) -> String {
    csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, cn, |_| {})
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).expect(&path)
}

fn code_of(serial: &str, pem: &str) -> ErrorCode {
    check(serial, pem)
        .expect_err("the CSR must be refused")
        .code
}

/// The CSR's DER with one byte changed, as PEM.
fn tampered(pem: &str, position: impl Fn(usize) -> usize) -> String {
    let mut der = pem::parse(pem).expect("PEM").into_contents();
    let at = position(der.len());
    der[at] ^= 0x01;
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

#[test]
fn accepts_p256_p384_and_rsa_of_2048_bits_and_more() {
    let checked = check("SN-1", &p256("SN-1")).unwrap();
    assert_eq!(checked.key, KeyKind::EcP256);
    assert_eq!(checked.sha256.len(), 64);
    assert!(checked
        .pem
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    let p384 = csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, "SN-1", |_| {});
    assert_eq!(check("SN-1", &p384).unwrap().key, KeyKind::EcP384);
    assert_eq!(
        check("SN-1", &fixture("csr-rsa2048.pem")).unwrap().key,
        KeyKind::Rsa { bits: 2048 }
    );
    assert_eq!(
        check("SN-1", &fixture("csr-rsa3072.pem")).unwrap().key,
        KeyKind::Rsa { bits: 3072 }
    );
    // A client-auth key usage is no CA request.
    let client = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, "SN-1", |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    });
    assert!(check("SN-1", &client).is_ok());
}

#[test]
fn the_same_csr_has_the_same_hash_and_another_csr_another() {
    let pem = p256("SN-1");
    assert_eq!(
        check("SN-1", &pem).unwrap().sha256,
        check("SN-1", &pem).unwrap().sha256
    );
    assert_ne!(
        check("SN-1", &pem).unwrap().sha256,
        check("SN-1", &p256("SN-1")).unwrap().sha256
    );
}

#[test]
fn garbage_empty_and_wrong_pem_are_invalid_csrs() {
    let certificate = {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        CertificateParams::new(vec!["SN-1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    };
    let two = format!("{}{}", p256("SN-1"), p256("SN-1"));
    let not_der = "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n";
    for bad in [
        "",
        "   \n",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\n",
        not_der,
        &certificate,
        &two,
    ] {
        assert_eq!(code_of("SN-1", bad), ErrorCode::InvalidCsr, "{bad:?}");
    }
    assert_eq!(code_of("SN-1", &"A".repeat(20_000)), ErrorCode::InvalidCsr);
}

#[test]
fn a_tampered_csr_has_a_bad_signature() {
    let pem = p256("SN-1");
    // The last byte is in the signature; the CN's last byte is in the signed info.
    assert_eq!(
        code_of("SN-1", &tampered(&pem, |len| len - 1)),
        ErrorCode::BadSignature
    );
    let der = pem::parse(&pem).unwrap().into_contents();
    let cn_at = der.windows(4).position(|w| w == b"SN-1").unwrap() + 3;
    let changed = tampered(&pem, |_| cn_at);
    assert_eq!(code_of("SN-0", &changed), ErrorCode::BadSignature);
}

#[test]
fn weak_and_unsupported_keys_are_refused() {
    assert_eq!(
        code_of("SN-1", &fixture("csr-rsa1024.pem")),
        ErrorCode::WeakKey
    );
    assert_eq!(
        code_of("SN-1", &fixture("csr-p192.pem")),
        ErrorCode::WeakKey
    );
    let ed25519 = csr_with(&rcgen::PKCS_ED25519, "SN-1", |_| {});
    assert_eq!(code_of("SN-1", &ed25519), ErrorCode::WeakKey);
}

#[test]
fn the_subject_must_be_exactly_the_serial() {
    assert_eq!(code_of("SN-2", &p256("SN-1")), ErrorCode::SubjectMismatch);
    assert_eq!(code_of("SN-1", &p256("sn-1")), ErrorCode::SubjectMismatch);
    let two_cns = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, "SN-1", |p| {
        p.distinguished_name
            .push(DnType::OrganizationName, "geoprov");
    });
    assert!(check("SN-1", &two_cns).is_ok(), "other attributes are fine");
    let no_cn = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, "SN-1", |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
    });
    assert_eq!(code_of("SN-1", &no_cn), ErrorCode::SubjectMismatch);
}

#[test]
fn csrs_asking_for_ca_rights_are_refused() {
    let ca = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, "SN-1", |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(code_of("SN-1", &ca), ErrorCode::CaRequested);
    let signer = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, "SN-1", |p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    assert_eq!(code_of("SN-1", &signer), ErrorCode::CaRequested);
}

#[test]
fn no_one_byte_change_at_any_position_changes_what_was_signed() {
    for _ in 0..5 {
        let pem = p256("SN-1");
        let len = pem::parse(&pem).unwrap().into_contents().len();
        let mut accepted = 0;
        for at in 0..len {
            if let Ok(checked) = check("SN-1", &tampered(&pem, |_| at)) {
                assert_eq!(
                    signed_info(&checked.pem),
                    signed_info(&pem),
                    "position {at}"
                );
                accepted += 1;
            }
        }
        assert!(accepted <= 2, "{accepted} of {len} changes accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any text is refused as INVALID_CSR or checked, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        prop_assert!(check("SN-1", &text).is_err());
    }

    /// A one-byte change of a valid CSR is refused, unless it falls outside
    /// what the device signed (e.g. the tag of the outer signature algorithm,
    /// which x509-parser reads leniently): then the subject and the key are
    /// still the ones the device signed for.
    #[test]
    fn a_one_byte_change_never_changes_what_was_signed(seed in any::<usize>()) {
        let pem = p256("SN-1");
        let changed = tampered(&pem, |len| seed % len);
        if let Ok(checked) = check("SN-1", &changed) {
            prop_assert_eq!(signed_info(&checked.pem), signed_info(&pem));
        }
    }
}

/// The DER of the subject and of the public key of a CSR.
fn signed_info(pem_text: &str) -> (Vec<u8>, Vec<u8>) {
    use x509_parser::prelude::FromDer;
    let der = pem::parse(pem_text).unwrap().into_contents();
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    let info = &csr.certification_request_info;
    (
        info.subject.as_raw().to_vec(),
        info.subject_pki.raw.to_vec(),
    )
}
