//! The hook's configuration, read from the environment once at cold start.

use std::time::Duration;

use geoprov_shared::config::{ConfigError, Env};
use geoprov_shared::device::RegionName;

use crate::rules::Policy;

/// IoT waits 5 s for the hook; the decision must end well before.
pub const MAX_DEADLINE_MS: u64 = 4500;
pub const DEFAULT_DEADLINE_MS: u64 = 3000;
pub const DEFAULT_MAX_PROVISIONS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// `TABLE_NAME`: the geoprov table.
    pub table_name: String,
    /// `HOOK_DEADLINE_MS`: past it, deny.
    pub deadline: Duration,
    /// `AWS_REGION`, `TRUSTED_CLAIM_CERTIFICATE_IDS`, `REQUIRE_CLIENT_ID_MATCH`,
    /// `DEFAULT_MAX_PROVISIONS`.
    pub policy: Policy,
}

impl HookConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let table_name = env.required("TABLE_NAME")?.to_owned();
        let region_raw = env.required("AWS_REGION")?;
        let region = RegionName::try_from(region_raw)
            .map_err(|e| ConfigError::invalid("AWS_REGION", region_raw, e.0))?;
        let deadline_ms: u64 = env.parse_or("HOOK_DEADLINE_MS", DEFAULT_DEADLINE_MS)?;
        if !(1..=MAX_DEADLINE_MS).contains(&deadline_ms) {
            return Err(ConfigError::invalid(
                "HOOK_DEADLINE_MS",
                &deadline_ms.to_string(),
                format!("must be between 1 and {MAX_DEADLINE_MS} (IoT waits at most 5 s)"),
            ));
        }
        let default_max_provisions: u32 =
            env.parse_or("DEFAULT_MAX_PROVISIONS", DEFAULT_MAX_PROVISIONS)?;
        if default_max_provisions == 0 {
            return Err(ConfigError::invalid(
                "DEFAULT_MAX_PROVISIONS",
                "0",
                "must be at least 1 (block a device in the registry instead)",
            ));
        }
        Ok(HookConfig {
            table_name,
            deadline: Duration::from_millis(deadline_ms),
            policy: Policy {
                region,
                trusted_claim_certificate_ids: env
                    .list("TRUSTED_CLAIM_CERTIFICATE_IDS")
                    .into_iter()
                    .collect(),
                require_client_id_match: env.flag_or("REQUIRE_CLIENT_ID_MATCH", false)?,
                default_max_provisions,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&'static str, &'static str)]) -> Env {
        let mut pairs = vec![("TABLE_NAME", "geoprov"), ("AWS_REGION", "eu-west-1")];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_apply_when_only_the_required_values_are_set() {
        let config = HookConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.table_name, "geoprov");
        assert_eq!(config.deadline, Duration::from_millis(3000));
        assert_eq!(config.policy.region.as_str(), "eu-west-1");
        assert!(config.policy.trusted_claim_certificate_ids.is_empty());
        assert!(!config.policy.require_client_id_match);
        assert_eq!(config.policy.default_max_provisions, 3);
    }

    #[test]
    fn reads_every_variable() {
        let config = HookConfig::from_env(&env(&[
            ("TRUSTED_CLAIM_CERTIFICATE_IDS", "a, b"),
            ("HOOK_DEADLINE_MS", "1500"),
            ("REQUIRE_CLIENT_ID_MATCH", "true"),
            ("DEFAULT_MAX_PROVISIONS", "5"),
        ]))
        .unwrap();
        assert_eq!(config.deadline, Duration::from_millis(1500));
        assert_eq!(
            config.policy.trusted_claim_certificate_ids,
            ["a", "b"].map(String::from).into_iter().collect()
        );
        assert!(config.policy.require_client_id_match);
        assert_eq!(config.policy.default_max_provisions, 5);
    }

    #[test]
    fn invalid_values_fail_the_cold_start_with_the_variable_named() {
        for (pairs, name) in [
            (vec![("HOOK_DEADLINE_MS", "4501")], "HOOK_DEADLINE_MS"),
            (vec![("HOOK_DEADLINE_MS", "0")], "HOOK_DEADLINE_MS"),
            (vec![("HOOK_DEADLINE_MS", "soon")], "HOOK_DEADLINE_MS"),
            (
                vec![("REQUIRE_CLIENT_ID_MATCH", "yes")],
                "REQUIRE_CLIENT_ID_MATCH",
            ),
            (
                vec![("DEFAULT_MAX_PROVISIONS", "-1")],
                "DEFAULT_MAX_PROVISIONS",
            ),
            (
                vec![("DEFAULT_MAX_PROVISIONS", "0")],
                "DEFAULT_MAX_PROVISIONS",
            ),
            (vec![("AWS_REGION", "Europe")], "AWS_REGION"),
        ] {
            let err = HookConfig::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let err =
            HookConfig::from_env(&Env::from_pairs([("AWS_REGION", "eu-west-1")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "TABLE_NAME" });
    }
}
