//! IoT policy evaluation for MQTT actions, as the IoT developer guide
//! describes it:
//! - "AWS IoT Core policies" and "AWS IoT Core policy actions"
//!   (`iot:Connect` on `client/<clientId>`, `iot:Publish` and `iot:Receive` on
//!   `topic/<topic>`, `iot:Subscribe` on `topicfilter/<filter>`);
//! - "AWS IoT Core policy variables" and "Thing policy variables"
//!   (`${iot:ClientId}`, `${iot:Connection.Thing.ThingName}`,
//!   `${iot:Connection.Thing.IsAttached}`);
//! - the IAM evaluation logic IoT follows: an explicit Deny wins, then an
//!   Allow, else the request is implicitly denied.
//!
//! Where the guide leaves a case open the emulator is strict:
//! - a variable's value is matched literally, so a client id `*` is not a
//!   wildcard;
//! - an Allow statement with anything this evaluator does not understand
//!   (NotAction, an unknown condition operator or key, a variable that does
//!   not resolve) grants nothing, and a Deny statement with such a thing
//!   denies.

use serde_json::Value;

/// An MQTT action a policy is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
    Receive,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }

    /// The resource the action is on, as an ARN in the region and account.
    pub fn resource(self, arn_prefix: &str, object: &str) -> String {
        let kind = match self {
            Action::Connect => "client",
            Action::Publish | Action::Receive => "topic",
            Action::Subscribe => "topicfilter",
        };
        format!("{arn_prefix}{kind}/{object}")
    }
}

/// What the policy variables of one connection resolve to.
#[derive(Debug, Clone, Default)]
pub struct ConnectionContext {
    pub client_id: String,
    /// The thing attached to the certificate whose name is the client id,
    /// if there is one: the guide's thing policy variables resolve only then.
    pub thing_name: Option<String>,
}

impl ConnectionContext {
    fn variable(&self, name: &str) -> Option<String> {
        match name {
            "iot:ClientId" => Some(self.client_id.clone()),
            "iot:Connection.Thing.ThingName" => self.thing_name.clone(),
            "iot:Connection.Thing.IsAttached" => Some(self.thing_name.is_some().to_string()),
            _ => None,
        }
    }
}

/// The outcome of evaluating every policy attached to a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        *self == Decision::Allow
    }
}

