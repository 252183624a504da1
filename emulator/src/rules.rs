//! IoT rules, as far as geoprov's stacks use them: `SELECT * FROM
//! '<topic filter>'` with Lambda actions.
//!
//! From the IoT developer guide: a rule's SQL selects from a topic filter
//! ("FROM clause": MQTT wildcards `+` and `#`); `SELECT *` passes the whole
//! JSON payload; the Lambda action "invokes a Lambda function asynchronously"
//! with that payload as its event ("Lambda" in "AWS IoT rule actions"):
//! the event waits in the function's asynchronous queue (`invoke`), and
//! every message published in the account's region, including IoT's own
//! `$aws/events/...` lifecycle events, is evaluated. Strict where the
//! emulator is unsure: any other SQL (a WHERE clause, a projection) is
//! refused at start, and a payload that is not JSON invokes nothing.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::invoke::{AsyncInvoker, AsyncPolicy};
use crate::topics::matches;

/// A rule as the regional stack declares it (made by
/// scripts/local_iot_stack.py from the template's AWS::IoT::TopicRule).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleConfig {
    pub rule_name: String,
    pub sql: String,
    /// The functions its Lambda actions invoke, by the name `--lambda` maps.
    pub functions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    filter: String,
    functions: Vec<String>,
}

/// The region's rules and where their functions are invoked.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    invoker: AsyncInvoker,
}

/// The topic filter of `SELECT * FROM '<filter>'`, the only SQL accepted.
pub fn select_all_from(sql: &str) -> Result<String, String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    match words.as_slice() {
        [select, "*", from, quoted]
            if select.eq_ignore_ascii_case("SELECT") && from.eq_ignore_ascii_case("FROM") =>
        {
            quoted
                .strip_prefix('\'')
                .and_then(|q| q.strip_suffix('\''))
                .filter(|f| !f.is_empty() && !f.contains('\''))
                .map(str::to_owned)
                .ok_or_else(|| format!("{sql:?}: the topic filter must be in single quotes"))
        }
        _ => Err(format!(
            "{sql:?}: only SELECT * FROM '<topic filter>' is emulated"
        )),
    }
}

impl Rules {
    /// The rules, and an asynchronous queue for each function they invoke
    /// (started now: needs a Tokio runtime).
    pub fn new(
        configs: &[RuleConfig],
        lambdas: &HashMap<String, String>,
        policy: AsyncPolicy,
    ) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut invoked = BTreeMap::new();
        for config in configs {
            let filter = select_all_from(&config.sql)
                .map_err(|e| format!("rule {}: {e}", config.rule_name))?;
            for function in &config.functions {
                let Some(url) = lambdas.get(function) else {
                    return Err(format!(
                        "rule {}: no --lambda {function}=URL",
                        config.rule_name
                    ));
                };
                invoked.insert(function.clone(), url.clone());
            }
            rules.push(Rule {
                name: config.rule_name.clone(),
                filter,
                functions: config.functions.clone(),
            });
        }
        let invoker = AsyncInvoker::start(&invoked, policy)?;
        Ok(Rules { rules, invoker })
    }

    /// Each invoked function's asynchronous queue: its counts, by name.
    pub fn invocations(&self) -> Value {
        self.invoker.describe()
    }

    /// Evaluates a message published on `topic`: each matching rule's
    /// functions get the JSON payload in their asynchronous queues.
    pub fn dispatch(&self, topic: &str, payload: &[u8]) {
        let matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| matches(topic, &r.filter))
            .collect();
        if matching.is_empty() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(payload) else {
            tracing::info!(topic, "rule not applied: the payload is not JSON");
            return;
        };
        for rule in matching {
            for function in &rule.functions {
                self.invoker.invoke(&rule.name, function, event.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_select_all_from_a_quoted_filter_is_accepted() {
        assert_eq!(
            select_all_from("SELECT * FROM '$aws/events/certificates/registered/+'").unwrap(),
            "$aws/events/certificates/registered/+"
        );
        for bad in [
            "SELECT * FROM 'a/b' WHERE x = 1",
            "SELECT state FROM 'a/b'",
            "SELECT * FROM a/b",
            "SELECT * FROM ''",
            "",
        ] {
            assert!(select_all_from(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_rule_needs_an_endpoint_for_each_function() {
        let config = RuleConfig {
            rule_name: "JitrRule".into(),
            sql: "SELECT * FROM 'a/+'".into(),
            functions: vec!["DeviceActivationFunction".into()],
        };
        let policy = AsyncPolicy::default;
        assert!(Rules::new(std::slice::from_ref(&config), &HashMap::new(), policy()).is_err());
        let lambdas = HashMap::from([(
            "DeviceActivationFunction".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        )]);
        let rules = Rules::new(&[config], &lambdas, policy()).unwrap();
        assert_eq!(rules.invocations()["DeviceActivationFunction"]["queued"], 0);
    }
}
