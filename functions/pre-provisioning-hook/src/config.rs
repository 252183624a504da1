//! The hook's configuration, read from the environment once at cold start.
//! An unsafe configuration stops the cold start with the variable named:
//! the hook then answers nothing, which IoT takes as a denial.

use std::collections::BTreeSet;
use std::time::Duration;

use geoprov_shared::config::{ConfigError, Env};
use geoprov_shared::device::SerialNumber;

use crate::handler::{AUDIT_WRITE_TIMEOUT, SETTLE_TIMEOUT};
use crate::rules::Policy;
pub use geoprov_device_rules::settings::{
    DEFAULT_MAX_PROVISIONS, DEFAULT_THING_GROUP, DeviceRuleSettings,
};

/// IoT waits 5 s: the deadline, settling, the audit write and the runtime
/// must fit in it.
pub const MAX_DEADLINE_MS: u64 = 4200;
pub const DEFAULT_DEADLINE_MS: u64 = 3000;
pub use geoprov_shared::config::DEFAULT_CLIENT_ID_PREFIX;
pub const DEFAULT_DEVICE_SETTABLE_PARAMETERS: &str = "SerialNumber";
pub const DEFAULT_ATTRIBUTE_PARAMETERS: &str = "model,firmware";
/// How long IoT waits for the hook's answer.
pub const IOT_WAIT: Duration = Duration::from_millis(5000);
/// Time the runtime needs around a decision: the answer, the log line.
pub const RUNTIME_MARGIN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// `TABLE_NAME`: the geoprov table.
    pub table_name: String,
    /// `HOOK_DEADLINE_MS`: past it, deny.
    pub deadline: Duration,
    /// `LAMBDA_TIMEOUT_MS`: the function's timeout as the template sets it
    /// (Lambda tells a custom runtime no timeout of its own).
    pub lambda_timeout: Duration,
    /// `AWS_REGION`, `TRUSTED_CLAIM_CERTIFICATE_IDS`,
    /// `PROVISIONING_CLIENT_ID_PREFIX`, `REQUIRE_FACTORY_KEY`,
    /// `DEFAULT_MAX_PROVISIONS`, `DEFAULT_THING_GROUP`,
    /// `DEVICE_SETTABLE_PARAMETERS`, `THING_ATTRIBUTE_PARAMETERS`.
    pub policy: Policy,
    /// `CANARY_SERIAL`: the region canary's reserved serial, if any.
    pub canary_serial: Option<SerialNumber>,
}

impl HookConfig {
    /// Every group in turn, in the order that decides which error a bad
    /// environment reports first.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let table_name = env.required("TABLE_NAME")?.to_owned();
        let devices = DeviceRuleSettings::from_env(env)?;
        let TimeBudget {
            deadline,
            lambda_timeout,
        } = time_budget(env)?;
        let trusted = claim_trust(env)?;
        let prefix = env.provisioning_client_id_prefix()?;
        let Parameters {
            settable,
            attributes,
        } = parameters(env)?;
        let canary_serial = canary_serial(env, devices.region.as_str())?;

        Ok(HookConfig {
            canary_serial,
            table_name,
            deadline,
            lambda_timeout,
            policy: Policy {
                region: devices.region,
                trusted_claim_certificate_ids: trusted,
                client_id_prefix: prefix,
                require_factory_key: devices.require_factory_key,
                default_max_provisions: devices.default_max_provisions,
                default_thing_group: devices.default_thing_group,
                thing_group_prefix: devices.thing_group_prefix,
                device_settable_parameters: settable,
                attribute_parameters: attributes,
            },
        })
    }
}

/// The invocation's time budget: `HOOK_DEADLINE_MS` and `LAMBDA_TIMEOUT_MS`.
struct TimeBudget {
    deadline: Duration,
    lambda_timeout: Duration,
}

