//! The request: one `{"serialNumber", "csrPem", "validityDays"?}`, or a batch
//! `{"requests": [...]}` of up to 500. Every shape problem becomes an
//! `INVALID_REQUEST` item, never a Lambda error.

use serde::Deserialize;
use serde_json::Value;

use crate::response::{ErrorCode, ItemResponse};

/// Largest batch accepted.
pub const MAX_BATCH: usize = 500;

/// One request, as received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRequest {
    pub serial_number: String,
    pub csr_pem: String,
    #[serde(default)]
    pub validity_days: Option<u32>,
}

/// What the payload asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A single request (or why it is invalid).
    One(Result<IssueRequest, ItemResponse>),
    /// A batch, each item parsed on its own.
    Batch(Vec<Result<IssueRequest, ItemResponse>>),
    /// A batch over the limit, or a payload that is no request at all.
    Invalid(ItemResponse),
}

fn item(value: Value) -> Result<IssueRequest, ItemResponse> {
    let serial = value
        .get("serialNumber")
        .and_then(Value::as_str)
        .map(str::to_owned);
    serde_json::from_value(value).map_err(|e| {
        ItemResponse::refused(
            serial.as_deref(),
            ErrorCode::InvalidRequest,
            format!("not a request {{\"serialNumber\", \"csrPem\", \"validityDays\"?}}: {e}"),
        )
    })
}

pub fn parse(payload: Value) -> Parsed {
    match payload {
        Value::Object(mut object) if object.contains_key("requests") => {
            let requests = object.remove("requests").unwrap_or_default();
            if !object.is_empty() {
                return Parsed::Invalid(ItemResponse::refused(
                    None,
                    ErrorCode::InvalidRequest,
                    "a batch has only \"requests\"",
                ));
            }
            match requests {
                Value::Array(items) if items.len() > MAX_BATCH => {
                    Parsed::Invalid(ItemResponse::refused(
                        None,
                        ErrorCode::InvalidRequest,
                        format!("a batch of {} requests; at most {MAX_BATCH}", items.len()),
                    ))
                }
                Value::Array(items) => Parsed::Batch(items.into_iter().map(item).collect()),
                _ => Parsed::Invalid(ItemResponse::refused(
                    None,
                    ErrorCode::InvalidRequest,
                    "\"requests\" must be an array",
                )),
            }
        }
        Value::Object(_) => Parsed::One(item(payload)),
        _ => Parsed::Invalid(ItemResponse::refused(
            None,
            ErrorCode::InvalidRequest,
            "the payload must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(response: &ItemResponse) -> ErrorCode {
        response.error_code().expect("an error item")
    }

    #[test]
    fn reads_one_request_and_batches() {
        let one = parse(json!({"serialNumber": "SN-1", "csrPem": "x", "validityDays": 30}));
        assert_eq!(
            one,
            Parsed::One(Ok(IssueRequest {
                serial_number: "SN-1".into(),
                csr_pem: "x".into(),
                validity_days: Some(30)
            }))
        );
        let Parsed::Batch(items) = parse(json!({"requests": [
            {"serialNumber": "SN-1", "csrPem": "x"},
            {"serialNumber": "SN-2"},
            {"serialNumber": 7, "csrPem": "x"},
            {"serialNumber": "SN-4", "csrPem": "x", "validityDays": -1},
            "nonsense",
        ]})) else {
            panic!("a batch")
        };
        assert!(items[0].is_ok());
        for bad in &items[1..] {
            assert_eq!(code(bad.as_ref().unwrap_err()), ErrorCode::InvalidRequest);
        }
        // The serial is echoed where it could be read.
        assert_eq!(
            serde_json::to_value(items[1].as_ref().unwrap_err()).unwrap()["serialNumber"],
            "SN-2"
        );
    }

    #[test]
    fn a_batch_of_501_is_refused_whole() {
        let requests: Vec<Value> = (0..501)
            .map(|i| json!({"serialNumber": format!("SN-{i}"), "csrPem": "x"}))
            .collect();
        let Parsed::Invalid(refusal) = parse(json!({ "requests": requests })) else {
            panic!("refused")
        };
        assert_eq!(code(&refusal), ErrorCode::InvalidRequest);
        let requests: Vec<Value> = (0..500)
            .map(|i| json!({"serialNumber": format!("SN-{i}"), "csrPem": "x"}))
            .collect();
        assert!(
            matches!(parse(json!({ "requests": requests })), Parsed::Batch(b) if b.len() == 500)
        );
    }

    #[test]
    fn non_objects_and_odd_batches_are_invalid_requests() {
        for bad in [
            json!(null),
            json!([1]),
            json!("x"),
            json!({"requests": {}}),
            json!({"requests": [], "x": 1}),
        ] {
            assert!(matches!(parse(bad.clone()), Parsed::Invalid(_)), "{bad}");
        }
        assert!(matches!(parse(json!({})), Parsed::One(Err(_))));
    }
}
