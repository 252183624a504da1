//! AWS SDK configuration: one HTTP/TLS client for every SDK client, and the
//! standard chain for the rest.
//!
//! Region, credentials and endpoints come from the environment, so
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_DYNAMODB`, ...) points every client
//! at a local emulator without a code path of its own.
//!
//! The HTTP client is the SDK's own (`aws-smithy-http-client`, hyper and
//! rustls), built here rather than by the SDK's `default-https-client`
//! feature, for what a cold start costs on Lambda, where CPU is a share of a
//! vCPU in proportion to memory:
//! - **rustls on ring**, not aws-lc-rs: aws-lc seeds its random generator from
//!   CPU-jitter entropy on the first handshake (about 30 ms of CPU here);
//!   ring takes its seed from `getrandom`.
//! - **A trust store of its own**: the Amazon Trust Services roots that AWS
//!   endpoints chain to, compiled in, rather than the system store (hundreds of
//!   files read at cold start). `AWS_CA_BUNDLE` adds a PEM bundle, for a local
//!   endpoint with a CA of its own; it is read and checked at cold start, and a
//!   bundle that is unreadable or holds no usable certificate stops the cold
//!   start. Unlike the AWS CLI, where the bundle replaces the store, here it is
//!   added: one process may talk to a local endpoint and AWS at once.
//! - **Proxies as the SDK's default client**: `HTTP_PROXY`, `HTTPS_PROXY`,
//!   `ALL_PROXY` and `NO_PROXY` (either case), read once when the client is
//!   built.
//!
//! What ring gives up against aws-lc: the post-quantum hybrid key exchange
//! (X25519MLKEM768, which rustls on aws-lc offers first) and FIPS mode; the
//! classical groups remain. The CLI and the emulator use this client too: like
//! the AWS CLI, which ships its own roots, they do not read the system store,
//! so behind a TLS-inspecting proxy `AWS_CA_BUNDLE` names its CA.
//!
//! No SDK crate in the workspace enables `default-https-client`, so the
//! aws-lc stack is not compiled back in through feature unification:
//! `cargo tree --workspace -e features -i aws-lc-rs` finds nothing.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// The environment variable naming an extra PEM bundle to trust.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// Amazon Root CA 1 to 4 and Starfield Services Root CA G2, the roots of
/// Amazon Trust Services, which AWS service endpoints chain to
/// (<https://www.amazontrust.com/repository/>). Fingerprints are checked by a
/// test.
pub const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

/// Why the HTTP client could not be built. Each stops a cold start: a client
/// that trusts less than configured would fail every call later.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("{CA_BUNDLE_VAR}={path}: cannot be read: {reason}")]
    UnreadableBundle { path: PathBuf, reason: String },
    #[error("{CA_BUNDLE_VAR}={path}: {reason}")]
    InvalidBundle { path: PathBuf, reason: String },
    #[error("TLS context: {0}")]
    Tls(String),
}

/// A trust store whose every certificate has been checked the way the TLS
/// stack loads it (which panics on what it cannot use): the only kind
/// `http_client` takes.
#[derive(Debug, Clone)]
pub struct CheckedTrust(TrustStore);

/// The trust store: the Amazon roots, and the bundle if one is named.
pub fn trust_store(ca_bundle: Option<&Path>) -> Result<CheckedTrust, HttpSetupError> {
    let store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes());
    let Some(path) = ca_bundle else {
        return Ok(CheckedTrust(store));
    };
    let pem = std::fs::read(path).map_err(|e| HttpSetupError::UnreadableBundle {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    })?;
    check_bundle(&pem).map_err(|reason| HttpSetupError::InvalidBundle {
        path: path.to_owned(),
        reason,
    })?;
    Ok(CheckedTrust(store.with_pem_certificate(pem)))
}

/// Checks a bundle the way the TLS stack will load it (which panics on what
/// it cannot use), so a bad bundle is a configuration error at cold start.
fn check_bundle(pem: &[u8]) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not a usable root: {e}", i + 1))?;
    }
    Ok(())
}

/// The HTTP client every SDK client of a process uses: rustls on ring, the
/// given trust store, proxies from the environment, and the SDK's timeouts
/// and sleep as the default client takes them.
pub fn http_client(trust: CheckedTrust) -> Result<SharedHttpClient, HttpSetupError> {
    let context = TlsContext::builder()
        .with_trust_store(trust.0)
        .build()
        .map_err(|e| HttpSetupError::Tls(e.to_string()))?;
    // Read once: the SDK builds a connector per distinct timeout settings.
    let proxy = ProxyConfig::from_env();
    Ok(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut connector = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .tls_context(context.clone());
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(proxy.clone()));
            connector.build()
        }),
    )
}

/// The process's HTTP client: the Amazon roots plus `AWS_CA_BUNDLE` if set.
pub fn process_http_client() -> Result<SharedHttpClient, HttpSetupError> {
    let bundle = std::env::var_os(CA_BUNDLE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    http_client(trust_store(bundle.as_deref())?)
}

/// The loader every process starts from: the latest behaviour and this
/// module's HTTP client, which the credential providers use too.
pub fn loader(http: SharedHttpClient) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(http)
}

/// Loads the shared SDK configuration once, at cold start.
pub async fn load_sdk_config() -> Result<SdkConfig, HttpSetupError> {
    Ok(loader(process_http_client()?).load().await)
}

/// A DynamoDB client from the shared configuration.
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// The shared configuration with timeouts on every attempt and operation of
/// every client made from it, so no call can hang an invocation.
pub async fn load_sdk_config_with_timeouts(
    attempt: std::time::Duration,
    operation: std::time::Duration,
) -> Result<SdkConfig, HttpSetupError> {
    Ok(loader(process_http_client()?)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation)
                .build(),
        )
        .load()
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINTS: [(&str, &str); 5] = [
        (
            "Amazon Root CA 1",
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
        ),
        (
            "Amazon Root CA 2",
            "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
        ),
        (
            "Amazon Root CA 3",
            "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
        ),
        (
            "Amazon Root CA 4",
            "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
        ),
        (
            "Starfield Services Root Certificate Authority - G2",
            "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
        ),
    ];

    #[test]
    fn the_compiled_in_roots_are_exactly_amazon_trust_services() {
        use sha2::{Digest, Sha256};
        let certs = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let found: Vec<String> = certs
            .iter()
            .map(|c| hex::encode(Sha256::digest(c.as_ref())))
            .collect();
        let expected: Vec<&str> = FINGERPRINTS.iter().map(|(_, f)| *f).collect();
        assert_eq!(found, expected);
        check_bundle(AMAZON_TRUST_SERVICES_ROOTS.as_bytes()).unwrap();
    }

    #[test]
    fn a_bundle_is_checked_before_the_tls_stack_sees_it() {
        let dir = std::env::temp_dir().join(format!("geoprov-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&str, &[u8], &str); 3] = [
            ("empty.pem", b"", "holds no certificate"),
            ("text.pem", b"not a certificate\n", "holds no certificate"),
            (
                "garbage.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a usable root",
            ),
        ];
        for (name, content, want) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let err = trust_store(Some(&path)).unwrap_err();
            assert!(
                matches!(err, HttpSetupError::InvalidBundle { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(want), "{name}: {err}");
            assert!(err.to_string().contains(CA_BUNDLE_VAR));
        }
        let missing = dir.join("missing.pem");
        let err = trust_store(Some(&missing)).unwrap_err();
        assert!(
            matches!(err, HttpSetupError::UnreadableBundle { .. }),
            "{err}"
        );
        let good = dir.join("good.pem");
        std::fs::write(&good, AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        trust_store(Some(&good)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
