//! The device rules' settings, read from the environment at cold start by
//! every function that applies them (the hook, device activation).

use std::collections::BTreeSet;

use geoprov_shared::config::{ConfigError, DEFAULT_CLIENT_ID_PREFIX, Env};
use geoprov_shared::device::{
    DEFAULT_THING_GROUP_PREFIX, RegionName, ThingGroupName, thing_group_refused,
};

use crate::rules::Policy;

pub const DEFAULT_MAX_PROVISIONS: u32 = 3;
pub const DEFAULT_THING_GROUP: &str = "geoprov-devices";

/// What the device rules ([`Policy::device_rules`]) need, whoever applies
/// them: `AWS_REGION`, `REQUIRE_FACTORY_KEY`, `DEFAULT_MAX_PROVISIONS`,
/// `DEFAULT_THING_GROUP`, `THING_GROUP_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRuleSettings {
    pub region: RegionName,
    pub require_factory_key: bool,
    pub default_max_provisions: u32,
    pub default_thing_group: ThingGroupName,
    pub thing_group_prefix: String,
}

impl DeviceRuleSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let region_raw = env.required("AWS_REGION")?;
        let region = RegionName::try_from(region_raw)
            .map_err(|e| ConfigError::invalid("AWS_REGION", region_raw, e.0))?;
        let default_max_provisions: u32 =
            env.parse_or("DEFAULT_MAX_PROVISIONS", DEFAULT_MAX_PROVISIONS)?;
        if default_max_provisions == 0 {
            return Err(ConfigError::invalid(
                "DEFAULT_MAX_PROVISIONS",
                "0",
                "must be at least 1 (block a device in the registry instead)",
            ));
        }
        let require_factory_key = env.flag_or("REQUIRE_FACTORY_KEY", true)?;
        if !require_factory_key {
            tracing::warn!(
                "REQUIRE_FACTORY_KEY is false: a device without a factory key in the registry \
                 can be provisioned by anyone holding the claim key"
            );
        }
        let group_raw = env
            .optional("DEFAULT_THING_GROUP")
            .unwrap_or(DEFAULT_THING_GROUP);
        let default_thing_group = ThingGroupName::try_from(group_raw.to_owned())
            .map_err(|e| ConfigError::invalid("DEFAULT_THING_GROUP", group_raw, e.0))?;
        let prefix = env
            .optional("THING_GROUP_PREFIX")
            .unwrap_or(DEFAULT_THING_GROUP_PREFIX)
            .to_owned();
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "THING_GROUP_PREFIX",
                &prefix,
                "must be 1-64 characters of [A-Za-z0-9:_.-]",
            ));
        }
        if let Some(why) = thing_group_refused(default_thing_group.as_str(), &prefix) {
            return Err(ConfigError::invalid("DEFAULT_THING_GROUP", group_raw, why));
        }
        Ok(DeviceRuleSettings {
            region,
            require_factory_key,
            default_max_provisions,
            default_thing_group,
            thing_group_prefix: prefix,
        })
    }

    /// The policy of a caller that applies only the device rules (no claim
    /// is trusted, no parameter is set by a device).
    pub fn device_only_policy(&self) -> Policy {
        Policy {
            region: self.region.clone(),
            trusted_claim_certificate_ids: BTreeSet::new(),
            client_id_prefix: DEFAULT_CLIENT_ID_PREFIX.to_owned(),
            require_factory_key: self.require_factory_key,
            default_max_provisions: self.default_max_provisions,
            default_thing_group: self.default_thing_group.clone(),
            thing_group_prefix: self.thing_group_prefix.clone(),
            device_settable_parameters: BTreeSet::from(["SerialNumber".to_owned()]),
            attribute_parameters: BTreeSet::new(),
        }
    }
}
