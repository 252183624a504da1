//! The IoT registry the emulator reads and writes: certificates, CA
//! certificates, things, thing types and groups, and policies, all in moto's
//! IoT through its API, so `aws iot describe-thing` against moto shows what
//! provisioning did.

use std::collections::HashMap;

use aws_sdk_iot::Client;
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iot::types::{
    AttributePayload, AutoRegistrationStatus, CaCertificateStatus, CertificateStatus,
};
use serde_json::Value;

/// A registry call failed (not a "not found", which each call answers).
#[derive(Debug, thiserror::Error)]
#[error("IoT registry: {0}")]
pub struct RegistryError(pub String);

fn failed<E: std::error::Error>(what: &str, e: E) -> RegistryError {
    RegistryError(format!("{what}: {}", DisplayErrorContext(&e)))
}

/// A describe call's answer: the resource, None when IoT says it does not
/// exist, or the error.
fn found<T, E, R>(
    result: Result<T, SdkError<E, R>>,
    operation: &str,
) -> Result<Option<T>, RegistryError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.code() == Some("ResourceNotFoundException")) =>
        {
            Ok(None)
        }
        Err(e) => Err(failed(operation, e)),
    }
}

/// A registered certificate as authentication needs it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub id: String,
    pub arn: String,
    pub status: String,
}

/// A registered CA certificate.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    pub id: String,
    pub pem: String,
    pub active: bool,
    pub auto_registration: bool,
    pub template_name: Option<String>,
}

/// A thing as the registry holds it.
#[derive(Debug, Clone, Default)]
pub struct Thing {
    pub thing_type: Option<String>,
    pub attributes: HashMap<String, String>,
}

/// moto's IoT in one region.
#[derive(Clone)]
pub struct Registry {
    client: Client,
}

impl Registry {
    pub fn new(client: Client) -> Self {
        Registry { client }
    }

    pub async fn certificate(&self, id: &str) -> Result<Option<Certificate>, RegistryError> {
        let sent = self
            .client
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await;
        let Some(out) = found(sent, "DescribeCertificate")? else {
            return Ok(None);
        };
        let d = out
            .certificate_description()
            .ok_or_else(|| RegistryError("DescribeCertificate: no description".into()))?;
        Ok(Some(Certificate {
            id: id.to_owned(),
            arn: d.certificate_arn().unwrap_or_default().to_owned(),
            status: d
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        }))
    }

    /// The documents of every policy attached to `principal`.
    pub async fn policies_of(&self, principal: &str) -> Result<Vec<Value>, RegistryError> {
        let attached = self
            .client
            .list_attached_policies()
            .target(principal)
            .send()
            .await
            .map_err(|e| failed("ListAttachedPolicies", e))?;
        let mut documents = Vec::new();
        for policy in attached.policies() {
            let Some(name) = policy.policy_name() else {
                continue;
            };
            let out = self
                .client
                .get_policy()
                .policy_name(name)
                .send()
                .await
                .map_err(|e| failed("GetPolicy", e))?;
            let text = out.policy_document().unwrap_or("{}");
            // A document that does not parse grants nothing.
            documents.push(serde_json::from_str(text).unwrap_or(Value::Null));
        }
        Ok(documents)
    }

    pub async fn things_of(&self, principal: &str) -> Result<Vec<String>, RegistryError> {
        let out = self
            .client
            .list_principal_things()
            .principal(principal)
            .send()
            .await
            .map_err(|e| failed("ListPrincipalThings", e))?;
        Ok(out.things().to_vec())
    }

    /// Registers a certificate made by the provisioning MQTT API (without a
    /// CA, as its CA is Amazon's) as PENDING_ACTIVATION.
    pub async fn register_created(&self, pem: &str) -> Result<String, RegistryError> {
        let out = self
            .client
            .register_certificate_without_ca()
            .certificate_pem(pem)
            .status(CertificateStatus::PendingActivation)
            .send()
            .await
            .map_err(|e| failed("RegisterCertificateWithoutCA", e))?;
        out.certificate_id()
            .map(str::to_owned)
            .ok_or_else(|| RegistryError("RegisterCertificateWithoutCA: no id".into()))
    }

    /// Auto-registration: the certificate under its CA, PENDING_ACTIVATION.
    pub async fn register_under_ca(
        &self,
        pem: &str,
        ca_pem: &str,
    ) -> Result<String, RegistryError> {
        let out = self
            .client
            .register_certificate()
            .certificate_pem(pem)
            .ca_certificate_pem(ca_pem)
            .status(CertificateStatus::PendingActivation)
            .send()
            .await
            .map_err(|e| failed("RegisterCertificate", e))?;
        out.certificate_id()
            .map(str::to_owned)
            .ok_or_else(|| RegistryError("RegisterCertificate: no id".into()))
    }

