//! `geoprov failover`: the endpoint failover's configuration document
//! ([`crate::failover_config`]) and its health path ([`crate::health`]).
//!
//! Each command checks its document before it loads the AWS configuration.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use geoprov_shared::aws;

use crate::error::CliError;
use crate::output::print_json;
use crate::{failover_config, health};

#[derive(Subcommand)]
pub enum Command {
    /// The failover's configuration document (FAILOVER_CONFIG).
    #[command(subcommand)]
    Config(failover_config::Command),
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

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Config(command) => failover_config::run(command).await,
        Command::CheckHealth { config } => check_health(&config).await,
        Command::RefreshHealthChecks { config } => refresh_health_checks(&config).await,
        Command::Health { config, at } => health_at(&config, at.as_deref()).await,
    }
}

/// `check-health`: a finding is the command's error, after the report.
async fn check_health(config: &Path) -> Result<(), CliError> {
    let config = failover_config::check(config)?.config;
    let sdk = aws::load_sdk_config().await?;
    let report = health::check_health(&sdk, &config).await?;
    print_json(&report);
    match report.findings.len() {
        0 => Ok(()),
        n => Err(CliError::HealthFindings(n)),
    }
}

async fn refresh_health_checks(config: &Path) -> Result<(), CliError> {
    let config = failover_config::check(config)?.config;
    let sdk = aws::load_sdk_config().await?;
    print_json(&health::refresh_health_checks(&sdk, &config).await?);
    Ok(())
}

async fn health_at(config: &Path, at: Option<&str>) -> Result<(), CliError> {
    let config = failover_config::check(config)?.config;
    let at = match at {
        None => geoprov_shared::clock::now_epoch_millis().div_euclid(1000),
        Some(raw) => parse_time(raw)?,
    };
    let sdk = aws::load_sdk_config().await?;
    print_json(&health::health_at(&sdk, &config, at).await?);
    Ok(())
}

/// Epoch seconds, or an RFC 3339 time.
fn parse_time(raw: &str) -> Result<i64, CliError> {
    raw.parse::<i64>().or_else(|_| {
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| CliError::AtTime(raw.to_owned()))
    })
}