/// `HOOK_DEADLINE_MS` and `LAMBDA_TIMEOUT_MS`, and whether the deadline and
/// what may follow it fit in what IoT waits and in the function's timeout.
fn time_budget(env: &Env) -> Result<TimeBudget, ConfigError> {
    let deadline_ms: u64 = env.parse_or("HOOK_DEADLINE_MS", DEFAULT_DEADLINE_MS)?;
    if !(1..=MAX_DEADLINE_MS).contains(&deadline_ms) {
        return Err(ConfigError::invalid(
            "HOOK_DEADLINE_MS",
            &deadline_ms.to_string(),
            format!("must be between 1 and {MAX_DEADLINE_MS} (IoT waits at most 5 s)"),
        ));
    }
    let deadline = Duration::from_millis(deadline_ms);
    let lambda_timeout = lambda_timeout(env)?;
    let needed = deadline + SETTLE_TIMEOUT + AUDIT_WRITE_TIMEOUT + RUNTIME_MARGIN;
    if needed > IOT_WAIT {
        return Err(ConfigError::invalid(
            "HOOK_DEADLINE_MS",
            &deadline_ms.to_string(),
            format!(
                "the deadline and what may follow it (settling {} ms, the audit write {} ms, \
                 the runtime {} ms) need {} ms, more than IoT waits ({} ms)",
                SETTLE_TIMEOUT.as_millis(),
                AUDIT_WRITE_TIMEOUT.as_millis(),
                RUNTIME_MARGIN.as_millis(),
                needed.as_millis(),
                IOT_WAIT.as_millis()
            ),
        ));
    }
    if needed > lambda_timeout {
        return Err(ConfigError::invalid(
            "HOOK_DEADLINE_MS",
            &deadline_ms.to_string(),
            format!(
                "the deadline, settling a lost commit ({} ms), the audit write ({} ms) and \
                 the runtime ({} ms) need {} ms, more than the function's timeout \
                 (LAMBDA_TIMEOUT_MS {})",
                SETTLE_TIMEOUT.as_millis(),
                AUDIT_WRITE_TIMEOUT.as_millis(),
                RUNTIME_MARGIN.as_millis(),
                needed.as_millis(),
                lambda_timeout.as_millis()
            ),
        ));
    }
    Ok(TimeBudget {
        deadline,
        lambda_timeout,
    })
}

/// `LAMBDA_TIMEOUT_MS`, required.
fn lambda_timeout(env: &Env) -> Result<Duration, ConfigError> {
    let lambda_timeout_raw = env.required("LAMBDA_TIMEOUT_MS")?;
    lambda_timeout_raw
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| ConfigError::invalid("LAMBDA_TIMEOUT_MS", lambda_timeout_raw, e.to_string()))
}

/// The claim trust: `TRUSTED_CLAIM_CERTIFICATE_IDS`, which may be empty only
/// where `ALLOW_EMPTY_CLAIM_TRUST` says so.
fn claim_trust(env: &Env) -> Result<BTreeSet<String>, ConfigError> {
    let trusted: BTreeSet<String> = env
        .list("TRUSTED_CLAIM_CERTIFICATE_IDS")
        .into_iter()
        .filter(|id| !id.trim().is_empty())
        .collect();
    let deny_all = env.flag_or("ALLOW_EMPTY_CLAIM_TRUST", false)?;
    if trusted.is_empty() && !deny_all {
        return Err(ConfigError::invalid(
            "TRUSTED_CLAIM_CERTIFICATE_IDS",
            "",
            "trusts no claim certificate; set ALLOW_EMPTY_CLAIM_TRUST=true to deny every \
             claim on purpose",
        ));
    }
    if trusted.is_empty() {
        tracing::error!("no claim certificate is trusted: every provisioning is denied");
    }
    Ok(trusted)
}

/// The template's parameters: those the device sets and those the hook
/// makes thing attributes.
struct Parameters {
    settable: BTreeSet<String>,
    attributes: BTreeSet<String>,
}

