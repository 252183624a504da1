//! The CSR policy with CSRs made in the test by rcgen, and (for the keys
//! rcgen cannot make: RSA, P-192) by openssl, kept in `tests/fixtures/`.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use cert_issuer::csr::{KeyKind, check};
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
    assert!(
        checked
            .pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
    );
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

/// CSRs made by `openssl req` in a directory of their own, with a fresh
/// P-256 key, for the subject `CN=SN-1`.
mod by_openssl {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "geoprov-csr-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let key = dir.join("key.pem");
            run(Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-out"])
                .arg(&key));
            Dir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// `openssl req -new` with the key and `args`.
        fn req(&self, args: &[&str]) -> String {
            let out = self.path(&format!("csr-{}.pem", fastrand::u64(..)));
            run(Command::new("openssl")
                .args(["req", "-new", "-key"])
                .arg(self.path("key.pem"))
                .args(args)
                .arg("-out")
                .arg(&out));
            std::fs::read_to_string(out).unwrap()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(command: &mut Command) -> Vec<u8> {
        let output = command.output().expect("openssl runs");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn subject() -> [&'static str; 2] {
        ["-subj", "/CN=SN-1"]
    }

    #[test]
    fn a_plain_openssl_csr_and_one_asking_for_a_client_certificate_are_accepted() {
        let dir = Dir::new("plain");
        assert!(check("SN-1", &dir.req(&subject())).is_ok());
        let client = dir.req(&[
            "-subj",
            "/CN=SN-1",
            "-addext",
            "keyUsage=critical,digitalSignature,keyAgreement",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        let checked = check("SN-1", &client).unwrap();
        // The fingerprint is openssl's DER SubjectPublicKeyInfo, hashed.
        let spki = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(dir.path("key.pem")));
        use sha2::Digest;
        assert_eq!(
            checked.public_key_sha256,
            hex::encode(sha2::Sha256::digest(&spki))
        );
    }

    #[test]
    fn subject_alternative_names_of_every_kind_are_refused() {
        let dir = Dir::new("san");
        for san in [
            "subjectAltName=DNS:global.iot.example.com",
            "subjectAltName=URI:spiffe://geoprov/device/SN-2",
            "subjectAltName=IP:10.0.0.1",
            "subjectAltName=email:ops@example.com",
        ] {
            let csr = dir.req(&["-subj", "/CN=SN-1", "-addext", san]);
            let refusal = check("SN-1", &csr).expect_err(san);
            assert_eq!(refusal.code, ErrorCode::ExtensionNotAllowed, "{san}");
            assert!(refusal.message.contains("subjectAltName"), "{refusal}");
        }
    }

    #[test]
    fn extensions_outside_the_client_allow_list_are_refused() {
        let dir = Dir::new("ext");
        for extension in [
            "extendedKeyUsage=serverAuth",
            "extendedKeyUsage=clientAuth,codeSigning",
            "nsComment=hello",
            "subjectKeyIdentifier=hash",
            "crlDistributionPoints=URI:http://example.com/crl",
        ] {
            let csr = dir.req(&["-subj", "/CN=SN-1", "-addext", extension]);
            assert_eq!(
                code_of("SN-1", &csr),
                ErrorCode::ExtensionNotAllowed,
                "{extension}"
            );
        }
        for extension in ["keyUsage=keyCertSign", "keyUsage=digitalSignature,cRLSign"] {
            let csr = dir.req(&["-subj", "/CN=SN-1", "-addext", extension]);
            assert_eq!(code_of("SN-1", &csr), ErrorCode::CaRequested, "{extension}");
        }
    }

    #[test]
    fn attributes_other_than_one_extension_request_are_refused() {
        let dir = Dir::new("attrs");
        let config = dir.path("req.cnf");
        std::fs::write(
            &config,
            "[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n\
             [dn]\nCN = SN-1\n\
             [attrs]\nchallengePassword = not-a-secret-1\nunstructuredName = geoprov\n",
        )
        .unwrap();
        let csr = dir.req(&["-config", config.to_str().unwrap()]);
        let refusal = check("SN-1", &csr).expect_err("attributes");
        assert_eq!(refusal.code, ErrorCode::ExtensionNotAllowed);
        assert!(
            refusal.message.contains("1.2.840.113549.1.9.7"),
            "{refusal}"
        );
        assert!(
            !refusal.message.contains("not-a-secret-1"),
            "a challenge password is never echoed"
        );
    }

    #[test]
    fn sha1_proofs_of_possession_are_weak_signatures() {
        let dir = Dir::new("sha1");
        let ecdsa_sha1 = dir.req(&["-subj", "/CN=SN-1", "-sha1"]);
        assert_eq!(code_of("SN-1", &ecdsa_sha1), ErrorCode::WeakSignature);
        let rsa = dir.path("rsa.pem");
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .args(["rsa_keygen_bits:2048", "-out"])
            .arg(&rsa));
        let out = dir.path("rsa-sha1.pem");
        run(Command::new("openssl")
            .args(["req", "-new", "-sha1", "-subj", "/CN=SN-1", "-key"])
            .arg(&rsa)
            .arg("-out")
            .arg(&out));
        let rsa_sha1 = std::fs::read_to_string(out).unwrap();
        assert_eq!(code_of("SN-1", &rsa_sha1), ErrorCode::WeakSignature);
        let rsa_sha256 = dir.path("rsa-sha256.pem");
        run(Command::new("openssl")
            .args(["req", "-new", "-sha256", "-subj", "/CN=SN-1", "-key"])
            .arg(&rsa)
            .arg("-out")
            .arg(&rsa_sha256));
        assert!(check("SN-1", &std::fs::read_to_string(rsa_sha256).unwrap()).is_ok());
    }

    fn parse(der: &[u8]) -> x509_parser::certification_request::X509CertificationRequest<'_> {
        use x509_parser::prelude::FromDer;
        x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .unwrap()
            .1
    }

    /// A CSR of the key and subject of `template` (an openssl CSR of the
    /// directory's key) with `attributes` (DER Attribute values, one after
    /// the other), signed by openssl with ecdsa-with-SHA256.
    fn assemble(dir: &Dir, template: &str, attributes: &[u8]) -> String {
        let der = pem::parse(template).unwrap().into_contents();
        let csr = parse(&der);
        let info = &csr.certification_request_info;
        let info = tlv(
            0x30,
            &[
                vec![0x02, 0x01, 0x00],
                info.subject.as_raw().to_vec(),
                info.subject_pki.raw.to_vec(),
                tlv(0xa0, attributes),
            ]
            .concat(),
        );
        let info_path = dir.path("info.der");
        std::fs::write(&info_path, &info).unwrap();
        let signature = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(dir.path("key.pem"))
            .arg(&info_path));
        // AlgorithmIdentifier ecdsa-with-SHA256.
        let algorithm = [
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ];
        let bits = tlv(0x03, &[&[0u8][..], &signature].concat());
        let der = tlv(0x30, &[info, algorithm.to_vec(), bits].concat());
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
    }

