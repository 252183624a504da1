//! Admission: the client certificate and the CONNECT checked against the
//! registry and the certificate's policies ("Authentication" / "X.509
//! client certificates", "Authorization" / policies), and the certificates
//! registered on the way ("Just-in-time provisioning", JITR and JITP).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

use super::Broker;
use crate::policy::{self, Action, ConnectionContext};
use crate::quotas::Quota;
use crate::registry::Certificate;

/// What a connection may do: its policies and its policy variables.
pub(super) struct SessionAuth {
    documents: Vec<Value>,
    context: ConnectionContext,
}

/// Why a connection was refused before CONNACK.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error("the certificate is not registered, nor signed by a CA with auto-registration")]
    Unknown,
    #[error("the certificate is {0}, not ACTIVE")]
    NotActive(String),
    #[error("the certificate is outside its validity period")]
    Expired,
    #[error("the certificate was auto-registered PENDING_ACTIVATION")]
    JustRegistered(Box<JitpJob>),
    #[error("the policies do not allow iot:Connect for this client id")]
    NotAuthorized,
    #[error("the client id is empty or longer than 128 characters")]
    BadClientId,
    #[error("over the {} rate quota", .0.name())]
    Throttled(Quota),
    #[error("{0}")]
    Registry(String),
}

impl Broker {
    pub(super) fn allowed(&self, auth: &SessionAuth, action: Action, object: &str) -> bool {
        let resource = action.resource(&self.arn_prefix, object);
        policy::evaluate(&auth.documents, action, &resource, &auth.context).allowed()
    }