/// Evaluates `action` on `resource` against every document.
pub fn evaluate(
    documents: &[Value],
    action: Action,
    resource: &str,
    context: &ConnectionContext,
) -> Decision {
    let mut allowed = false;
    for document in documents {
        // Policy variables are substituted only in version 2012-10-17
        // documents; in others `${...}` is literal text, as in IAM.
        let variables = document.get("Version").and_then(Value::as_str) == Some("2012-10-17");
        for statement in statements(document) {
            let deny = match statement.get("Effect").and_then(Value::as_str) {
                Some("Allow") => false,
                Some("Deny") => true,
                // A statement with no valid effect: a Deny is assumed, strictly.
                _ => true,
            };
            match statement_applies(statement, action, resource, context, variables) {
                Applies::Yes if deny => return Decision::ExplicitDeny,
                Applies::Yes => allowed = true,
                Applies::Unknown if deny => return Decision::ExplicitDeny,
                Applies::Unknown | Applies::No => {}
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn statements(document: &Value) -> Vec<&Value> {
    match document.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => Vec::new(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Applies {
    Yes,
    No,
    /// Something in the statement this evaluator does not understand.
    Unknown,
}

fn statement_applies(
    statement: &Value,
    action: Action,
    resource: &str,
    context: &ConnectionContext,
    variables: bool,
) -> Applies {
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        return Applies::Unknown;
    }
    let Some(actions) = strings(statement.get("Action")) else {
        return Applies::Unknown;
    };
    if !actions.iter().any(|pattern| {
        glob(
            &pattern.to_ascii_lowercase(),
            &action.name().to_ascii_lowercase(),
        )
    }) {
        return Applies::No;
    }
    let Some(resources) = strings(statement.get("Resource")) else {
        return Applies::Unknown;
    };
    let mut unresolved = false;
    let mut matched = false;
    for pattern in resources {
        let pattern = if variables {
            substitute(&pattern, context)
        } else {
            Some(pattern)
        };
        match pattern {
            Some(pattern) if glob(&pattern, resource) => matched = true,
            Some(_) => {}
            None => unresolved = true,
        }
    }
    if !matched {
        return if unresolved {
            Applies::Unknown
        } else {
            Applies::No
        };
    }
    match statement.get("Condition") {
        None => Applies::Yes,
        Some(condition) => conditions_hold(condition, context),
    }
}

/// A string or a list of strings; None for anything else.
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

/// The pattern with each `${variable}` replaced by its value, escaped so
/// that it matches only itself; None when a variable does not resolve.
fn substitute(pattern: &str, context: &ConnectionContext) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let name = &after[..end];
        let value = match name {
            // The guide's special characters: ${*}, ${?}, ${$}.
            "*" | "?" | "$" => format!("\\{name}"),
            _ => escape(&context.variable(name)?),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `text` matches `pattern`, where `*` is any run of characters,
/// `?` any one character and `\x` the character x.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => {
                pi += 2;
                ti += 1;
                continue;
            }
            Some(c) if *c != '\\' && *c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p.get(pi) == Some(&'*') {
        pi += 1;
    }
    pi == p.len()
}

fn conditions_hold(condition: &Value, context: &ConnectionContext) -> Applies {
    let Some(operators) = condition.as_object() else {
        return Applies::Unknown;
    };
    for (operator, keys) in operators {
        let Some(keys) = keys.as_object() else {
            return Applies::Unknown;
        };
        for (key, expected) in keys {
            let Some(expected) =
                strings(Some(expected)).or_else(|| expected.as_bool().map(|b| vec![b.to_string()]))
            else {
                return Applies::Unknown;
            };
            let Some(actual) = context.variable(key) else {
                return Applies::Unknown;
            };
            let holds = match operator.as_str() {
                "Bool" | "StringEquals" => expected.contains(&actual),
                "StringEqualsIgnoreCase" => {
                    expected.iter().any(|e| e.eq_ignore_ascii_case(&actual))
                }
                "StringNotEquals" => expected.iter().all(|e| *e != actual),
                "StringLike" => expected.iter().any(|e| glob(e, &actual)),
                "StringNotLike" => expected.iter().all(|e| !glob(e, &actual)),
                _ => return Applies::Unknown,
            };
            if !holds {
                return Applies::No;
            }
        }
    }
    Applies::Yes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:iot:eu-west-1:123456789012:";

    fn device_policy() -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect",
                 "Resource": format!("{ARN}client/${{iot:Connection.Thing.ThingName}}"),
                 "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
                 "Resource": format!("{ARN}topic/devices/${{iot:Connection.Thing.ThingName}}/*")},
                {"Effect": "Allow", "Action": "iot:Subscribe",
                 "Resource": format!("{ARN}topicfilter/devices/${{iot:Connection.Thing.ThingName}}/*")}
            ]
        })
    }

    fn attached(thing: &str) -> ConnectionContext {
        ConnectionContext {
            client_id: thing.into(),
            thing_name: Some(thing.into()),
        }
    }

    fn decide(doc: &Value, action: Action, object: &str, ctx: &ConnectionContext) -> Decision {
        evaluate(
            std::slice::from_ref(doc),
            action,
            &action.resource(ARN, object),
            ctx,
        )
    }

    #[test]
    fn a_device_may_use_its_own_topics_and_not_another_devices() {
        let doc = device_policy();
        let ctx = attached("SN-1");
        assert!(decide(&doc, Action::Connect, "SN-1", &ctx).allowed());
        assert!(decide(&doc, Action::Publish, "devices/SN-1/hello", &ctx).allowed());
        assert!(decide(&doc, Action::Subscribe, "devices/SN-1/hello", &ctx).allowed());
        assert_eq!(
            decide(&doc, Action::Publish, "devices/SN-2/hello", &ctx),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, Action::Subscribe, "devices/+/hello", &ctx),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn without_an_attached_thing_the_thing_variables_grant_nothing() {
        let doc = device_policy();
        let ctx = ConnectionContext {
            client_id: "SN-1".into(),
            thing_name: None,
        };
        assert_eq!(
            decide(&doc, Action::Connect, "SN-1", &ctx),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, Action::Publish, "devices/SN-1/hello", &ctx),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn an_explicit_deny_wins_over_an_allow() {
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": format!("{ARN}topic/secret/*")}
        ]});
        let ctx = attached("a");
        assert!(decide(&doc, Action::Publish, "open/x", &ctx).allowed());
        assert_eq!(
            decide(&doc, Action::Publish, "secret/x", &ctx),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn a_client_id_with_wildcards_matches_only_itself() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iot:Publish",
             "Resource": format!("{ARN}topic/c/${{iot:ClientId}}")}
        ]});
        let ctx = ConnectionContext {
            client_id: "*".into(),
            thing_name: None,
        };
        assert!(decide(&doc, Action::Publish, "c/*", &ctx).allowed());
        assert!(!decide(&doc, Action::Publish, "c/other", &ctx).allowed());
    }

    #[test]
    fn variables_are_text_in_a_policy_without_the_2012_10_17_version() {
        let mut doc = device_policy();
        doc.as_object_mut().unwrap().remove("Version");
        let ctx = attached("SN-1");
        assert!(!decide(&doc, Action::Publish, "devices/SN-1/hello", &ctx).allowed());
        assert!(
            decide(
                &doc,
                Action::Publish,
                "devices/${iot:Connection.Thing.ThingName}/hello",
                &ctx
            )
            .allowed()
        );
    }

    #[test]
    fn what_the_evaluator_does_not_understand_grants_nothing_and_denies() {
        let ctx = attached("a");
        let allow_unknown = json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "*",
             "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}
        ]});
        assert!(!decide(&allow_unknown, Action::Publish, "t", &ctx).allowed());
        let deny_unknown = json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "*"},
            {"Effect": "Deny", "NotAction": "iot:Connect", "Resource": "*"}
        ]});
        assert_eq!(
            decide(&deny_unknown, Action::Publish, "t", &ctx),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn question_marks_and_stars_in_resources_are_wildcards() {
        assert!(glob("client/prov-*", "client/prov-SN1"));
        assert!(!glob("client/prov-*", "client/SN1"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a\\*", "ab"));
        assert!(glob("a\\*", "a*"));
    }

    proptest! {
        #[test]
        fn an_escaped_text_matches_itself_and_nothing_longer(text in "[a-z*?\\\\/]{0,12}", extra in "[a-z]{1,3}") {
            let pattern = escape(&text);
            prop_assert!(glob(&pattern, &text));
            let longer = format!("{text}{extra}");
            prop_assert!(!glob(&pattern, &longer));
        }

        #[test]
        fn a_star_prefix_matches_every_extension(prefix in "[a-z/]{0,8}", rest in "[a-z/*?]{0,8}") {
            let pattern = format!("{}*", escape(&prefix));
            let text = format!("{prefix}{rest}");
            prop_assert!(glob(&pattern, &text));
        }
    }
}