/// `DEVICE_SETTABLE_PARAMETERS` (with `SerialNumber`) and
/// `THING_ATTRIBUTE_PARAMETERS` (none of them settable).
fn parameters(env: &Env) -> Result<Parameters, ConfigError> {
    let settable = names(
        env,
        "DEVICE_SETTABLE_PARAMETERS",
        DEFAULT_DEVICE_SETTABLE_PARAMETERS,
    );
    if !settable.contains("SerialNumber") {
        return Err(ConfigError::invalid(
            "DEVICE_SETTABLE_PARAMETERS",
            &settable.iter().cloned().collect::<Vec<_>>().join(","),
            "must include SerialNumber, which names the device",
        ));
    }
    let attributes = names(
        env,
        "THING_ATTRIBUTE_PARAMETERS",
        DEFAULT_ATTRIBUTE_PARAMETERS,
    );
    if let Some(both) = attributes.intersection(&settable).next() {
        return Err(ConfigError::invalid(
            "THING_ATTRIBUTE_PARAMETERS",
            both,
            "a parameter the hook overrides cannot also be one the device sets",
        ));
    }
    Ok(Parameters {
        settable,
        attributes,
    })
}

/// `CANARY_SERIAL`, if set: the region canary's reserved serial of `region`.
fn canary_serial(env: &Env, region: &str) -> Result<Option<SerialNumber>, ConfigError> {
    // Only the region canary's own serial: a device's serial here would
    // provision without quota or audit.
    match env.optional("CANARY_SERIAL").map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => {
            let expected = geoprov_shared::device::canary_serial(region);
            if raw != expected {
                return Err(ConfigError::invalid(
                    "CANARY_SERIAL",
                    raw,
                    format!("must be {expected}, the region canary's reserved serial"),
                ));
            }
            Ok(Some(SerialNumber::try_from(raw).map_err(|e| {
                ConfigError::invalid("CANARY_SERIAL", raw, e.0)
            })?))
        }
    }
}

