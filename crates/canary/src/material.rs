//! The canary's material: SSM SecureString parameters under one path, as
//! `geoprov setup canary` writes them (one parameter each, so that every
//! one stays within the standard tier's 4 KB):
//!
//! | name | what |
//! |---|---|
//! | `certificate` | the canary's device certificate (PEM) |
//! | `private-key` | its private key |
//! | `ca` | the CA certificates the server's certificate must chain to, as a device ships them |
//! | `claim-certificate`, `claim-private-key` | the claim, for the provisioning probe |
//! | `provisioning-key` | the key whose SPKI hash the registry holds for the canary serial |
//!
//! Read once and kept for [`MATERIAL_TTL`]; when SSM fails to answer later,
//! the material read before stands (tried again after [`RETRY_AFTER`]), so
//! an SSM outage does not look like an IoT one. Parameters deleted on
//! purpose end the canary's runs: no fallback.

use std::time::{Duration, Instant};

use geoprov_device::Identity;
use tokio::sync::Mutex;

pub const CERTIFICATE: &str = "certificate";
pub const PRIVATE_KEY: &str = "private-key";
pub const CA: &str = "ca";
pub const CLAIM_CERTIFICATE: &str = "claim-certificate";
pub const CLAIM_PRIVATE_KEY: &str = "claim-private-key";
pub const PROVISIONING_KEY: &str = "provisioning-key";

/// How long material read is kept before it is read again.
pub const MATERIAL_TTL: Duration = Duration::from_secs(15 * 60);
/// After a failed read, how long the last read stands before the next try.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the canary connects and provisions with.
#[derive(Clone)]
pub struct Material {
    pub device: Identity,
    pub ca_pem: String,
    /// The claim and the provisioning key, when both are there.
    pub provisioning: Option<(Identity, String)>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { .. }")
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MaterialError {
    #[error("SSM GetParametersByPath {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}/{name} is missing (run geoprov setup canary)")]
    Missing { path: String, name: &'static str },
}

/// Builds the material from `(name, value)` pairs read under `path`.
pub fn assemble(
    path: &str,
    values: impl IntoIterator<Item = (String, String)>,
) -> Result<Material, MaterialError> {
    let mut found: std::collections::BTreeMap<String, String> = values
        .into_iter()
        .filter_map(|(name, value)| {
            let leaf = name.strip_prefix(path)?.strip_prefix('/')?.to_owned();
            Some((leaf, value))
        })
        .collect();
    let mut take = |name: &'static str| {
        found.remove(name).ok_or(MaterialError::Missing {
            path: path.to_owned(),
            name,
        })
    };
    let device = Identity {
        certificate_pem: take(CERTIFICATE)?,
        private_key_pem: take(PRIVATE_KEY)?,
    };
    let ca_pem = take(CA)?;
    let provisioning = match (
        take(CLAIM_CERTIFICATE),
        take(CLAIM_PRIVATE_KEY),
        take(PROVISIONING_KEY),
    ) {
        (Ok(certificate_pem), Ok(private_key_pem), Ok(key)) => Some((
            Identity {
                certificate_pem,
                private_key_pem,
            },
            key,
        )),
        _ => None,
    };
    Ok(Material {
        device,
        ca_pem,
        provisioning,
    })
}

/// Reads every parameter under `path`, decrypted.
pub async fn read_ssm(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Vec<(String, String)>, MaterialError> {
    let mut values = Vec::new();
    let mut token = None;
    loop {
        let page = ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(false)
            .with_decryption(true)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| MaterialError::Read {
                path: path.to_owned(),
                message: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
            })?;
        for parameter in page.parameters() {
            if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                values.push((name.to_owned(), value.to_owned()));
            }
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(values);
        }
    }
}

/// The material, read from SSM at most once per [`MATERIAL_TTL`].
pub struct MaterialCache {
    ssm: aws_sdk_ssm::Client,
    path: String,
    kept: Mutex<Option<(Instant, Material)>>,
}

impl MaterialCache {
    pub fn new(ssm: aws_sdk_ssm::Client, path: String) -> Self {
        MaterialCache {
            ssm,
            path,
            kept: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Material, MaterialError> {
        let mut kept = self.kept.lock().await;
        if let Some((read_at, material)) = kept.as_ref()
            && read_at.elapsed() < MATERIAL_TTL
        {
            return Ok(material.clone());
        }
        let read = read_ssm(&self.ssm, &self.path)
            .await
            .and_then(|values| assemble(&self.path, values));
        match (read, kept.take()) {
            (Ok(material), _) => {
                *kept = Some((Instant::now(), material.clone()));
                Ok(material)
            }
            // SSM did not answer: the last read stands, and is read again
            // after RETRY_AFTER (not on every run, which would spend each
            // run's budget on SSM).
            (Err(e @ MaterialError::Read { .. }), Some((_, stale))) => {
                tracing::warn!(error = %e, "canary material not read again; the last read stands");
                let read_at = Instant::now()
                    .checked_sub(MATERIAL_TTL.saturating_sub(RETRY_AFTER))
                    .unwrap_or_else(Instant::now);
                *kept = Some((read_at, stale.clone()));
                Ok(stale)
            }
            // Deleted on purpose (a revoked canary): no fallback.
            (Err(e), _) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, value: &str) -> (String, String) {
        (
            format!("/geoprov/canary/eu-west-1/{name}"),
            value.to_owned(),
        )
    }

    #[test]
    fn the_device_identity_and_ca_are_required_and_provisioning_is_all_or_nothing() {
        let path = "/geoprov/canary/eu-west-1";
        let base = vec![
            pair(CERTIFICATE, "c"),
            pair(PRIVATE_KEY, "k"),
            pair(CA, "ca"),
        ];
        let material = assemble(path, base.clone()).unwrap();
        assert_eq!(material.device.certificate_pem, "c");
        assert!(material.provisioning.is_none());

        let mut half = base.clone();
        half.push(pair(CLAIM_CERTIFICATE, "claim"));
        assert!(assemble(path, half).unwrap().provisioning.is_none());

        let mut full = base.clone();
        full.extend([
            pair(CLAIM_CERTIFICATE, "claim"),
            pair(CLAIM_PRIVATE_KEY, "claim-key"),
            pair(PROVISIONING_KEY, "pk"),
        ]);
        let (claim, key) = assemble(path, full).unwrap().provisioning.unwrap();
        assert_eq!(claim.certificate_pem, "claim");
        assert_eq!(key, "pk");

        let e = assemble(path, vec![pair(CERTIFICATE, "c"), pair(CA, "ca")]).unwrap_err();
        assert_eq!(
            e,
            MaterialError::Missing {
                path: path.into(),
                name: PRIVATE_KEY
            }
        );
        // A parameter of another path is not taken.
        let e = assemble(
            path,
            vec![
                ("/geoprov/canary/eu-west-10/certificate".into(), "x".into()),
                pair(PRIVATE_KEY, "k"),
                pair(CA, "ca"),
            ],
        )
        .unwrap_err();
        assert!(matches!(
            e,
            MaterialError::Missing {
                name: CERTIFICATE,
                ..
            }
        ));
    }

    #[test]
    fn debug_shows_no_key() {
        let material = assemble(
            "/p",
            vec![
                ("/p/certificate".into(), "c".into()),
                ("/p/private-key".into(), "SECRET".into()),
                ("/p/ca".into(), "ca".into()),
            ],
        )
        .unwrap();
        assert!(!format!("{material:?}").contains("SECRET"));
    }
}
