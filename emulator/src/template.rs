//! Provisioning template evaluation, as the IoT developer guide's
//! "Provisioning templates" page declares it:
//! - `Parameters` (with `Default`), `Mappings`, `Conditions`, `Resources` and
//!   `DeviceConfiguration`;
//! - the intrinsic functions `Ref`, `Fn::Join`, `Fn::Sub`, `Fn::If`,
//!   `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Fn::FindInMap` and
//!   `Fn::Split`/`Fn::Select` (the page's "Template functions");
//! - the resources `AWS::IoT::Thing`, `AWS::IoT::Certificate` and
//!   `AWS::IoT::Policy` with their `OverrideSettings`.
//!
//! The result is a [`ProvisioningPlan`]; nothing here touches IoT. The
//! registry's own rules (the thing type and groups exist) are checked when
//! the plan is applied. What the guide constrains on its own — thing names,
//! attribute names and values, at most three attributes without a thing
//! type (CreateThing in the API reference) — is checked here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Why a template could not be evaluated: IoT's RegisterThing error code
/// and a message for the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TemplateError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError {
        code: "InvalidParameters",
        message: message.into(),
    }
}

fn malformed(message: impl Into<String>) -> TemplateError {
    TemplateError {
        code: "InvalidTemplate",
        message: message.into(),
    }
}

/// What a template's Thing resource asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingSpec {
    pub name: String,
    pub thing_type: Option<String>,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub overrides: ThingOverrides,
}

/// The template's OverrideSettings for an existing thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingOverrides {
    pub attributes: Override,
    pub thing_type: Override,
    pub groups: Override,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Merge,
    Replace,
    Fail,
    DoNothing,
}

/// What a template's Certificate resource asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub certificate_id: String,
    pub status: String,
}

/// A policy to attach: an existing one by name, or an inline document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySpec {
    Named(String),
    Inline(String),
}

/// Everything RegisterThing will do, decided before anything is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningPlan {
    pub thing: Option<ThingSpec>,
    pub certificate: Option<CertificateSpec>,
    pub policies: Vec<PolicySpec>,
    pub device_configuration: Map<String, Value>,
}

/// Evaluates `body` with `given` parameters: the device's (after the hook's
/// overrides) and IoT's own `AWS::IoT::Certificate::*` ones.
pub fn evaluate(
    body: &Value,
    given: &BTreeMap<String, String>,
) -> Result<ProvisioningPlan, TemplateError> {
    let parameters = parameter_values(body, given)?;
    let scope = Scope {
        parameters,
        mappings: body.get("Mappings").cloned().unwrap_or(Value::Null),
        conditions: BTreeMap::new(),
    };
    let scope = scope.with_conditions(body.get("Conditions"))?;

    let resources = body
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("the template has no Resources object"))?;
    let mut plan = ProvisioningPlan {
        thing: None,
        certificate: None,
        policies: Vec::new(),
        device_configuration: Map::new(),
    };
    for (logical_id, resource) in resources {
        if let Some(condition) = resource.get("Condition") {
            let name = condition
                .as_str()
                .ok_or_else(|| malformed(format!("{logical_id}: Condition is not a name")))?;
            if !scope.condition(name)? {
                continue;
            }
        }
        let properties = scope.resolve(resource.get("Properties").unwrap_or(&Value::Null))?;
        let overrides = resource
            .get("OverrideSettings")
            .cloned()
            .unwrap_or(Value::Null);
        add_resource(
            &mut plan,
            logical_id,
            resource.get("Type").and_then(Value::as_str),
            &properties,
            &overrides,
        )?;
    }
    if let Some(configuration) = body.get("DeviceConfiguration") {
        match scope.resolve(configuration)? {
            Value::Object(map) => plan.device_configuration = map,
            _ => return Err(malformed("DeviceConfiguration is not an object")),
        }
    }
    Ok(plan)
}

