//! The shared HTTP client (`geoprov_shared::aws`) keeps the SDK's default
//! client's proxy support: `HTTP_PROXY` (and `HTTPS_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`) from the environment. One test in a binary of its own, as it
//! sets the process environment.

use aws_config::Region;
use aws_sdk_dynamodb::config::Credentials;
use geoprov_shared::aws;
use geoprov_tests::whole_http_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_call_goes_through_the_proxy_the_environment_names() {
    // A forward proxy that answers itself, and records the request line.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = proxy.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        let (mut conn, _) = proxy.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then the body by its Content-Length: closing with
        // unread bytes would reset the connection under the answer.
        while !whole_http_request(&request) {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before a whole request");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"TableNames":["geoprov-through-proxy"]}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&request)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    });

    // The only test of this binary: nothing else reads the environment.
    std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{port}"));
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    // A name that does not resolve: only the proxy can reach it.
    let sdk = aws::loader(aws::http_client(aws::trust_store(None).unwrap()).unwrap())
        .region(Region::new("eu-west-1"))
        .endpoint_url("http://dynamodb.geoprov.invalid")
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let tables = aws_sdk_dynamodb::Client::new(&sdk)
        .list_tables()
        .send()
        .await
        .map_err(aws_sdk_dynamodb::error::DisplayErrorContext)
        .unwrap();
    assert_eq!(tables.table_names(), ["geoprov-through-proxy"]);
    let request_line = seen.await.unwrap();
    assert!(
        request_line.starts_with("POST http://dynamodb.geoprov.invalid"),
        "{request_line}"
    );
}
