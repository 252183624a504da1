//! The real `region-canary` binary against a region of the emulator (the
//! fleet region with `geoprov setup canary`), its AWS requests signed with a
//! key of its own: one run with CANARY_ENDPOINT (every step, the cleanup
//! included), one without (IoT's DescribeEndpoint names a host this machine
//! cannot resolve, so that run fails at resolve).

use crate::canary::CanaryRegion;

/// A region no other sample uses: the canary's SSM path and things are per
/// region.
const REGION: &str = "us-west-2";

pub async fn run(function_key: &str) {
    let region = CanaryRegion::start(REGION);

    let mut env = region.environment(20_000, true);
    env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
    let function = region.function(&env);
    let report = function.run();
    assert_eq!(report["success"], true, "{report:#}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 7, "{report:#}");

    let mut env = region.environment(3_000, false);
    env.insert("AWS_ACCESS_KEY_ID".into(), function_key.into());
    let function = region.function(&env);
    let report = function.run();
    // What this checks is that the endpoint came from DescribeEndpoint and
    // the probe went on to it; where it fails (resolve here, connect on a
    // machine with DNS) depends on the machine.
    assert_eq!(report["success"], false, "{report:#}");
    assert_ne!(report["failedStep"], "setup", "{report:#}");
    assert_eq!(report["steps"][0]["step"], "resolve", "{report:#}");
}