/// A comma-separated list of names, or its default when unset.
fn names(env: &Env, name: &str, default: &str) -> BTreeSet<String> {
    match env.optional(name) {
        Some(_) => env.list(name).into_iter().collect(),
        None => default.split(',').map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIM: &str = "a1b2";

    fn env(extra: &[(&'static str, &'static str)]) -> Env {
        let mut pairs = vec![
            ("TABLE_NAME", "geoprov"),
            ("AWS_REGION", "eu-west-1"),
            ("LAMBDA_TIMEOUT_MS", "4000"),
            ("TRUSTED_CLAIM_CERTIFICATE_IDS", CLAIM),
        ];
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let config = HookConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.table_name, "geoprov");
        assert_eq!(config.deadline, Duration::from_millis(3000));
        let policy = &config.policy;
        assert_eq!(policy.region.as_str(), "eu-west-1");
        assert_eq!(
            policy.trusted_claim_certificate_ids,
            BTreeSet::from([CLAIM.to_owned()])
        );
        assert_eq!(policy.client_id_prefix, "prov-");
        assert!(policy.require_factory_key);
        assert_eq!(policy.default_max_provisions, 3);
        assert_eq!(policy.default_thing_group.as_str(), "geoprov-devices");
        assert_eq!(
            policy.device_settable_parameters,
            BTreeSet::from(["SerialNumber".to_owned()])
        );
        assert_eq!(
            policy.attribute_parameters,
            BTreeSet::from(["firmware".to_owned(), "model".to_owned()])
        );
    }

    #[test]
    fn reads_every_variable() {
        let config = HookConfig::from_env(&env(&[
            ("TRUSTED_CLAIM_CERTIFICATE_IDS", "a, b"),
            ("HOOK_DEADLINE_MS", "1500"),
            ("PROVISIONING_CLIENT_ID_PREFIX", "claim-"),
            ("REQUIRE_FACTORY_KEY", "false"),
            ("DEFAULT_MAX_PROVISIONS", "5"),
            ("DEFAULT_THING_GROUP", "fleet"),
            ("THING_GROUP_PREFIX", "fleet"),
            ("DEVICE_SETTABLE_PARAMETERS", "SerialNumber,Nonce"),
            ("THING_ATTRIBUTE_PARAMETERS", "model"),
        ]))
        .unwrap();
        assert_eq!(config.deadline, Duration::from_millis(1500));
        let policy = &config.policy;
        assert_eq!(
            policy.trusted_claim_certificate_ids,
            ["a", "b"].map(String::from).into_iter().collect()
        );
        assert_eq!(policy.client_id_prefix, "claim-");
        assert!(!policy.require_factory_key);
        assert_eq!(policy.default_max_provisions, 5);
        assert_eq!(policy.default_thing_group.as_str(), "fleet");
        assert_eq!(policy.thing_group_prefix, "fleet");
        assert!(policy.device_settable_parameters.contains("Nonce"));
        assert_eq!(
            policy.attribute_parameters,
            BTreeSet::from(["model".to_owned()])
        );
    }

    #[test]
    fn unsafe_or_invalid_values_fail_the_cold_start_with_the_variable_named() {
        for (pairs, name) in [
            (vec![("HOOK_DEADLINE_MS", "4201")], "HOOK_DEADLINE_MS"),
            (vec![("HOOK_DEADLINE_MS", "0")], "HOOK_DEADLINE_MS"),
            (vec![("HOOK_DEADLINE_MS", "soon")], "HOOK_DEADLINE_MS"),
            // 3500 + 300 + 300 + 200 > 4000: the timeout cannot hold it.
            (vec![("HOOK_DEADLINE_MS", "3500")], "HOOK_DEADLINE_MS"),
            // 4300 + 800 > 5000: IoT has stopped waiting, whatever the timeout.
            (
                vec![("HOOK_DEADLINE_MS", "4300"), ("LAMBDA_TIMEOUT_MS", "9000")],
                "HOOK_DEADLINE_MS",
            ),
            (vec![("LAMBDA_TIMEOUT_MS", "four")], "LAMBDA_TIMEOUT_MS"),
            (
                vec![("TRUSTED_CLAIM_CERTIFICATE_IDS", " , ")],
                "TRUSTED_CLAIM_CERTIFICATE_IDS",
            ),
            (
                vec![("TRUSTED_CLAIM_CERTIFICATE_IDS", "")],
                "TRUSTED_CLAIM_CERTIFICATE_IDS",
            ),
            (
                vec![("PROVISIONING_CLIENT_ID_PREFIX", "a/b")],
                "PROVISIONING_CLIENT_ID_PREFIX",
            ),
            (vec![("REQUIRE_FACTORY_KEY", "yes")], "REQUIRE_FACTORY_KEY"),
            (
                vec![("DEFAULT_MAX_PROVISIONS", "-1")],
                "DEFAULT_MAX_PROVISIONS",
            ),
            (
                vec![("DEFAULT_MAX_PROVISIONS", "0")],
                "DEFAULT_MAX_PROVISIONS",
            ),
            (vec![("DEFAULT_THING_GROUP", "a b")], "DEFAULT_THING_GROUP"),
            (
                vec![("DEVICE_SETTABLE_PARAMETERS", "Nonce")],
                "DEVICE_SETTABLE_PARAMETERS",
            ),
            (
                vec![("THING_ATTRIBUTE_PARAMETERS", "SerialNumber")],
                "THING_ATTRIBUTE_PARAMETERS",
            ),
            (vec![("AWS_REGION", "Europe")], "AWS_REGION"),
        ] {
            let err = HookConfig::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().starts_with(name), "{pairs:?}: {err}");
        }
        let err =
            HookConfig::from_env(&Env::from_pairs([("AWS_REGION", "eu-west-1")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "TABLE_NAME" });
    }

    #[test]
    fn a_blank_prefix_is_the_default_never_an_empty_one() {
        let config = HookConfig::from_env(&env(&[("PROVISIONING_CLIENT_ID_PREFIX", " ")])).unwrap();
        assert_eq!(config.policy.client_id_prefix, "prov-");
    }

    #[test]
    fn an_empty_trust_set_is_a_choice_that_denies_every_claim() {
        let config = HookConfig::from_env(&env(&[
            ("TRUSTED_CLAIM_CERTIFICATE_IDS", ""),
            ("ALLOW_EMPTY_CLAIM_TRUST", "true"),
        ]))
        .unwrap();
        assert!(config.policy.trusted_claim_certificate_ids.is_empty());
    }
}
