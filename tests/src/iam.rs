//! A fake of IAM's policy evaluation, named as such: neither moto (which does
//! not evaluate condition keys) nor an AWS account is here. It decides the
//! one question the templates' DynamoDB grants raise: may a function perform
//! an action on an item whose partition key is `pk`?
//!
//! What it implements, from the IAM and DynamoDB documentation: a request is
//! allowed when some Allow statement names the action and, if the statement
//! has a `dynamodb:LeadingKeys` condition, the request's partition key
//! matches one of its patterns (`ForAllValues:StringLike` with one key: `*`
//! any run of characters, `?` any one). No statement means an implicit deny.
//! The templates hold no Deny statement; one would make this fake refuse to
//! answer rather than guess.

use serde_json::Value;

/// Whether `grants` (a function's entry of the template facts' "grants")
/// allow `action` on an item with partition key `pk`.
pub fn allows(grants: &Value, action: &str, pk: &str) -> bool {
    grants
        .as_array()
        .expect("grants are a list of statements")
        .iter()
        .any(|grant| {
            let names = grant["actions"].as_array().expect("a grant names actions");
            let named = names.iter().any(|a| a.as_str() == Some(action));
            named
                && match &grant["leadingKeys"] {
                    Value::Null => true,
                    leading => {
                        assert_eq!(
                            leading["operator"], "ForAllValues:StringLike",
                            "this fake evaluates only ForAllValues:StringLike on LeadingKeys"
                        );
                        leading["patterns"]
                            .as_array()
                            .expect("LeadingKeys patterns")
                            .iter()
                            .any(|p| string_like(&pattern_text(p), pk))
                    }
                }
        })
}

/// A LeadingKeys pattern as text: a literal, or an `Fn::Sub` whose
/// `${AWS::Region}` this fake reads as any region (it does not know which
/// region a request went to; the template test checks the text).
fn pattern_text(pattern: &Value) -> String {
    match (
        pattern.as_str(),
        pattern.get("Fn::Sub").and_then(Value::as_str),
    ) {
        (Some(text), _) => text.to_owned(),
        (None, Some(sub)) => sub.replace("${AWS::Region}", "*"),
        (None, None) => panic!("a pattern: {pattern}"),
    }
}

/// IAM's StringLike: `*` matches any run of characters, `?` any one, the
/// rest literally and case-sensitively.
pub fn string_like(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matched[j]: the pattern so far matches text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for p in pattern {
        let mut next = vec![false; text.len() + 1];
        match p {
            '*' => {
                let mut any = false;
                for j in 0..=text.len() {
                    any |= matched[j];
                    next[j] = any;
                }
            }
            _ => {
                for j in 1..=text.len() {
                    next[j] = matched[j - 1] && (p == '?' || p == text[j - 1]);
                }
            }
        }
        matched = next;
    }
    matched[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_like_is_iams_glob() {
        assert!(string_like("FAILOVER#*", "FAILOVER#global.iot.example.com"));
        assert!(string_like("FAILOVER#*", "FAILOVER#"));
        assert!(!string_like("FAILOVER#*", "AUDIT#FAILOVER#x"));
        assert!(string_like("A?C", "ABC"));
        assert!(!string_like("A?C", "AC"));
        assert!(!string_like("device#*", "DEVICE#1"));
        assert!(string_like("*#STATE", "PROVISIONING#STATE"));
    }

    #[test]
    fn a_grant_with_leading_keys_allows_only_matching_partitions() {
        let grants = json!([
            {"actions": ["dynamodb:PutItem"], "leadingKeys": {"operator": "ForAllValues:StringLike", "patterns": ["AUDIT#*"]}},
            {"actions": ["s3:GetObject"], "leadingKeys": null}
        ]);
        assert!(allows(&grants, "dynamodb:PutItem", "AUDIT#DEVICE#SN-1"));
        assert!(!allows(&grants, "dynamodb:PutItem", "DEVICE#SN-1"));
        assert!(!allows(&grants, "dynamodb:DeleteItem", "AUDIT#DEVICE#SN-1"));
        assert!(allows(&grants, "s3:GetObject", ""));
    }
}
