//! `geoprov failover config`: checks a `FAILOVER_CONFIG` document as the
//! endpoint-failover function will at cold start, and that every region it
//! routes devices to serves the global name, and stores it where the
//! function reads a large one (an S3 object or an SSM parameter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_config::SdkConfig;
use aws_sdk_iot::error::DisplayErrorContext;
use aws_sdk_iot::types::{DomainConfigurationStatus, ServiceType};
use clap::Subcommand;
use geoprov_failover::config::{ConfigSource, FailoverConfig, normalize_dns_name};
use geoprov_failover::config_store;
use geoprov_shared::config::ConfigError;
use serde::Serialize;

use crate::error::CliError;
use crate::iot::iot_client;
use crate::output::print_json;

#[derive(Subcommand)]
pub enum Command {
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

/// These load the AWS configuration only when they need it: validating a
/// file without --check-regions calls no AWS API, and neither does a put
/// refused for its document or destination.
pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Validate {
            file,
            check_regions,
        } => print_json(&validate(&file, check_regions).await?),
        Command::Put { file, to } => print_json(&put(&file, &to).await?),
    }
    Ok(())
}

/// A document that the function would accept, as read from its file.
pub struct CheckedConfig {
    pub text: String,
    pub config: FailoverConfig,
}

/// What `validate` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validated {
    pub valid: bool,
    pub regions: usize,
    pub locations: usize,
    pub bytes: usize,
    /// With --check-regions: the domain configuration serving the global
    /// name in each region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_configurations: Option<BTreeMap<String, String>>,
}

/// What `put` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub stored: String,
    pub bytes: usize,
    /// The domain configuration serving the global name in each region.
    pub domain_configurations: BTreeMap<String, String>,
}

/// A region of the configuration that does not serve its global name.
#[derive(Debug)]
pub struct UnservedRegion {
    pub region: String,
    /// Domain configurations there for the name that are not ENABLED DATA
    /// ones, with what they are instead.
    pub unusable: Vec<String>,
}

impl std::fmt::Display for UnservedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.region)?;
        if !self.unusable.is_empty() {
            write!(f, " ({})", self.unusable.join("; "))?;
        }
        Ok(())
    }
}

/// Reads `file` and validates it with the function's own parser, so an error
/// names the field exactly as the function would at cold start.
pub fn check(file: &Path) -> Result<CheckedConfig, CliError> {
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let config =
        FailoverConfig::from_json(&text).map_err(|source| CliError::InvalidFailoverConfig {
            path: file.to_path_buf(),
            source,
        })?;
    Ok(CheckedConfig { text, config })
}

/// Validates the document; with `check_regions`, also that every region
/// serves its global name (the AWS configuration is loaded only then).
pub async fn validate(file: &Path, check_regions: bool) -> Result<Validated, CliError> {
    let checked = check(file)?;
    let domain_configurations = match check_regions {
        true => {
            let sdk = geoprov_shared::aws::load_sdk_config().await?;
            Some(served_in_every_region(&sdk, &checked.config).await?)
        }
        false => None,
    };
    Ok(Validated {
        valid: true,
        regions: checked.config.regions.len(),
        locations: checked.config.locations.len(),
        bytes: checked.text.len(),
        domain_configurations,
    })
}

/// The ENABLED DATA domain configuration for the config's `recordName` in
/// each of its regions. IoT picks a connection's domain configuration by its
/// TLS SNI, so a region without one fails the TLS handshake of every device
/// the record tree sends there; such regions are refused, all named at once.
pub async fn served_in_every_region(
    sdk: &SdkConfig,
    config: &FailoverConfig,
) -> Result<BTreeMap<String, String>, CliError> {
    let name = &config.record_name;
    let mut served = BTreeMap::new();
    let mut unserved = Vec::new();
    for region in config.regions.keys() {
        let region = region.as_str();
        match domain_configuration_for(sdk, region, name).await? {
            Ok(configuration) => {
                served.insert(region.to_owned(), configuration);
            }
            Err(unusable) => unserved.push(UnservedRegion {
                region: region.to_owned(),
                unusable,
            }),
        }
    }
    if unserved.is_empty() {
        Ok(served)
    } else {
        Err(CliError::UnservedRegions {
            name: name.clone(),
            regions: unserved,
        })
    }
}

/// The name of an ENABLED DATA domain configuration for `name` in `region`,
/// or what the domain configurations for `name` there are instead.
async fn domain_configuration_for(
    sdk: &SdkConfig,
    region: &str,
    name: &str,
) -> Result<Result<String, Vec<String>>, CliError> {
    let iot_failed = |operation: &'static str, message: String| CliError::Iot {
        region: region.to_owned(),
        operation,
        message,
    };
    let client = iot_client(sdk, region);
    let summaries: Vec<_> = client
        .list_domain_configurations()
        .service_type(ServiceType::Data)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(|e| {
            iot_failed(
                "ListDomainConfigurations",
                DisplayErrorContext(e).to_string(),
            )
        })?;

    let mut unusable = Vec::new();
    for summary in summaries {
        // The list's filter is a request; a service or emulator that ignores
        // it still answers each summary's type.
        if summary
            .service_type()
            .is_some_and(|t| *t != ServiceType::Data)
        {
            continue;
        }
        let Some(configuration) = summary.domain_configuration_name() else {
            continue;
        };
        let described = client
            .describe_domain_configuration()
            .domain_configuration_name(configuration)
            .send()
            .await
            .map_err(|e| {
                iot_failed(
                    "DescribeDomainConfiguration",
                    DisplayErrorContext(e).to_string(),
                )
            })?;
        if described.domain_name().map(normalize_dns_name).as_deref() != Some(name) {
            continue;
        }
        let status = described.domain_configuration_status();
        // AWS's default service type is DATA; an answer without one is that.
        let service = described.service_type().unwrap_or(&ServiceType::Data);
        if status == Some(&DomainConfigurationStatus::Enabled) && *service == ServiceType::Data {
            return Ok(Ok(configuration.to_owned()));
        }
        unusable.push(format!(
            "{configuration} is {}, {}",
            status.map_or("of no status", |s| s.as_str()),
            service.as_str()
        ));
    }
    Ok(Err(unusable))
}

/// Where `--to` says to store the document: S3 or SSM, never inline.
pub fn destination(to: &str) -> Result<ConfigSource, CliError> {
    let bad = |reason: String| CliError::Destination {
        to: to.to_owned(),
        reason,
    };
    match ConfigSource::parse(to) {
        Ok(ConfigSource::Inline(_)) => Err(bad(
            "an inline document is not stored anywhere; give s3://bucket/key or ssm:<parameter name>"
                .to_owned(),
        )),
        Ok(source) => Ok(source),
        Err(ConfigError::Invalid { reason, .. }) => Err(bad(reason)),
        Err(other) => Err(bad(other.to_string())),
    }
}

/// Validates the document, then stores it. Nothing is stored unless the
/// document and the destination are valid and every region serves the
/// global name; the AWS configuration is loaded only once the first two
/// hold.
pub async fn put(file: &Path, to: &str) -> Result<Stored, CliError> {
    let checked = check(file)?;
    let source = destination(to)?;
    let sdk: SdkConfig = geoprov_shared::aws::load_sdk_config().await?;
    let domain_configurations = served_in_every_region(&sdk, &checked.config).await?;
    config_store::put(&source, &checked.text, &sdk)
        .await
        .map_err(CliError::Store)?;
    Ok(Stored {
        stored: to.to_owned(),
        bytes: checked.text.len(),
        domain_configurations,
    })
}
