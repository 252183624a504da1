//! The IoT registry calls of an activation, behind a small trait.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_iot::Client;
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus};

/// An auto-registered certificate, as DescribeCertificate gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCertificate {
    pub id: String,
    pub arn: String,
    pub status: String,
    pub ca_certificate_id: Option<String>,
    pub pem: String,
}

/// What an allowed activation makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingPlan {
    pub thing_name: String,
    pub thing_type: String,
    pub attributes: BTreeMap<String, String>,
    pub thing_group: String,
    pub policy_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IoT {operation}: {message}")]
pub struct IotError {
    pub operation: &'static str,
    pub message: String,
}

fn failed<E: std::error::Error + 'static>(operation: &'static str, e: E) -> IotError {
    IotError {
        operation,
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|e| e.code() == Some("ResourceNotFoundException"))
}

pub trait DeviceRegistrar: Send + Sync {
    /// DescribeCertificate; `None` when IoT has no such certificate.
    fn certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = Result<Option<RegisteredCertificate>, IotError>> + Send;

    /// Whether the thing group exists (IoT adds a thing only to one that
    /// does).
    fn thing_group_exists(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<bool, IotError>> + Send;

    /// The type of the thing named `name`: `None` when there is no such
    /// thing, `Some(None)` for a thing without a type.
    fn existing_thing_type(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Option<String>>, IotError>> + Send;

    /// The thing (created, or its type and attributes updated), its group,
    /// the policy and the principal attached, and last the certificate
    /// ACTIVE. Every step may run again.
    fn activate(
        &self,
        certificate: &RegisteredCertificate,
        plan: &ThingPlan,
    ) -> impl Future<Output = Result<(), IotError>> + Send;
}

/// IoT through the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkRegistrar {
    client: Client,
}

impl SdkRegistrar {
    pub fn new(client: Client) -> Self {
        SdkRegistrar { client }
    }
}

impl DeviceRegistrar for SdkRegistrar {
    async fn certificate(
        &self,
        certificate_id: &str,
    ) -> Result<Option<RegisteredCertificate>, IotError> {
        let described = match self
            .client
            .describe_certificate()
            .certificate_id(certificate_id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(failed("DescribeCertificate", e)),
        };
        let Some(description) = described.certificate_description() else {
            return Ok(None);
        };
        let missing = |what: &str| IotError {
            operation: "DescribeCertificate",
            message: format!("no {what} in the answer"),
        };
        Ok(Some(RegisteredCertificate {
            id: certificate_id.to_owned(),
            arn: description
                .certificate_arn()
                .ok_or_else(|| missing("certificateArn"))?
                .to_owned(),
            status: description
                .status()
                .map(|s| s.as_str().to_owned())
                .ok_or_else(|| missing("status"))?,
            ca_certificate_id: description.ca_certificate_id().map(str::to_owned),
            pem: description
                .certificate_pem()
                .ok_or_else(|| missing("certificatePem"))?
                .to_owned(),
        }))
    }

    async fn thing_group_exists(&self, group: &str) -> Result<bool, IotError> {
        match self
            .client
            .describe_thing_group()
            .thing_group_name(group)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(failed("DescribeThingGroup", e)),
        }
    }

    async fn existing_thing_type(&self, name: &str) -> Result<Option<Option<String>>, IotError> {
        match self.client.describe_thing().thing_name(name).send().await {
            Ok(thing) => Ok(Some(thing.thing_type_name().map(str::to_owned))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(failed("DescribeThing", e)),
        }
    }

    async fn activate(
        &self,
        certificate: &RegisteredCertificate,
        plan: &ThingPlan,
    ) -> Result<(), IotError> {
        let attributes = AttributePayload::builder()
            .set_attributes(Some(plan.attributes.clone().into_iter().collect()))
            .merge(true)
            .build();
        let exists = match self
            .client
            .describe_thing()
            .thing_name(&plan.thing_name)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(failed("DescribeThing", e)),
        };
        if exists {
            self.client
                .update_thing()
                .thing_name(&plan.thing_name)
                .thing_type_name(&plan.thing_type)
                .attribute_payload(attributes)
                .send()
                .await
                .map_err(|e| failed("UpdateThing", e))?;
        } else {
            self.client
                .create_thing()
                .thing_name(&plan.thing_name)
                .thing_type_name(&plan.thing_type)
                .attribute_payload(attributes)
                .send()
                .await
                .map_err(|e| failed("CreateThing", e))?;
        }
        self.client
            .add_thing_to_thing_group()
            .thing_group_name(&plan.thing_group)
            .thing_name(&plan.thing_name)
            .send()
            .await
            .map_err(|e| failed("AddThingToThingGroup", e))?;
        self.client
            .attach_policy()
            .policy_name(&plan.policy_name)
            .target(&certificate.arn)
            .send()
            .await
            .map_err(|e| failed("AttachPolicy", e))?;
        self.client
            .attach_thing_principal()
            .thing_name(&plan.thing_name)
            .principal(&certificate.arn)
            .send()
            .await
            .map_err(|e| failed("AttachThingPrincipal", e))?;
        self.client
            .update_certificate()
            .certificate_id(&certificate.id)
            .new_status(CertificateStatus::Active)
            .send()
            .await
            .map_err(|e| failed("UpdateCertificate", e))?;
        Ok(())
    }
}
