//! For the tests of the shared HTTP client (`geoprov_shared::aws`): a local
//! HTTPS endpoint (TLS from a CA made at run time, with a certificate for
//! the name a test gives) answering every request with one DynamoDB
//! ListTables answer, the pieces of it a test's own server reuses, and the
//! ListTables call through the shared client.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_config::Region;
use aws_sdk_dynamodb::config::Credentials;
use geoprov_shared::aws;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Whether `seen` holds a whole HTTP/1.1 request: its head, and as many body
/// bytes as its Content-Length says (for the tests' one-shot servers, which
/// must read it all before they answer and close).
fn whole_http_request(seen: &[u8]) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    seen.len() >= end + 4 + length
}

/// Reads one whole HTTP/1.1 request from `stream`: the head, then the body
/// by its Content-Length (a one-shot server that closes with unread bytes
/// resets the connection under its answer). None if the client closes first.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !whole_http_request(&seen) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

/// A DynamoDB ListTables answer holding the one table `table`, closing the
/// connection.
pub fn list_tables_answer(table: &str) -> String {
    let body = format!(r#"{{"TableNames":["{table}"]}}"#);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// ListTables at `endpoint` through the shared client with `trust`, no
/// retries: the table names, or the error as the SDK displays it.
pub async fn list_tables(trust: aws::CheckedTrust, endpoint: &str) -> Result<Vec<String>, String> {
    let sdk = aws::loader(aws::http_client(trust).unwrap())
        .region(Region::new("eu-west-1"))
        .endpoint_url(endpoint)
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

/// A running endpoint: its loopback address, and its CA's PEM.
pub struct TlsEndpoint {
    pub addr: SocketAddr,
    pub ca_pem: String,
}

/// Starts an endpoint whose certificate names `server_name` and whose
/// ListTables answer holds the one table `table`.
pub async fn tls_endpoint(server_name: &str, table: &str) -> TlsEndpoint {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![server_name.to_owned()])
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
    let answer = list_tables_answer(table);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if read_request(&mut tls).await.is_some() {
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    TlsEndpoint {
        addr,
        ca_pem: ca_cert.pem(),
    }
}