/// Each declared parameter's given or `Default` value; undeclared ones are refused.
fn parameter_values(
    body: &Value,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let declared = body
        .get("Parameters")
        .map(|p| {
            p.as_object()
                .ok_or_else(|| malformed("Parameters is not an object"))
        })
        .transpose()?
        .cloned()
        .unwrap_or_default();
    for name in given.keys() {
        if !declared.contains_key(name) && !name.starts_with("AWS::IoT::") {
            return Err(invalid(format!(
                "parameter {name} is not declared by the template"
            )));
        }
    }
    let mut parameters = BTreeMap::new();
    for (name, declaration) in &declared {
        let value = match given.get(name) {
            Some(v) => v.clone(),
            None => match declaration.get("Default") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => scalar_text(other).ok_or_else(|| {
                    malformed(format!("parameter {name} has a non-scalar default"))
                })?,
                None => {
                    return Err(invalid(format!(
                        "parameter {name} has no value and no default"
                    )));
                }
            },
        };
        parameters.insert(name.clone(), value);
    }
    Ok(parameters)
}

/// Adds one resource of type `kind`, its properties resolved, to the plan.
fn add_resource(
    plan: &mut ProvisioningPlan,
    logical_id: &str,
    kind: Option<&str>,
    properties: &Value,
    overrides: &Value,
) -> Result<(), TemplateError> {
    match kind {
        Some("AWS::IoT::Thing") => {
            if plan.thing.is_some() {
                return Err(malformed("a template provisions at most one thing"));
            }
            plan.thing = Some(thing_spec(properties, overrides)?);
        }
        Some("AWS::IoT::Certificate") => {
            plan.certificate = Some(certificate_spec(logical_id, properties)?);
        }
        Some("AWS::IoT::Policy") => plan.policies.push(policy_spec(logical_id, properties)?),
        other => {
            return Err(malformed(format!(
                "{logical_id}: resource type {} is not one a provisioning template may declare",
                other.unwrap_or("(none)")
            )));
        }
    }
    Ok(())
}

/// An `AWS::IoT::Certificate` resource: its CertificateId and Status.
fn certificate_spec(
    logical_id: &str,
    properties: &Value,
) -> Result<CertificateSpec, TemplateError> {
    let certificate_id = text(properties, "CertificateId")
        .ok_or_else(|| invalid(format!("{logical_id}: CertificateId is required")))?;
    let status = text(properties, "Status").unwrap_or_else(|| "ACTIVE".into());
    if !matches!(status.as_str(), "ACTIVE" | "INACTIVE") {
        return Err(invalid(format!(
            "{logical_id}: Status {status} is not ACTIVE or INACTIVE"
        )));
    }
    Ok(CertificateSpec {
        certificate_id,
        status,
    })
}

/// An `AWS::IoT::Policy` resource: a PolicyName or a PolicyDocument.
fn policy_spec(logical_id: &str, properties: &Value) -> Result<PolicySpec, TemplateError> {
    match (
        text(properties, "PolicyName"),
        properties.get("PolicyDocument"),
    ) {
        (Some(name), None) => Ok(PolicySpec::Named(name)),
        (None, Some(Value::String(doc))) => Ok(PolicySpec::Inline(doc.clone())),
        (None, Some(doc @ Value::Object(_))) => Ok(PolicySpec::Inline(doc.to_string())),
        _ => Err(invalid(format!(
            "{logical_id}: a policy has either a PolicyName or a PolicyDocument"
        ))),
    }
}

