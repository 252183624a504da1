//! `geoprov failover config`: checks a `FAILOVER_CONFIG` document as the
//! endpoint-failover function will at cold start, and stores it where the
//! function reads a large one (an S3 object or an SSM parameter).

use std::path::Path;

use aws_config::SdkConfig;
use endpoint_failover::config::{ConfigSource, FailoverConfig};
use endpoint_failover::config_store;
use geoprov_shared::config::ConfigError;
use serde::Serialize;

use crate::CliError;

/// A document that the function would accept, as read from its file.
pub struct CheckedConfig {
    pub text: String,
    pub config: FailoverConfig,
}

/// What `validate` prints.
#[derive(Debug, Serialize)]
pub struct Validated {
    pub valid: bool,
    pub regions: usize,
    pub locations: usize,
    pub bytes: usize,
}

/// What `put` prints.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub stored: String,
    pub bytes: usize,
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

pub fn validate(file: &Path) -> Result<Validated, CliError> {
    let checked = check(file)?;
    Ok(Validated {
        valid: true,
        regions: checked.config.regions.len(),
        locations: checked.config.locations.len(),
        bytes: checked.text.len(),
    })
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

/// Validates the document, then stores it. Nothing is stored unless both the
/// document and the destination are valid; the AWS configuration is loaded
/// only then.
pub async fn put(file: &Path, to: &str) -> Result<Stored, CliError> {
    let checked = check(file)?;
    let source = destination(to)?;
    let sdk: SdkConfig = geoprov_shared::aws::load_sdk_config().await;
    config_store::put(&source, &checked.text, &sdk)
        .await
        .map_err(CliError::Store)?;
    Ok(Stored {
        stored: to.to_owned(),
        bytes: checked.text.len(),
    })
}
