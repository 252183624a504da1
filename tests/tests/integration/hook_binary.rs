//! The real `pre-provisioning-hook` binary with every sample event
//! (`geoprov_tests::samples::hook`).

#[tokio::test]
async fn every_sample_event_gets_its_expected_answer() {
    geoprov_tests::samples::hook::run("testing").await;
}
