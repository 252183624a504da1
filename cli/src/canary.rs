//! `geoprov setup canary` and `geoprov canary run`.
//!
//! Setup makes, in each region, what the region canary connects and
//! provisions with: the policy `geoprov-canary` (connect as the canary's
//! thing only, publish, subscribe and receive on `canary/<region>/*` only),
//! the thing `geoprov-canary-<region>`, a certificate attached to both, and
//! the SSM parameters under `/geoprov/canary/<region>` (keys as
//! SecureString). With `--claim-dir` it adds the claim and a provisioning
//! key, whose SPKI hash it registers for the reserved serial
//! `geoprov-canary-<region>-probe`, allowed in that region only. Keys go to
//! SSM only, never to stdout or a file. Rerunning it keeps the certificate,
//! the provisioning key and an existing policy (a changed document needs a
//! new policy version), and sets the attachments, the CA and the claim
//! parameters right.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_config::{Region, SdkConfig};
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ssm::types::ParameterType;
use clap::{Args, Subcommand};
use geoprov_canary::canary::Canary;
use geoprov_canary::cleanup::SdkThingRemover;
use geoprov_canary::config::CanaryConfig;
use geoprov_canary::material::{self, MaterialCache};
use geoprov_canary::probe::Report;
use geoprov_shared::config::Env;
use geoprov_shared::device::{DeviceProfile, PublicKeyFingerprint, RegionName, SerialNumber};
use geoprov_shared::registry::DynamoRegistry;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::iot::iot_client;
use crate::output::print_json;
use crate::setup::{CLAIM_CERTIFICATE, CLAIM_KEY, read};

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("{0}")]
    Setup(#[from] crate::setup::SetupError),
    #[error("{operation} in {region}: {message}")]
    Aws {
        region: String,
        operation: &'static str,
        message: String,
    },
    #[error("{0}")]
    Material(#[from] material::MaterialError),
    #[error("{0}")]
    Config(#[from] geoprov_shared::config::ConfigError),
    #[error("{0}")]
    Registry(#[from] geoprov_shared::registry::RegistryError),
    #[error("--claim-dir needs --table (the registry the provisioning key is recorded in)")]
    TableNeeded,
    #[error("the provisioning key in {0} does not parse")]
    ProvisioningKey(String),
    #[error("the canary failed at {step}: {error}")]
    Failed { step: String, error: String },
}

fn aws<E: std::error::Error + Send + Sync + 'static>(
    region: &str,
    operation: &'static str,
    e: E,
) -> CanaryError {
    CanaryError::Aws {
        region: region.to_owned(),
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// What setup left in one region.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionCanary {
    pub thing: String,
    pub policy: String,
    pub certificate_id: String,
    pub certificate_created: bool,
    pub parameter_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_serial: Option<String>,
}

fn ssm_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}

/// The canary's policy in `region` of `account`: connect with a client id
/// of its own per run (`geoprov-canary-<region>-<run id>`), and its topics;
/// nothing a device could use.
pub fn policy_document(partition: &str, region: &str, account: &str) -> String {
    let arn =
        |kind: &str, rest: &str| format!("arn:{partition}:iot:{region}:{account}:{kind}/{rest}");
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect",
             "Resource": arn("client", &format!("{}-*", geoprov_canary::thing_name(region)))},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": arn("topic", &format!("canary/{region}/*"))},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": arn("topicfilter", &format!("canary/{region}/*"))}
        ]
    })
    .to_string()
}

async fn put(
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    name: String,
    value: &str,
    secure: bool,
) -> Result<(), CanaryError> {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(if secure {
            ParameterType::SecureString
        } else {
            ParameterType::String
        })
        .overwrite(true)
        .send()
        .await
        .map_err(|e| aws(region, "SSM PutParameter", e))?;
    Ok(())
}

/// `geoprov setup canary`.
pub async fn setup(
    sdk: &SdkConfig,
    regions: &[String],
    server_ca_file: &Path,
    claim_dir: Option<&Path>,
    registry: Option<&DynamoRegistry>,
) -> Result<BTreeMap<String, RegionCanary>, CanaryError> {
    let regions = crate::setup::parse_regions(regions)?;
    let ca_pem = read(server_ca_file)?;
    let claim = match claim_dir {
        Some(dir) => {
            if registry.is_none() {
                return Err(CanaryError::TableNeeded);
            }
            Some((
                read(&dir.join(CLAIM_CERTIFICATE))?,
                read(&dir.join(CLAIM_KEY))?,
            ))
        }
        None => None,
    };
    let mut done = BTreeMap::new();
    for region in &regions {
        let made = setup_region(sdk, region, &ca_pem, claim.as_ref(), registry).await?;
        done.insert(region.clone(), made);
    }
    Ok(done)
}

async fn setup_region(
    sdk: &SdkConfig,
    region: &str,
    ca_pem: &str,
    claim: Option<&(String, String)>,
    registry: Option<&DynamoRegistry>,
) -> Result<RegionCanary, CanaryError> {
    let iot = iot_client(sdk, region);
    let ssm = ssm_client(sdk, region);
    let path = geoprov_canary::parameter_path(region);
    let at = |name: &str| format!("{path}/{name}");
    let existing: BTreeMap<String, String> =
        material::read_ssm(&ssm, &path).await?.into_iter().collect();

    let thing = geoprov_canary::thing_name(region);
    let (partition, account) = ensure_thing(&iot, region, &thing).await?;
    let policy = geoprov_canary::POLICY_NAME;
    ensure_policy(&iot, region, &partition, &account).await?;

    let (certificate_pem, created) = match (
        existing.get(&at(material::CERTIFICATE)),
        existing.get(&at(material::PRIVATE_KEY)),
    ) {
        (Some(pem), Some(_)) => (pem.clone(), false),
        _ => (create_certificate(&iot, &ssm, region, &at).await?, true),
    };
    let certificate_id =
        crate::setup::certificate_id(&certificate_pem, &at(material::CERTIFICATE))?;
    let certificate_arn = format!("arn:{partition}:iot:{region}:{account}:cert/{certificate_id}");
    // Both are idempotent: a rerun completes a setup cut off before them.
    iot.attach_policy()
        .policy_name(policy)
        .target(&certificate_arn)
        .send()
        .await
        .map_err(|e| aws(region, "IoT AttachPolicy", e))?;
    iot.attach_thing_principal()
        .thing_name(&thing)
        .principal(&certificate_arn)
        .send()
        .await
        .map_err(|e| aws(region, "IoT AttachThingPrincipal", e))?;
    put(&ssm, region, at(material::CA), ca_pem, false).await?;

    let mut provisioning_serial = None;
    if let (Some(claim), Some(registry)) = (claim, registry) {
        let serial = setup_provisioning(&ssm, region, &at, &existing, claim, registry).await?;
        provisioning_serial = Some(serial);
    }

    Ok(RegionCanary {
        thing,
        policy: policy.to_owned(),
        certificate_id,
        certificate_created: created,
        parameter_path: path,
        provisioning_serial,
    })
}

/// The canary's thing in `region`, made when absent; the partition and the
/// account its ARN names.
async fn ensure_thing(
    iot: &aws_sdk_iot::Client,
    region: &str,
    thing: &str,
) -> Result<(String, String), CanaryError> {
    match iot.create_thing().thing_name(thing).send().await {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
        Err(e) => return Err(aws(region, "IoT CreateThing", e)),
    }
    let thing_arn = iot
        .describe_thing()
        .thing_name(thing)
        .send()
        .await
        .map_err(|e| aws(region, "IoT DescribeThing", e))?
        .thing_arn()
        .unwrap_or_default()
        .to_owned();
    // arn:PARTITION:iot:REGION:ACCOUNT:thing/NAME
    let fields: Vec<&str> = thing_arn.splitn(6, ':').collect();
    match fields.as_slice() {
        [_, partition, _, _, account, _] => Ok((partition.to_string(), account.to_string())),
        _ => Err(CanaryError::Aws {
            region: region.into(),
            operation: "IoT DescribeThing",
            message: format!("thingArn {thing_arn:?} is not an ARN"),
        }),
    }
}

/// The canary's policy in `region`; an existing one is kept as it is.
async fn ensure_policy(
    iot: &aws_sdk_iot::Client,
    region: &str,
    partition: &str,
    account: &str,
) -> Result<(), CanaryError> {
    match iot
        .create_policy()
        .policy_name(geoprov_canary::POLICY_NAME)
        .policy_document(policy_document(partition, region, account))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(aws(region, "IoT CreatePolicy", e)),
    }
}

/// A new ACTIVE certificate and its key, both stored in SSM; its PEM.
async fn create_certificate(
    iot: &aws_sdk_iot::Client,
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    at: &impl Fn(&str) -> String,
) -> Result<String, CanaryError> {
    let made = iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await
        .map_err(|e| aws(region, "IoT CreateKeysAndCertificate", e))?;
    let (Some(pem), Some(key)) = (
        made.certificate_pem(),
        made.key_pair().and_then(|k| k.private_key()),
    ) else {
        return Err(CanaryError::Aws {
            region: region.into(),
            operation: "IoT CreateKeysAndCertificate",
            message: "no certificatePem or keyPair in the answer".into(),
        });
    };
    // The key first: a certificate without its key is made again.
    put(ssm, region, at(material::PRIVATE_KEY), key, true).await?;
    put(ssm, region, at(material::CERTIFICATE), pem, false).await?;
    Ok(pem.to_owned())
}

/// The claim and a provisioning key (made once, kept on reruns) in SSM, and
/// the key's hash registered for the region's reserved serial; that serial.
async fn setup_provisioning(
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    at: &impl Fn(&str) -> String,
    existing: &BTreeMap<String, String>,
    (claim_pem, claim_key): &(String, String),
    registry: &DynamoRegistry,
) -> Result<String, CanaryError> {
    put(
        ssm,
        region,
        at(material::CLAIM_CERTIFICATE),
        claim_pem,
        false,
    )
    .await?;
    put(
        ssm,
        region,
        at(material::CLAIM_PRIVATE_KEY),
        claim_key,
        true,
    )
    .await?;
    let key_pem = match existing.get(&at(material::PROVISIONING_KEY)) {
        Some(pem) => pem.clone(),
        None => {
            let key = rcgen::KeyPair::generate()
                .map_err(|_| CanaryError::ProvisioningKey("a new key".into()))?;
            let pem = key.serialize_pem();
            put(ssm, region, at(material::PROVISIONING_KEY), &pem, true).await?;
            pem
        }
    };
    let key = rcgen::KeyPair::from_pem(&key_pem)
        .map_err(|_| CanaryError::ProvisioningKey(at(material::PROVISIONING_KEY)))?;
    let (serial, profile) = provisioning_profile(region, &key)?;
    registry.put_profiles(&[profile]).await?;
    Ok(serial)
}

/// The reserved serial of `region`, allowed there only, with `key`'s SPKI
/// hash as its factory key.
fn provisioning_profile(
    region: &str,
    key: &rcgen::KeyPair,
) -> Result<(String, DeviceProfile), CanaryError> {
    let spki = hex::encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(key),
    ));
    let serial_text = geoprov_canary::provisioning_serial(region);
    let serial = SerialNumber::try_from(serial_text.as_str())
        .map_err(|e| CanaryError::ProvisioningKey(e.0))?;
    let mut profile = DeviceProfile::allowed(serial);
    profile.allowed_regions = Some(BTreeSet::from([
        RegionName::try_from(region).map_err(|e| CanaryError::ProvisioningKey(e.0))?
    ]));
    profile.public_key_sha256 =
        Some(PublicKeyFingerprint::try_from(spki).map_err(|e| CanaryError::ProvisioningKey(e.0))?);
    Ok((serial_text, profile))
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the region canary's probe once, as the function does: connect to
    /// the region's endpoint with SNI = the global name and the canary's
    /// certificate (from SSM, as `geoprov setup canary` stored it), the
    /// publish/subscribe round trip, and with --provision-template the
    /// fleet-provisioning round trip with the reserved serial. Prints each
    /// step's outcome and latency (a table on stderr, the report as JSON);
    /// exits non-zero when a step failed.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long)]
    region: String,
    /// The global name (SNI).
    #[arg(long)]
    server_name: String,
    /// host[:port] of the region's endpoint; by default IoT's
    /// iot:Data-ATS endpoint, port 8883.
    #[arg(long)]
    endpoint: Option<String>,
    /// By default /geoprov/canary/REGION.
    #[arg(long)]
    parameter_path: Option<String>,
    /// The fleet provisioning template: probe provisioning too.
    #[arg(long)]
    provision_template: Option<String>,
    #[arg(long, default_value = "prov-")]
    client_id_prefix: String,
    #[arg(long, default_value_t = 20_000)]
    budget_ms: u64,
}

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Run(args) => run_once(&args).await,
    }
}

/// `geoprov canary run`: the probe's steps as a table on stderr and its
/// report on stdout; a failed step is the command's error.
async fn run_once(args: &RunArgs) -> Result<(), CliError> {
    let sdk = geoprov_shared::aws::load_sdk_config().await?;
    let report = probe(&sdk, args).await?;
    for step in &report.steps {
        eprintln!(
            "{:<10} {:<4} {:>10.1} ms  {}",
            step.step.as_str(),
            if step.ok { "ok" } else { "FAIL" },
            step.latency_ms,
            step.error.as_deref().unwrap_or("")
        );
    }
    print_json(&report);
    match report.failed_step {
        None => Ok(()),
        Some(step) => Err(CanaryError::Failed {
            step: step.as_str().into(),
            error: report
                .step(step)
                .and_then(|s| s.error.clone())
                .unwrap_or_default(),
        }
        .into()),
    }
}

/// The function's probe, once, from here.
async fn probe(sdk: &SdkConfig, args: &RunArgs) -> Result<Report, CanaryError> {
    let serial = geoprov_canary::provisioning_serial(&args.region);
    let budget = args.budget_ms.to_string();
    let mut pairs = vec![
        ("AWS_REGION", args.region.as_str()),
        ("CANARY_SERVER_NAME", args.server_name.as_str()),
        ("CANARY_BUDGET_MS", budget.as_str()),
        (
            "PROVISIONING_CLIENT_ID_PREFIX",
            args.client_id_prefix.as_str(),
        ),
    ];
    if let Some(endpoint) = args.endpoint.as_deref() {
        pairs.push(("CANARY_ENDPOINT", endpoint));
    }
    if let Some(path) = args.parameter_path.as_deref() {
        pairs.push(("CANARY_PARAMETER_PATH", path));
    }
    if let Some(template) = args.provision_template.as_deref() {
        pairs.push(("CANARY_PROVISIONING", "true"));
        pairs.push(("CANARY_TEMPLATE_NAME", template));
        pairs.push(("CANARY_SERIAL", serial.as_str()));
    }
    let config = CanaryConfig::from_env(&Env::from_pairs(pairs))?;
    let iot = iot_client(sdk, &args.region);
    let material = MaterialCache::new(ssm_client(sdk, &args.region), config.parameter_path.clone());
    // A probe alone: no minute of the window is recorded.
    let canary = Canary::new(config, material, iot.clone(), SdkThingRemover::new(iot), ());
    Ok(canary.probe_once().await)
}
