//! IAM coverage: every AWS action a function performs is granted to it by
//! the templates (the regional template.yaml and the global global.yaml), and
//! every action they grant it is one it performs.
//!
//! Each function's real binary runs all its sample events against a moto
//! that records every request (moto's recorder), its requests signed with an
//! access key of its own. The recording gives each function's actions; the
//! templates' policies (read by `scripts/template_facts.py`) give its grants.
//! Every DynamoDB request is also held to the `dynamodb:LeadingKeys`
//! conditions of the grants: its item's partition key (each item's, in a
//! transaction) must match a pattern of a statement that grants the action,
//! as `geoprov_tests::iam` (a fake of IAM's evaluation) decides.
//! This binary holds one test: it sets the recording variable before moto
//! starts, and nothing else runs beside it.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_tests::{RECORDING_VARIABLE, child, iam, samples, template_facts, unique_table};
use serde_json::Value;

/// The access key each function's requests are signed with.
const FUNCTIONS: [(&str, &str); 5] = [
    ("pre-provisioning-hook", "GEOPROVHOOK"),
    ("endpoint-failover", "GEOPROVFAILOVER"),
    ("cert-issuer", "GEOPROVISSUER"),
    ("device-activation", "GEOPROVACTIVATION"),
    ("region-canary", "GEOPROVCANARY"),
];

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

fn body(request: &Value) -> Value {
    let raw = request["body"].as_str().unwrap_or_default();
    let bytes = if request["body_encoded"].as_bool().unwrap_or(false) {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_default()
    } else {
        raw.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// One action a recorded request needs, with the partition key of the item
/// it touches (DynamoDB item actions only).
type Need = (String, Option<String>);

/// The partition key of a DynamoDB item or key, as the request sent it.
fn partition_key(key: &Value) -> Option<String> {
    key["pk"]["S"].as_str().map(str::to_owned)
}

/// The partition key a DynamoDB request names: its Key, its Item, or the
/// `:pk` value of a Query's key condition (every geoprov Query names it so).
fn request_partition_key(operation: &str, body: &Value) -> Option<String> {
    match operation {
        "GetItem" | "UpdateItem" | "DeleteItem" => partition_key(&body["Key"]),
        "PutItem" => partition_key(&body["Item"]),
        "Query" => body["ExpressionAttributeValues"][":pk"]["S"]
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// The IAM actions one recorded request needs, and the access key it was signed with.
fn actions_of(request: &Value) -> Option<(String, Vec<Need>)> {
    let authorization = header(request, "Authorization")?;
    let credential = authorization
        .split("Credential=")
        .nth(1)?
        .split(',')
        .next()?;
    let scope: Vec<&str> = credential.split('/').collect();
    // The signing name, and the IAM prefix where they differ.
    let service = match scope[3] {
        "monitoring" => "cloudwatch",
        name => name,
    };
    let key = scope[0].to_owned();
    let operation = match header(request, "X-Amz-Target") {
        Some(target) => target.rsplit('.').next()?.to_owned(),
        None => query_action(request).unwrap_or_else(|| rest_operation(request, service)),
    };
    let body = body(request);
    let needs = if operation == "TransactWriteItems" {
        // IAM authorises each item of a transaction by its own action.
        body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_object()?.iter().next())
            .map(|(kind, inner)| {
                let (op, pk) = match kind.as_str() {
                    "ConditionCheck" => (
                        "ConditionCheckItem".to_owned(),
                        partition_key(&inner["Key"]),
                    ),
                    "Put" => ("PutItem".to_owned(), partition_key(&inner["Item"])),
                    other => (format!("{other}Item"), partition_key(&inner["Key"])),
                };
                (format!("{service}:{op}"), pk)
            })
            .collect()
    } else {
        let pk = match service {
            "dynamodb" => request_partition_key(&operation, &body),
            _ => None,
        };
        vec![(format!("{service}:{operation}"), pk)]
    };
    Some((key, needs))
}

/// The operation of an awsQuery request (CloudWatch): its `Action=` field.
fn query_action(request: &Value) -> Option<String> {
    let raw = request["body"].as_str()?;
    let text = match request["body_encoded"].as_bool().unwrap_or(false) {
        true => {
            use base64::Engine;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw).ok()?).ok()?
        }
        false => raw.to_owned(),
    };
    text.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned)
}

/// The REST operations: S3's object reads, and Route 53's by method and path.
fn rest_operation(request: &Value, service: &str) -> String {
    let method = request["method"].as_str().unwrap_or_default();
    let url = request["url"].as_str().unwrap_or_default();
    if service == "s3" {
        return match method {
            "GET" => "GetObject".into(),
            _ => format!("UNMAPPED {method} {url}"),
        };
    }
    if service == "iot" {
        return iot_operation(method, url);
    }
    let path = url.split("/2013-04-01/").nth(1).unwrap_or(url);
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["hostedzone", _, "rrset"]) => "ListResourceRecordSets".into(),
        ("POST", ["hostedzone", _, "rrset"]) => "ChangeResourceRecordSets".into(),
        ("GET", ["change", _]) => "GetChange".into(),
        _ => format!("UNMAPPED {method} {path}"),
    }
}

