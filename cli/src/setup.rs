//! `geoprov setup claim|ca`: the claim certificate and the CA certificate
//! registered in every region's IoT, so samconfig names them by id.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_config::{Region, SdkConfig};
use aws_sdk_iot::error::DisplayErrorContext;
use aws_sdk_iot::types::{CertificateMode, CertificateStatus, RegistrationConfig};
use aws_sdk_iot::Client;
use sha2::{Digest, Sha256};

const CLAIM_CERTIFICATE: &str = "claim.pem";
const CLAIM_KEY: &str = "claim.key";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--regions: {0}")]
    Regions(String),
    #[error(
        "{} exists but {} does not: refusing to make a new claim key pair beside \
         half of an old one (restore the missing file, or choose another --out-dir)",
        present.display(),
        missing.display()
    )]
    HalfAClaim { present: PathBuf, missing: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    NotACertificate { path: PathBuf, reason: String },
    #[error("IoT {operation} in {region}: {message}")]
    Aws {
        region: String,
        operation: &'static str,
        message: String,
    },
}

fn aws_error<E: std::error::Error + 'static>(
    region: &str,
    operation: &'static str,
    err: E,
) -> SetupError {
    SetupError::Aws {
        region: region.to_owned(),
        operation,
        message: DisplayErrorContext(err).to_string(),
    }
}

fn missing(region: &str, operation: &'static str, field: &str) -> SetupError {
    SetupError::Aws {
        region: region.to_owned(),
        operation,
        message: format!("the response has no {field}"),
    }
}

/// What a Register* call answered, or which field it left out.
fn newly_registered(
    region: &str,
    operation: &'static str,
    id: Option<&str>,
    arn: Option<&str>,
) -> Result<RegisteredCertificate, SetupError> {
    Ok(RegisteredCertificate {
        certificate_id: id
            .ok_or_else(|| missing(region, operation, "certificateId"))?
            .to_owned(),
        certificate_arn: arn
            .ok_or_else(|| missing(region, operation, "certificateArn"))?
            .to_owned(),
        created: true,
    })
}

/// The claim certificate's files and its id and ARN in each region.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSetup {
    pub certificate_pem: PathBuf,
    pub private_key: PathBuf,
    pub regions: BTreeMap<String, RegisteredCertificate>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    /// False when this run found the certificate already registered.
    pub created: bool,
}

/// The CA certificate's id in each region.
#[derive(Debug, serde::Serialize)]
pub struct CaSetup {
    pub regions: BTreeMap<String, RegisteredCertificate>,
}

/// The JITP registration template a CA certificate carries.
pub struct JitpRegistration {
    pub template_body: String,
    pub role_arn: String,
}

/// The regions in the order given, refused when empty or repeated.
pub fn parse_regions(regions: &[String]) -> Result<Vec<String>, SetupError> {
    let mut seen = Vec::new();
    for region in regions.iter().map(|r| r.trim()) {
        if region.is_empty() {
            return Err(SetupError::Regions("an empty region name".into()));
        }
        if seen.iter().any(|r| r == region) {
            return Err(SetupError::Regions(format!("{region} is named twice")));
        }
        seen.push(region.to_owned());
    }
    if seen.is_empty() {
        return Err(SetupError::Regions("name at least one region".into()));
    }
    Ok(seen)
}

