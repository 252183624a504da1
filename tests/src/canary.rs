//! The region canary against a region of the emulator: the fleet region
//! (claim, stack, table, hook, emulator), `geoprov setup canary` as an
//! operator runs it, and the real `region-canary` binary under a Runtime API
//! emulator of its own.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::emulator::{FleetRegion, GLOBAL_NAME, geoprov};
use crate::lambda::{FunctionProcess, RuntimeEmulator};
use crate::{aws_env, moto, workspace_binary};

/// A region with the canary set up.
pub struct CanaryRegion {
    pub fleet: FleetRegion,
    /// What `geoprov setup canary` printed for the region.
    pub setup: Value,
}

impl CanaryRegion {
    /// A fleet region with an empty manifest, and the canary set up in it
    /// with the claim (so that it can provision).
    pub fn start(region: &str) -> Self {
        let fleet = FleetRegion::start(region, &[]);
        let ca_file = fleet.dir.path().join("server-ca.pem");
        std::fs::write(&ca_file, &fleet.emulator.server_ca_pem).unwrap();
        let setup = geoprov(region, &fleet.table, &fleet.table_endpoint).ok(&[
            "setup",
            "canary",
            "--regions",
            region,
            "--server-ca-file",
            ca_file.to_str().unwrap(),
            "--claim-dir",
            fleet.dir.path().to_str().unwrap(),
        ]);
        CanaryRegion { fleet, setup }
    }

    /// The function's environment as the template sets it, against this
    /// region's emulator, with `budget_ms`; `endpoint` false leaves
    /// CANARY_ENDPOINT unset (IoT's DescribeEndpoint names it).
    pub fn environment(&self, budget_ms: u64, endpoint: bool) -> BTreeMap<String, String> {
        let region = &self.fleet.region;
        let mut env = aws_env(&moto().endpoint, region);
        for (k, v) in [
            ("CANARY_SERVER_NAME", GLOBAL_NAME.to_owned()),
            (
                "CANARY_PARAMETER_PATH",
                geoprov_canary::parameter_path(region),
            ),
            ("CANARY_BUDGET_MS", budget_ms.to_string()),
            ("CANARY_PROVISIONING", "true".into()),
            ("CANARY_TEMPLATE_NAME", "geoprov-fleet".into()),
            ("CANARY_SERIAL", geoprov_canary::provisioning_serial(region)),
            ("PROVISIONING_CLIENT_ID_PREFIX", "prov-".into()),
            // The window is kept in the region's table.
            ("TABLE_NAME", self.fleet.table.clone()),
            (
                "AWS_ENDPOINT_URL_DYNAMODB",
                self.fleet.table_endpoint.clone(),
            ),
        ] {
            env.insert(k.into(), v);
        }
        if endpoint {
            env.insert(
                "CANARY_ENDPOINT".into(),
                self.fleet.emulator.mqtt.to_string(),
            );
        }
        env
    }

    /// The real binary with `env`, behind a Runtime API emulator of its own.
    pub fn function(&self, env: &BTreeMap<String, String>) -> CanaryFunction {
        let runtime = RuntimeEmulator::start();
        let process = runtime.run_function(&workspace_binary("region-canary"), env);
        CanaryFunction { runtime, process }
    }
}

/// The canary function, running.
pub struct CanaryFunction {
    pub runtime: RuntimeEmulator,
    pub process: FunctionProcess,
}

impl CanaryFunction {
    /// One scheduled run: its report.
    pub fn run(&self) -> Value {
        self.runtime.invoke(&scheduled_event())
    }

    /// One scheduled run for the epoch minute `minute`, as EventBridge
    /// sends it for that minute.
    pub fn run_at(&self, minute: i64) -> Value {
        self.runtime.invoke(&scheduled_event_at(minute))
    }

    /// The EMF lines the function has printed.
    pub fn metric_lines(&self) -> Vec<Value> {
        self.process
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }
}

/// The scheduled event for the epoch minute `minute`.
pub fn scheduled_event_at(minute: i64) -> Value {
    let mut event = scheduled_event();
    let at = time::OffsetDateTime::from_unix_timestamp(minute * 60).expect("a minute");
    event["time"] = Value::from(
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339"),
    );
    event
}

/// EventBridge's scheduled event, as the Schedule event source sends it
/// (`events/region-canary/schedule.json`).
pub fn scheduled_event() -> Value {
    let path = crate::workspace_root().join("events/region-canary/schedule.json");
    serde_json::from_slice(&std::fs::read(path).expect("the sample event")).expect("JSON")
}
