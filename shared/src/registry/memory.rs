//! An in-process registry with the DynamoDB adapter's semantics, for unit
//! tests of handlers and for benchmarks of decision code without I/O.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError};
use crate::audit::AuditEvent;
use crate::device::{DeviceProfile, DeviceRecord, DeviceStatus, SerialNumber};

#[derive(Debug, Default)]
pub struct MemoryRegistry {
    devices: Mutex<HashMap<SerialNumber, DeviceRecord>>,
    audit: Mutex<Vec<AuditEvent>>,
}

impl MemoryRegistry {
    pub fn with_profiles(profiles: impl IntoIterator<Item = DeviceProfile>) -> Self {
        let registry = MemoryRegistry::default();
        for profile in profiles {
            registry.put_profile(profile);
        }
        registry
    }

    /// Replaces the profile, keeping the provisioning state (as an import does).
    pub fn put_profile(&self, profile: DeviceProfile) {
        let mut devices = self.devices.lock().expect("registry lock");
        let provisioning = devices
            .remove(&profile.serial_number)
            .map(|d| d.provisioning)
            .unwrap_or_default();
        devices.insert(
            profile.serial_number.clone(),
            DeviceRecord {
                profile,
                provisioning,
            },
        );
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
        let state = &mut device.provisioning;
        if device.profile.status != DeviceStatus::Allowed
            || state.provision_count >= commit.quota
            || state
                .provisioned_certificate_ids
                .contains(&commit.certificate_id)
        {
            return Ok(CommitOutcome::Conflict);
        }
        state.provision_count += 1;
        state
            .provisioned_certificate_ids
            .insert(commit.certificate_id.clone());
        state.last_region = Some(commit.region.to_string());
        state.last_certificate_id = Some(commit.certificate_id.clone());
        state.last_provisioned_at = Some(commit.at.clone());
        self.audit.lock().expect("audit lock").push(audit.clone());
        Ok(CommitOutcome::Committed)
    }
}

impl AuditLog for MemoryRegistry {
    async fn append(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.audit.lock().expect("audit lock").push(event.clone());
        Ok(())
    }
}
