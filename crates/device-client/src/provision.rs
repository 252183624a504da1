//! Fleet provisioning by claim over the Device provisioning MQTT API: the
//! device connects with the claim certificate as its provisioning client id,
//! gets a certificate (made by IoT with its key, or from the device's own
//! CSR so that the key never leaves the device), then RegisterThing with
//! its template and parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{Device, DeviceError, Endpoint, Identity};

/// How long a device waits for IoT to answer one provisioning request:
/// RegisterThing alone may wait 5 s for the hook, and a fleet provisioning
/// at once queues.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// What to provision.
pub struct ProvisionRequest {
    /// The client id the claim connects with: the provisioning prefix and
    /// the serial.
    pub client_id: String,
    pub template: String,
    /// Make the key on the device and send a CSR (CreateCertificateFromCsr).
    pub csr: bool,
    /// The CSR's common name when `csr` is set.
    pub serial: String,
    /// The device's own key (PEM) for the CSR, such as the one whose hash
    /// the factory recorded; a new P-256 key when None.
    pub key_pem: Option<String>,
    pub parameters: BTreeMap<String, String>,
}

/// A provisioned device.
#[derive(Debug)]
pub struct Provisioned {
    pub thing_name: String,
    pub certificate_id: String,
    pub identity: Identity,
    pub device_configuration: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("{operation} rejected: {status} {code}: {message}")]
    Rejected {
        operation: &'static str,
        status: i64,
        code: String,
        message: String,
    },
    #[error("{0}: the answer is not what the API documents")]
    Malformed(&'static str),
    #[error("key generation: {0}")]
    Key(String),
}

/// Publishes `payload` to `topic` and returns the accepted answer, after
/// subscribing to both answers as the guide requires.
async fn call(
    device: &mut Device,
    operation: &'static str,
    topic: &str,
    payload: Vec<u8>,
) -> Result<Value, ProvisionError> {
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    device.subscribe(&[&accepted, &rejected]).await?;
    device.publish(topic, payload).await?;
    let message = device
        .receive(ANSWER_LIMIT, |t| t == accepted || t == rejected)
        .await?;
    let body = message.json().ok_or(ProvisionError::Malformed(operation))?;
    if message.topic == rejected {
        return Err(ProvisionError::Rejected {
            operation,
            status: body
                .get("statusCode")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            code: body
                .get("errorCode")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            message: body
                .get("errorMessage")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(body)
}

fn text(body: &Value, key: &str, operation: &'static str) -> Result<String, ProvisionError> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(ProvisionError::Malformed(operation))
}

/// Provisions a device with the claim identity.
pub async fn provision(
    endpoint: &Endpoint,
    claim: &Identity,
    request: &ProvisionRequest,
) -> Result<Provisioned, ProvisionError> {
    let mut device = Device::connect(endpoint, claim, &request.client_id).await?;
    let (certificate_id, certificate_pem, private_key_pem, token) = if request.csr {
        let key = match &request.key_pem {
            // The parse error names no key material.
            Some(pem) => rcgen::KeyPair::from_pem(pem).map_err(|_| {
                ProvisionError::Key("the device key is not a PEM private key".into())
            })?,
            None => rcgen::KeyPair::generate().map_err(|e| ProvisionError::Key(e.to_string()))?,
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| ProvisionError::Key(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, request.serial.clone());
        let csr = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(|e| ProvisionError::Key(e.to_string()))?;
        let op = "CreateCertificateFromCsr";
        let body = call(
            &mut device,
            op,
            "$aws/certificates/create-from-csr/json",
            json!({"certificateSigningRequest": csr})
                .to_string()
                .into_bytes(),
        )
        .await?;
        (
            text(&body, "certificateId", op)?,
            text(&body, "certificatePem", op)?,
            key.serialize_pem(),
            text(&body, "certificateOwnershipToken", op)?,
        )
    } else {
        let op = "CreateKeysAndCertificate";
        // The guide's request is an empty JSON object.
        let body = call(
            &mut device,
            op,
            "$aws/certificates/create/json",
            b"{}".to_vec(),
        )
        .await?;
        (
            text(&body, "certificateId", op)?,
            text(&body, "certificatePem", op)?,
            text(&body, "privateKey", op)?,
            text(&body, "certificateOwnershipToken", op)?,
        )
    };
    let op = "RegisterThing";
    let body = call(
        &mut device,
        op,
        &format!(
            "$aws/provisioning-templates/{}/provision/json",
            request.template
        ),
        json!({"certificateOwnershipToken": token, "parameters": request.parameters})
            .to_string()
            .into_bytes(),
    )
    .await?;
    device.disconnect().await;
    Ok(Provisioned {
        thing_name: text(&body, "thingName", op)?,
        certificate_id,
        identity: Identity {
            certificate_pem,
            private_key_pem,
        },
        device_configuration: body
            .get("deviceConfiguration")
            .cloned()
            .unwrap_or(Value::Null),
    })
}
