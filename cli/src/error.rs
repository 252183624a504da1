//! The one error every subcommand returns; `main` prints it after
//! `geoprov: ` and exits non-zero.

use std::path::PathBuf;

use geoprov_shared::registry::RegistryError;

use crate::{canary, device, failover_config, pca, setup, thing_groups};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
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
    #[error(
        "{count} invalid line(s) in the manifest; nothing was imported (use --skip-invalid to import the valid ones)"
    )]
    InvalidManifest { count: usize },
    #[error("{count} invalid line(s) were skipped")]
    SkippedLines { count: usize },
    #[error("{0}")]
    Pca(#[from] pca::PcaSetupError),
    #[error(
        "--key-algorithm {0} is not one of EC_prime256v1, EC_secp384r1, RSA_2048, RSA_3072, RSA_4096"
    )]
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
    #[error("{0}")]
    Coverage(String),
    #[error("{0}")]
    Plan(String),
    #[error("{0} identity coverage gap(s); see the report")]
    CoverageGaps(usize),
    #[error("--at {0:?} is neither epoch seconds nor RFC 3339")]
    AtTime(String),
    #[error("{option} {value:?} is not {expected}")]
    Location {
        option: &'static str,
        value: String,
        expected: String,
    },
}
