//! The real `device-activation` binary with every sample event
//! (`geoprov_tests::samples::activation`), and a cold start that fails on a
//! bad configuration.

use geoprov_tests::lambda::RuntimeEmulator;
use geoprov_tests::{aws_env, moto, workspace_binary};

#[tokio::test]
async fn every_sample_event_gets_its_expected_answer() {
    geoprov_tests::samples::activation::run("testing").await;
}

#[tokio::test]
async fn a_bad_configuration_stops_the_cold_start_naming_the_variable() {
    let mut env = aws_env(&moto().endpoint, "eu-west-1");
    env.insert("TABLE_NAME".into(), "unused".into());
    env.insert("THING_TYPE_NAME".into(), "geoprov-device".into());
    env.insert("DEVICE_POLICY_NAME".into(), "no spaces allowed".into());
    let emulator = RuntimeEmulator::start();
    let mut function = emulator.run_function(&workspace_binary("device-activation"), &env);
    let status = function.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        function.output().contains("DEVICE_POLICY_NAME"),
        "{}",
        function.output()
    );
}
