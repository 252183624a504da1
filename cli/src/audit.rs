//! `geoprov audit`: a device's audit events, and the overshoot detector's
//! report when its provisionings in all regions exceed its quota.

use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::device::DeviceRecord;
use geoprov_shared::registry::DeviceRegistry;

use crate::error::CliError;
use crate::output::print_json;
use crate::registry::{open, parse_serial};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, env = "TABLE_NAME")]
    table: String,
    /// The hook's DEFAULT_MAX_PROVISIONS, for a device whose profile
    /// sets no quota.
    #[arg(long, default_value_t = 3)]
    default_max_provisions: u32,
    serial: String,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (_, registry) = open(args.table).await?;
    let serial = parse_serial(&args.serial)?;
    let mut events = registry.audit_events(&serial).await?;
    if let Some(device) = registry.device(&serial).await? {
        let quota = device
            .profile
            .max_provisions
            .unwrap_or(args.default_max_provisions);
        let total = device.provisioning.total();
        if total > quota {
            events.push(quota_overshoot(&device, total, quota));
        }
    }
    print_json(&events);
    Ok(())
}

/// The overshoot detector's report: more provisionings in all regions than
/// the quota, which only regions committing within the replication lag of
/// one another can cause.
fn quota_overshoot(device: &DeviceRecord, total: u32, quota: u32) -> AuditEvent {
    let per_region: Vec<String> = device
        .provisioning
        .regions
        .iter()
        .map(|(region, state)| format!("{region} {}", state.provision_count))
        .collect();
    AuditEvent {
        kind: "QUOTA_OVERSHOOT".into(),
        serial_number: Some(device.profile.serial_number.to_string()),
        decision: Decision::Deny,
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
