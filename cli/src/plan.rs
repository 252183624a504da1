//! `geoprov plan`: how long IoT's rate quotas make onboarding, the
//! re-homing after each region's loss and the failback take
//! (`geoprov_failover::plan`), as a table and as JSON.

use std::path::PathBuf;

use geoprov_failover::plan::{self, Fleet, Phase};

use crate::error::CliError;
use crate::failover_config;

#[derive(clap::Args)]
pub struct Args {
    /// The FAILOVER_CONFIG document: the locations and their chains.
    #[arg(long)]
    config: PathBuf,
    /// The fleet (JSON): {"locations": {SET_IDENTIFIER: {"devices": N,
    /// "route": "claim-fleet-ca"|"claim-amazon-ca"|"jitr"}}, "quotas":
    /// {NAME: PER_SECOND}, "regionQuotas": {REGION: {NAME: PER_SECOND}},
    /// "behaviour": {"backoffBaseSeconds", "backoffCapSeconds",
    /// "answersMoveAfterSeconds", "activationSeconds", "powerOnPerSecond",
    /// "recheckSeconds", ...}}; quotas left out are IoT's published
    /// defaults, behaviour left out the Device SDKs' (docs/operations.md).
    #[arg(long)]
    fleet: PathBuf,
    /// A target for every phase, in minutes: name the quota increases that
    /// would meet it.
    #[arg(long)]
    target_minutes: Option<f64>,
    /// Print JSON rather than the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let config = failover_config::check(&args.config)?.config;
    let text = std::fs::read_to_string(&args.fleet).map_err(|source| CliError::Read {
        path: args.fleet.clone(),
        source,
    })?;
    let fleet: Fleet = serde_json::from_str(&text)
        .map_err(|e| CliError::Plan(format!("{}: {e}", args.fleet.display())))?;
    let target = args.target_minutes.map(|m| m * 60.0);
    let phases = plan::plan(&config, &fleet, target).map_err(|e| CliError::Plan(e.to_string()))?;
    if args.json {
        crate::output::print_json(&phases);
    } else {
        print!("{}", table(&phases, target));
    }
    Ok(())
}

fn minutes(seconds: f64) -> String {
    format!("{:.1}", seconds / 60.0)
}

/// One row per phase and region, then the increases a target calls for.
fn table(phases: &[Phase], target: Option<f64>) -> String {
    let mut out = format!(
        "{:<34} {:<14} {:>9} {:>8} {:>8} {:>8} {:<24} {:>10}\n",
        "phase", "region", "devices", "minutes", "p50", "floor", "bottleneck (per s)", "claim uses"
    );
    for phase in phases {
        if phase.regions.is_empty() {
            out += &format!("{:<34} {:<14} {:>9}\n", phase.name, "-", 0);
        }
        for load in &phase.regions {
            let bottleneck = match (&load.bottleneck, load.rate) {
                (Some(quota), Some(rate)) => format!("{quota} ({rate})"),
                _ => "-".into(),
            };
            out += &format!(
                "{:<34} {:<14} {:>9} {:>8} {:>8} {:>8} {:<24} {:>10}\n",
                phase.name,
                load.region.as_str(),
                load.devices,
                minutes(load.seconds),
                minutes(load.p50_seconds),
                minutes(load.floor_seconds),
                bottleneck,
                load.claim_uses
            );
        }
    }
    out += "minutes: every device working (simulated, with retries); p50: half of them; \
            floor: units over rates, as if no device ever waited\n";
    for phase in phases {
        for raise in &phase.raise {
            out += &format!(
                "to meet the target in \"{}\": raise {} in {} from {} to {} per second\n",
                phase.name,
                raise.quota,
                raise.region.as_str(),
                raise.from,
                raise.to
            );
        }
        if let (Some(seconds), Some(target)) = (phase.seconds_with_raises, target) {
            let verdict = if seconds <= target {
                "meets the target"
            } else {
                "still over the target: the devices' backoff, not a rate, is the rest"
            };
            out += &format!(
                "  \"{}\" with those rates: {} minutes (simulated): {verdict}\n",
                phase.name,
                minutes(seconds)
            );
        }
    }
    out
}
