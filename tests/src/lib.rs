//! Test harness for geoprov: a moto server on a free loopback port (one per
//! test module, tables named uniquely per test), SDK clients pointed at it,
//! and the paths of the workspace's binaries.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use geoprov_shared::registry::DynamoRegistry;
use geoprov_shared::table;

pub mod canary;
pub mod certs;
pub mod child;
pub mod cli;
pub mod demo;
pub mod emulator;
pub mod failover;
pub mod gameday;
pub mod iam;
pub mod issuer;
pub mod lambda;
pub mod samples;
pub mod tls;

/// The region the tests' clients use unless a test says otherwise.
pub const TEST_REGION: &str = "eu-west-1";

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The Python that has moto and cargo-lambda: `GEOPROV_PYTHON`, else the
/// workspace's `.venv` (made by `make venv`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GEOPROV_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with moto: run `make venv` (or set GEOPROV_PYTHON)"
    );
    venv
}

/// Set (to a file path) before the first `moto()` of a test binary, it has
/// moto record every request it serves to that file, one JSON object a line.
pub const RECORDING_VARIABLE: &str = "GEOPROV_MOTO_RECORDING";

/// The moto server of the calling test's module, started on first use: a
/// module's tests share moto's state (IoT's registry, Route 53's zones, the
/// alarms), and no two modules do, as when each module was a test binary of
/// its own. The module is read from the name libtest gives the test's
/// thread (`<module>::<test>`), where a test's body runs; a call from any
/// other thread (a task on a runtime's worker) gets the binary's shared
/// server, and says so on stderr. Each server stops when the test binary
/// exits (the launcher watches its parent).
pub fn moto() -> &'static Moto {
    static MOTOS: Mutex<BTreeMap<String, &'static Moto>> = Mutex::new(BTreeMap::new());
    let thread = std::thread::current();
    let module = match thread.name().and_then(|name| name.split_once("::")) {
        Some((module, _)) => module.to_owned(),
        None => {
            eprintln!(
                "moto() from thread {:?}, not a test's: the binary's shared moto",
                thread.name()
            );
            String::new()
        }
    };
    let mut motos = MOTOS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    motos.entry(module).or_insert_with(|| {
        // A test that audits what the functions ask of AWS has moto record
        // every request to this file (moto's own recorder).
        let recording = std::env::var_os(RECORDING_VARIABLE);
        Box::leak(Box::new(launch_moto(recording.as_deref().map(Path::new))))
    })
}

/// A new moto server on a free loopback port, recording every request it
/// serves to `recording` when given. Most tests share `moto()`.
pub fn launch_moto(recording: Option<&Path>) -> Moto {
    let mut launcher = Command::new(python());
    if let Some(path) = recording {
        launcher
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", path);
    }
    let mut child = launcher
        .arg(workspace_root().join("tests/support/moto_launcher.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto launcher");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("launcher stdout"))
        .read_line(&mut line)
        .expect("read moto port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("moto launcher printed {line:?}, not a port"));
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _child: child,
    }
}

/// Environment for a process that must reach moto and nothing else: dummy
/// credentials, the region, no instance metadata.
pub fn aws_env(endpoint: &str, region: &str) -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", region),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// SDK configuration for in-process clients: the same values the functions
/// get from their environment, given explicitly so tests do not mutate the
/// process environment.
pub async fn sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    let http = geoprov_shared::aws::process_http_client().expect("the HTTP client builds");
    geoprov_shared::aws::loader(http)
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "geoprov-tests",
        ))
        .load()
        .await
}

/// A table name no other test of this run uses.
pub fn unique_table(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh geoprov table in moto and a registry over it.
pub async fn fresh_registry(prefix: &str) -> DynamoRegistry {
    let config = sdk_config(&moto().endpoint, TEST_REGION).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = unique_table(prefix);
    table::create_table(&client, &name)
        .await
        .expect("create table in moto");
    DynamoRegistry::new(client, name)
}

/// The decisions and reasons of a device's audit events, oldest first.
pub async fn audit_decisions(
    registry: &DynamoRegistry,
    serial: &str,
) -> Vec<(geoprov_shared::audit::Decision, String)> {
    registry
        .audit_events(&geoprov_shared::device::SerialNumber::try_from(serial).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.decision, e.reason))
        .collect()
}

