//! The activation's configuration, read once at cold start.

use std::collections::BTreeSet;

use geoprov_device_rules::DeviceRuleSettings;
use geoprov_shared::config::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationConfig {
    /// `TABLE_NAME`: the geoprov table.
    pub table_name: String,
    /// `DEVICE_POLICY_NAME`: the policy attached to every activated
    /// certificate (the regional stack's DevicePolicy).
    pub device_policy: String,
    /// `THING_TYPE_NAME`: the type of every device thing.
    pub thing_type: String,
    /// `FLEET_CA_CERTIFICATE_IDS`: the CA certificates (by IoT id, the
    /// SHA-256 of their DER, as `geoprov setup ca` prints them) whose
    /// auto-registered certificates this function decides; an event under any
    /// other CA in the account is ignored. Empty: every event is ignored.
    pub fleet_ca_ids: BTreeSet<String>,
    /// The hook's device rules, as the hook reads them.
    pub devices: DeviceRuleSettings,
}

impl ActivationConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let name = |var: &'static str| -> Result<String, ConfigError> {
            let value = env.required(var)?;
            let ok = (1..=128).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
            match ok {
                true => Ok(value.to_owned()),
                false => Err(ConfigError::invalid(
                    var,
                    value,
                    "must be 1-128 characters of [A-Za-z0-9:_.-]",
                )),
            }
        };
        let fleet_ca_ids: BTreeSet<String> = env
            .list("FLEET_CA_CERTIFICATE_IDS")
            .into_iter()
            .map(|id| id.trim().to_ascii_lowercase())
            .filter(|id| !id.is_empty())
            .collect();
        if let Some(bad) = fleet_ca_ids
            .iter()
            .find(|id| id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ConfigError::invalid(
                "FLEET_CA_CERTIFICATE_IDS",
                bad,
                "each must be a CA certificate id: 64 hex characters",
            ));
        }
        if fleet_ca_ids.is_empty() {
            tracing::error!("FLEET_CA_CERTIFICATE_IDS is empty: no certificate is ever activated");
        }
        Ok(ActivationConfig {
            fleet_ca_ids,
            table_name: env.required("TABLE_NAME")?.to_owned(),
            device_policy: name("DEVICE_POLICY_NAME")?,
            thing_type: name("THING_TYPE_NAME")?,
            devices: DeviceRuleSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_variable_that_is_missing_or_wrong() {
        let base = [
            ("TABLE_NAME", "geoprov"),
            ("AWS_REGION", "eu-west-1"),
            ("DEVICE_POLICY_NAME", "geoprov-DevicePolicy"),
            ("THING_TYPE_NAME", "geoprov-device"),
            ("FLEET_CA_CERTIFICATE_IDS", "AB"),
        ];
        let refused = ActivationConfig::from_env(&Env::from_pairs(base));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("FLEET_CA_CERTIFICATE_IDS")
        );
        let mut base = base.to_vec();
        let id = "AB".repeat(32);
        base[4] = ("FLEET_CA_CERTIFICATE_IDS", &id);
        let config = ActivationConfig::from_env(&Env::from_pairs(base.clone())).unwrap();
        assert_eq!(config.fleet_ca_ids, BTreeSet::from(["ab".repeat(32)]));
        assert_eq!(config.devices.region.as_str(), "eu-west-1");
        assert!(config.devices.require_factory_key);
        let missing = ActivationConfig::from_env(&Env::from_pairs(base[..3].to_vec()));
        assert!(missing.unwrap_err().to_string().contains("THING_TYPE_NAME"));
        let mut bad = base.clone();
        bad[2] = ("DEVICE_POLICY_NAME", "a policy");
        let bad = ActivationConfig::from_env(&Env::from_pairs(bad));
        assert!(bad.unwrap_err().to_string().contains("DEVICE_POLICY_NAME"));
    }
}
