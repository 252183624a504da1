//! The canary's configuration, read from the environment once at cold start.

use std::time::Duration;

use geoprov_shared::config::{ConfigError, Env};
use geoprov_shared::device::{RegionName, SerialNumber};

/// The default budget of one run: every step together.
pub const DEFAULT_BUDGET_MS: u64 = 20_000;
/// The largest budget: with [`crate::cleanup::CLEANUP_LIMIT`] and the
/// metric line it must end inside the function's timeout (45 s).
pub const MAX_BUDGET_MS: u64 = 30_000;
/// MQTT over TLS.
pub const MQTT_PORT: u16 = 8883;

/// The window's minutes when `CANARY_WINDOW` is unset: the template's
/// default `HealthAlarmWindow`, 2-of-5.
pub const DEFAULT_WINDOW: u32 = 5;

/// The fleet-provisioning round trip (`CANARY_PROVISIONING=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningProbe {
    /// `CANARY_TEMPLATE_NAME`: the fleet provisioning template.
    pub template: String,
    /// `CANARY_SERIAL`: the reserved serial the hook recognises.
    pub serial: SerialNumber,
    /// The provisioning prefix and the serial, as the claim policy wants.
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// `AWS_REGION`.
    pub region: RegionName,
    /// `CANARY_SERVER_NAME`: the global name, given as SNI and checked in
    /// the server's certificate.
    pub server_name: String,
    /// `CANARY_ENDPOINT`: `host[:port]` of this region's IoT endpoint; when
    /// unset, IoT's `DescribeEndpoint` (iot:Data-ATS) names it, port 8883.
    pub endpoint: Option<(String, u16)>,
    /// `CANARY_PARAMETER_PATH`: the SSM path of the canary's material.
    pub parameter_path: String,
    /// `CANARY_BUDGET_MS`: every step of a run together.
    pub budget: Duration,
    pub provisioning: Option<ProvisioningProbe>,
    /// The geoprov table, where the window is kept (`TABLE_NAME`): the
    /// function needs it, a probe alone (`geoprov canary run`) does not.
    pub table_name: Option<String>,
    /// The minutes of the window (`CANARY_WINDOW`, N of the template's
    /// `HealthAlarmWindow` M-of-N).
    pub window: u32,
}

/// `host` or `host:port`.
pub fn parse_endpoint(raw: &str) -> Result<(String, u16), String> {
    let (host, port) = match raw.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("port {port:?} is not a number 1-65535"))?,
        ),
        None => (raw, MQTT_PORT),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if !valid || port == 0 {
        return Err("expected a host name or IPv4 address, and an optional :port".into());
    }
    Ok((host.to_owned(), port))
}

