//! `make demo`: geoprov's whole control plane on this machine, two regions,
//! on the harness the tests use.
//!
//! moto plays AWS (us-east-1, eu-west-1, and eu-central-1 for the CA) on
//! 127.0.0.1; the four functions run as Lambda runs them, each behind
//! cargo-lambda's Runtime API emulator ([`crate::lambda`]), configured
//! through their environment as template.yaml configures them; one
//! geoprov-iot-emu per region ([`crate::emulator`]) plays IoT's data plane
//! (MQTT with mutual TLS, the fleet provisioning API, JITR through the
//! stack's topic rule), in front of the regional stack's IoT resources made
//! in moto by `local_iot_stack.py`. Devices are `geoprov device`. The
//! scenario, a file a phase:
//!
//! 1. stand up ([`standup`]): a geoprov table per region, a hosted zone,
//!    each region's health alarm and the Route 53 health check on it, the
//!    failover's configuration in S3 (`geoprov failover config put`), a
//!    local root CA, the claim, the functions, the emulators and the
//!    canaries, and the failover's first reconcile building the record
//!    tree; a factory manifest imported with `geoprov registry import`;
//! 2. provision ([`provisioning`]): each device resolves the global name by
//!    its location with `geoprov dns resolve`, connects to the emulator of
//!    the region it resolved to with the claim, provisions over MQTT (half
//!    with keys made by IoT, half with CSRs of their factory keys; IoT calls
//!    the region's hook), then connects with its new certificate; an
//!    attacker with the claim key tries to provision as others;
//! 3. JITR ([`jitr`]): devices send CSRs of their own keys to the cert
//!    issuer; every certificate is verified against the CA; the CA is
//!    registered in both regions (`geoprov setup ca`) and some devices
//!    connect with those certificates (dropped once, activated by
//!    device-activation, then connected);
//!    then `geoprov identity coverage` ([`coverage`]) finds every device a
//!    usable identity wherever DNS may send it, and names the gap made on
//!    purpose when the CA is set INACTIVE in us-east-1;
//! 4. outage ([`outage`], minute by minute in [`health`]): us-east-1 goes
//!    down, and Route 53's API with it; the canaries' windows turn its
//!    health check unhealthy after M of N minutes; North America resolves
//!    to eu-west-1 through health alone, and a new wave of North American
//!    devices provisions there; when the API is back, the failover takes
//!    us-east-1 out of the chains;
//! 5. recovery ([`outage`]): us-east-1 serves again; healthy after N-M+1
//!    good minutes; the failover holds it out for the failback interval,
//!    then puts it back;
//! 6. drain ([`drain`]): an operator drains eu-west-1, then undrains it.
//!
//! Every decision is checked against what the manifest says it must be, and
//! the summary ([`summary`]) counts things per region as moto's IoT holds
//! them. Prints a summary table, writes a JSON report ([`report`]); the
//! report's failures are every expectation not met.
//!
//! The harness finds the workspace's binaries next to the running
//! executable's profile directory ([`crate::workspace_binary`]), and the moto
//! server by the calling thread's name ([`crate::moto`]): run [`run`] on a
//! thread named `<something>::<something>` (a test's thread is), from an
//! executable in `target/<profile>/deps` (a test's is; the `geoprov-demo`
//! binary puts itself there).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cli::Geoprov;
use crate::emulator::{Emulator, GLOBAL_NAME, WorkDir, invoke_url};
use crate::issuer::LocalCa;
use crate::lambda::{FunctionProcess, RuntimeEmulator};
use crate::{workspace_binary, workspace_root};

pub mod coverage;
pub mod dns;
pub mod drain;
pub mod health;
pub mod jitr;
pub mod manifest;
pub mod outage;
pub mod provisioning;
pub mod report;
pub mod standup;
pub mod summary;

pub use manifest::{Device, expected_reason, manifest};
pub use report::Report;

