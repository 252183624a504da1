//! The IoT side for tests: the regional stack's IoT resources made in moto
//! by `scripts/local_iot_stack.py` from `template.yaml`, and one
//! `geoprov-iot-emu` process per region in front of moto's IoT.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aws_sdk_iot::Client as IotClient;
use serde_json::Value;
use sha2::{Digest, Sha256};

use geoprov_device::provision::{ProvisionError, ProvisionRequest, Provisioned, provision};
use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::DynamoRegistry;

use crate::cli::Geoprov;
use crate::lambda::{FunctionProcess, RuntimeEmulator};
use crate::{aws_env, moto, python, sdk_config, unique_table, workspace_binary, workspace_root};

/// The global name devices give as SNI.
pub const GLOBAL_NAME: &str = "global.iot.example.com";

/// A directory of its own for one test's files, under the system's temp
/// directory; removed when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(unique_table(label));
        std::fs::create_dir_all(&path).expect("work directory");
        WorkDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the regional stack's IoT resources in `region` of moto with
/// `parameters`, writes the emulator's configuration to `config`, and
/// returns what was made.
pub fn iot_stack(region: &str, parameters: &[(&str, &str)], config: &Path) -> Value {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("scripts/local_iot_stack.py"))
        .args(["--endpoint", &moto().endpoint, "--region", region, "--out"])
        .arg(config)
        .envs(aws_env(&moto().endpoint, region));
    for (name, value) in parameters {
        command.arg("--parameter").arg(format!("{name}={value}"));
    }
    let out = command.output().expect("run local_iot_stack.py");
    assert!(
        out.status.success(),
        "local_iot_stack.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("local_iot_stack.py prints JSON")
}

/// The claim certificate and key as `geoprov setup claim` made them.
#[derive(Clone)]
pub struct Claim {
    pub identity: geoprov_device::Identity,
    pub certificate_id: String,
}