    pub async fn ca_certificates(&self) -> Result<Vec<CaCertificate>, RegistryError> {
        let listed = self
            .client
            .list_ca_certificates()
            .send()
            .await
            .map_err(|e| failed("ListCACertificates", e))?;
        let mut cas = Vec::new();
        for ca in listed.certificates() {
            let Some(id) = ca.certificate_id() else {
                continue;
            };
            let out = self
                .client
                .describe_ca_certificate()
                .certificate_id(id)
                .send()
                .await
                .map_err(|e| failed("DescribeCACertificate", e))?;
            let Some(d) = out.certificate_description() else {
                continue;
            };
            cas.push(CaCertificate {
                id: id.to_owned(),
                pem: d.certificate_pem().unwrap_or_default().to_owned(),
                active: d.status() == Some(&CaCertificateStatus::Active),
                auto_registration: d.auto_registration_status()
                    == Some(&AutoRegistrationStatus::Enable),
                template_name: out
                    .registration_config()
                    .and_then(|c| c.template_name())
                    .map(str::to_owned),
            });
        }
        Ok(cas)
    }

    pub async fn thing(&self, name: &str) -> Result<Option<Thing>, RegistryError> {
        let sent = self.client.describe_thing().thing_name(name).send().await;
        Ok(found(sent, "DescribeThing")?.map(|out| Thing {
            thing_type: out.thing_type_name().map(str::to_owned),
            attributes: out.attributes().cloned().unwrap_or_default(),
        }))
    }

    pub async fn thing_type_exists(&self, name: &str) -> Result<bool, RegistryError> {
        let sent = self
            .client
            .describe_thing_type()
            .thing_type_name(name)
            .send()
            .await;
        Ok(found(sent, "DescribeThingType")?.is_some())
    }

    pub async fn thing_group_exists(&self, name: &str) -> Result<bool, RegistryError> {
        let sent = self
            .client
            .describe_thing_group()
            .thing_group_name(name)
            .send()
            .await;
        Ok(found(sent, "DescribeThingGroup")?.is_some())
    }

    pub async fn policy_exists(&self, name: &str) -> Result<bool, RegistryError> {
        let sent = self.client.get_policy().policy_name(name).send().await;
        Ok(found(sent, "GetPolicy")?.is_some())
    }

    pub async fn create_thing(
        &self,
        name: &str,
        thing_type: Option<&str>,
        attributes: &HashMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.client
            .create_thing()
            .thing_name(name)
            .set_thing_type_name(thing_type.map(str::to_owned))
            .attribute_payload(
                AttributePayload::builder()
                    .set_attributes(Some(attributes.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("CreateThing", e))?;
        Ok(())
    }

    /// Sets a thing's type and its whole attribute set (the caller merged).
    pub async fn update_thing(
        &self,
        name: &str,
        thing_type: Option<&str>,
        attributes: &HashMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.client
            .update_thing()
            .thing_name(name)
            .set_thing_type_name(thing_type.map(str::to_owned))
            .remove_thing_type(thing_type.is_none())
            .attribute_payload(
                AttributePayload::builder()
                    .set_attributes(Some(attributes.clone()))
                    .merge(false)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("UpdateThing", e))?;
        Ok(())
    }

    pub async fn groups_of(&self, thing: &str) -> Result<Vec<String>, RegistryError> {
        let out = self
            .client
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .send()
            .await
            .map_err(|e| failed("ListThingGroupsForThing", e))?;
        Ok(out
            .thing_groups()
            .iter()
            .filter_map(|g| g.group_name().map(str::to_owned))
            .collect())
    }

    pub async fn add_to_group(&self, thing: &str, group: &str) -> Result<(), RegistryError> {
        self.client
            .add_thing_to_thing_group()
            .thing_name(thing)
            .thing_group_name(group)
            .send()
            .await
            .map_err(|e| failed("AddThingToThingGroup", e))?;
        Ok(())
    }

    pub async fn remove_from_group(&self, thing: &str, group: &str) -> Result<(), RegistryError> {
        self.client
            .remove_thing_from_thing_group()
            .thing_name(thing)
            .thing_group_name(group)
            .send()
            .await
            .map_err(|e| failed("RemoveThingFromThingGroup", e))?;
        Ok(())
    }

    pub async fn set_certificate_status(
        &self,
        id: &str,
        status: &str,
    ) -> Result<(), RegistryError> {
        self.client
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::from(status))
            .send()
            .await
            .map_err(|e| failed("UpdateCertificate", e))?;
        Ok(())
    }

    pub async fn create_policy(&self, name: &str, document: &str) -> Result<(), RegistryError> {
        self.client
            .create_policy()
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
            .map_err(|e| failed("CreatePolicy", e))?;
        Ok(())
    }

    pub async fn attach_policy(&self, policy: &str, principal: &str) -> Result<(), RegistryError> {
        self.client
            .attach_policy()
            .policy_name(policy)
            .target(principal)
            .send()
            .await
            .map_err(|e| failed("AttachPolicy", e))?;
        Ok(())
    }

    pub async fn attach_thing(&self, thing: &str, principal: &str) -> Result<(), RegistryError> {
        self.client
            .attach_thing_principal()
            .thing_name(thing)
            .principal(principal)
            .send()
            .await
            .map_err(|e| failed("AttachThingPrincipal", e))?;
        Ok(())
    }
}
