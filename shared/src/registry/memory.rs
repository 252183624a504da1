//! An in-process registry with the DynamoDB adapter's semantics, for unit
//! tests of handlers and for benchmarks of decision code without I/O.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError, Settled};
use crate::audit::AuditEvent;
use crate::claims::TrustedClaim;
use crate::device::{
    DeviceProfile, DeviceRecord, DeviceStatus, OperatorBlock, SerialNumber, commit_token,
};
use crate::table::new_version;

#[derive(Debug, Default)]
pub struct MemoryRegistry {
    devices: Mutex<HashMap<SerialNumber, DeviceRecord>>,
    audit: Mutex<Vec<AuditEvent>>,
    claims: Mutex<Vec<TrustedClaim>>,
}

impl MemoryRegistry {
    pub fn with_profiles(profiles: impl IntoIterator<Item = DeviceProfile>) -> Self {
        let registry = MemoryRegistry::default();
        for profile in profiles {
            registry.put_profile(profile);
        }
        registry
    }

    /// Replaces the profile with a new version, keeping the provisionings
    /// and any block (as an import does).
    pub fn put_profile(&self, mut profile: DeviceProfile) {
        profile.version = Some(new_version());
        let mut devices = self.devices.lock().expect("registry lock");
        let (block, provisioning) = devices
            .remove(&profile.serial_number)
            .map(|d| (d.block, d.provisioning))
            .unwrap_or_default();
        devices.insert(
            profile.serial_number.clone(),
            DeviceRecord {
                profile,
                block,
                provisioning,
            },
        );
    }

    /// An operator's block (`None` lifts it), with a new profile version.
    pub fn set_block(
        &self,
        serial: &SerialNumber,
        block: Option<OperatorBlock>,
    ) -> Result<(), RegistryError> {
        let mut devices = self.devices.lock().expect("registry lock");
        let device = devices
            .get_mut(serial)
            .ok_or_else(|| RegistryError::UnknownDevice(serial.to_string()))?;
        device.block = block;
        device.profile.version = Some(new_version());
        Ok(())
    }

    /// Replaces the trusted claim certificates in the table.
    pub fn set_claims(&self, claims: Vec<TrustedClaim>) {
        *self.claims.lock().expect("claims lock") = claims;
    }

    pub fn audit_events(&self) -> Vec<AuditEvent> {
        self.audit.lock().expect("audit lock").clone()
    }

    pub fn record(&self, serial: &SerialNumber) -> Option<DeviceRecord> {
        self.devices
            .lock()
            .expect("registry lock")
            .get(serial)
            .cloned()
    }
}

impl DeviceRegistry for MemoryRegistry {
    async fn device(&self, serial: &SerialNumber) -> Result<Option<DeviceRecord>, RegistryError> {
        Ok(self.record(serial))
    }

    async fn record_provisioning(
        &self,
        commit: &ProvisioningCommit,
        audit: &AuditEvent,
    ) -> Result<CommitOutcome, RegistryError> {
        let mut devices = self.devices.lock().expect("registry lock");
        let Some(device) = devices.get_mut(&commit.serial) else {
            return Ok(CommitOutcome::Conflict);
        };
        if device.profile.status != DeviceStatus::Allowed
            || device.profile.version != commit.profile_version
            || device.block.is_some()
            || device.provisioning.guard != commit.guard
        {
            return Ok(CommitOutcome::Conflict);
        }
        let state = device
            .provisioning
            .regions
            .entry(commit.region.clone())
            .or_default();
        if state.provision_count >= commit.region_limit
            || state
                .provisioned_certificate_ids
                .contains(&commit.certificate_id)
            || state
                .fenced_certificate_ids
                .contains(&commit.certificate_id)
        {
            return Ok(CommitOutcome::Conflict);
        }
        state.provision_count += 1;
        state
            .provisioned_certificate_ids
            .insert(commit.certificate_id.clone());
        state
            .committed_by
            .insert(commit_token(&commit.certificate_id, &audit.request_id));
        state.last_certificate_id = Some(commit.certificate_id.clone());
        state.last_provisioned_at = Some(commit.at.clone());
        device.provisioning.guard = Some(new_version());
        self.audit.lock().expect("audit lock").push(audit.clone());
        Ok(CommitOutcome::Committed)
    }

    async fn trusted_claims(&self) -> Result<Vec<TrustedClaim>, RegistryError> {
        Ok(self.claims.lock().expect("claims lock").clone())
    }

    async fn settle_lost_commit(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<Settled, RegistryError> {
        // As the DynamoDB fence: one step on the region's state, made if
        // absent.
        if let Some(device) = self
            .devices
            .lock()
            .expect("registry lock")
            .get_mut(&commit.serial)
        {
            let state = device
                .provisioning
                .regions
                .entry(commit.region.clone())
                .or_default();
            if state
                .provisioned_certificate_ids
                .contains(&commit.certificate_id)
            {
                let ours = commit_token(&commit.certificate_id, &denial.request_id);
                return Ok(match state.committed_by.contains(&ours) {
                    true => Settled::Committed,
                    false => Settled::CommittedElsewhere,
                });
            }
            state
                .fenced_certificate_ids
                .insert(commit.certificate_id.clone());
        }
        self.audit.lock().expect("audit lock").push(denial.clone());
        Ok(Settled::Fenced)
    }

    async fn append_unless_committed(
        &self,
        commit: &ProvisioningCommit,
        denial: &AuditEvent,
    ) -> Result<bool, RegistryError> {
        let committed = self
            .devices
            .lock()
            .expect("registry lock")
            .get(&commit.serial)
            .is_some_and(|d| {
                d.provisioning
                    .has_certificate_in(&commit.region, &commit.certificate_id)
            });
        let mut audit = self.audit.lock().expect("audit lock");
        // Append-only, as DynamoDB's: the same event (time, request) once.
        let already = audit.iter().any(|e| {
            e.time == denial.time
                && e.request_id == denial.request_id
                && e.serial_number == denial.serial_number
        });
        if committed || already {
            return Ok(false);
        }
        audit.push(denial.clone());
        Ok(true)
    }
}

impl AuditLog for MemoryRegistry {
    async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.audit.lock().expect("audit lock").push(event.clone());
        Ok(())
    }
}