pub const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
pub const PCA_REGION: &str = crate::issuer::PCA_REGION;
pub const ZONE: &str = "example.com";
/// The global name (`global.iot.example.com`).
pub const RECORD: &str = GLOBAL_NAME;
pub const TABLE: &str = "geoprov";
pub const NA_COUNTRIES: [&str; 3] = ["US", "CA", "MX"];
pub const EU_COUNTRIES: [&str; 4] = ["DE", "FR", "IE", "ES"];
/// Where the eu-pinned devices are: a location of its own whose only region
/// is eu-west-1 (residency), so DNS never sends them where the registry
/// refuses them.
pub const RESIDENCY_COUNTRY: &str = "CH";
pub const RESIDENCY_LOCATION: &str = "Switzerland IoT Global Endpoint";
/// The functions' names in the emulators' configuration (template.yaml's
/// logical ids, as local_iot_stack.py names functions).
pub const HOOK_FUNCTION: &str = "PreProvisioningHookFunction";
pub const ACTIVATION_FUNCTION: &str = "DeviceActivationFunction";
pub const ISSUER_FUNCTION: &str = "CertIssuerFunction";
/// The template's default HealthAlarmWindow, 2-of-5: the alarm's threshold
/// on the canary's failures (M)...
pub const ALARM_THRESHOLD: u32 = 2;
/// ...and the canary's window (N).
pub const CANARY_WINDOW: u32 = 5;
pub const FAILBACK_SECONDS: u64 = 3;
/// The provisioning client id is this prefix and the serial (the hook's default).
pub const PROVISIONING_PREFIX: &str = "prov-";
/// Devices provisioning at once.
pub const WORKERS: usize = 4;

/// Each region's IoT endpoint, as the failover's configuration names it.
pub fn endpoint(region: &str) -> String {
    format!("demo-ats.iot.{region}.amazonaws.com")
}

/// `GEOPROV_DEMO_DIR` when set (a test running the demo or the game day
/// beside another gives each its own), else the workspace's `target`.
pub fn target() -> PathBuf {
    std::env::var_os(DEMO_DIR_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where the demo and the game day keep their files, when set.
pub const DEMO_DIR_VARIABLE: &str = "GEOPROV_DEMO_DIR";

pub fn devices_dir() -> PathBuf {
    target().join("demo-devices")
}

pub fn claim_dir() -> PathBuf {
    target().join("demo-claim")
}

/// What the demo takes (but `--profile`: the binary chooses the build).
#[derive(Debug, Clone)]
pub struct Args {
    /// `--devices`: the manifest's size.
    pub devices: usize,
    /// `--jitr`: CSRs to the cert issuer.
    pub jitr: usize,
    /// `--jitr-connect`: how many JITR devices connect with their issued
    /// certificates.
    pub jitr_connect: usize,
    /// `--report`: where the JSON report goes.
    pub report: PathBuf,
    /// `--seed`: the manifest's countries.
    pub seed: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            devices: 200,
            jitr: 50,
            jitr_connect: 5,
            report: target().join("demo-report.json"),
            seed: 7,
        }
    }
}

/// A process's environment.
pub type Env = BTreeMap<String, String>;

