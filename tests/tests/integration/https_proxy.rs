//! The shared HTTP client (`geoprov_shared::aws`) keeps the SDK's default
//! client's proxy support from the environment (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`): plain HTTP is forwarded in absolute form, and
//! HTTPS goes through a CONNECT tunnel, with TLS end to end to the endpoint.
//! The test runs in a child process of its own (`geoprov_tests::child`),
//! started with the proxy variables set.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use geoprov_shared::aws;
use geoprov_tests::child;
use geoprov_tests::emulator::WorkDir;
use geoprov_tests::tls::{list_tables, list_tables_answer, read_request, tls_endpoint};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The name of the HTTPS endpoint: it does not resolve, so only a tunnel
/// can reach it.
const TUNNELED: &str = "dynamodb.geoprov.invalid";

/// A forward proxy on 127.0.0.1. A request in absolute form it answers
/// itself; a CONNECT to `TUNNELED:443` it tunnels to `tls`, the real
/// endpoint; any other CONNECT it refuses. Every request line it reads is
/// recorded.
async fn proxy(port: u16, tls: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, tls, record.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut conn: TcpStream, tls: SocketAddr, seen: Arc<Mutex<Vec<String>>>) {
    // A CONNECT has no body, and the client sends nothing more until it has
    // the answer.
    let Some(request) = read_request(&mut conn).await else {
        return;
    };
    let line = String::from_utf8_lossy(&request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    seen.lock().unwrap().push(line.clone());
    if let Some(authority) = line.strip_prefix("CONNECT ") {
        if authority.split_whitespace().next() != Some(&format!("{TUNNELED}:443")) {
            let _ = conn
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(tls).await else {
            return;
        };
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        }
        return;
    }
    let answer = list_tables_answer("geoprov-through-proxy");
    let _ = conn.write_all(answer.as_bytes()).await;
}

#[tokio::test]
async fn calls_go_through_the_proxies_the_environment_names() {
    let port = geoprov_tests::free_port();
    let proxy_url = format!("http://127.0.0.1:{port}");
    let env: [(&str, &OsStr); 2] = [
        ("HTTP_PROXY", proxy_url.as_ref()),
        ("HTTPS_PROXY", proxy_url.as_ref()),
    ];
    if !child::alone(
        module_path!(),
        "calls_go_through_the_proxies_the_environment_names",
        &env,
    ) {
        return;
    }
    // In the child: the proxy variables are set, and no other is.
    for name in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
        assert!(std::env::var_os(name).is_none(), "{name} is set");
    }
    let port: u16 = std::env::var("HTTP_PROXY").unwrap()["http://127.0.0.1:".len()..]
        .parse()
        .unwrap();
    let endpoint = tls_endpoint(TUNNELED, "geoprov-through-tunnel").await;
    let (_proxy, seen) = proxy(port, endpoint.addr).await;
    let dir = WorkDir::new("https-proxy");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &endpoint.ca_pem).unwrap();

    // Plain HTTP: forwarded in absolute form; the proxy answers.
    let tables = list_tables(
        aws::trust_store(None).unwrap(),
        "http://dynamodb.geoprov.invalid",
    )
    .await
    .unwrap();
    assert_eq!(tables, ["geoprov-through-proxy"]);

    // HTTPS: a CONNECT tunnel, and the endpoint's own answer through it,
    // over TLS the client checked against the bundle for the endpoint's name.
    let tables = list_tables(
        aws::trust_store(Some(&bundle)).unwrap(),
        &format!("https://{TUNNELED}"),
    )
    .await
    .unwrap();
    assert_eq!(tables, ["geoprov-through-tunnel"]);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("POST http://dynamodb.geoprov.invalid"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with(&format!("CONNECT {TUNNELED}:443 ")),
        "{seen:?}"
    );
}