/// `geoprov setup claim` for `regions`, its files in `dir`.
pub fn setup_claim(regions: &[&str], dir: &Path) -> Claim {
    let env = aws_env(&moto().endpoint, regions[0]);
    crate::cli::Geoprov::new(env).ok(&[
        "setup",
        "claim",
        "--regions",
        &regions.join(","),
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    let certificate_pem = std::fs::read_to_string(dir.join("claim.pem")).unwrap();
    let private_key_pem = std::fs::read_to_string(dir.join("claim.key")).unwrap();
    let certificate_id = certificate_id(&certificate_pem);
    Claim {
        identity: geoprov_device::Identity {
            certificate_pem,
            private_key_pem,
        },
        certificate_id,
    }
}

/// Registers the fleet CA in `iot`'s region as `geoprov setup ca` does
/// (SNI_ONLY, ACTIVE, auto-registration on, no template); its id.
pub async fn register_fleet_ca(iot: &IotClient, ca_pem: &str) -> String {
    iot.register_ca_certificate()
        .ca_certificate(ca_pem)
        .set_as_active(true)
        .allow_auto_registration(true)
        .certificate_mode(aws_sdk_iot::types::CertificateMode::SniOnly)
        .send()
        .await
        .expect("RegisterCACertificate")
        .certificate_id()
        .expect("a CA certificate id")
        .to_owned()
}

/// IoT's certificate id: the SHA-256 of the DER.
pub fn certificate_id(pem_text: &str) -> String {
    let block = pem::parse(pem_text).expect("certificate PEM");
    hex::encode(Sha256::digest(block.contents()))
}

/// A running `geoprov-iot-emu`; stopped when dropped.
pub struct Emulator {
    pub region: String,
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    pub server_ca_pem: String,
    child: Child,
    log: PathBuf,
}

impl Emulator {
    /// Starts an emulator of `region` with the configuration at `config`;
    /// `lambdas` maps function names to Invoke API URLs.
    pub fn start(region: &str, config: &Path, lambdas: &[(&str, String)], dir: &Path) -> Self {
        Self::start_with_args(region, config, lambdas, dir, &[])
    }

    /// [`Emulator::start`] with more arguments (`--quota-scale 0.2`).
    pub fn start_with_args(
        region: &str,
        config: &Path,
        lambdas: &[(&str, String)],
        dir: &Path,
        args: &[&str],
    ) -> Self {
        let name = unique_table(&format!("emulator-{region}"));
        let ca = dir.join(format!("{name}-server-ca.pem"));
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(workspace_binary("geoprov-iot-emu"));
        command
            .env_clear()
            .envs(aws_env(&moto().endpoint, region))
            .env("RUST_LOG", "info")
            .args(["--region", region, "--domain", GLOBAL_NAME, "--config"])
            .arg(config)
            .arg("--server-ca-out")
            .arg(&ca)
            // RegisterThing in flight no more than the hook's execution
            // environments: a call never queues for one inside its 5 s.
            .args(["--max-in-flight", &HOOK_ENVIRONMENTS.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("emulator log"));
        for (name, url) in lambdas {
            command.arg("--lambda").arg(format!("{name}={url}"));
        }
        let mut child = command.spawn().expect("start geoprov-iot-emu");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("emulator stdout"))
            .read_line(&mut line)
            .expect("read emulator addresses");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "geoprov-iot-emu printed {line:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Emulator {
            region: region.to_owned(),
            mqtt: ready["mqtt"].as_str().unwrap().parse().unwrap(),
            admin: ready["admin"].as_str().unwrap().parse().unwrap(),
            server_ca_pem: std::fs::read_to_string(&ca).expect("server CA"),
            child,
            log,
        }
    }

    /// The endpoint as a device reaches it through the global name.
    pub fn endpoint(&self) -> geoprov_device::Endpoint {
        self.endpoint_named(GLOBAL_NAME)
    }

    /// The endpoint with another SNI.
    pub fn endpoint_named(&self, server_name: &str) -> geoprov_device::Endpoint {
        geoprov_device::Endpoint {
            server_name: server_name.to_owned(),
            address: self.mqtt,
            ca_pem: self.server_ca_pem.clone(),
        }
    }

    /// Sets faults through the admin API (`{"refuseConnections": true}`...).
    pub fn faults(&self, change: Value) -> Value {
        ureq::put(&format!("http://{}/faults", self.admin))
            .send_json(&change)
            .expect("PUT /faults")
            .body_mut()
            .read_json()
            .expect("faults JSON")
    }

    /// Moves the emulator's clock forward.
    pub fn advance_clock(&self, seconds: i64) {
        ureq::post(&format!("http://{}/clock", self.admin))
            .send_json(serde_json::json!({"advanceSeconds": seconds}))
            .expect("POST /clock");
    }

    /// Each rate quota's rate, units spent and requests throttled
    /// (`GET /quotas`).
    pub fn quotas(&self) -> Value {
        ureq::get(&format!("http://{}/quotas", self.admin))
            .call()
            .expect("GET /quotas")
            .body_mut()
            .read_json()
            .expect("quotas JSON")
    }

    /// What the emulator has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // GEOPROV_KEEP_EMULATOR_LOGS=DIR keeps every emulator's log there.
        if let Some(dir) = std::env::var_os("GEOPROV_KEEP_EMULATOR_LOGS")
            && let Some(name) = self.log.file_name()
        {
            let _ = std::fs::copy(&self.log, Path::new(&dir).join(name));
        }
        // A failing test shows what the emulator saw.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- geoprov-iot-emu {} (last {} lines)\n{}",
                self.region,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// The hook's environment as `template.yaml` sets it, with the table and
/// the claim certificate of a test.
pub fn hook_environment(region: &str, table: &str, claim_id: &str) -> BTreeMap<String, String> {
    let mut env = aws_env(&moto().endpoint, region);
    for (k, v) in [
        ("TABLE_NAME", table),
        ("HOOK_DEADLINE_MS", "3000"),
        ("LAMBDA_TIMEOUT_MS", "4000"),
        ("PROVISIONING_CLIENT_ID_PREFIX", "prov-"),
        ("DEFAULT_THING_GROUP", "geoprov-devices"),
        ("DEVICE_SETTABLE_PARAMETERS", "SerialNumber"),
        ("THING_ATTRIBUTE_PARAMETERS", "model,firmware"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", claim_id),
        // As the template sets it when the canary provisions.
        (
            "CANARY_SERIAL",
            &geoprov_canary::provisioning_serial(region),
        ),
    ] {
        env.insert(k.into(), v.into());
    }
    env
}

/// Whether an IoT create call made the resource or found it made: the
/// tests of one binary share moto.
pub fn made_or_exists<T, E: std::fmt::Debug>(result: Result<T, E>) {
    if let Err(e) = result {
        let e = format!("{e:?}");
        assert!(e.contains("AlreadyExists"), "{e}");
    }
}

/// What device activation needs of the regional stack in moto's IoT: the
/// thing type, the default group and the device policy (made unless they
/// exist).
pub async fn activation_resources(iot: &IotClient, thing_type: &str, group: &str, policy: &str) {
    made_or_exists(
        iot.create_thing_type()
            .thing_type_name(thing_type)
            .send()
            .await,
    );
    made_or_exists(
        iot.create_thing_group()
            .thing_group_name(group)
            .send()
            .await,
    );
    made_or_exists(
        iot.create_policy()
            .policy_name(policy)
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#,
            )
            .send()
            .await,
    );
}

/// A certificate's status as IoT (moto) describes it.
pub async fn certificate_status(iot: &IotClient, id: &str) -> String {
    iot.describe_certificate()
        .certificate_id(id)
        .send()
        .await
        .unwrap()
        .certificate_description()
        .unwrap()
        .status()
        .unwrap()
        .as_str()
        .to_owned()
}

/// The Invoke API URL of the function behind a Runtime API emulator.
pub fn invoke_url(runtime: &crate::lambda::RuntimeEmulator) -> String {
    format!(
        "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
        runtime.port()
    )
}

/// Execution environments of the hook per region.
pub const HOOK_ENVIRONMENTS: usize = 4;

/// One region's provisioning side: the claim, the stack's IoT resources, a
/// table with a manifest, the hook, and the emulator.
pub struct FleetRegion {
    pub region: String,
    pub table_endpoint: String,
    pub claim: Claim,
    pub table: String,
    pub emulator: Emulator,
    _hooks: Vec<FunctionProcess>,
    pub runtime: RuntimeEmulator,
    // Last: the emulator's log is in it, and read when the emulator drops.
    pub dir: WorkDir,
}

impl FleetRegion {
    pub fn start(region: &str, manifest: &[Value]) -> Self {
        let dir = WorkDir::new("emulator");
        let claim = setup_claim(&[region], dir.path());
        Self::start_with(region, manifest, dir, claim, &moto().endpoint)
    }

    /// A region whose claim certificate `geoprov setup claim` registered
    /// already (in this region among others), its table in the DynamoDB at
    /// `table_endpoint`.
    pub fn start_with(
        region: &str,
        manifest: &[Value],
        dir: WorkDir,
        claim: Claim,
        table_endpoint: &str,
    ) -> Self {
        Self::start_with_args(region, manifest, dir, claim, table_endpoint, &[])
    }

    /// A region whose emulator meets IoT's rate quotas at `scale` times
    /// the published defaults (`--quota-scale`).
    pub fn start_with_quota_scale(region: &str, manifest: &[Value], scale: &str) -> Self {
        let dir = WorkDir::new("emulator");
        let claim = setup_claim(&[region], dir.path());
        let endpoint = moto().endpoint.clone();
        Self::start_with_args(
            region,
            manifest,
            dir,
            claim,
            &endpoint,
            &["--quota-scale", scale],
        )
    }

    /// [`FleetRegion::start_with`] with more arguments for the emulator
    /// (`--no-quotas` to measure the emulator rather than IoT's rates).
    pub fn start_with_args(
        region: &str,
        manifest: &[Value],
        dir: WorkDir,
        claim: Claim,
        table_endpoint: &str,
        emulator_args: &[&str],
    ) -> Self {
        let config = dir.path().join("emulator.json");
        // As the hook below: devices without a recorded key may provision,
        // so the claim policy offers CreateKeysAndCertificate.
        iot_stack(
            region,
            &[
                ("ClaimCertificateId", &claim.certificate_id),
                ("RequireFactoryKey", "false"),
            ],
            &config,
        );
        let table = unique_table("emulator");
        let cli = geoprov(region, &table, table_endpoint);
        cli.ok(&["registry", "create-table"]);
        let manifest_file = dir.path().join("manifest.jsonl");
        let lines: Vec<String> = manifest.iter().map(Value::to_string).collect();
        std::fs::write(&manifest_file, lines.join("\n") + "\n").unwrap();
        cli.ok(&[
            "registry",
            "import",
            "--regions",
            region,
            manifest_file.to_str().unwrap(),
        ]);
        let runtime = RuntimeEmulator::start();
        let mut env = hook_environment(region, &table, &claim.certificate_id);
        // A key IoT makes cannot be known to the factory; a recorded key is
        // still checked (the CSR devices).
        env.insert("REQUIRE_FACTORY_KEY".into(), "false".into());
        env.insert("AWS_ENDPOINT_URL_DYNAMODB".into(), table_endpoint.into());
        // Lambda runs concurrent invocations in environments of their own:
        // several processes poll the Runtime API for the same function.
        let hooks = (0..HOOK_ENVIRONMENTS)
            .map(|_| runtime.run_function(&workspace_binary("pre-provisioning-hook"), &env))
            .collect();
        let emulator = Emulator::start_with_args(
            region,
            &config,
            &[("PreProvisioningHookFunction", invoke_url(&runtime))],
            dir.path(),
            emulator_args,
        );
        FleetRegion {
            region: region.to_owned(),
            table_endpoint: table_endpoint.to_owned(),
            dir,
            claim,
            table,
            emulator,
            _hooks: hooks,
            runtime,
        }
    }

    pub fn request(&self, serial: &str, csr: Option<&FactoryKey>) -> ProvisionRequest {
        ProvisionRequest {
            client_id: format!("prov-{serial}"),
            template: "geoprov-fleet".into(),
            csr: csr.is_some(),
            serial: serial.into(),
            key_pem: csr.map(|k| k.pem.clone()),
            parameters: BTreeMap::from([("SerialNumber".into(), serial.into())]),
        }
    }

    pub async fn provision(
        &self,
        serial: &str,
        csr: Option<&FactoryKey>,
    ) -> Result<Provisioned, ProvisionError> {
        provision(
            &self.emulator.endpoint(),
            &self.claim.identity,
            &self.request(serial, csr),
        )
        .await
    }

    pub async fn iot(&self) -> IotClient {
        IotClient::new(&sdk_config(&moto().endpoint, &self.region).await)
    }

    pub async fn audit_reasons(&self, serial: &str) -> Vec<(String, Option<String>)> {
        let config = sdk_config(&self.table_endpoint, &self.region).await;
        let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(&config), &self.table);
        registry
            .audit_events(&SerialNumber::try_from(serial).unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.reason, e.certificate_id))
            .collect()
    }
}

/// The CLI with moto's IoT and the table at `table_endpoint`.
pub fn geoprov(region: &str, table: &str, table_endpoint: &str) -> Geoprov {
    let mut env = aws_env(&moto().endpoint, region);
    env.insert("TABLE_NAME".into(), table.into());
    env.insert("AWS_ENDPOINT_URL_DYNAMODB".into(), table_endpoint.into());
    Geoprov::new(env)
}

/// A device key made at the factory, whose SPKI hash the manifest records.
pub struct FactoryKey {
    pub pem: String,
    pub spki_sha256: String,
}

pub fn factory_key() -> FactoryKey {
    use sha2::Digest;
    let key = rcgen::KeyPair::generate().unwrap();
    FactoryKey {
        pem: key.serialize_pem(),
        spki_sha256: hex::encode(sha2::Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        )),
    }
}
