//! The real `cert-issuer` binary with every sample event
//! (`geoprov_tests::samples::issuer`), and a cold start that fails on a bad
//! configuration.

use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, moto, workspace_binary};

#[tokio::test]
async fn every_sample_event_gets_its_expected_answer() {
    geoprov_tests::samples::issuer::run("testing").await;
}

#[tokio::test]
async fn a_bad_configuration_stops_the_cold_start_naming_the_variable() {
    let mut env = aws_env(&moto().endpoint, "eu-west-1");
    env.insert("TABLE_NAME".into(), "unused".into());
    env.insert(
        "PCA_ARN".into(),
        "arn:aws:acm:eu-west-1:123456789012:certificate/abc".into(),
    );
    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("cert-issuer"), &env);
    let status = function.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        function.output().contains("PCA_ARN"),
        "{}",
        function.output()
    );
}
