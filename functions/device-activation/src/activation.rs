//! One registration event: read the certificate, apply the device rules,
//! and either commit and activate, or audit the denial and leave the
//! certificate PENDING_ACTIVATION.
//!
//! An error (IoT or the table not answering) fails the invocation: the topic
//! rule's Lambda action invokes asynchronously, so Lambda runs it again, and
//! IoT publishes the event again on the device's next connect. Every step is
//! safe to run again: a committed certificate is a retry (no quota, no
//! second audit event) whose IoT steps are idempotent.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_device_rules::rules::{Denial, Grant, GrantKind, Policy, Reason};
use geoprov_shared::audit::{AuditEvent, Decision};
use geoprov_shared::clock::now_rfc3339;
use geoprov_shared::device::{DeviceRecord, SerialNumber};
use geoprov_shared::registry::{
    AuditLog, CommitOutcome, DeviceRegistry, ProvisioningCommit, RegistryError,
};
use geoprov_shared::telemetry::{MetricLine, Unit};
use serde_json::Value;
use x509_parser::prelude::FromDer;

use crate::SERVICE;
use crate::event::{PENDING_ACTIVATION, RegisteredEvent};
use crate::iot::{DeviceRegistrar, IotError, RegisteredCertificate, ThingPlan};

/// The audit kind of an activation decision.
pub const AUDIT_KIND: &str = "JITR_ACTIVATION";
/// Commits tried when the device changes between read and write.
const MAX_COMMIT_ATTEMPTS: usize = 3;

/// What an event came to; the function's answer, e.g.
/// `{"outcome": "DENIED", "reason": "REGION_NOT_ALLOWED", "detail": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Activation {
    /// Committed now, thing made, certificate ACTIVE.
    Activated { serial: String },
    /// Committed before (a run again): thing and certificate made sure of.
    Completed { serial: String },
    /// Denied and audited; the certificate stays PENDING_ACTIVATION.
    Denied { reason: Reason, detail: String },
    /// Nothing to decide: not a registration event, not pending, gone, or
    /// not under the CA the event names.
    Ignored { why: String },
}

/// Why an activation must run again.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Iot(#[from] IotError),
    #[error("the device changed on each of {MAX_COMMIT_ATTEMPTS} attempts")]
    Contended,
}