/// The operation of an IoT (REST-JSON) request, from its method and path
/// (the AWS IoT API reference's request syntax).
fn iot_operation(method: &str, url: &str) -> String {
    let path = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let operation = match (method, parts.as_slice()) {
        ("GET", ["certificates", _]) => "DescribeCertificate",
        ("PUT", ["certificates", _]) => "UpdateCertificate",
        ("GET", ["things", _]) => "DescribeThing",
        ("POST", ["things", _]) => "CreateThing",
        ("PATCH", ["things", _]) => "UpdateThing",
        ("PUT", ["thing-groups", "addThingToThingGroup"]) => "AddThingToThingGroup",
        ("GET", ["thing-groups", _]) => "DescribeThingGroup",
        ("PUT", ["target-policies", _]) => "AttachPolicy",
        ("PUT", ["things", _, "principals"]) => "AttachThingPrincipal",
        ("GET", ["things", _, "principals"]) => "ListThingPrincipals",
        ("DELETE", ["things", _, "principals"]) => "DetachThingPrincipal",
        ("DELETE", ["things", _]) => "DeleteThing",
        ("DELETE", ["certificates", _]) => "DeleteCertificate",
        ("POST", ["attached-policies", ..]) => "ListAttachedPolicies",
        ("POST", ["target-policies", _]) => "DetachPolicy",
        ("GET", ["endpoint"]) => "DescribeEndpoint",
        _ => return format!("UNMAPPED {method} {path}"),
    };
    operation.to_owned()
}

fn granted() -> BTreeMap<String, BTreeSet<String>> {
    let facts = template_facts();
    facts["actions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(binary, actions)| {
            let actions = actions
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (binary.clone(), actions)
        })
        .collect()
}

#[tokio::test]
async fn every_function_is_granted_exactly_the_aws_actions_it_performs() {
    // Alone in a child process whose moto records every request it serves.
    let recording = std::env::temp_dir().join(unique_table("moto-recording") + ".jsonl");
    if !child::alone(
        module_path!(),
        "every_function_is_granted_exactly_the_aws_actions_it_performs",
        &[(RECORDING_VARIABLE, recording.as_os_str())],
    ) {
        return;
    }
    let recording = std::path::PathBuf::from(std::env::var_os(RECORDING_VARIABLE).unwrap());

    samples::hook::run(FUNCTIONS[0].1).await;
    samples::failover::run(FUNCTIONS[1].1).await;
    samples::issuer::run(FUNCTIONS[2].1).await;
    samples::activation::run(FUNCTIONS[3].1).await;
    samples::canary::run(FUNCTIONS[4].1).await;

    let mut performed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut items: BTreeMap<String, BTreeSet<Need>> = BTreeMap::new();
    for line in std::fs::read_to_string(&recording)
        .expect("moto's recording")
        .lines()
    {
        let request: Value = serde_json::from_str(line).unwrap();
        if let Some((key, needs)) = actions_of(&request) {
            for (action, pk) in needs {
                performed
                    .entry(key.clone())
                    .or_default()
                    .insert(action.clone());
                if action.starts_with("dynamodb:") {
                    items.entry(key.clone()).or_default().insert((action, pk));
                }
            }
        }
    }
    let _ = std::fs::remove_file(&recording);

    let granted = granted();
    let facts = template_facts();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (binary, key) in FUNCTIONS {
        for (action, pk) in items.get(key).into_iter().flatten() {
            checked += 1;
            match pk {
                None => problems.push(format!(
                    "{binary} performs {action} on an item whose partition key the test cannot tell"
                )),
                Some(pk) if !iam::allows(&facts["grants"][binary], action, pk) => problems.push(
                    format!("{binary} performs {action} on {pk}, which no LeadingKeys condition of its grants allows"),
                ),
                Some(_) => {}
            }
        }
    }
    assert!(checked > 0, "no DynamoDB request was recorded");
    for (binary, key) in FUNCTIONS {
        let did = performed.get(key).cloned().unwrap_or_default();
        let may = granted.get(binary).cloned().unwrap_or_default();
        assert!(
            !did.is_empty(),
            "{binary} made no AWS request: the recording is broken"
        );
        for missing in did.difference(&may) {
            problems.push(format!(
                "{binary} performs {missing}, which the templates do not grant"
            ));
        }
        for unused in may.difference(&did) {
            problems.push(format!(
                "the templates grant {binary} {unused}, which it never performs"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