fn thing_spec(properties: &Value, overrides: &Value) -> Result<ThingSpec, TemplateError> {
    let name = text(properties, "ThingName").ok_or_else(|| invalid("ThingName is required"))?;
    check_thing_name(&name)?;
    let thing_type = text(properties, "ThingTypeName").filter(|t| !t.is_empty());
    let groups = match properties.get("ThingGroups") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("a thing group name is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("ThingGroups is not a list")),
    };
    let mut attributes = BTreeMap::new();
    if let Some(payload) = properties.get("AttributePayload") {
        let payload = payload
            .as_object()
            .ok_or_else(|| invalid("AttributePayload is not an object"))?;
        for (key, value) in payload {
            let value = scalar_text(value)
                .ok_or_else(|| invalid(format!("attribute {key} is not a string")))?;
            check_attribute(key, &value)?;
            attributes.insert(key.clone(), value);
        }
    }
    if thing_type.is_none() && attributes.len() > 3 {
        return Err(invalid(format!(
            "a thing without a thing type has at most 3 attributes; this one has {}",
            attributes.len()
        )));
    }
    let setting = |key: &str, default: Override| -> Result<Override, TemplateError> {
        match overrides.get(key).and_then(Value::as_str) {
            None => Ok(default),
            Some("MERGE") => Ok(Override::Merge),
            Some("REPLACE") => Ok(Override::Replace),
            Some("FAIL") => Ok(Override::Fail),
            Some("DO_NOTHING") => Ok(Override::DoNothing),
            Some(other) => Err(malformed(format!(
                "OverrideSettings {key}: {other} is not a setting"
            ))),
        }
    };
    Ok(ThingSpec {
        name,
        thing_type,
        groups,
        attributes,
        overrides: ThingOverrides {
            attributes: setting("AttributePayload", Override::DoNothing)?,
            thing_type: setting("ThingTypeName", Override::DoNothing)?,
            groups: setting("ThingGroups", Override::DoNothing)?,
        },
    })
}

/// CreateThing's thingName: 1 to 128 of `[a-zA-Z0-9:_-]`.
pub fn check_thing_name(name: &str) -> Result<(), TemplateError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "thing name {:?} must be 1 to 128 of [a-zA-Z0-9:_-]",
            truncated(name)
        )))
    }
}

/// AttributePayload: names up to 128 of `[a-zA-Z0-9_.,@/:#-]`, values up to
/// 800 of `[a-zA-Z0-9_.,@/:#=\[\]-]`.
fn check_attribute(key: &str, value: &str) -> Result<(), TemplateError> {
    let key_ok = (1..=128).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c));
    if !key_ok {
        return Err(invalid(format!(
            "attribute name {:?} must be 1 to 128 of [a-zA-Z0-9_.,@/:#-]",
            truncated(key)
        )));
    }
    let value_ok = value.len() <= 800
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c));
    if !value_ok {
        return Err(invalid(format!(
            "attribute {key}: the value must be up to 800 of [a-zA-Z0-9_.,@/:#=[]-]"
        )));
    }
    Ok(())
}

fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

