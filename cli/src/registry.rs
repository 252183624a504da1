//! `geoprov registry`: the device registry's table, a factory manifest's
//! import, and a device's profile and operator block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_config::SdkConfig;
use clap::Subcommand;
use futures::stream::{self, StreamExt, TryStreamExt};
use geoprov_shared::device::{DeviceProfile, OperatorBlock, SerialNumber};
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry, RegistryError};
use geoprov_shared::{aws, table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::error::CliError;
use crate::manifest::{self, Manifest};
use crate::output::print_json;
use crate::thing_groups::{self, GroupsInRegion};

/// BatchWriteItem calls in flight during an import.
const IMPORT_CONCURRENCY: usize = 8;
const BATCH: usize = 25;

#[derive(Subcommand)]
pub enum Command {
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

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::CreateTable { table } => create_table(table).await,
        Command::Import {
            table,
            skip_invalid,
            client_id_prefix,
            thing_group_prefix,
            regions,
            file,
        } => {
            let (sdk, registry) = open(table).await?;
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
        Command::Show { table, serial } => show(table, &serial).await,
        Command::Block {
            table,
            serial,
            reason,
        } => block(table, &serial, reason).await,
        Command::Unblock { table, serial } => unblock(table, &serial).await,
    }
}

/// The AWS configuration, and the registry in `table`. Every command on the
/// table loads them first, before it checks its other arguments.
pub async fn open(table: String) -> Result<(SdkConfig, DynamoRegistry), CliError> {
    let sdk = aws::load_sdk_config().await?;
    let registry = DynamoRegistry::new(aws::dynamodb_client(&sdk), table);
    Ok((sdk, registry))
}

pub fn parse_serial(raw: &str) -> Result<SerialNumber, CliError> {
    SerialNumber::try_from(raw).map_err(|_| CliError::BadSerial(raw.to_owned()))
}

async fn create_table(table: String) -> Result<(), CliError> {
    let sdk = aws::load_sdk_config().await?;
    let client = aws::dynamodb_client(&sdk);
    let created = table::create_table(&client, &table).await?;
    print_json(&json!({"table": table, "created": created}));
    Ok(())
}

async fn show(table: String, serial: &str) -> Result<(), CliError> {
    let (_, registry) = open(table).await?;
    let serial = parse_serial(serial)?;
    let record = registry
        .device(&serial)
        .await?
        .ok_or_else(|| CliError::NotFound(serial.to_string()))?;
    print_json(&record);
    Ok(())
}

async fn block(table: String, serial: &str, reason: String) -> Result<(), CliError> {
    let (_, registry) = open(table).await?;
    let serial = parse_serial(serial)?;
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

async fn unblock(table: String, serial: &str) -> Result<(), CliError> {
    let (_, registry) = open(table).await?;
    let serial = parse_serial(serial)?;
    registry.unblock(&serial).await?;
    print_json(&json!({"serialNumber": serial.as_str(), "blocked": null}));
    Ok(())
}

/// The manifest `geoprov registry import` was given, and how to read it.
struct ManifestFile<'a> {
    path: &'a Path,
    skip_invalid: bool,
    reserved: manifest::Reserved<'a>,
}

async fn import(
    sdk: &SdkConfig,
    registry: DynamoRegistry,
    file: ManifestFile<'_>,
    regions: Option<&[String]>,
) -> Result<(), CliError> {
    let regions = regions.map(crate::setup::parse_regions).transpose()?;
    let manifest = read_manifest(&file)?;

    // Every group a device will be put in exists before the device can
    // provision: nothing is written to the registry until then.
    let thing_groups = ensure_thing_groups(sdk, regions.as_deref(), &manifest.profiles).await?;

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

    let imported = put_profiles(&registry, &manifest.profiles).await?;

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

/// Reads and parses the manifest, naming each invalid line on stderr; with
/// any invalid line and without --skip-invalid, nothing is imported.
fn read_manifest(file: &ManifestFile<'_>) -> Result<Manifest, CliError> {
    let text = std::fs::read_to_string(file.path).map_err(|source| CliError::Read {
        path: file.path.to_path_buf(),
        source,
    })?;
    let manifest = manifest::parse(&text, file.reserved);
    for error in &manifest.errors {
        eprintln!("{}: {error}", file.path.display());
    }
    if !manifest.errors.is_empty() && !file.skip_invalid {
        return Err(CliError::InvalidManifest {
            count: manifest.errors.len(),
        });
    }
    Ok(manifest)
}

/// The thing groups the profiles name, made to exist in every region (which
/// a manifest naming any needs); `None` when it names none.
async fn ensure_thing_groups(
    sdk: &SdkConfig,
    regions: Option<&[String]>,
    profiles: &[DeviceProfile],
) -> Result<Option<BTreeMap<String, GroupsInRegion>>, CliError> {
    let groups = thing_groups::named_groups(profiles);
    let by_region = match (regions, groups.is_empty()) {
        (_, true) => return Ok(None),
        (None, false) => {
            return Err(thing_groups::ThingGroupError::RegionsNeeded {
                groups: groups.into_iter().collect(),
            }
            .into());
        }
        (Some(regions), false) => thing_groups::ensure(sdk, regions, &groups).await?,
    };
    for (region, groups) in &by_region {
        if !groups.created.is_empty() {
            eprintln!(
                "created thing group(s) {} in {region}",
                groups.created.join(", ")
            );
        }
    }
    Ok(Some(by_region))
}

/// Writes the profiles in batches, several in flight, with a progress bar on
/// stderr; how many were written.
async fn put_profiles(
    registry: &DynamoRegistry,
    profiles: &[DeviceProfile],
) -> Result<usize, CliError> {
    let progress = ProgressBar::new(profiles.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} devices {elapsed} {msg}")
            .expect("progress template is valid"),
    );
    let progress_ref = &progress;
    let imported: usize = stream::iter(profiles.chunks(BATCH))
        .map(|chunk| async move {
            let written = registry.put_profiles(chunk).await?;
            progress_ref.inc(written as u64);
            Ok::<_, RegistryError>(written)
        })
        .buffer_unordered(IMPORT_CONCURRENCY)
        .try_fold(0, |total, n| async move { Ok(total + n) })
        .await?;
    progress.finish_and_clear();
    Ok(imported)
}
