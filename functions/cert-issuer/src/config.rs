//! The cert issuer's environment, validated at cold start.

use std::time::Duration;

use geoprov_shared::config::{ConfigError, Env};
use geoprov_shared::device::RegionName;

/// Largest validity an operator may configure: ten years.
pub const VALIDITY_CEILING_DAYS: u32 = 3650;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The ACM Private CA that signs device certificates.
    pub pca_arn: String,
    /// The CA's region; it lives outside the provisioning regions.
    pub pca_region: RegionName,
    pub table_name: String,
    pub max_validity_days: u32,
    pub default_validity_days: u32,
    /// Bound on concurrent IssueCertificate calls in a batch.
    pub issue_concurrency: usize,
    /// How long to wait for ACM PCA to issue one certificate.
    pub issue_deadline: Duration,
    /// Certificates per device (distinct CSRs) when its profile sets no
    /// `maxCertificates`.
    pub default_max_certificates: u32,
    /// How a provisioning client id names its serial (certificate provider).
    pub client_id_prefix: String,
    /// `TRUSTED_CLAIM_CERTIFICATE_IDS`, the hook's bootstrap list: the claim
    /// certificates whose connections may have certificates made by the
    /// certificate provider (besides those the table trusts).
    pub trusted_claim_certificate_ids: std::collections::BTreeSet<String>,
    /// `REQUIRE_FACTORY_KEY`, the hook's: a certificate-provider request for
    /// a device with no factory key on record is refused.
    pub require_factory_key: bool,
}

/// Checks an ACM PCA certificate authority ARN:
/// `arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>`.
pub fn check_pca_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "acm-pca"
        && RegionName::try_from(parts[3]).is_ok()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("certificate-authority/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    match ok {
        true => Ok(()),
        false => {
            Err("expected arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>".into())
        }
    }
}

impl IssuerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let pca_arn = env.required("PCA_ARN")?;
        check_pca_arn(pca_arn)
            .map_err(|reason| ConfigError::invalid("PCA_ARN", pca_arn, reason))?;
        let region = match env.optional("PCA_REGION") {
            Some(region) => ("PCA_REGION", region),
            None => ("AWS_REGION", env.required("AWS_REGION")?),
        };
        let pca_region = RegionName::try_from(region.1)
            .map_err(|e| ConfigError::invalid(region.0, region.1, e.to_string()))?;
        let table_name = env.required("TABLE_NAME")?.to_owned();

        let days = |name: &'static str, value: u32, max: u32| match value {
            1.. if value <= max => Ok(value),
            _ => Err(ConfigError::invalid(
                name,
                &value.to_string(),
                format!("must be between 1 and {max} days"),
            )),
        };
        let max_validity_days = days(
            "MAX_VALIDITY_DAYS",
            env.parse_or("MAX_VALIDITY_DAYS", 365)?,
            VALIDITY_CEILING_DAYS,
        )?;
        let default_validity_days = days(
            "DEFAULT_VALIDITY_DAYS",
            env.parse_or("DEFAULT_VALIDITY_DAYS", 365)?,
            max_validity_days,
        )?;
        let issue_concurrency: usize = env.parse_or("ISSUE_CONCURRENCY", 8)?;
        if !(1..=64).contains(&issue_concurrency) {
            return Err(ConfigError::invalid(
                "ISSUE_CONCURRENCY",
                &issue_concurrency.to_string(),
                "must be between 1 and 64",
            ));
        }
        let deadline_ms: u64 = env.parse_or("ISSUE_DEADLINE_MS", 20_000)?;
        if !(100..=600_000).contains(&deadline_ms) {
            return Err(ConfigError::invalid(
                "ISSUE_DEADLINE_MS",
                &deadline_ms.to_string(),
                "must be between 100 and 600000",
            ));
        }
        let default_max_certificates: u32 = env.parse_or("DEFAULT_MAX_CERTIFICATES", 5)?;
        if !(1..=1000).contains(&default_max_certificates) {
            return Err(ConfigError::invalid(
                "DEFAULT_MAX_CERTIFICATES",
                &default_max_certificates.to_string(),
                "must be between 1 and 1000",
            ));
        }
        let client_id_prefix = env.provisioning_client_id_prefix()?;
        let trusted_claim_certificate_ids = env
            .list("TRUSTED_CLAIM_CERTIFICATE_IDS")
            .into_iter()
            .filter(|id| !id.trim().is_empty())
            .collect();
        let require_factory_key = env.flag_or("REQUIRE_FACTORY_KEY", true)?;
        Ok(IssuerConfig {
            pca_arn: pca_arn.to_owned(),
            pca_region,
            table_name,
            max_validity_days,
            default_validity_days,
            issue_concurrency,
            issue_deadline: Duration::from_millis(deadline_ms),
            default_max_certificates,
            client_id_prefix,
            trusted_claim_certificate_ids,
            require_factory_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";

    fn env(extra: &[(&'static str, &'static str)]) -> Env {
        let mut pairs = vec![
            ("PCA_ARN", ARN),
            ("AWS_REGION", "eu-west-1"),
            ("TABLE_NAME", "geoprov"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = IssuerConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.pca_region.as_str(), "eu-west-1");
        assert_eq!(config.max_validity_days, 365);
        assert_eq!(config.default_validity_days, 365);
        assert_eq!(config.issue_concurrency, 8);
        assert_eq!(config.issue_deadline, Duration::from_secs(20));
        let config = IssuerConfig::from_env(&env(&[("PCA_REGION", "eu-central-1")])).unwrap();
        assert_eq!(config.pca_region.as_str(), "eu-central-1");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, variable) in [
            (
                vec![(
                    "PCA_ARN",
                    "arn:aws:acm:eu-west-1:123456789012:certificate/x",
                )],
                "PCA_ARN",
            ),
            (vec![("PCA_REGION", "Europe")], "PCA_REGION"),
            (vec![("MAX_VALIDITY_DAYS", "0")], "MAX_VALIDITY_DAYS"),
            (
                vec![("MAX_VALIDITY_DAYS", "30"), ("DEFAULT_VALIDITY_DAYS", "31")],
                "DEFAULT_VALIDITY_DAYS",
            ),
            (vec![("ISSUE_CONCURRENCY", "0")], "ISSUE_CONCURRENCY"),
            (vec![("ISSUE_DEADLINE_MS", "soon")], "ISSUE_DEADLINE_MS"),
        ] {
            let err = IssuerConfig::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
        let missing = Env::from_pairs([("AWS_REGION", "eu-west-1"), ("TABLE_NAME", "t")]);
        assert_eq!(
            IssuerConfig::from_env(&missing).unwrap_err(),
            ConfigError::Missing { name: "PCA_ARN" }
        );
    }
}