    /// Authenticates the certificate and authorizes the CONNECT.
    pub(super) async fn admit(
        &self,
        der: &[u8],
        certificate_id: &str,
        client_id: &str,
    ) -> Result<(Certificate, Arc<SessionAuth>), Refusal> {
        if client_id.is_empty() || client_id.len() > 128 {
            return Err(Refusal::BadClientId);
        }
        if !self.quotas.take(Quota::Connect) {
            return Err(Refusal::Throttled(Quota::Connect));
        }
        let registry_error = |e: crate::registry::RegistryError| Refusal::Registry(e.to_string());
        let parsed = x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|_| Refusal::Unknown)?;
        let now = x509_parser::time::ASN1Time::from_timestamp(self.clock.now_secs())
            .map_err(|_| Refusal::Expired)?;
        if !parsed.validity().is_valid_at(now) {
            return Err(Refusal::Expired);
        }
        let certificate = match self
            .registry
            .certificate(certificate_id)
            .await
            .map_err(registry_error)?
        {
            Some(c) if c.status == "ACTIVE" => c,
            Some(c) => {
                if c.status == "PENDING_ACTIVATION"
                    && let Some(ca) = self.issuing_ca(&parsed).await.map_err(registry_error)?
                {
                    let (topic, event) = self.provisioning.registered_event(&ca.id, certificate_id);
                    self.route(
                        &topic,
                        Bytes::from(event.to_string()),
                        QoS::AtLeastOnce,
                        None,
                    );
                }
                return Err(Refusal::NotActive(c.status));
            }
            None => {
                let job = self.register_just_in_time(der, &parsed).await?;
                return Err(Refusal::JustRegistered(Box::new(job)));
            }
        };
        let things = self
            .registry
            .things_of(&certificate.arn)
            .await
            .map_err(registry_error)?;
        let documents = self
            .registry
            .policies_of(&certificate.arn)
            .await
            .map_err(registry_error)?;
        let auth = Arc::new(SessionAuth {
            documents,
            context: ConnectionContext {
                client_id: client_id.to_owned(),
                thing_name: things.iter().find(|t| *t == client_id).cloned(),
            },
        });
        if !self.allowed(&auth, Action::Connect, client_id) {
            return Err(Refusal::NotAuthorized);
        }
        Ok((certificate, auth))
    }

    /// The registered, ACTIVE CA with auto-registration on that signed
    /// `certificate`, if any.
    async fn issuing_ca(
        &self,
        certificate: &x509_parser::certificate::X509Certificate<'_>,
    ) -> Result<Option<crate::registry::CaCertificate>, crate::registry::RegistryError> {
        for ca in self.registry.ca_certificates().await? {
            if !(ca.active && ca.auto_registration) {
                continue;
            }
            let Ok(block) = pem::parse(&ca.pem) else {
                continue;
            };
            let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(block.contents()) else {
                continue;
            };
            if certificate.issuer() == ca_cert.subject()
                && certificate
                    .verify_signature(Some(ca_cert.public_key()))
                    .is_ok()
            {
                return Ok(Some(ca));
            }
        }
        Ok(None)
    }

    /// Auto-registration: the certificate PENDING_ACTIVATION under its CA
    /// and the registered event; the template runs once the connection is
    /// dropped.
    async fn register_just_in_time(
        &self,
        der: &[u8],
        parsed: &x509_parser::certificate::X509Certificate<'_>,
    ) -> Result<JitpJob, Refusal> {
        let registry_error = |e: crate::registry::RegistryError| Refusal::Registry(e.to_string());
        let Some(ca) = self.issuing_ca(parsed).await.map_err(registry_error)? else {
            return Err(Refusal::Unknown);
        };
        if !self.quotas.take(Quota::AutoRegistration) {
            return Err(Refusal::Throttled(Quota::AutoRegistration));
        }
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        let certificate_id = self
            .registry
            .register_under_ca(&pem, &ca.pem)
            .await
            .map_err(registry_error)?;
        let (topic, event) = self.provisioning.registered_event(&ca.id, &certificate_id);
        self.route(
            &topic,
            Bytes::from(event.to_string()),
            QoS::AtLeastOnce,
            None,
        );
        Ok(JitpJob {
            ca,
            certificate_id,
            subject: subject_parameters(parsed),
        })
    }

    pub(super) async fn provision_just_in_time(&self, job: JitpJob) {
        match self
            .provisioning
            .provision_just_in_time(&job.ca, &job.certificate_id, &job.subject)
            .await
        {
            Ok(None) if job.ca.template_name.is_none() => tracing::info!(
                certificate_id = job.certificate_id,
                "JITR: registered PENDING_ACTIVATION, the event published"
            ),
            Ok(thing) => tracing::info!(
                certificate_id = job.certificate_id,
                thing = thing.unwrap_or_default(),
                "JITP provisioned"
            ),
            Err(rejection) => tracing::info!(
                certificate_id = job.certificate_id,
                code = rejection.code,
                message = rejection.message,
                "JITP failed"
            ),
        }
    }
}

/// A certificate just auto-registered, and what its CA's template needs.
#[derive(Debug)]
pub(super) struct JitpJob {
    ca: crate::registry::CaCertificate,
    certificate_id: String,
    subject: BTreeMap<String, String>,
}

/// The `AWS::IoT::Certificate::*` parameters IoT gives a JITP template,
/// from the certificate's subject; an attribute the subject lacks is absent.
fn subject_parameters(
    certificate: &x509_parser::certificate::X509Certificate<'_>,
) -> BTreeMap<String, String> {
    let names = [
        ("2.5.4.3", "CommonName"),
        ("2.5.4.6", "Country"),
        ("2.5.4.10", "Organization"),
        ("2.5.4.11", "OrganizationalUnit"),
        ("2.5.4.46", "DistinguishedNameQualifier"),
        ("2.5.4.8", "StateName"),
        ("2.5.4.5", "SerialNumber"),
    ];
    let mut parameters = BTreeMap::new();
    for attribute in certificate.subject().iter_attributes() {
        let oid = attribute.attr_type().to_id_string();
        if let Some((_, name)) = names.iter().find(|(o, _)| *o == oid)
            && let Ok(value) = attribute.as_str()
        {
            parameters.insert(format!("AWS::IoT::Certificate::{name}"), value.to_owned());
        }
    }
    parameters
}
