//! Fleet provisioning by claim over the Device provisioning MQTT API: the
//! device connects with the claim certificate as its provisioning client id,
//! gets a certificate (made by IoT with its key, or from the device's own
//! CSR so that the key never leaves the device), then RegisterThing with
//! its template and parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Backoff, Device, DeviceError, Endpoint, Identity};

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
    /// Answers IoT throttled on the way (each retried after a backoff).
    pub throttled: u32,
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

impl ProvisionError {
    /// IoT throttled the call (429 `ThrottlingException`): nothing was made,
    /// and the same request may be sent again after a backoff.
    pub fn is_throttled(&self) -> bool {
        matches!(self, ProvisionError::Rejected { status: 429, .. })
    }
}

/// Attempts of one call while IoT throttles it; with [`Backoff::DEVICE`]
/// they span about half a minute.
pub const THROTTLED_ATTEMPTS: u32 = 10;

/// Publishes `payload` to `topic` and returns the accepted answer, after
/// subscribing to both answers as the guide requires. A throttled answer
/// is retried after a backoff with full jitter, up to
/// [`THROTTLED_ATTEMPTS`]; `throttled` counts them.
async fn call(
    device: &mut Device,
    operation: &'static str,
    topic: &str,
    payload: Vec<u8>,
    throttled: &mut u32,
) -> Result<Value, ProvisionError> {
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    device.subscribe(&[&accepted, &rejected]).await?;
    let mut attempt = 0;
    loop {
        match answer(
            device,
            operation,
            topic,
            payload.clone(),
            &accepted,
            &rejected,
        )
        .await
        {
            Err(e) if e.is_throttled() && attempt + 1 < THROTTLED_ATTEMPTS => {
                *throttled += 1;
                tokio::time::sleep(Backoff::DEVICE.delay(attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// One request and its answer.
async fn answer(
    device: &mut Device,
    operation: &'static str,
    topic: &str,
    payload: Vec<u8>,
    accepted: &str,
    rejected: &str,
) -> Result<Value, ProvisionError> {
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

/// A certificate IoT made, its key, and the ownership token.
struct Created {
    certificate_id: String,
    certificate_pem: String,
    private_key_pem: String,
    token: String,
}

/// CreateCertificateFromCsr with a CSR of the device's key (the factory
/// key when given): the key never leaves the device.
async fn create_from_csr(
    device: &mut Device,
    request: &ProvisionRequest,
    throttled: &mut u32,
) -> Result<Created, ProvisionError> {
    let key = match &request.key_pem {
        // The parse error names no key material.
        Some(pem) => rcgen::KeyPair::from_pem(pem)
            .map_err(|_| ProvisionError::Key("the device key is not a PEM private key".into()))?,
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
        device,
        op,
        "$aws/certificates/create-from-csr/json",
        json!({"certificateSigningRequest": csr})
            .to_string()
            .into_bytes(),
        throttled,
    )
    .await?;
    Ok(Created {
        certificate_id: text(&body, "certificateId", op)?,
        certificate_pem: text(&body, "certificatePem", op)?,
        private_key_pem: key.serialize_pem(),
        token: text(&body, "certificateOwnershipToken", op)?,
    })
}

/// CreateKeysAndCertificate: IoT makes the key too.
async fn create_keys(device: &mut Device, throttled: &mut u32) -> Result<Created, ProvisionError> {
    let op = "CreateKeysAndCertificate";
    // The guide's request is an empty JSON object.
    let body = call(
        device,
        op,
        "$aws/certificates/create/json",
        b"{}".to_vec(),
        throttled,
    )
    .await?;
    Ok(Created {
        certificate_id: text(&body, "certificateId", op)?,
        certificate_pem: text(&body, "certificatePem", op)?,
        private_key_pem: text(&body, "privateKey", op)?,
        token: text(&body, "certificateOwnershipToken", op)?,
    })
}

/// Provisions a device with the claim identity.
pub async fn provision(
    endpoint: &Endpoint,
    claim: &Identity,
    request: &ProvisionRequest,
) -> Result<Provisioned, ProvisionError> {
    let mut device = Device::connect(endpoint, claim, &request.client_id).await?;
    let mut throttled = 0;
    let Created {
        certificate_id,
        certificate_pem,
        private_key_pem,
        token,
    } = if request.csr {
        create_from_csr(&mut device, request, &mut throttled).await?
    } else {
        create_keys(&mut device, &mut throttled).await?
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
        &mut throttled,
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
        throttled,
    })
}
