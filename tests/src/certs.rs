//! Device certificates made for a test run.

use sha2::{Digest, Sha256};

/// A device key pair with a self-signed certificate, as IoT would hand the
/// hook a certificate whose key the factory may have recorded.
pub struct DeviceCert {
    pub pem: String,
    /// Hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

pub fn device_cert(common_name: &str) -> DeviceCert {
    let key = rcgen::KeyPair::generate().expect("generate P-256 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params.self_signed(&key).expect("self-sign");
    DeviceCert {
        pem: cert.pem(),
        spki_sha256: hex::encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        )),
    }
}

/// A device CSR for `common_name` and the DER SubjectPublicKeyInfo of its key.
pub struct DeviceCsr {
    pub pem: String,
    pub spki_der: Vec<u8>,
}

pub fn device_csr(common_name: &str) -> DeviceCsr {
    let key = rcgen::KeyPair::generate().expect("generate P-256 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    DeviceCsr {
        pem: params
            .serialize_request(&key)
            .expect("CSR")
            .pem()
            .expect("PEM"),
        spki_der: rcgen::PublicKeyData::subject_public_key_info(&key),
    }
}

/// A device CA made for a test run (as the ACM Private CA would be), whose
/// certificate is registered with IoT for auto-registration.
pub struct DeviceCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

/// A certificate the device CA signed for `common_name`, its key, and the
/// hex SHA-256 of its DER SubjectPublicKeyInfo (the factory key).
pub struct SignedDevice {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub spki_sha256: String,
}

pub fn device_ca() -> DeviceCa {
    let key = rcgen::KeyPair::generate().expect("generate P-256 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "geoprov test device CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let pem = params.self_signed(&key).expect("self-sign").pem();
    DeviceCa {
        issuer: rcgen::Issuer::new(params, key),
        pem,
    }
}

impl DeviceCa {
    pub fn sign(&self, common_name: &str) -> SignedDevice {
        let key = rcgen::KeyPair::generate().expect("generate P-256 key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        SignedDevice {
            certificate_pem: params.signed_by(&key, &self.issuer).expect("sign").pem(),
            private_key_pem: key.serialize_pem(),
            spki_sha256: hex::encode(Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&key),
            )),
        }
    }
}
