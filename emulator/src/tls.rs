//! TLS as IoT's data endpoints do it, and the emulator's two local CAs.
//! - The server certificate names the configured domains and is made at
//!   start by a local CA whose PEM is written for devices to trust.
//! - SNI is required and must be a configured domain name ("Configurable
//!   endpoints": "Connection attempts that don't include the SNI are
//!   refused"); otherwise the handshake fails.
//! - A client certificate is required. The handshake checks that the client
//!   holds its key; whether the certificate is registered and ACTIVE is the
//!   registry's question, asked after the handshake (`broker`), as IoT
//!   authenticates by the registered certificate and not by a chain.
//! - The device CA stands for the Amazon CA that signs the certificates the
//!   provisioning MQTT API creates.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// Why TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority held in memory for this process only.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl LocalCa {
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "geoprov-iot-emu");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(LocalCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A new key pair and a certificate for it: CreateKeysAndCertificate.
    /// Returns (certificate PEM, private key PEM).
    pub fn issue_with_key(&self) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "AWS IoT Certificate");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A certificate for the key of a CSR whose signature holds:
    /// CreateCertificateFromCsr. The CSR's subject is kept; no CA rights.
    pub fn issue_for_csr(&self, csr_pem: &str) -> Result<String, TlsError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.subject_alt_names.clear();
        Ok(csr.signed_by(&self.issuer)?.pem())
    }

    /// A server certificate for `domains`, with its key.
    fn server_key(&self, domains: &[String]) -> Result<CertifiedKey, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(domains.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            domains.first().cloned().unwrap_or_default(),
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider().key_provider.load_private_key(der)?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
    }
}

/// The server's TLS configuration for `domains`, its certificate made by `ca`.
pub fn server_config(ca: &LocalCa, domains: &[String]) -> Result<Arc<ServerConfig>, TlsError> {
    let key = Arc::new(ca.server_key(domains)?);
    let resolver = DomainResolver {
        domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        key,
    };
    let verifier = RequireClientKey {
        provider: provider(),
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(resolver));
    Ok(Arc::new(config))
}

/// Serves the certificate only to a ClientHello whose SNI is a configured
/// domain; for any other (or none) the handshake fails.
#[derive(Debug)]
struct DomainResolver {
    domains: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl ResolvesServerCert for DomainResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.domains.contains(&name).then(|| self.key.clone())
    }
}

/// Requires a client certificate and proof that the client holds its key;
/// leaves trust to the registry.
#[derive(Debug)]
struct RequireClientKey {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequireClientKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_certificate_keeps_the_subject_and_the_key_of_the_csr() {
        let ca = LocalCa::new("test device CA").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "SN-42");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.issue_for_csr(&csr).unwrap();
        let der = pem::parse(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "SN-42"
        );
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        assert!(!cert.is_ca());
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = LocalCa::new("test device CA").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "SN-42");
        let csr = params.serialize_request(&key).unwrap();
        let mut der = csr.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(ca.issue_for_csr(&tampered).is_err());
    }
}
