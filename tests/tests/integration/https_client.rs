//! The one HTTP/TLS client every geoprov SDK client uses
//! (`geoprov_shared::aws`), over real TLS on 127.0.0.1: a server with a CA
//! made here is trusted through the bundle and only through it, and a bad
//! `AWS_CA_BUNDLE` stops a real function's cold start with a clear error.

use geoprov_shared::aws;
use geoprov_tests::emulator::WorkDir;
use geoprov_tests::tls::{list_tables, tls_endpoint};
use geoprov_tests::workspace_binary;

#[tokio::test]
async fn the_bundle_is_trusted_and_nothing_else_is() {
    let endpoint = tls_endpoint("localhost", "geoprov-over-tls").await;
    let url = format!("https://localhost:{}", endpoint.addr.port());
    let dir = WorkDir::new("https-client");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &endpoint.ca_pem).unwrap();

    let tables = list_tables(aws::trust_store(Some(&bundle)).unwrap(), &url)
        .await
        .unwrap();
    assert_eq!(tables, ["geoprov-over-tls"]);

    // The Amazon roots alone, as a function has without AWS_CA_BUNDLE: the
    // local CA is not trusted.
    let refused = list_tables(aws::trust_store(None).unwrap(), &url)
        .await
        .unwrap_err();
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("invalid peer certificate"),
        "{refused}"
    );
}

#[test]
fn a_bad_bundle_stops_a_functions_cold_start_with_a_clear_error() {
    let dir = WorkDir::new("https-client-bad-bundle");
    let not_pem = dir.path().join("not-a-bundle.pem");
    std::fs::write(&not_pem, "this is no certificate\n").unwrap();
    for (bundle, expected) in [
        (dir.path().join("missing.pem"), "cannot be read"),
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
