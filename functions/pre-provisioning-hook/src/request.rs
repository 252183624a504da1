//! The hook contract of AWS IoT fleet provisioning (payload version 2020-04-01).

use std::collections::BTreeMap;

use geoprov_shared::device::SerialNumber;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request as IoT sends it. Every field is optional here so that a
/// missing one becomes a denial with an audit trail, not a Lambda error;
/// unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    pub claim_certificate_id: Option<String>,
    pub certificate_id: Option<String>,
    pub certificate_pem: Option<String>,
    pub template_arn: Option<String>,
    pub client_id: Option<String>,
    pub parameters: Option<BTreeMap<String, Value>>,
}

/// The answer IoT expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    pub allow_provisioning: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameter_overrides: BTreeMap<String, String>,
}

impl HookResponse {
    pub fn deny() -> Self {
        HookResponse {
            allow_provisioning: false,
            parameter_overrides: BTreeMap::new(),
        }
    }

    pub fn allow(parameter_overrides: BTreeMap<String, String>) -> Self {
        HookResponse {
            allow_provisioning: true,
            parameter_overrides,
        }
    }
}

/// A request that cannot be decided on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRequest {
    #[error("request is not a JSON object of the hook contract: {0}")]
    Shape(String),
    #[error("required field {0} is missing or empty")]
    MissingField(&'static str),
    #[error("parameters.SerialNumber is missing or not a string")]
    MissingSerial,
    #[error("parameters.SerialNumber is not a valid thing name (1-128 of [A-Za-z0-9:_-])")]
    InvalidSerial,
}

pub use geoprov_device_rules::ProvisioningClaim;

impl TryFrom<HookRequest> for ProvisioningClaim {
    type Error = MalformedRequest;

    fn try_from(req: HookRequest) -> Result<Self, Self::Error> {
        let serial = match req.parameters.as_ref().and_then(|p| p.get("SerialNumber")) {
            Some(Value::String(s)) => {
                SerialNumber::try_from(s.as_str()).map_err(|_| MalformedRequest::InvalidSerial)?
            }
            _ => return Err(MalformedRequest::MissingSerial),
        };
        let required = |value: Option<String>, name| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or(MalformedRequest::MissingField(name))
        };
        let parameters = req
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| name != "SerialNumber")
            .map(|(name, value)| match value {
                Value::String(text) => (name, Some(text)),
                _ => (name, None),
            })
            .collect();
        Ok(ProvisioningClaim {
            parameters,
            serial,
            claim_certificate_id: required(req.claim_certificate_id, "claimCertificateId")?,
            certificate_id: required(req.certificate_id, "certificateId")?,
            certificate_pem: required(req.certificate_pem, "certificatePem")?,
            template_arn: required(req.template_arn, "templateArn")?,
            client_id: required(req.client_id, "clientId")?,
        })
    }
}

/// Parses a raw invocation payload into a claim.
pub fn parse_claim(payload: Value) -> Result<ProvisioningClaim, MalformedRequest> {
    let request: HookRequest =
        serde_json::from_value(payload).map_err(|e| MalformedRequest::Shape(e.to_string()))?;
    ProvisioningClaim::try_from(request)
}

/// The identifiers of a request, read leniently for the audit trail even
/// when the request is malformed. Never the certificate body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIdentifiers {
    pub serial_number: Option<String>,
    pub certificate_id: Option<String>,
    pub claim_certificate_id: Option<String>,
    pub client_id: Option<String>,
}

impl RequestIdentifiers {
    pub fn of(payload: &Value) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        RequestIdentifiers {
            serial_number: text(payload.pointer("/parameters/SerialNumber")),
            certificate_id: text(payload.get("certificateId")),
            claim_certificate_id: text(payload.get("claimCertificateId")),
            client_id: text(payload.get("clientId")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "claimCertificateId": "claim-1",
            "certificateId": "cert-1",
            "certificatePem": "-----BEGIN CERTIFICATE-----\n...",
            "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisiontemplate/geoprov",
            "clientId": "SN-1",
            "parameters": {"SerialNumber": "SN-1", "AWS::IoT::Certificate::Id": "cert-1"},
            "somethingNew": 42
        })
    }

    #[test]
    fn parses_the_documented_request_and_ignores_unknown_fields() {
        let claim = parse_claim(full()).unwrap();
        assert_eq!(claim.serial.as_str(), "SN-1");
        assert_eq!(claim.certificate_id, "cert-1");
        assert_eq!(claim.client_id, "SN-1");
    }

    #[test]
    fn every_missing_field_is_named() {
        for field in [
            "claimCertificateId",
            "certificateId",
            "certificatePem",
            "templateArn",
            "clientId",
        ] {
            let mut payload = full();
            payload.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse_claim(payload),
                Err(MalformedRequest::MissingField(field))
            );
        }
    }

    #[test]
    fn serial_must_be_a_string_thing_name() {
        for (serial, expected) in [
            (json!(12), MalformedRequest::MissingSerial),
            (json!(null), MalformedRequest::MissingSerial),
            (json!("SN 1"), MalformedRequest::InvalidSerial),
            (json!(""), MalformedRequest::InvalidSerial),
        ] {
            let mut payload = full();
            payload["parameters"]["SerialNumber"] = serial;
            assert_eq!(parse_claim(payload), Err(expected));
        }
    }

    #[test]
    fn wrong_types_and_non_objects_are_malformed_not_errors() {
        let mut payload = full();
        payload["clientId"] = json!(7);
        assert!(matches!(
            parse_claim(payload),
            Err(MalformedRequest::Shape(_))
        ));
        assert!(matches!(
            parse_claim(json!("x")),
            Err(MalformedRequest::Shape(_))
        ));
        assert!(matches!(
            parse_claim(json!([])),
            Err(MalformedRequest::Shape(_))
        ));
    }

    #[test]
    fn a_denial_serialises_without_overrides() {
        assert_eq!(
            serde_json::to_value(HookResponse::deny()).unwrap(),
            json!({"allowProvisioning": false})
        );
    }
}