fn iot_client(sdk: &SdkConfig, region: &str) -> Client {
    Client::from_conf(
        aws_sdk_iot::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}

/// The id AWS IoT gives a certificate: the lowercase hex SHA-256 of its DER.
pub fn certificate_id(pem_text: &str, path: &Path) -> Result<String, SetupError> {
    let not_a_certificate = |reason: String| SetupError::NotACertificate {
        path: path.to_path_buf(),
        reason,
    };
    let block = pem::parse(pem_text).map_err(|e| not_a_certificate(e.to_string()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(not_a_certificate(format!(
            "a PEM {} block, not a CERTIFICATE",
            block.tag()
        )));
    }
    Ok(hex::encode(Sha256::digest(block.contents())))
}

fn read(path: &Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|source| SetupError::File {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn exists(path: &Path) -> Result<bool, SetupError> {
    path.try_exists().map_err(|source| SetupError::File {
        action: "check",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a new file (never replacing one) with `mode` from its creation, so
/// a private key is never readable by others, not even for a moment.
fn write_new(path: &Path, mode: u32, contents: &str) -> Result<(), SetupError> {
    let fail = |source| SetupError::File {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Creates the claim key pair and certificate once (in the first region),
/// or reuses the pair in `out_dir`, and makes the certificate ACTIVE in every
/// region, registering it without a CA where it is missing.
pub async fn claim(
    sdk: &SdkConfig,
    regions: &[String],
    out_dir: &Path,
) -> Result<ClaimSetup, SetupError> {
    let regions = parse_regions(regions)?;
    let pem_path = out_dir.join(CLAIM_CERTIFICATE);
    let key_path = out_dir.join(CLAIM_KEY);
    let mut registered = BTreeMap::new();

    let (pem_text, remaining) = match (exists(&pem_path)?, exists(&key_path)?) {
        (true, true) => (read(&pem_path)?, &regions[..]),
        (true, false) => {
            return Err(SetupError::HalfAClaim {
                present: pem_path,
                missing: key_path,
            })
        }
        (false, true) => {
            return Err(SetupError::HalfAClaim {
                present: key_path,
                missing: pem_path,
            })
        }
        (false, false) => {
            let first = &regions[0];
            let created = create_claim(
                &iot_client(sdk, first),
                first,
                &pem_path,
                &key_path,
                out_dir,
            )
            .await?;
            let pem_text = created.1;
            registered.insert(first.clone(), created.0);
            (pem_text, &regions[1..])
        }
    };

    let id = certificate_id(&pem_text, &pem_path)?;
    for region in remaining {
        let certificate =
            ensure_claim_active(&iot_client(sdk, region), region, &id, &pem_text).await?;
        registered.insert(region.clone(), certificate);
    }
    Ok(ClaimSetup {
        certificate_pem: pem_path,
        private_key: key_path,
        regions: registered,
    })
}

/// CreateKeysAndCertificate, the key to a 0600 file, then the certificate set
/// ACTIVE only once both files are written.
async fn create_claim(
    client: &Client,
    region: &str,
    pem_path: &Path,
    key_path: &Path,
    out_dir: &Path,
) -> Result<(RegisteredCertificate, String), SetupError> {
    std::fs::create_dir_all(out_dir).map_err(|source| SetupError::File {
        action: "create directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    const OPERATION: &str = "CreateKeysAndCertificate";
    let created = client
        .create_keys_and_certificate()
        .set_as_active(false)
        .send()
        .await
        .map_err(|e| aws_error(region, OPERATION, e))?;
    let id = created
        .certificate_id()
        .ok_or_else(|| missing(region, OPERATION, "certificateId"))?;
    let arn = created
        .certificate_arn()
        .ok_or_else(|| missing(region, OPERATION, "certificateArn"))?;
    let pem_text = created
        .certificate_pem()
        .ok_or_else(|| missing(region, OPERATION, "certificatePem"))?;
    let key = created
        .key_pair()
        .and_then(|pair| pair.private_key())
        .ok_or_else(|| missing(region, OPERATION, "keyPair.PrivateKey"))?;
    // The key first: a certificate file without its key is refused on the
    // next run, never completed with a new key.
    write_new(key_path, 0o600, key)?;
    write_new(pem_path, 0o644, pem_text)?;
    set_active(client, region, id).await?;
    Ok((
        RegisteredCertificate {
            certificate_id: id.to_owned(),
            certificate_arn: arn.to_owned(),
            created: true,
        },
        pem_text.to_owned(),
    ))
}

async fn set_active(client: &Client, region: &str, id: &str) -> Result<(), SetupError> {
    client
        .update_certificate()
        .certificate_id(id)
        .new_status(CertificateStatus::Active)
        .send()
        .await
        .map_err(|e| aws_error(region, "UpdateCertificate", e))?;
    Ok(())
}

/// The claim certificate ACTIVE in `region`: left alone when it already is,
/// set ACTIVE when registered otherwise, registered without a CA when absent.
async fn ensure_claim_active(
    client: &Client,
    region: &str,
    id: &str,
    pem_text: &str,
) -> Result<RegisteredCertificate, SetupError> {
    const DESCRIBE: &str = "DescribeCertificate";
    match client
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(found) => {
            let description = found
                .certificate_description()
                .ok_or_else(|| missing(region, DESCRIBE, "certificateDescription"))?;
            if description.status() != Some(&CertificateStatus::Active) {
                set_active(client, region, id).await?;
            }
            Ok(RegisteredCertificate {
                certificate_id: id.to_owned(),
                certificate_arn: description
                    .certificate_arn()
                    .ok_or_else(|| missing(region, DESCRIBE, "certificateArn"))?
                    .to_owned(),
                created: false,
            })
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            const REGISTER: &str = "RegisterCertificateWithoutCA";
            // Without a CA, IoT registers the certificate in SNI_ONLY mode.
            let registered = client
                .register_certificate_without_ca()
                .certificate_pem(pem_text)
                .status(CertificateStatus::Active)
                .send()
                .await
                .map_err(|e| aws_error(region, REGISTER, e))?;
            newly_registered(
                region,
                REGISTER,
                registered.certificate_id(),
                registered.certificate_arn(),
            )
        }
        Err(e) => Err(aws_error(region, DESCRIBE, e)),
    }
}

/// Registers the CA certificate in every region where it is not registered:
/// SNI_ONLY, ACTIVE, auto-registration on, with the JITP template if given.
pub async fn ca(
    sdk: &SdkConfig,
    ca_pem: &Path,
    regions: &[String],
    jitp: Option<&JitpRegistration>,
) -> Result<CaSetup, SetupError> {
    let regions = parse_regions(regions)?;
    let pem_text = read(ca_pem)?;
    let id = certificate_id(&pem_text, ca_pem)?;
    let mut registered = BTreeMap::new();
    for region in &regions {
        let certificate = ensure_ca(&iot_client(sdk, region), region, &id, &pem_text, jitp).await?;
        registered.insert(region.clone(), certificate);
    }
    Ok(CaSetup {
        regions: registered,
    })
}

async fn ensure_ca(
    client: &Client,
    region: &str,
    id: &str,
    pem_text: &str,
    jitp: Option<&JitpRegistration>,
) -> Result<RegisteredCertificate, SetupError> {
    const DESCRIBE: &str = "DescribeCACertificate";
    match client
        .describe_ca_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(found) => Ok(RegisteredCertificate {
            certificate_id: id.to_owned(),
            certificate_arn: found
                .certificate_description()
                .and_then(|d| d.certificate_arn())
                .ok_or_else(|| missing(region, DESCRIBE, "certificateArn"))?
                .to_owned(),
            created: false,
        }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            const REGISTER: &str = "RegisterCACertificate";
            let mut request = client
                .register_ca_certificate()
                .ca_certificate(pem_text)
                .certificate_mode(CertificateMode::SniOnly)
                .set_as_active(true)
                .allow_auto_registration(true);
            if let Some(jitp) = jitp {
                request = request.registration_config(
                    RegistrationConfig::builder()
                        .template_body(&jitp.template_body)
                        .role_arn(&jitp.role_arn)
                        .build(),
                );
            }
            let registered = request
                .send()
                .await
                .map_err(|e| aws_error(region, REGISTER, e))?;
            newly_registered(
                region,
                REGISTER,
                registered.certificate_id(),
                registered.certificate_arn(),
            )
        }
        Err(e) => Err(aws_error(region, DESCRIBE, e)),
    }
}