impl CanaryConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let region_raw = env.required("AWS_REGION")?;
        let region = RegionName::try_from(region_raw)
            .map_err(|e| ConfigError::invalid("AWS_REGION", region_raw, e.0))?;
        let server_name = env.required("CANARY_SERVER_NAME")?.to_owned();
        if server_name.contains(':') || parse_endpoint(&server_name).is_err() {
            return Err(ConfigError::invalid(
                "CANARY_SERVER_NAME",
                &server_name,
                "must be a host name (the global name devices connect to)",
            ));
        }
        let endpoint = env
            .optional("CANARY_ENDPOINT")
            .map(|raw| {
                parse_endpoint(raw).map_err(|e| ConfigError::invalid("CANARY_ENDPOINT", raw, e))
            })
            .transpose()?;
        let parameter_path = env
            .optional("CANARY_PARAMETER_PATH")
            .map(str::to_owned)
            .unwrap_or_else(|| crate::parameter_path(region.as_str()));
        if !parameter_path.starts_with('/') || parameter_path.ends_with('/') {
            return Err(ConfigError::invalid(
                "CANARY_PARAMETER_PATH",
                &parameter_path,
                "must start with / and not end with one",
            ));
        }
        let budget_ms: u64 = env.parse_or("CANARY_BUDGET_MS", DEFAULT_BUDGET_MS)?;
        if !(1_000..=MAX_BUDGET_MS).contains(&budget_ms) {
            return Err(ConfigError::invalid(
                "CANARY_BUDGET_MS",
                &budget_ms.to_string(),
                format!("must be between 1000 and {MAX_BUDGET_MS}"),
            ));
        }
        let provisioning = if env.flag_or("CANARY_PROVISIONING", false)? {
            let template = env.required("CANARY_TEMPLATE_NAME")?.to_owned();
            let serial_raw = env.required("CANARY_SERIAL")?;
            let serial = SerialNumber::try_from(serial_raw)
                .map_err(|e| ConfigError::invalid("CANARY_SERIAL", serial_raw, e.0))?;
            let client_id = format!("{}{}", env.provisioning_client_id_prefix()?, serial);
            Some(ProvisioningProbe {
                template,
                serial,
                client_id,
            })
        } else {
            None
        };
        let table_name = env.optional("TABLE_NAME").map(str::to_owned);
        let window: u32 = env.parse_or("CANARY_WINDOW", DEFAULT_WINDOW)?;
        if !(1..=crate::window::MAX_WINDOW).contains(&window) {
            return Err(ConfigError::invalid(
                "CANARY_WINDOW",
                &window.to_string(),
                format!("must be between 1 and {}", crate::window::MAX_WINDOW),
            ));
        }
        Ok(CanaryConfig {
            table_name,
            window,
            region,
            server_name,
            endpoint,
            parameter_path,
            budget: Duration::from_millis(budget_ms),
            provisioning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("AWS_REGION", "eu-west-1"),
            ("CANARY_SERVER_NAME", "global.iot.example.com"),
            ("TABLE_NAME", "geoprov"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_name_the_region_and_ask_iot_for_the_endpoint() {
        let config = CanaryConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.endpoint, None);
        assert_eq!(config.parameter_path, "/geoprov/canary/eu-west-1");
        assert_eq!(config.budget, Duration::from_millis(DEFAULT_BUDGET_MS));
        assert_eq!(config.provisioning, None);
    }

    #[test]
    fn the_provisioning_probe_uses_the_prefix_and_the_reserved_serial() {
        let config = CanaryConfig::from_env(&env(&[
            ("CANARY_PROVISIONING", "true"),
            ("CANARY_TEMPLATE_NAME", "geoprov-fleet"),
            ("CANARY_SERIAL", "geoprov-canary-eu-west-1-probe"),
            ("CANARY_ENDPOINT", "127.0.0.1:8884"),
        ]))
        .unwrap();
        let probe = config.provisioning.unwrap();
        assert_eq!(probe.client_id, "prov-geoprov-canary-eu-west-1-probe");
        assert_eq!(config.endpoint, Some(("127.0.0.1".into(), 8884)));
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [
            ("CANARY_ENDPOINT", "host:port"),
            ("CANARY_ENDPOINT", "a b:1"),
            ("CANARY_BUDGET_MS", "999"),
            ("CANARY_BUDGET_MS", "60000"),
            ("CANARY_PARAMETER_PATH", "geoprov/canary"),
            ("CANARY_SERVER_NAME", "global.iot.example.com:8883"),
            ("CANARY_WINDOW", "0"),
            ("CANARY_WINDOW", "11"),
            ("CANARY_WINDOW", "five"),
        ] {
            let e = CanaryConfig::from_env(&env(&[(name, value)])).unwrap_err();
            assert!(e.to_string().contains(name), "{name}={value}: {e}");
        }
        let e = CanaryConfig::from_env(&env(&[("CANARY_PROVISIONING", "true")])).unwrap_err();
        assert!(e.to_string().contains("CANARY_TEMPLATE_NAME"), "{e}");
    }
}