/// The build whose binaries the harness runs, when a program of this crate
/// chooses one (`geoprov-demo --profile`); set once, before the first
/// `workspace_binary`.
static PROFILE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs the binaries of `target/<profile>` (e.g. `release`) rather than
/// those of the build this program is part of. False if a choice was made.
pub fn use_profile(profile: &str) -> bool {
    PROFILE_DIR
        .set(workspace_root().join("target").join(profile))
        .is_ok()
}

/// A scenario binary's arguments as (flag, value) pairs, each given as
/// `--flag value` or `--flag=value`; `-h` or `--help` prints `usage` and
/// exits.
pub fn scenario_flags(
    raw: impl Iterator<Item = std::ffi::OsString>,
    usage: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut raw = raw.map(|a| a.into_string().map_err(|a| format!("not UTF-8: {a:?}")));
    let mut flags = Vec::new();
    while let Some(arg) = raw.next() {
        let arg = arg?;
        if arg == "-h" || arg == "--help" {
            println!("{usage}");
            std::process::exit(0);
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), value.to_owned()),
            None => {
                let value = raw.next().ok_or_else(|| format!("{arg} needs a value"))??;
                (arg, value)
            }
        };
        flags.push((flag, value));
    }
    Ok(flags)
}

/// A scenario binary's run (`geoprov-demo`, `geoprov-gameday`): the
/// functions, CLI and emulator of `target/<profile>`, and `scenario` on a
/// thread named `<name>::scenario` (the harness's `moto()` is the calling
/// thread's module's, by its name: one server for the whole scenario).
/// Exit 2 when that build has no `geoprov`; 1 when `scenario` says it
/// failed or panicked.
pub fn run_scenario(
    name: &str,
    profile: &str,
    scenario: impl FnOnce() -> bool + Send + 'static,
) -> std::process::ExitCode {
    let built = workspace_root()
        .join("target")
        .join(profile)
        .join("geoprov");
    if !built.exists() {
        let flag = if profile == "release" {
            " --release"
        } else {
            ""
        };
        eprintln!("target/{profile} has no geoprov: run `cargo build --workspace{flag}` first");
        return std::process::ExitCode::from(2);
    }
    use_profile(profile);
    let thread = std::thread::Builder::new()
        .name(format!("{name}::scenario"))
        .spawn(scenario)
        .expect("the scenario's thread starts");
    match thread.join() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}

/// The workspace binary `name` of the chosen build (`use_profile`), else of
/// the build this program is part of: a test binary sits in
/// `target/<profile>/deps`, a binary of this crate in `target/<profile>`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let profile_dir = PROFILE_DIR.get().cloned().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("this program's path");
        let dir = exe.parent().expect("this program's directory");
        if dir.file_name().is_some_and(|d| d == "deps") {
            dir.parent().expect("target/<profile>").to_path_buf()
        } else {
            dir.to_path_buf()
        }
    });
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (make test does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// The facts of both stacks' templates, the regional `template.yaml` and the
/// global `global.yaml`, that the tests hold the code to (each function's IAM
/// actions and environment, the provisioning template bodies, the health
/// checks' and alarms' logical ids, the policy statements' resources under
/// every combination of conditions), as `scripts/template_facts.py` reads and
/// merges them.
pub fn template_facts() -> serde_json::Value {
    let out = Command::new(python())
        .arg(workspace_root().join("scripts/template_facts.py"))
        .arg(workspace_root().join("template.yaml"))
        .arg(workspace_root().join("global.yaml"))
        .output()
        .expect("run scripts/template_facts.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("template facts are JSON")
}