    /// The DER Attributes of openssl CSRs, one after the other.
    fn attributes_of(csrs: &[&String]) -> Vec<u8> {
        let ders: Vec<Vec<u8>> = csrs
            .iter()
            .map(|pem_text| pem::parse(pem_text.as_str()).unwrap().into_contents())
            .collect();
        ders.iter()
            .flat_map(|der| {
                let csr = parse(der);
                csr.certification_request_info
                    .attributes()
                    .iter()
                    .flat_map(|a| attribute(a.oid.as_bytes(), a.value))
                    .collect::<Vec<u8>>()
            })
            .collect()
    }

    fn attribute(oid: &[u8], set: &[u8]) -> Vec<u8> {
        tlv(0x30, &[tlv(0x06, oid), set.to_vec()].concat())
    }

    /// A DER tag-length-value.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn a_second_extension_request_is_read_and_refused() {
        let dir = Dir::new("two");
        let usage = dir.req(&["-subj", "/CN=SN-1", "-addext", "keyUsage=digitalSignature"]);
        let client = dir.req(&[
            "-subj",
            "/CN=SN-1",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ]);
        let ca = dir.req(&["-subj", "/CN=SN-1", "-addext", "basicConstraints=CA:TRUE"]);
        // The assembly itself is sound: one attribute is accepted.
        assert!(check("SN-1", &assemble(&dir, &usage, &attributes_of(&[&usage]))).is_ok());
        let two = assemble(&dir, &usage, &attributes_of(&[&usage, &client]));
        let refusal = check("SN-1", &two).expect_err("two extension requests");
        assert_eq!(refusal.code, ErrorCode::ExtensionNotAllowed);
        assert!(refusal.message.contains("2 extensionRequest"), "{refusal}");
        // CA:TRUE in the second request is found and named.
        let hidden_ca = assemble(&dir, &usage, &attributes_of(&[&usage, &ca]));
        assert_eq!(code_of("SN-1", &hidden_ca), ErrorCode::CaRequested);
    }

    #[test]
    fn an_extension_request_with_two_values_is_refused() {
        let dir = Dir::new("values");
        let usage = dir.req(&["-subj", "/CN=SN-1", "-addext", "keyUsage=digitalSignature"]);
        let der = pem::parse(&usage).unwrap().into_contents();
        let csr = parse(&der);
        let request = &csr.certification_request_info.attributes()[0];
        assert!(request.value[1] < 0x80, "a short SET");
        // SET { extensions, extensions }.
        let one = &request.value[2..];
        let set = tlv(0x31, &[one, one].concat());
        let two_values = assemble(&dir, &usage, &attribute(request.oid.as_bytes(), &set));
        assert_eq!(code_of("SN-1", &two_values), ErrorCode::ExtensionNotAllowed);
    }
}
