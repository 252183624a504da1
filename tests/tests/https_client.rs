//! The one HTTP/TLS client every geoprov SDK client uses
//! (`geoprov_shared::aws`), over real TLS on 127.0.0.1: a server with a CA
//! made here is trusted through the bundle and only through it, and a bad
//! `AWS_CA_BUNDLE` stops a real function's cold start with a clear error.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_config::Region;
use aws_sdk_dynamodb::config::Credentials;
use geoprov_shared::aws;
use geoprov_tests::{unique_table, whole_http_request, workspace_binary};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A DynamoDB endpoint that answers every request with one ListTables
/// answer, over TLS with a certificate for `localhost` from a fresh CA.
/// Returns its address and the CA's PEM.
async fn tls_endpoint() -> (SocketAddr, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body by Content-Length.
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if whole_http_request(&seen) {
                        break;
                    }
                }
                let body = r#"{"TableNames":["geoprov-over-tls"]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca_cert.pem())
}

fn scratch_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_table(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn list_tables(trust: aws::CheckedTrust, addr: SocketAddr) -> Result<Vec<String>, String> {
    let sdk = aws::loader(aws::http_client(trust).unwrap())
        .region(Region::new("eu-west-1"))
        .endpoint_url(format!("https://localhost:{}", addr.port()))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .list_tables()
        .send()
        .await
        .map(|out| out.table_names().to_vec())
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

#[tokio::test]
async fn the_bundle_is_trusted_and_nothing_else_is() {
    let (addr, ca_pem) = tls_endpoint().await;
    let dir = scratch_dir("https-client");
    let _cleanup = RemoveOnDrop(dir.clone());
    let bundle = dir.join("ca.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();

    let tables = list_tables(aws::trust_store(Some(&bundle)).unwrap(), addr)
        .await
        .unwrap();
    assert_eq!(tables, ["geoprov-over-tls"]);

    // The Amazon roots alone, as a function has without AWS_CA_BUNDLE: the
    // local CA is not trusted.
    let refused = list_tables(aws::trust_store(None).unwrap(), addr)
        .await
        .unwrap_err();
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("invalid peer certificate"),
        "{refused}"
    );
}

#[test]
fn a_bad_bundle_stops_a_functions_cold_start_with_a_clear_error() {
    let dir = scratch_dir("https-client-bad-bundle");
    let _cleanup = RemoveOnDrop(dir.clone());
    let not_pem = dir.join("not-a-bundle.pem");
    std::fs::write(&not_pem, "this is no certificate\n").unwrap();
    for (bundle, expected) in [
        (dir.join("missing.pem"), "cannot be read"),
        (not_pem, "holds no certificate"),
    ] {
        let out = std::process::Command::new(workspace_binary("pre-provisioning-hook"))
            .env_clear()
            .envs([
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("TABLE_NAME", "geoprov-bundle"),
                ("TRUSTED_CLAIM_CERTIFICATE_IDS", "claim"),
                ("LAMBDA_TIMEOUT_MS", "5000"),
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ])
            .env("AWS_CA_BUNDLE", &bundle)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(&format!("AWS_CA_BUNDLE={}", bundle.display()))
                && text.contains(expected),
            "{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}
