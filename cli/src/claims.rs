//! `geoprov claim`: the trusted claim certificates in the table. The hook
//! trusts a claim certificate in its bootstrap list or in the table, inside
//! its window and not retired, and reads the table at most once a minute, so
//! a rotation needs no redeploy and a retired claim is refused within a
//! minute.

use aws_config::SdkConfig;
use aws_sdk_iot::types::CertificateStatus;
use clap::Subcommand;
use geoprov_shared::claims::{TrustedClaim, is_certificate_id};
use geoprov_shared::clock::now_rfc3339;
use geoprov_shared::registry::{DeviceRegistry, DynamoRegistry};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;
use crate::iot::iot_client;
use crate::output::print_json;
use crate::registry::open;

#[derive(Subcommand)]
pub enum Command {
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

/// `geoprov claim`: each command opens the registry before it checks the
/// certificate id.
pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Add {
            table,
            certificate_id,
            not_before,
            not_after,
            note,
        } => {
            let (_, registry) = open(table).await?;
            let added = add(
                &registry,
                &certificate_id,
                not_before.as_deref(),
                &not_after,
                note,
            )
            .await?;
            print_json(&added);
        }
        Command::Retire {
            table,
            certificate_id,
        } => {
            let (_, registry) = open(table).await?;
            print_json(&retire(&registry, &certificate_id).await?);
        }
        Command::List { table } => {
            let (_, registry) = open(table).await?;
            print_json(&list(&registry).await?);
        }
        Command::Deactivate {
            table,
            certificate_id,
            regions,
        } => {
            let (sdk, registry) = open(table).await?;
            print_json(&deactivate(&sdk, &registry, &certificate_id, &regions).await?);
        }
    }
    Ok(())
}

/// Checks a certificate id as IoT writes it.
pub fn certificate_id(id: &str) -> Result<String, CliError> {
    let id = id.trim().to_ascii_lowercase();
    if is_certificate_id(&id) {
        Ok(id)
    } else {
        Err(CliError::ClaimId(id))
    }
}

fn instant(flag: &'static str, text: &str) -> Result<String, CliError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|_| text.to_owned())
        .map_err(|e| CliError::Time {
            flag,
            text: text.to_owned(),
            reason: e.to_string(),
        })
}

/// What `claim add` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Added {
    pub claim: TrustedClaim,
    /// `false`: it was in the table already, and is left as it was.
    pub added: bool,
}

pub async fn add(
    registry: &DynamoRegistry,
    id: &str,
    not_before: Option<&str>,
    not_after: &str,
    note: Option<String>,
) -> Result<Added, CliError> {
    let now = now_rfc3339();
    let claim = TrustedClaim {
        certificate_id: certificate_id(id)?,
        not_before: match not_before {
            Some(t) => instant("--not-before", t)?,
            None => now.clone(),
        },
        not_after: instant("--not-after", not_after)?,
        retired_at: None,
        added_at: now,
        note,
    };
    let parsed = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    if parsed(&claim.not_after) <= parsed(&claim.not_before) {
        return Err(CliError::Time {
            flag: "--not-after",
            text: claim.not_after,
            reason: "must be after --not-before".into(),
        });
    }
    let added = registry.add_claim(&claim).await?;
    Ok(Added { claim, added })
}

/// What `claim list` prints: every claim, and whether it is trusted now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    #[serde(flatten)]
    pub claim: TrustedClaim,
    pub trusted_now: bool,
}

pub async fn list(registry: &DynamoRegistry) -> Result<Vec<Listed>, CliError> {
    let now = OffsetDateTime::now_utc();
    Ok(registry
        .trusted_claims()
        .await?
        .into_iter()
        .map(|claim| Listed {
            trusted_now: claim.trusted_at(now),
            claim,
        })
        .collect())
}

/// What `claim retire` and `claim deactivate` print.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retired {
    pub certificate_id: String,
    /// `false`: it was retired already.
    pub retired: bool,
    /// Regions where IoT now holds the certificate INACTIVE.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inactive_in: Vec<String>,
}

pub async fn retire(registry: &DynamoRegistry, id: &str) -> Result<Retired, CliError> {
    let certificate_id = certificate_id(id)?;
    let retired = registry
        .retire_claim(&certificate_id, &now_rfc3339())
        .await?;
    Ok(Retired {
        certificate_id,
        retired,
        inactive_in: Vec::new(),
    })
}

/// The abuse response: the certificate INACTIVE in IoT in every region
/// (no connection with it succeeds there any more), then retired in the
/// table. The regions go first: the table is what the hook reads, IoT is
/// what stops the connections.
pub async fn deactivate(
    sdk: &SdkConfig,
    registry: &DynamoRegistry,
    id: &str,
    regions: &[String],
) -> Result<Retired, CliError> {
    let certificate_id = certificate_id(id)?;
    let regions = crate::setup::parse_regions(regions)?;
    let mut inactive_in = Vec::new();
    for region in &regions {
        iot_client(sdk, region)
            .update_certificate()
            .certificate_id(&certificate_id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
            .map_err(|e| CliError::Deactivate {
                region: region.clone(),
                message: aws_sdk_iot::error::DisplayErrorContext(e).to_string(),
            })?;
        inactive_in.push(region.clone());
    }
    // An id the table never had gets a retired entry of its own.
    let retired = registry
        .retire_claim(&certificate_id, &now_rfc3339())
        .await?;
    Ok(Retired {
        certificate_id,
        retired,
        inactive_in,
    })
}