fn text(properties: &Value, key: &str) -> Option<String> {
    properties.get(key).and_then(scalar_text)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Scope {
    parameters: BTreeMap<String, String>,
    mappings: Value,
    conditions: BTreeMap<String, bool>,
}

impl Scope {
    fn with_conditions(mut self, conditions: Option<&Value>) -> Result<Self, TemplateError> {
        let Some(conditions) = conditions else {
            return Ok(self);
        };
        let conditions = conditions
            .as_object()
            .ok_or_else(|| malformed("Conditions is not an object"))?;
        // Conditions may refer to one another: decide them in as many passes
        // as there are conditions, which any acyclic order needs at most.
        let mut pending: Vec<(&String, &Value)> = conditions.iter().collect();
        for _ in 0..=conditions.len() {
            let mut still = Vec::new();
            for (name, definition) in pending {
                match self.decide(definition) {
                    Ok(value) => {
                        self.conditions.insert(name.clone(), value);
                    }
                    Err(Undecided::Later) => still.push((name, definition)),
                    Err(Undecided::Error(e)) => return Err(e),
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(self);
            }
        }
        Err(malformed("the Conditions refer to one another in a cycle"))
    }

    fn condition(&self, name: &str) -> Result<bool, TemplateError> {
        self.conditions
            .get(name)
            .copied()
            .ok_or_else(|| malformed(format!("condition {name} is not declared")))
    }

    fn decide(&self, definition: &Value) -> Result<bool, Undecided> {
        let (function, argument) = single(definition)
            .ok_or_else(|| Undecided::Error(malformed("a condition is not a function")))?;
        let arguments = |n: usize| -> Result<&Vec<Value>, Undecided> {
            argument
                .as_array()
                .filter(|a| n == 0 || a.len() == n)
                .ok_or_else(|| Undecided::Error(malformed(format!("{function} takes a list"))))
        };
        match function {
            "Fn::Equals" => {
                let items = arguments(2)?;
                let a = self.resolve(&items[0]).map_err(Undecided::Error)?;
                let b = self.resolve(&items[1]).map_err(Undecided::Error)?;
                Ok(a == b)
            }
            "Fn::Not" => Ok(!self.decide(&arguments(1)?[0])?),
            "Fn::And" => {
                let mut all = true;
                for item in arguments(0)? {
                    all &= self.decide(item)?;
                }
                Ok(all)
            }
            "Fn::Or" => {
                let mut any = false;
                for item in arguments(0)? {
                    any |= self.decide(item)?;
                }
                Ok(any)
            }
            "Condition" => {
                let name = argument
                    .as_str()
                    .ok_or_else(|| Undecided::Error(malformed("Condition takes a name")))?;
                self.conditions.get(name).copied().ok_or(Undecided::Later)
            }
            other => Err(Undecided::Error(malformed(format!(
                "{other} is not a condition function"
            )))),
        }
    }

    fn resolve(&self, value: &Value) -> Result<Value, TemplateError> {
        if let Some((function, argument)) = single(value)
            && (function == "Ref" || function.starts_with("Fn::"))
        {
            return self.function(function, argument);
        }
        Ok(match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    fn resolved_text(&self, value: &Value, what: &str) -> Result<String, TemplateError> {
        scalar_text(&self.resolve(value)?)
            .ok_or_else(|| malformed(format!("{what} is not a string")))
    }

    fn function(&self, function: &str, argument: &Value) -> Result<Value, TemplateError> {
        let list = |n: usize| -> Result<&Vec<Value>, TemplateError> {
            argument
                .as_array()
                .filter(|a| a.len() == n)
                .ok_or_else(|| malformed(format!("{function} takes a list of {n}")))
        };
        match function {
            "Ref" => self.reference(argument),
            "Fn::Join" => self.join(list(2)?),
            "Fn::Sub" => self.sub(argument),
            "Fn::If" => self.choose(list(3)?),
            "Fn::FindInMap" => self.find_in_map(list(3)?),
            "Fn::Split" => self.split(list(2)?),
            "Fn::Select" => self.select(list(2)?),
            other => Err(malformed(format!("{other} is not a template function"))),
        }
    }

    /// `Ref`: a parameter's value.
    fn reference(&self, argument: &Value) -> Result<Value, TemplateError> {
        let name = argument
            .as_str()
            .ok_or_else(|| malformed("Ref takes a name"))?;
        self.parameters
            .get(name)
            .map(|v| Value::String(v.clone()))
            .ok_or_else(|| malformed(format!("Ref {name}: no such parameter")))
    }

    /// `Fn::Join`: `[separator, values]` joined into one string.
    fn join(&self, items: &[Value]) -> Result<Value, TemplateError> {
        let separator = items[0]
            .as_str()
            .ok_or_else(|| malformed("Fn::Join separator"))?;
        let parts = match self.resolve(&items[1])? {
            Value::Array(parts) => parts,
            _ => return Err(malformed("Fn::Join takes a list of values")),
        };
        let texts = parts
            .iter()
            .map(|p| scalar_text(p).ok_or_else(|| malformed("Fn::Join joins strings")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::String(texts.join(separator)))
    }

    /// `Fn::Sub`: a string, or `[string, variables]`, with `${name}`s substituted.
    fn sub(&self, argument: &Value) -> Result<Value, TemplateError> {
        let (text, variables) = match argument {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(items) if items.len() == 2 => (
                items[0].as_str().ok_or_else(|| malformed("Fn::Sub text"))?,
                items[1]
                    .as_object()
                    .cloned()
                    .ok_or_else(|| malformed("Fn::Sub variables"))?,
            ),
            _ => return Err(malformed("Fn::Sub takes a string or [string, variables]")),
        };
        self.substitute(text, &variables).map(Value::String)
    }

    /// `Fn::If`: `[condition, then, else]`, the branch the condition picks.
    fn choose(&self, items: &[Value]) -> Result<Value, TemplateError> {
        let name = items[0]
            .as_str()
            .ok_or_else(|| malformed("Fn::If condition name"))?;
        let chosen = if self.condition(name)? {
            &items[1]
        } else {
            &items[2]
        };
        self.resolve(chosen)
    }

    /// `Fn::FindInMap`: `[map, top-level key, second-level key]` in Mappings.
    fn find_in_map(&self, items: &[Value]) -> Result<Value, TemplateError> {
        let map = self.resolved_text(&items[0], "Fn::FindInMap map name")?;
        let top = self.resolved_text(&items[1], "Fn::FindInMap top-level key")?;
        let second = self.resolved_text(&items[2], "Fn::FindInMap second-level key")?;
        self.mappings
            .get(&map)
            .and_then(|m| m.get(&top))
            .and_then(|m| m.get(&second))
            .cloned()
            .ok_or_else(|| {
                invalid(format!(
                    "Fn::FindInMap: {map}/{top}/{second} is not in Mappings"
                ))
            })
    }

    /// `Fn::Split`: `[separator, source]` split into a list of strings.
    fn split(&self, items: &[Value]) -> Result<Value, TemplateError> {
        let separator = items[0]
            .as_str()
            .ok_or_else(|| malformed("Fn::Split separator"))?;
        let source = self.resolved_text(&items[1], "Fn::Split source")?;
        Ok(Value::Array(
            source
                .split(separator)
                .map(|s| Value::String(s.into()))
                .collect(),
        ))
    }

    /// `Fn::Select`: `[index, list]`, the list's item at the index.
    fn select(&self, items: &[Value]) -> Result<Value, TemplateError> {
        let index: usize = self
            .resolved_text(&items[0], "Fn::Select index")?
            .parse()
            .map_err(|_| malformed("Fn::Select index is not a number"))?;
        match self.resolve(&items[1])? {
            Value::Array(values) => values
                .get(index)
                .cloned()
                .ok_or_else(|| invalid(format!("Fn::Select: no item {index}"))),
            _ => Err(malformed("Fn::Select takes a list")),
        }
    }

    fn substitute(
        &self,
        text: &str,
        variables: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| malformed("Fn::Sub: an unclosed ${"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(variable) = variables.get(name) {
                out.push_str(&self.resolved_text(variable, "Fn::Sub variable")?);
            } else {
                let value = self
                    .parameters
                    .get(name)
                    .ok_or_else(|| malformed(format!("Fn::Sub: ${{{name}}} is not a parameter")))?;
                out.push_str(value);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

enum Undecided {
    /// Refers to a condition not decided yet.
    Later,
    Error(TemplateError),
}

fn single(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_mappings_and_functions_decide_the_thing() {
        let body = json!({
            "Parameters": {
                "Serial": {"Type": "String"},
                "Tier": {"Type": "String", "Default": "basic"},
                "AWS::IoT::Certificate::Id": {"Type": "String"}
            },
            "Mappings": {"Tiers": {"gold": {"Group": "gold-devices"}, "basic": {"Group": "basic-devices"}}},
            "Conditions": {
                "IsGold": {"Fn::Equals": [{"Ref": "Tier"}, "gold"]},
                "NotGold": {"Fn::Not": [{"Condition": "IsGold"}]}
            },
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                    "ThingName": {"Fn::Join": ["-", ["dev", {"Ref": "Serial"}]]},
                    "AttributePayload": {"label": {"Fn::Sub": "${Serial}@${Tier}"}},
                    "ThingGroups": [{"Fn::FindInMap": ["Tiers", {"Ref": "Tier"}, "Group"]}]
                }},
                "cert": {"Type": "AWS::IoT::Certificate", "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": {"Fn::If": ["IsGold", "ACTIVE", "INACTIVE"]}}},
                "goldPolicy": {"Type": "AWS::IoT::Policy", "Condition": "IsGold",
                               "Properties": {"PolicyName": "gold"}},
                "basicPolicy": {"Type": "AWS::IoT::Policy", "Condition": "NotGold",
                                "Properties": {"PolicyName": "basic"}}
            },
            "DeviceConfiguration": {"tier": {"Ref": "Tier"}, "literal": {"Fn::Sub": "${!x}"}}
        });
        let plan = evaluate(
            &body,
            &params(&[("Serial", "7"), ("AWS::IoT::Certificate::Id", "abc")]),
        )
        .unwrap();
        let thing = plan.thing.unwrap();
        assert_eq!(thing.name, "dev-7");
        assert_eq!(thing.groups, vec!["basic-devices"]);
        assert_eq!(thing.attributes["label"], "7@basic");
        assert_eq!(plan.certificate.unwrap().status, "INACTIVE");
        assert_eq!(plan.policies, vec![PolicySpec::Named("basic".into())]);
        assert_eq!(plan.device_configuration["tier"], "basic");
        assert_eq!(plan.device_configuration["literal"], "${x}");
    }

    #[test]
    fn a_thing_without_a_type_may_have_three_attributes_and_not_four() {
        let body = |n: usize| {
            let attributes: Map<String, Value> =
                (0..n).map(|i| (format!("a{i}"), json!("v"))).collect();
            json!({"Resources": {"thing": {"Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": "t1", "AttributePayload": attributes}}}})
        };
        assert!(evaluate(&body(3), &BTreeMap::new()).is_ok());
        let error = evaluate(&body(4), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.code, "InvalidParameters");
        assert!(error.message.contains("at most 3 attributes"), "{error}");
    }

    #[test]
    fn a_missing_parameter_an_undeclared_one_and_a_bad_thing_name_are_refused() {
        let body = json!({"Parameters": {"Serial": {"Type": "String"}},
            "Resources": {"thing": {"Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": {"Ref": "Serial"}}}}});
        assert_eq!(
            evaluate(&body, &BTreeMap::new()).unwrap_err().code,
            "InvalidParameters"
        );
        assert_eq!(
            evaluate(&body, &params(&[("Serial", "a"), ("Other", "b")]))
                .unwrap_err()
                .code,
            "InvalidParameters"
        );
        assert_eq!(
            evaluate(&body, &params(&[("Serial", "bad name")]))
                .unwrap_err()
                .code,
            "InvalidParameters"
        );
        assert!(evaluate(&body, &params(&[("Serial", "good:name_1-2")])).is_ok());
    }

    #[test]
    fn an_unknown_resource_type_or_function_is_a_malformed_template() {
        let body = json!({"Resources": {"x": {"Type": "AWS::S3::Bucket"}}});
        assert_eq!(
            evaluate(&body, &BTreeMap::new()).unwrap_err().code,
            "InvalidTemplate"
        );
        let body = json!({"Resources": {"thing": {"Type": "AWS::IoT::Thing",
            "Properties": {"ThingName": {"Fn::GetAtt": ["a", "b"]}}}}});
        assert_eq!(
            evaluate(&body, &BTreeMap::new()).unwrap_err().code,
            "InvalidTemplate"
        );
    }
}
