//! `geoprov`: the operator tool for the geoprov device registry and audit
//! log, the endpoint failover's configuration and the global name's answers.
//!
//! It uses the standard AWS configuration chain, so `AWS_ENDPOINT_URL` points
//! it at a local emulator.

mod canary;
mod claims;
mod device;
mod dns;
mod failover_config;
mod health;
mod iot;
mod manifest;
mod pca;
mod setup;
mod thing_groups;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt, TryStreamExt};
use geoprov_shared::device::{OperatorBlock, SerialNumber};
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry, RegistryError};
use geoprov_shared::{aws, table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// BatchWriteItem calls in flight during an import.
const IMPORT_CONCURRENCY: usize = 8;
const BATCH: usize = 25;

#[derive(Parser)]
#[command(
    name = "geoprov",
    version,
    about = "geoprov operator tool: device registry, audit log, failover configuration, DNS answers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The device registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Print a device's audit events (JSON, oldest first), and a
    /// QUOTA_OVERSHOOT event, last, when its provisionings in all regions
    /// as read now exceed its quota.
    Audit {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        /// The hook's DEFAULT_MAX_PROVISIONS, for a device whose profile
        /// sets no quota.
        #[arg(long, default_value_t = 3)]
        default_max_provisions: u32,
        serial: String,
    },
    /// ACM Private CA helpers for local runs.
    #[command(subcommand)]
    Pca(PcaCommand),
    /// The endpoint failover.
    #[command(subcommand)]
    Failover(FailoverCommand),
    /// What resolvers get from a hosted zone's records.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// The trusted claim certificates in the table (the hook reads them at
    /// most once a minute).
    #[command(subcommand)]
    Claim(ClaimCommand),
    /// A reference device over MQTT with mutual TLS: fleet provisioning by
    /// claim, and connecting with a device certificate.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Register the claim certificate and the CA certificate in every
    /// region's IoT, once; prints the ids samconfig names.
    #[command(subcommand)]
    Setup(SetupCommand),
    /// The region canary's probe, from here.
    #[command(subcommand)]
    Canary(CanaryCommand),
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Run the region canary's probe once, as the function does: connect to
    /// the region's endpoint with SNI = the global name and the canary's
    /// certificate (from SSM, as `geoprov setup canary` stored it), the
    /// publish/subscribe round trip, and with --provision-template the
    /// fleet-provisioning round trip with the reserved serial. Prints each
    /// step's outcome and latency (a table on stderr, the report as JSON);
    /// exits non-zero when a step failed.
    Run {
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
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Provision by claim: connect with the claim as the provisioning client
    /// id (prefix + serial), get a certificate (made by IoT, or from a CSR
    /// with --csr), RegisterThing, and write the certificate and key (mode
    /// 0600) to --out-dir. Prints thingName, certificateId, region and
    /// deviceConfiguration (JSON).
    Provision(device::ProvisionArgs),
    /// Connect with a device certificate (retrying after JITR's first drop),
    /// subscribe to and publish on devices/<client id>/hello, and print what
    /// the policy allowed of each step (JSON).
    Connect(device::ConnectArgs),
}

#[derive(Subcommand)]
enum ClaimCommand {
    /// Trust a claim certificate from --not-before (default now) until
    /// --not-after (RFC 3339); an id already in the table is left as it is.
    Add {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        /// The certificate id (64 hex), as `geoprov setup claim` printed it.
        certificate_id: String,
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long)]
        not_after: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Stop trusting a claim certificate, for good.
    Retire {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        certificate_id: String,
    },
    /// Every claim certificate in the table, and whether it is trusted now.
    List {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
    },
    /// A leaked claim key: set the certificate INACTIVE in IoT in every
    /// region, then retire it in the table.
    Deactivate {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        certificate_id: String,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SetupCommand {
    /// Create the claim key pair and certificate (or reuse those in
    /// --out-dir), and make the certificate ACTIVE in every region, registered
    /// without a CA (SNI_ONLY). The private key goes to OUT_DIR/claim.key
    /// (mode 0600), never to stdout. Prints the certificate id per region
    /// (JSON).
    Claim {
        /// Comma-separated; the key pair is created in the first.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Fetch an ACM Private CA's certificate and register it in every
    /// region for JITR (SNI_ONLY, ACTIVE, auto-registration on, no
    /// provisioning template: the regional stack's topic rule sends each
    /// auto-registered certificate to device-activation), or, where it is
    /// registered, set those right. Prints the CA certificate id per region
    /// and whether it was created, repaired or left (JSON).
    Ca {
        /// The CA's ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID).
        #[arg(long)]
        pca_arn: String,
        /// The CA's region; by default the region its ARN names.
        #[arg(long)]
        pca_region: Option<String>,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
    },
    /// Make, in every region, what the region canary connects with: the
    /// policy geoprov-canary, the thing geoprov-canary-REGION, a certificate
    /// attached to both, and SSM parameters under /geoprov/canary/REGION
    /// (keys as SecureString, never printed). With --claim-dir (where
    /// `setup claim` wrote claim.pem and claim.key) also the claim and a
    /// provisioning key, whose hash is registered in --table for the
    /// reserved serial geoprov-canary-REGION-probe. Prints what each region
    /// has (JSON). Runs before the stacks; rerunning keeps the certificate.
    Canary {
        /// Comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// The CA certificates (PEM) the endpoint's server certificate
        /// chains to, as devices ship them.
        #[arg(long)]
        server_ca_file: PathBuf,
        #[arg(long)]
        claim_dir: Option<PathBuf>,
        #[arg(long, env = "TABLE_NAME")]
        table: Option<String>,
    },
}

#[derive(Subcommand)]
enum FailoverCommand {
    /// The failover's configuration document (FAILOVER_CONFIG).
    #[command(subcommand)]
    Config(FailoverConfigCommand),
    /// Read each region's health alarm and Route 53 health check (the
    /// document's alarmName and healthCheckId) and name every finding: an
    /// alarm Route 53 does not support, a check whose copied alarm settings
    /// are stale, a missing alarm or check (JSON; exits non-zero on any).
    /// Run it after every regional deploy.
    CheckHealth {
        /// The FAILOVER_CONFIG document.
        #[arg(long)]
        config: PathBuf,
    },
    /// UpdateHealthCheck, with the same AlarmIdentifier, for each health
    /// check whose copy of its alarm's settings differs from the alarm's
    /// current ones (Route 53 copies them only on create and update);
    /// nothing for the others. Prints what changed (JSON).
    RefreshHealthChecks {
        #[arg(long)]
        config: PathBuf,
    },
    /// Each region's health check status at a time, computed as Route 53
    /// computes it from the alarm's datapoints and the settings the check
    /// copied (JSON, with the unhealthy ids for `dns resolve --unhealthy`).
    Health {
        #[arg(long)]
        config: PathBuf,
        /// Epoch seconds or RFC 3339; now when absent.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum FailoverConfigCommand {
    /// Check a FAILOVER_CONFIG document as the function will at cold start;
    /// print what it names and its size (JSON).
    Validate {
        file: PathBuf,
        /// Also check that every region of the document has an ENABLED IoT
        /// domain configuration for its recordName (IoT matches a device's
        /// TLS SNI to one; without it, devices routed there fail TLS).
        #[arg(long)]
        check_regions: bool,
    },
    /// Validate a FAILOVER_CONFIG document and check its regions as
    /// `validate --check-regions` does, then store it in S3 or SSM Parameter
    /// Store (Intelligent-Tiering: SSM keeps up to 4 KB standard and moves a
    /// larger document, up to 8 KB, to the advanced tier);
    /// nothing is stored when either fails.
    Put {
        file: PathBuf,
        /// s3://bucket/key or ssm:<parameter name>: what the function's
        /// FAILOVER_CONFIG will name.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// What a resolver in a location gets for a name from the zone's records
    /// as Route 53 holds them, and the records that led there (JSON). Every
    /// health check passes except those named with --unhealthy.
    Resolve {
        #[arg(long)]
        zone_id: String,
        #[arg(long)]
        name: String,
        /// ISO 3166 country code of the resolver.
        #[arg(long)]
        country: Option<String>,
        /// Subdivision (a US state, for example) of the resolver's country.
        #[arg(long)]
        subdivision: Option<String>,
        /// Continent code (AF, AN, AS, EU, NA, OC, SA); implied by --country.
        #[arg(long)]
        continent: Option<String>,
        /// Health check ids to count as unhealthy.
        #[arg(long, num_args = 1.., value_name = "HEALTH_CHECK_ID")]
        unhealthy: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PcaCommand {
    /// Create an ACTIVE root CA (create, sign its CSR, import the certificate)
    /// and print its ARN and certificate (JSON).
    CreateLocalCa {
        #[arg(long, default_value = "geoprov local root CA")]
        common_name: String,
        /// EC_prime256v1, EC_secp384r1, RSA_2048, RSA_3072 or RSA_4096.
        #[arg(long, default_value = "EC_prime256v1")]
        key_algorithm: String,
        #[arg(long, default_value_t = 10)]
        validity_years: u32,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Create the geoprov table with the deployed key schema.
    CreateTable {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
    },
    /// Import a factory manifest (JSON Lines, one device per line). The
    /// thing groups it names (other than geoprov-devices, which each
    /// regional stack creates) are first created where absent in every
    /// region of --regions; a manifest naming groups needs --regions.
    Import {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        /// Import the valid lines even when some are invalid.
        #[arg(long)]
        skip_invalid: bool,
        /// The stack's ProvisioningClientIdPrefix: a serial that starts with
        /// it is refused, as are the region canaries' serials.
        #[arg(long, env = "PROVISIONING_CLIENT_ID_PREFIX", default_value = geoprov_shared::config::DEFAULT_CLIENT_ID_PREFIX)]
        client_id_prefix: String,
        /// The stack's ThingGroupPrefix: a line naming a thing group
        /// without it is refused (a device inherits its group's policies).
        #[arg(long, env = "THING_GROUP_PREFIX", default_value = geoprov_shared::device::DEFAULT_THING_GROUP_PREFIX)]
        thing_group_prefix: String,
        /// Comma-separated: the regions devices provision in.
        #[arg(long, value_delimiter = ',')]
        regions: Option<Vec<String>>,
        file: PathBuf,
    },
    /// Print a device's profile, any operator block, and its provisionings
    /// in every region (JSON).
    Show {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        serial: String,
    },
    /// Block a device: an item of its own, which no import lifts; a
    /// provisioning decided before it cannot commit.
    Block {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        serial: String,
        /// Why, for the audit and for whoever lifts it.
        #[arg(long)]
        reason: String,
    },
    /// Lift an operator's block.
    Unblock {
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        serial: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Http(#[from] geoprov_shared::aws::HttpSetupError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a valid serial number (1-128 of [A-Za-z0-9:_-])")]
    BadSerial(String),
    #[error("{0} is not in the registry")]
    NotFound(String),
    #[error("--reason must say why the device is blocked")]
    EmptyReason,
    #[error("{0:?} is not a certificate id (64 hex digits)")]
    ClaimId(String),
    #[error("{flag} {text:?}: {reason} (RFC 3339, e.g. 2027-01-01T00:00:00Z)")]
    Time {
        flag: &'static str,
        text: String,
        reason: String,
    },
    #[error("UpdateCertificate in {region}: {message}")]
    Deactivate { region: String, message: String },
    #[error("{count} invalid line(s) in the manifest; nothing was imported (use --skip-invalid to import the valid ones)")]
    InvalidManifest { count: usize },
    #[error("{count} invalid line(s) were skipped")]
    SkippedLines { count: usize },
    #[error("{0}")]
    Pca(#[from] pca::PcaSetupError),
    #[error("--key-algorithm {0} is not one of EC_prime256v1, EC_secp384r1, RSA_2048, RSA_3072, RSA_4096")]
    KeyAlgorithm(String),
    #[error("{}: {source}", path.display())]
    InvalidFailoverConfig {
        path: PathBuf,
        source: geoprov_failover::config::InvalidFailoverConfig,
    },
    #[error("--to {to:?}: {reason}")]
    Destination { to: String, reason: String },
    #[error("nothing was stored: {0}")]
    Store(geoprov_failover::config::FunctionConfigError),
    #[error("hosted zone {zone_id}: {message}")]
    HostedZone { zone_id: String, message: String },
    #[error("{0}")]
    Route53(#[from] geoprov_failover::route53::Route53Error),
    #[error("{0}")]
    Setup(#[from] setup::SetupError),
    #[error("{0}")]
    ThingGroup(#[from] thing_groups::ThingGroupError),
    #[error("IoT {operation} in {region}: {message}")]
    Iot {
        region: String,
        operation: &'static str,
        message: String,
    },
    #[error(
        "no ENABLED IoT domain configuration (DATA) for {name} in {}: devices routed there \
         would fail TLS, as IoT matches the SNI to a domain configuration (deploy the \
         regional stack with ServerCertificateArn there, or leave the region out)",
        regions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    UnservedRegions {
        name: String,
        regions: Vec<failover_config::UnservedRegion>,
    },
    #[error("{0}")]
    Device(#[from] device::DeviceCommandError),
    #[error("{0}")]
    Canary(#[from] canary::CanaryError),
    #[error("{service} {operation} in {region}: {message}")]
    Health {
        service: &'static str,
        operation: &'static str,
        region: String,
        message: String,
    },
    #[error("{0} finding(s) in the health path; see the report")]
    HealthFindings(usize),
    #[error("--at {0:?} is neither epoch seconds nor RFC 3339")]
    AtTime(String),
    #[error("{option} {value:?} is not {expected}")]
    Location {
        option: &'static str,
        value: String,
        expected: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geoprov: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let command = match cli.command {
        // These load the AWS configuration only when they need it: validating
        // a file without --check-regions calls no AWS API, and neither does
        // a put refused for its document or destination.
        Command::Failover(FailoverCommand::Config(FailoverConfigCommand::Validate {
            file,
            check_regions,
        })) => {
            print_json(&failover_config::validate(&file, check_regions).await?);
            return Ok(());
        }
        Command::Failover(FailoverCommand::CheckHealth { config }) => {
            let config = failover_config::check(&config)?.config;
            let sdk = aws::load_sdk_config().await?;
            let report = health::check_health(&sdk, &config).await?;
            print_json(&report);
            return match report.findings.len() {
                0 => Ok(()),
                n => Err(CliError::HealthFindings(n)),
            };
        }
        Command::Failover(FailoverCommand::RefreshHealthChecks { config }) => {
            let config = failover_config::check(&config)?.config;
            let sdk = aws::load_sdk_config().await?;
            print_json(&health::refresh_health_checks(&sdk, &config).await?);
            return Ok(());
        }
        Command::Failover(FailoverCommand::Health { config, at }) => {
            let config = failover_config::check(&config)?.config;
            let at = match at.as_deref() {
                None => geoprov_shared::clock::now_epoch_millis().div_euclid(1000),
                Some(raw) => parse_time(raw)?,
            };
            let sdk = aws::load_sdk_config().await?;
            print_json(&health::health_at(&sdk, &config, at).await?);
            return Ok(());
        }
        Command::Failover(FailoverCommand::Config(FailoverConfigCommand::Put { file, to })) => {
            print_json(&failover_config::put(&file, &to).await?);
            return Ok(());
        }
        Command::Dns(DnsCommand::Resolve {
            zone_id,
            name,
            country,
            subdivision,
            continent,
            unhealthy,
        }) => {
            let client = dns::client_location(
                continent.as_deref(),
                country.as_deref(),
                subdivision.as_deref(),
            )?;
            let unhealthy: BTreeSet<String> = unhealthy.into_iter().collect();
            let sdk = aws::load_sdk_config().await?;
            let resolution = dns::resolve(&sdk, &zone_id, &name, &client, &unhealthy).await?;
            print_json(&resolution);
            return Ok(());
        }
        Command::Device(DeviceCommand::Provision(args)) => {
            print_json(&device::provision_command(args).await?);
            return Ok(());
        }
        Command::Device(DeviceCommand::Connect(args)) => {
            print_json(&device::connect_command(args).await?);
            return Ok(());
        }
        Command::Setup(SetupCommand::Claim { regions, out_dir }) => {
            let sdk = aws::load_sdk_config().await?;
            print_json(&setup::claim(&sdk, &regions, &out_dir).await?);
            return Ok(());
        }
        Command::Setup(SetupCommand::Ca {
            pca_arn,
            pca_region,
            regions,
        }) => {
            let sdk = aws::load_sdk_config().await?;
            let setup = setup::ca(&sdk, &pca_arn, pca_region.as_deref(), &regions).await?;
            print_json(&setup);
            return Ok(());
        }
        Command::Setup(SetupCommand::Canary {
            regions,
            server_ca_file,
            claim_dir,
            table,
        }) => {
            let sdk = aws::load_sdk_config().await?;
            let registry = table.map(|t| DynamoRegistry::new(aws::dynamodb_client(&sdk), t));
            let done = canary::setup(
                &sdk,
                &regions,
                &server_ca_file,
                claim_dir.as_deref(),
                registry.as_ref(),
            )
            .await?;
            print_json(&done);
            return Ok(());
        }
        Command::Canary(CanaryCommand::Run {
            region,
            server_name,
            endpoint,
            parameter_path,
            provision_template,
            client_id_prefix,
            budget_ms,
        }) => {
            let sdk = aws::load_sdk_config().await?;
            let report = canary::run(
                &sdk,
                canary::RunArgs {
                    region: &region,
                    server_name: &server_name,
                    endpoint: endpoint.as_deref(),
                    parameter_path: parameter_path.as_deref(),
                    provisioning_template: provision_template.as_deref(),
                    client_id_prefix: &client_id_prefix,
                    budget_ms,
                },
            )
            .await?;
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
            return match report.failed_step {
                None => Ok(()),
                Some(step) => Err(canary::CanaryError::Failed {
                    step: step.as_str().into(),
                    error: report
                        .step(step)
                        .and_then(|s| s.error.clone())
                        .unwrap_or_default(),
                }
                .into()),
            };
        }
        command => command,
    };
    let sdk = aws::load_sdk_config().await?;
    let client = aws::dynamodb_client(&sdk);
    match command {
        Command::Registry(RegistryCommand::CreateTable { table }) => {
            let created = table::create_table(&client, &table).await?;
            print_json(&json!({"table": table, "created": created}));
            Ok(())
        }
        Command::Registry(RegistryCommand::Import {
            table,
            skip_invalid,
            client_id_prefix,
            thing_group_prefix,
            regions,
            file,
        }) => {
            let registry = DynamoRegistry::new(client, table);
            let manifest = ManifestFile {
                path: &file,
                skip_invalid,
                reserved: manifest::Reserved {
                    client_id_prefix: &client_id_prefix,
                    thing_group_prefix: &thing_group_prefix,
                },
            };
            import(&sdk, registry, manifest, regions.as_deref()).await
        }
        Command::Registry(RegistryCommand::Show { table, serial }) => {
            let registry = DynamoRegistry::new(client, table);
            let serial = parse_serial(&serial)?;
            let record = registry
                .device(&serial)
                .await?
                .ok_or_else(|| CliError::NotFound(serial.to_string()))?;
            print_json(&record);
            Ok(())
        }
        Command::Registry(RegistryCommand::Block {
            table,
            serial,
            reason,
        }) => {
            let registry = DynamoRegistry::new(client, table);
            let serial = parse_serial(&serial)?;
            if reason.trim().is_empty() {
                return Err(CliError::EmptyReason);
            }
            let block = OperatorBlock {
                reason,
                blocked_at: geoprov_shared::clock::now_rfc3339(),
            };
            registry.block(&serial, &block).await?;
            print_json(&json!({"serialNumber": serial.as_str(), "blocked": block}));
            Ok(())
        }
        Command::Registry(RegistryCommand::Unblock { table, serial }) => {
            let registry = DynamoRegistry::new(client, table);
            let serial = parse_serial(&serial)?;
            registry.unblock(&serial).await?;
            print_json(&json!({"serialNumber": serial.as_str(), "blocked": null}));
            Ok(())
        }
        Command::Claim(ClaimCommand::Add {
            table,
            certificate_id,
            not_before,
            not_after,
            note,
        }) => {
            let registry = DynamoRegistry::new(client, table);
            let added = claims::add(
                &registry,
                &certificate_id,
                not_before.as_deref(),
                &not_after,
                note,
            )
            .await?;
            print_json(&added);
            Ok(())
        }
        Command::Claim(ClaimCommand::Retire {
            table,
            certificate_id,
        }) => {
            let registry = DynamoRegistry::new(client, table);
            print_json(&claims::retire(&registry, &certificate_id).await?);
            Ok(())
        }
        Command::Claim(ClaimCommand::List { table }) => {
            let registry = DynamoRegistry::new(client, table);
            print_json(&claims::list(&registry).await?);
            Ok(())
        }
        Command::Claim(ClaimCommand::Deactivate {
            table,
            certificate_id,
            regions,
        }) => {
            let registry = DynamoRegistry::new(client, table);
            print_json(&claims::deactivate(&sdk, &registry, &certificate_id, &regions).await?);
            Ok(())
        }
        Command::Audit {
            table,
            default_max_provisions,
            serial,
        } => {
            let registry = DynamoRegistry::new(client, table);
            let serial = parse_serial(&serial)?;
            let mut events = registry.audit_events(&serial).await?;
            if let Some(device) = registry.device(&serial).await? {
                let quota = device
                    .profile
                    .max_provisions
                    .unwrap_or(default_max_provisions);
                let total = device.provisioning.total();
                if total > quota {
                    events.push(quota_overshoot(&device, total, quota));
                }
            }
            print_json(&events);
            Ok(())
        }
        Command::Pca(PcaCommand::CreateLocalCa {
            common_name,
            key_algorithm,
            validity_years,
        }) => {
            use aws_sdk_acmpca::types::KeyAlgorithm;
            let key = match key_algorithm.as_str() {
                "EC_prime256v1" => KeyAlgorithm::EcPrime256v1,
                "EC_secp384r1" => KeyAlgorithm::EcSecp384r1,
                "RSA_2048" => KeyAlgorithm::Rsa2048,
                "RSA_3072" => KeyAlgorithm::Rsa3072,
                "RSA_4096" => KeyAlgorithm::Rsa4096,
                _ => return Err(CliError::KeyAlgorithm(key_algorithm)),
            };
            let client = aws_sdk_acmpca::Client::new(&sdk);
            let ca = pca::create_local_ca(&client, &common_name, key, validity_years).await?;
            print_json(&ca);
            Ok(())
        }
        Command::Failover(_)
        | Command::Dns(_)
        | Command::Setup(_)
        | Command::Device(_)
        | Command::Canary(_) => {
            unreachable!("handled without DynamoDB above")
        }
    }
}

/// Epoch seconds, or an RFC 3339 time.
fn parse_time(raw: &str) -> Result<i64, CliError> {
    raw.parse::<i64>().or_else(|_| {
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| CliError::AtTime(raw.to_owned()))
    })
}

/// The manifest `geoprov registry import` was given, and how to read it.
struct ManifestFile<'a> {
    path: &'a Path,
    skip_invalid: bool,
    reserved: manifest::Reserved<'a>,
}

async fn import(
    sdk: &aws_config::SdkConfig,
    registry: DynamoRegistry,
    file: ManifestFile<'_>,
    regions: Option<&[String]>,
) -> Result<(), CliError> {
    let ManifestFile {
        path: file,
        skip_invalid,
        reserved,
    } = file;
    let regions = regions.map(setup::parse_regions).transpose()?;
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let manifest = manifest::parse(&text, reserved);
    for error in &manifest.errors {
        eprintln!("{}: {error}", file.display());
    }
    if !manifest.errors.is_empty() && !skip_invalid {
        return Err(CliError::InvalidManifest {
            count: manifest.errors.len(),
        });
    }

    // Every group a device will be put in exists before the device can
    // provision: nothing is written to the registry until then.
    let groups = thing_groups::named_groups(&manifest.profiles);
    let thing_groups = match (&regions, groups.is_empty()) {
        (_, true) => None,
        (None, false) => {
            return Err(thing_groups::ThingGroupError::RegionsNeeded {
                groups: groups.into_iter().collect(),
            }
            .into())
        }
        (Some(regions), false) => Some(thing_groups::ensure(sdk, regions, &groups).await?),
    };
    if let Some(by_region) = &thing_groups {
        for (region, groups) in by_region {
            if !groups.created.is_empty() {
                eprintln!(
                    "created thing group(s) {} in {region}",
                    groups.created.join(", ")
                );
            }
        }
    }

    // Without a factory key, the claim key alone can provision the serial:
    // the hook denies such devices unless REQUIRE_FACTORY_KEY is false.
    let without_key = manifest
        .profiles
        .iter()
        .filter(|p| p.public_key_sha256.is_none())
        .count();
    if without_key > 0 {
        eprintln!(
            "warning: {without_key} device(s) have no factory key (publicKeySha256); the hook \
             denies them (NO_FACTORY_KEY) unless REQUIRE_FACTORY_KEY is false"
        );
    }

    let progress = ProgressBar::new(manifest.profiles.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} devices {elapsed} {msg}")
            .expect("progress template is valid"),
    );
    let registry = &registry;
    let progress_ref = &progress;
    let imported: usize = stream::iter(manifest.profiles.chunks(BATCH))
        .map(|chunk| async move {
            let written = registry.put_profiles(chunk).await?;
            progress_ref.inc(written as u64);
            Ok::<_, RegistryError>(written)
        })
        .buffer_unordered(IMPORT_CONCURRENCY)
        .try_fold(0, |total, n| async move { Ok(total + n) })
        .await?;
    progress.finish_and_clear();

    let mut summary = json!({
        "table": registry.table(),
        "imported": imported,
        "invalid": manifest.errors.len(),
        "withoutFactoryKey": without_key,
    });
    if let Some(by_region) = thing_groups {
        summary["thingGroups"] = json!(by_region);
    }
    print_json(&summary);
    if manifest.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::SkippedLines {
            count: manifest.errors.len(),
        })
    }
}

/// The overshoot detector's report: more provisionings in all regions than
/// the quota, which only regions committing within the replication lag of
/// one another can cause.
fn quota_overshoot(
    device: &geoprov_shared::device::DeviceRecord,
    total: u32,
    quota: u32,
) -> geoprov_shared::audit::AuditEvent {
    let per_region: Vec<String> = device
        .provisioning
        .regions
        .iter()
        .map(|(region, state)| format!("{region} {}", state.provision_count))
        .collect();
    geoprov_shared::audit::AuditEvent {
        kind: "QUOTA_OVERSHOOT".into(),
        serial_number: Some(device.profile.serial_number.to_string()),
        decision: geoprov_shared::audit::Decision::Deny,
        reason: "QUOTA_EXCEEDED".into(),
        detail: format!(
            "{total} provisionings in all regions ({}), quota {quota}",
            per_region.join(", ")
        ),
        region: String::new(),
        certificate_id: None,
        claim_certificate_id: None,
        client_id: None,
        request_id: "geoprov audit".into(),
        time: geoprov_shared::clock::now_rfc3339(),
    }
}

fn parse_serial(raw: &str) -> Result<SerialNumber, CliError> {
    SerialNumber::try_from(raw).map_err(|_| CliError::BadSerial(raw.to_owned()))
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}