/// `env` and `extra`.
pub fn with(env: &Env, extra: &[(&str, &str)]) -> Env {
    let mut env = env.clone();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// The whole scenario: stands everything up, runs every phase, stops every
/// process, prints the summary and writes the report, which it returns (its
/// `failures` empty when every expectation was met).
pub fn run(args: &Args) -> Report {
    let moto = &crate::moto().endpoint;
    let functions = workspace_binary("geoprov");
    let functions = functions.parent().expect("the binaries' directory");
    println!(
        "moto on {moto}; functions from {}",
        functions
            .strip_prefix(workspace_root())
            .unwrap_or(functions)
            .display()
    );
    let mut demo = Demo::stand_up(args.clone(), moto);
    let devices = manifest(args.devices, args.seed);
    demo.import_manifest(&devices);
    let first: Vec<&Device> = devices.iter().filter(|d| d.kind != "na-late").collect();
    let late: Vec<&Device> = devices.iter().filter(|d| d.kind == "na-late").collect();

    println!("\n2. provisioning, each device in the region its location resolves to");
    demo.provision(&first, "wave 1");
    demo.attacker(&first);
    println!("\n3. JITR: CSRs to the cert issuer");
    let allowed: Vec<&Device> = first
        .iter()
        .copied()
        .filter(|d| demo.report.devices[&d.serial].reason == "ALLOWED")
        .collect();
    demo.jitr(&allowed);
    demo.identity_coverage();
    demo.outage(&late);
    demo.recovery();
    demo.drain();
    demo.count_things();
    let (report, failures) = demo.stop();
    summary::summary(report, failures, &args.report)
}

/// The scenario's state: what it has found, AWS's clients, and the
/// processes it runs.
pub struct Demo {
    pub args: Args,
    pub failures: Vec<String>,
    pub report: Report,
    pub rt: tokio::runtime::Runtime,
    pub aws: standup::Aws,
    /// Each region's environment for `geoprov` (moto, the region, the table).
    pub env: BTreeMap<&'static str, Env>,
    pub plane: standup::Plane,
    pub devices: provisioning::DeviceCli,
    pub clock: health::Clock,
    pub stack: standup::Stack,
}

impl Demo {
    /// Records a failed expectation.
    pub fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// `geoprov` with `region`'s environment.
    pub fn geoprov(&self, region: &str) -> Geoprov {
        Geoprov::new(self.env[region].clone())
    }

    /// Stops every process (their logs in target/demo-*.log) and gives back
    /// the report and the failures.
    pub fn stop(self) -> (Report, Vec<String>) {
        let Demo {
            report,
            failures,
            stack,
            ..
        } = self;
        drop(stack);
        (report, failures)
    }
}

/// A function binary behind a Runtime API emulator of its own; its log in
/// target/demo-<name>.log when stopped.
pub struct Function {
    processes: Vec<FunctionProcess>,
    runtime: RuntimeEmulator,
    log: PathBuf,
}

impl Function {
    pub fn start(binary: &str, env: &Env, log_name: &str) -> Self {
        Self::start_environments(binary, env, log_name, 1)
    }

    /// `environments` execution environments of the function, as Lambda
    /// runs concurrent invocations: processes polling the same Runtime API.
    pub fn start_environments(
        binary: &str,
        env: &Env,
        log_name: &str,
        environments: usize,
    ) -> Self {
        let runtime = RuntimeEmulator::start();
        let processes = (0..environments.max(1))
            .map(|_| runtime.run_function(&workspace_binary(binary), env))
            .collect();
        Function {
            processes,
            runtime,
            log: target().join(format!("demo-{log_name}.log")),
        }
    }

    pub fn invoke(&self, payload: &Value) -> Value {
        self.runtime.invoke(payload)
    }

    /// Its Invoke API URL.
    pub fn url(&self) -> String {
        invoke_url(&self.runtime)
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let output: String = self.processes.iter().map(FunctionProcess::output).collect();
        let _ = std::fs::write(&self.log, output);
    }
}

/// A region's geoprov-iot-emu, its server CA in a file devices are given;
/// its log in target/demo-emulator-<region>.log when stopped.
pub struct RegionEmulator {
    pub emulator: Emulator,
    pub ca_file: PathBuf,
    log: PathBuf,
    // Last: the emulator's files are in it.
    _dir: WorkDir,
}

impl Drop for RegionEmulator {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.log, self.emulator.log());
    }
}

/// The local root CA and the claim, both regions'.
pub struct Pki {
    pub ca: LocalCa,
    /// The CA's IoT id (the SHA-256 of its DER).
    pub ca_id: String,
    pub claim_id: String,
}

/// A one-line progress bar on stderr.
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Self {
        Progress {
            label: label.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    pub fn step(&mut self) {
        self.done += 1;
        let width = 30;
        let filled = width * self.done / self.total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r  {:<28} [{}{}] {}/{}",
            self.label,
            "#".repeat(filled),
            ".".repeat(width.saturating_sub(filled)),
            self.done,
            self.total
        );
        if self.done == self.total {
            let _ = writeln!(err, "  {:.1} s", self.started.elapsed().as_secs_f64());
        }
        let _ = err.flush();
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `secs` as RFC 3339 in UTC, whole seconds (`2026-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    geoprov_shared::clock::format_rfc3339(
        time::OffsetDateTime::from_unix_timestamp(secs).expect("a time"),
    )
}

/// Whole seconds since the epoch.
pub fn unix_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    i64::try_from(secs).expect("a time")
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(unix_secs())
}

/// `x` rounded to `digits` decimals, as Python's `round`.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10_f64.powi(digits);
    (x * scale).round() / scale
}
