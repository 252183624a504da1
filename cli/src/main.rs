//! `geoprov`: the operator tool for the geoprov device registry and audit
//! log, the endpoint failover's configuration and the global name's answers.
//!
//! It uses the standard AWS configuration chain, so `AWS_ENDPOINT_URL` points
//! it at a local emulator.
//!
//! This file parses the command line and hands each subcommand to the module
//! that owns it: its arguments and its `run`.

mod audit;
mod canary;
mod claims;
mod device;
mod dns;
mod error;
mod failover;
mod failover_config;
mod health;
mod identity;
mod iot;
mod manifest;
mod output;
mod pca;
mod plan;
mod registry;
mod setup;
mod thing_groups;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

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
    Registry(registry::Command),
    /// Print a device's audit events (JSON, oldest first), and a
    /// QUOTA_OVERSHOOT event, last, when its provisionings in all regions
    /// as read now exceed its quota.
    Audit(audit::Args),
    /// ACM Private CA helpers for local runs.
    #[command(subcommand)]
    Pca(pca::Command),
    /// The endpoint failover.
    #[command(subcommand)]
    Failover(failover::Command),
    /// What resolvers get from a hosted zone's records.
    #[command(subcommand)]
    Dns(dns::Command),
    /// The trusted claim certificates in the table (the hook reads them at
    /// most once a minute).
    #[command(subcommand)]
    Claim(claims::Command),
    /// A reference device over MQTT with mutual TLS: fleet provisioning by
    /// claim, and connecting with a device certificate.
    #[command(subcommand)]
    Device(device::Command),
    /// Register the claim certificate and the CA certificate in every
    /// region's IoT, once; prints the ids samconfig names.
    #[command(subcommand)]
    Setup(setup::Command),
    /// The region canary's probe, from here.
    #[command(subcommand)]
    Canary(canary::Command),
    /// Whether devices have a usable identity wherever DNS may send them.
    #[command(subcommand)]
    Identity(identity::Command),
    /// How long IoT's quotas make onboarding, each region's loss and its
    /// failback take, what bounds each, and what would meet a target.
    Plan(plan::Args),
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

/// Hands the subcommand to the module that owns it.
async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Registry(command) => registry::run(command).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Pca(command) => pca::run(command).await,
        Command::Failover(command) => failover::run(command).await,
        Command::Dns(command) => dns::run(command).await,
        Command::Claim(command) => claims::run(command).await,
        Command::Device(command) => device::run(command).await,
        Command::Setup(command) => setup::run(command).await,
        Command::Canary(command) => canary::run(command).await,
        Command::Identity(command) => identity::run(command).await,
        Command::Plan(args) => plan::run(args),
    }
}