/// The Lambda error the IoT rule sees (and retries): a stable type by
/// cause, never a Rust type name.
impl From<ActivationError> for lambda_runtime::Diagnostic {
    fn from(error: ActivationError) -> Self {
        let error_type = match &error {
            ActivationError::Registry(_) => "RegistryUnavailable",
            ActivationError::Iot(_) => "IotUnavailable",
            ActivationError::Contended => "Contended",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}

pub struct Activator<R, I> {
    policy: Policy,
    registry: R,
    iot: I,
    thing_type: String,
    device_policy: String,
    fleet_ca_ids: BTreeSet<String>,
}

impl<R, I> Activator<R, I>
where
    R: DeviceRegistry + AuditLog,
    I: DeviceRegistrar,
{
    pub fn new(
        policy: Policy,
        registry: R,
        iot: I,
        thing_type: impl Into<String>,
        device_policy: impl Into<String>,
        fleet_ca_ids: BTreeSet<String>,
    ) -> Self {
        Activator {
            policy,
            registry,
            iot,
            thing_type: thing_type.into(),
            device_policy: device_policy.into(),
            fleet_ca_ids,
        }
    }

    pub async fn handle(
        &self,
        payload: Value,
        request_id: &str,
    ) -> Result<Activation, ActivationError> {
        let outcome = self.activate(payload, request_id).await;
        let (name, value) = match &outcome {
            Ok(Activation::Activated { .. } | Activation::Completed { .. }) => ("Activated", 1.0),
            Ok(Activation::Denied { .. }) => ("Denied", 1.0),
            Ok(Activation::Ignored { .. }) => ("Ignored", 1.0),
            Err(_) => ("Failed", 1.0),
        };
        MetricLine::new(SERVICE)
            .metric(name, value, Unit::Count)
            .emit();
        match &outcome {
            Ok(Activation::Denied { reason, detail }) => {
                tracing::info!(reason = reason.code(), detail, "activation denied")
            }
            Ok(Activation::Ignored { why }) => tracing::info!(why, "event ignored"),
            Ok(done) => tracing::info!(outcome = ?done, "certificate activated"),
            Err(e) => tracing::error!(error = %e, "activation failed; it runs again"),
        }
        outcome
    }

    async fn activate(
        &self,
        payload: Value,
        request_id: &str,
    ) -> Result<Activation, ActivationError> {
        let certificate = match self.pending_certificate(payload).await? {
            Ok(certificate) => certificate,
            Err(why) => return Ok(Activation::Ignored { why }),
        };
        let serial = match common_name(&certificate.pem).map(SerialNumber::try_from) {
            Some(Ok(serial)) => serial,
            _ => {
                let denial = Denial::new(
                    Reason::UnknownDevice,
                    "the certificate's subject CN is not a serial number",
                );
                self.audit(&self.event(None, &certificate, &denial, request_id))
                    .await?;
                return Ok(denied(denial));
            }
        };
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let device = self.registry.device(&serial).await?;
            let ruled = self.policy.device_rules(
                &serial,
                &certificate.id,
                &certificate.pem,
                device.as_ref(),
            );
            let (grant, device) = match (ruled, device) {
                (Ok(grant), Some(device)) => (grant, device),
                (Err(denial), _) => {
                    return self.deny(&serial, &certificate, denial, request_id).await;
                }
                (Ok(_), None) => {
                    let denial = Denial::new(
                        Reason::UnknownDevice,
                        format!("{serial} is not in the registry"),
                    );
                    return self.deny(&serial, &certificate, denial, request_id).await;
                }
            };
            let plan = self.thing_plan(&serial, &grant, &device);
            if let Some(denial) = self.thing_refusal(&plan).await? {
                return self.deny(&serial, &certificate, denial, request_id).await;
            }
            let GrantKind::New { region_limit } = grant.kind else {
                return self
                    .reactivate(&serial, &certificate, &device, &plan, request_id)
                    .await;
            };
            // A certificate whose provisioning the hook settled as not
            // applied (fenced) can never commit here: every commit would
            // conflict and the rule run again for ever. Denied and audited.
            if device
                .provisioning
                .is_fenced(&self.policy.region, &certificate.id)
            {
                let denial = Denial::new(
                    Reason::DeadlineExceeded,
                    "this certificate's earlier provisioning was settled as not applied here",
                );
                return self.deny(&serial, &certificate, denial, request_id).await;
            }
            let allowed = Denial::new(Reason::Allowed, "every device rule passed");
            let audit = self.event(Some(&serial), &certificate, &allowed, request_id);
            let commit = ProvisioningCommit {
                serial: serial.clone(),
                certificate_id: certificate.id.clone(),
                region: self.policy.region.clone(),
                region_limit,
                profile_version: grant.profile_version.clone(),
                guard: device.provisioning.guard.clone(),
                at: audit.time.clone(),
            };
            match self.registry.record_provisioning(&commit, &audit).await? {
                CommitOutcome::Committed => {
                    self.iot.activate(&certificate, &plan).await?;
                    return Ok(Activation::Activated {
                        serial: serial.to_string(),
                    });
                }
                CommitOutcome::Conflict => continue,
            }
        }
        Err(ActivationError::Contended)
    }

    /// The certificate the event announces, when it is this function's to
    /// decide: a fleet CA's, still PENDING_ACTIVATION, under that CA. Else
    /// why the event is ignored.
    async fn pending_certificate(
        &self,
        payload: Value,
    ) -> Result<Result<RegisteredCertificate, String>, ActivationError> {
        let ignored = |why: String| Ok(Err(why));
        let event = match RegisteredEvent::parse(payload) {
            Ok(event) => event,
            Err(e) => return ignored(e.to_string()),
        };
        // The rule hears every CA with auto-registration in the account:
        // only the fleet's is this function's to decide.
        if !self.fleet_ca_ids.contains(&event.ca_certificate_id) {
            return ignored("the event's CA is not a fleet CA".into());
        }
        if event.certificate_status != PENDING_ACTIVATION {
            return ignored(format!(
                "the event's status is {}",
                event.certificate_status
            ));
        }
        let Some(certificate) = self.iot.certificate(&event.certificate_id).await? else {
            return ignored("the certificate is not registered".into());
        };
        if certificate.status != PENDING_ACTIVATION {
            return ignored(format!("the certificate is {}", certificate.status));
        }
        if certificate.ca_certificate_id.as_deref() != Some(event.ca_certificate_id.as_str()) {
            return ignored("the certificate is not under the event's CA".into());
        }
        Ok(Ok(certificate))
    }

    /// Why the thing the plan names cannot take this certificate, if it
    /// cannot: a thing of the serial's name of another type, or a thing
    /// group that does not exist here.
    async fn thing_refusal(&self, plan: &ThingPlan) -> Result<Option<Denial>, ActivationError> {
        // A thing of the serial's name that is not a device's (another
        // type, or none) may be privileged: the certificate would take
        // its groups and what its policies grant. Refused, audited.
        if let Some(existing) = self.iot.existing_thing_type(&plan.thing_name).await?
            && existing.as_deref() != Some(plan.thing_type.as_str())
        {
            let denial = Denial::new(
                Reason::ThingTypeMismatch,
                format!(
                    "a thing named {} exists with type {}, not {}",
                    plan.thing_name,
                    existing.as_deref().unwrap_or("(none)"),
                    plan.thing_type
                ),
            );
            return Ok(Some(denial));
        }
        // What would fail every run after the commit is refused before it.
        if !self.iot.thing_group_exists(&plan.thing_group).await? {
            let denial = Denial::new(
                Reason::InternalError,
                format!("the thing group {} does not exist here", plan.thing_group),
            );
            return Ok(Some(denial));
        }
        Ok(None)
    }

    /// The thing a granted certificate is attached to, as the template
    /// would make it.
    fn thing_plan(&self, serial: &SerialNumber, grant: &Grant, device: &DeviceRecord) -> ThingPlan {
        ThingPlan {
            thing_name: serial.to_string(),
            thing_type: self.thing_type.clone(),
            attributes: attributes(serial, &self.policy, device),
            thing_group: grant
                .parameter_overrides
                .get("ThingGroupName")
                .cloned()
                .unwrap_or_else(|| self.policy.default_thing_group.to_string()),
            policy_name: self.device_policy.clone(),
        }
    }

    /// A certificate provisioned before, activated with no quota used.
    async fn reactivate(
        &self,
        serial: &SerialNumber,
        certificate: &RegisteredCertificate,
        device: &DeviceRecord,
        plan: &ThingPlan,
        request_id: &str,
    ) -> Result<Activation, ActivationError> {
        // Provisioned before. Here: a run again after a failure,
        // already audited. In another region: a failover, no quota,
        // but a decision of this region, audited here.
        if !device
            .provisioning
            .has_certificate_in(&self.policy.region, &certificate.id)
        {
            let failover = Denial::new(
                Reason::Allowed,
                "provisioned in another region before; activated here, no quota used",
            );
            self.audit(&self.event(Some(serial), certificate, &failover, request_id))
                .await?;
        }
        self.iot.activate(certificate, plan).await?;
        Ok(Activation::Completed {
            serial: serial.to_string(),
        })
    }

    async fn deny(
        &self,
        serial: &SerialNumber,
        certificate: &RegisteredCertificate,
        denial: Denial,
        request_id: &str,
    ) -> Result<Activation, ActivationError> {
        self.audit(&self.event(Some(serial), certificate, &denial, request_id))
            .await?;
        Ok(denied(denial))
    }

    fn event(
        &self,
        serial: Option<&SerialNumber>,
        certificate: &RegisteredCertificate,
        outcome: &Denial,
        request_id: &str,
    ) -> AuditEvent {
        AuditEvent {
            kind: AUDIT_KIND.into(),
            serial_number: serial.map(|s| s.to_string()),
            decision: match outcome.reason {
                Reason::Allowed => Decision::Allow,
                _ => Decision::Deny,
            },
            reason: outcome.reason.code().into(),
            detail: outcome.detail.clone(),
            region: self.policy.region.to_string(),
            certificate_id: Some(certificate.id.clone()),
            claim_certificate_id: None,
            client_id: None,
            request_id: request_id.into(),
            time: now_rfc3339(),
        }
        .bounded()
    }

    /// A denial is audited before it is answered; a lost audit write is an
    /// error, so the event runs again rather than go unrecorded.
    async fn audit(&self, event: &AuditEvent) -> Result<(), RegistryError> {
        self.registry.append(event).await
    }
}

fn denied(denial: Denial) -> Activation {
    Activation::Denied {
        reason: denial.reason,
        detail: denial.detail,
    }
}

/// The thing's attributes: the serial, the region, and the profile's own.
fn attributes(
    serial: &SerialNumber,
    policy: &Policy,
    device: &geoprov_shared::device::DeviceRecord,
) -> BTreeMap<String, String> {
    let mut attributes: BTreeMap<String, String> = device
        .profile
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.insert("serialNumber".into(), serial.to_string());
    attributes.insert("region".into(), policy.region.to_string());
    attributes
}

/// The subject CN of a PEM certificate.
fn common_name(certificate_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()).ok()?;
    let (_, certificate) =
        x509_parser::certificate::X509Certificate::from_der(&pem.contents).ok()?;
    let mut names = certificate.subject().iter_common_name();
    let cn = names.next()?.as_str().ok()?.to_owned();
    names.next().is_none().then_some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the IoT rule sees of a failed run: a stable type by cause.
    #[test]
    fn an_error_has_a_stable_type() {
        let diagnostic = lambda_runtime::Diagnostic::from(ActivationError::Contended);
        assert_eq!(diagnostic.error_type, "Contended");
        let diagnostic = lambda_runtime::Diagnostic::from(ActivationError::Registry(
            RegistryError::Unavailable("throttled".into()),
        ));
        assert_eq!(diagnostic.error_type, "RegistryUnavailable");
        assert!(!diagnostic.error_type.contains("::"));
    }
}
