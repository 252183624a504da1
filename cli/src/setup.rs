//! `geoprov setup claim|ca`: the claim certificate and the CA certificate
//! registered in every region's IoT, so samconfig names them by id.
//! `geoprov setup canary` is [`crate::canary::setup`].

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_config::{Region, SdkConfig};
use aws_sdk_iot::Client;
use aws_sdk_iot::error::DisplayErrorContext;
use aws_sdk_iot::operation::describe_ca_certificate::DescribeCaCertificateOutput;
use aws_sdk_iot::types::{
    AutoRegistrationStatus, CaCertificateStatus, CertificateMode, CertificateStatus,
    RegistrationConfig,
};
use clap::Subcommand;
use geoprov_shared::aws;
use geoprov_shared::device::RegionName;
use geoprov_shared::registry::DynamoRegistry;
use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::iot::iot_client;
use crate::output::print_json;

pub(crate) const CLAIM_CERTIFICATE: &str = "claim.pem";
pub(crate) const CLAIM_KEY: &str = "claim.key";
const IOT: &str = "IoT";
const PCA: &str = "ACM PCA";

#[derive(Subcommand)]
pub enum Command {
    /// Create the claim key pair and certificate (or reuse those in
    /// --out-dir), and make the certificate ACTIVE in every region, registered
    /// without a CA (SNI_ONLY). The private key goes to OUT_DIR/claim.key
    /// (mode 0600), never to stdout. Prints the certificate id per region
    /// (JSON).
    Claim {
        /// Comma-separated; the key pair is created in the first.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Fetch an ACM Private CA's certificate and register it in every
    /// region for JITR (SNI_ONLY, ACTIVE, auto-registration on, no
    /// provisioning template: the regional stack's topic rule sends each
    /// auto-registered certificate to device-activation), or, where it is
    /// registered, set those right. Prints the CA certificate id per region
    /// and whether it was created, repaired or left (JSON).
    Ca {
        /// The CA's ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID).
        #[arg(long)]
        pca_arn: String,
        /// The CA's region; by default the region its ARN names.
        #[arg(long)]
        pca_region: Option<String>,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
    },
    /// Make, in every region, what the region canary connects with: the
    /// policy geoprov-canary, the thing geoprov-canary-REGION, a certificate
    /// attached to both, and SSM parameters under /geoprov/canary/REGION
    /// (keys as SecureString, never printed). With --claim-dir (where
    /// `setup claim` wrote claim.pem and claim.key) also the claim and a
    /// provisioning key, whose hash is registered in --table for the
    /// reserved serial geoprov-canary-REGION-probe. Prints what each region
    /// has (JSON). Runs before the stacks; rerunning keeps the certificate.
    Canary {
        /// Comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// The CA certificates (PEM) the endpoint's server certificate
        /// chains to, as devices ship them.
        #[arg(long)]
        server_ca_file: PathBuf,
        #[arg(long)]
        claim_dir: Option<PathBuf>,
        #[arg(long, env = "TABLE_NAME")]
        table: Option<String>,
    },
}

/// Each loads the AWS configuration first, then checks the rest.
pub async fn run(command: Command) -> Result<(), CliError> {
    let sdk = aws::load_sdk_config().await?;
    match command {
        Command::Claim { regions, out_dir } => {
            print_json(&claim(&sdk, &regions, &out_dir).await?);
        }
        Command::Ca {
            pca_arn,
            pca_region,
            regions,
        } => {
            print_json(&ca(&sdk, &pca_arn, pca_region.as_deref(), &regions).await?);
        }
        Command::Canary {
            regions,
            server_ca_file,
            claim_dir,
            table,
        } => {
            let registry = table.map(|t| DynamoRegistry::new(aws::dynamodb_client(&sdk), t));
            let done = crate::canary::setup(
                &sdk,
                &regions,
                &server_ca_file,
                claim_dir.as_deref(),
                registry.as_ref(),
            )
            .await?;
            print_json(&done);
        }
    }
    Ok(())
}

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
    #[error("{origin}: {reason}")]
    NotACertificate { origin: String, reason: String },
    #[error(
        "--pca-arn {arn:?}: {reason} (expected \
         arn:PARTITION:acm-pca:REGION:ACCOUNT:certificate-authority/ID)"
    )]
    PcaArn { arn: String, reason: String },
    #[error("--pca-region {0:?} is not a region name like eu-west-1")]
    PcaRegion(String),
    #[error("{service} {operation} in {region}: {message}")]
    Aws {
        service: &'static str,
        region: String,
        operation: &'static str,
        message: String,
    },
    #[error(
        "the CA {certificate_id} in {region} still names the provisioning template {template} \
         after UpdateCACertificate with an empty registration config (which the IoT API does not \
         document as clearing it): a new certificate would be provisioned by JITP, without the \
         registry. Update the regional stack (it deletes the template) or register the CA again \
         (docs/deploying.md, step 8)"
    )]
    TemplateLeft {
        region: String,
        certificate_id: String,
        template: String,
    },
}

/// The provisioning template a CA registration still names, if any.
fn template_of(found: &DescribeCaCertificateOutput) -> Option<String> {
    found
        .registration_config()
        .and_then(|c| match (c.template_name(), c.template_body()) {
            (Some(name), _) => Some(name.to_owned()),
            (None, Some(_)) => Some("(a template body)".to_owned()),
            (None, None) => None,
        })
}

fn aws_error<E: std::error::Error + 'static>(
    service: &'static str,
    region: &str,
    operation: &'static str,
    err: E,
) -> SetupError {
    SetupError::Aws {
        service,
        region: region.to_owned(),
        operation,
        message: DisplayErrorContext(err).to_string(),
    }
}

fn missing(
    service: &'static str,
    region: &str,
    operation: &'static str,
    field: &str,
) -> SetupError {
    SetupError::Aws {
        service,
        region: region.to_owned(),
        operation,
        message: format!("the response has no {field}"),
    }
}

/// The id and ARN a Register* call answered, or which one it left out.
fn registered_ids(
    region: &str,
    operation: &'static str,
    id: Option<&str>,
    arn: Option<&str>,
) -> Result<(String, String), SetupError> {
    Ok((
        id.ok_or_else(|| missing(IOT, region, operation, "certificateId"))?
            .to_owned(),
        arn.ok_or_else(|| missing(IOT, region, operation, "certificateArn"))?
            .to_owned(),
    ))
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

/// The CA certificate of an ACM Private CA and its registration in each
/// region.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaSetup {
    pub pca_arn: String,
    pub regions: BTreeMap<String, RegisteredCa>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredCa {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub outcome: CaOutcome,
    /// What this run set right on a registration it found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<&'static str>,
}

/// What a run did to a region's CA registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaOutcome {
    /// Registered by this run.
    Created,
    /// Found registered, and its status, auto-registration or template set
    /// right.
    Repaired,
    /// Found registered as it should be; nothing sent.
    Left,
}

/// An ACM Private CA's ARN, checked before any call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcaArn {
    pub arn: String,
    /// The region the ARN names: where the CA lives.
    pub region: String,
}

impl PcaArn {
    /// `arn:PARTITION:acm-pca:REGION:ACCOUNT:certificate-authority/ID`.
    pub fn parse(arn: &str) -> Result<PcaArn, SetupError> {
        let bad = |reason: String| SetupError::PcaArn {
            arn: arn.to_owned(),
            reason,
        };
        let fields: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = fields[..] else {
            return Err(bad("not an ARN".into()));
        };
        if prefix != "arn" || partition.is_empty() {
            return Err(bad("not an ARN".into()));
        }
        if service != "acm-pca" {
            return Err(bad(format!(
                "names the {service:?} service, not acm-pca (ACM Private CA)"
            )));
        }
        if RegionName::try_from(region).is_err() {
            return Err(bad(format!("{region:?} is not a region name")));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("{account:?} is not a 12-digit account id")));
        }
        let id = resource
            .strip_prefix("certificate-authority/")
            .ok_or_else(|| bad(format!("{resource:?} is not a certificate-authority/ID")))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(format!("{id:?} is not a certificate authority id")));
        }
        Ok(PcaArn {
            arn: arn.to_owned(),
            region: region.to_owned(),
        })
    }
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

/// The id AWS IoT gives a certificate: the lowercase hex SHA-256 of its DER.
/// `origin` says where the PEM came from, for the error.
pub fn certificate_id(pem_text: &str, origin: &str) -> Result<String, SetupError> {
    let not_a_certificate = |reason: String| SetupError::NotACertificate {
        origin: origin.to_owned(),
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

pub(crate) fn read(path: &Path) -> Result<String, SetupError> {
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
            });
        }
        (false, true) => {
            return Err(SetupError::HalfAClaim {
                present: key_path,
                missing: pem_path,
            });
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

    let id = certificate_id(&pem_text, &pem_path.display().to_string())?;
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
        .map_err(|e| aws_error(IOT, region, OPERATION, e))?;
    let id = created
        .certificate_id()
        .ok_or_else(|| missing(IOT, region, OPERATION, "certificateId"))?;
    let arn = created
        .certificate_arn()
        .ok_or_else(|| missing(IOT, region, OPERATION, "certificateArn"))?;
    let pem_text = created
        .certificate_pem()
        .ok_or_else(|| missing(IOT, region, OPERATION, "certificatePem"))?;
    let key = created
        .key_pair()
        .and_then(|pair| pair.private_key())
        .ok_or_else(|| missing(IOT, region, OPERATION, "keyPair.PrivateKey"))?;
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
        .map_err(|e| aws_error(IOT, region, "UpdateCertificate", e))?;
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
        Ok(found) => present(client, region, id, &found).await,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            const REGISTER: &str = "RegisterCertificateWithoutCA";
            // Without a CA, IoT registers the certificate in SNI_ONLY mode.
            let registered = match client
                .register_certificate_without_ca()
                .certificate_pem(pem_text)
                .status(CertificateStatus::Active)
                .send()
                .await
            {
                Ok(registered) => registered,
                // Registered under an id other than the one computed here:
                // the answer names it. The same certificate is present.
                Err(e) => {
                    let named = e
                        .as_service_error()
                        .filter(|e| e.is_resource_already_exists_exception())
                        .and_then(|e| match e {
                            aws_sdk_iot::operation::register_certificate_without_ca::RegisterCertificateWithoutCAError::ResourceAlreadyExistsException(found) => {
                                found.resource_id().map(str::to_owned)
                            }
                            _ => None,
                        });
                    return match named {
                        Some(other_id) => present_under(client, region, &other_id, pem_text).await,
                        None => Err(aws_error(IOT, region, REGISTER, e)),
                    };
                }
            };
            let (certificate_id, certificate_arn) = registered_ids(
                region,
                REGISTER,
                registered.certificate_id(),
                registered.certificate_arn(),
            )?;
            Ok(RegisteredCertificate {
                certificate_id,
                certificate_arn,
                created: true,
            })
        }
        Err(e) => Err(aws_error(IOT, region, DESCRIBE, e)),
    }
}

/// The claim certificate as IoT holds it under `id` (the id a "certificate
/// already registered" answer named): it must be the same certificate, and
/// it is made ACTIVE when it is not.
async fn present_under(
    client: &Client,
    region: &str,
    id: &str,
    pem_text: &str,
) -> Result<RegisteredCertificate, SetupError> {
    const DESCRIBE: &str = "DescribeCertificate";
    let found = client
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
        .map_err(|e| aws_error(IOT, region, DESCRIBE, e))?;
    let held = found
        .certificate_description()
        .and_then(|d| d.certificate_pem())
        .unwrap_or_default();
    let der = |text: &str| pem::parse(text.trim()).ok().map(|p| p.into_contents());
    let same = der(held).is_some_and(|held| Some(held) == der(pem_text));
    if !same {
        return Err(SetupError::Aws {
            service: IOT,
            region: region.to_owned(),
            operation: "RegisterCertificateWithoutCA",
            message: format!(
                "IoT answers that the certificate is registered as {id}, which is another certificate"
            ),
        });
    }
    present(client, region, id, &found).await
}

/// The claim certificate found registered as `id`: made ACTIVE when it is
/// not, and reported as present.
async fn present(
    client: &Client,
    region: &str,
    id: &str,
    found: &aws_sdk_iot::operation::describe_certificate::DescribeCertificateOutput,
) -> Result<RegisteredCertificate, SetupError> {
    const DESCRIBE: &str = "DescribeCertificate";
    let description = found
        .certificate_description()
        .ok_or_else(|| missing(IOT, region, DESCRIBE, "certificateDescription"))?;
    if description.status() != Some(&CertificateStatus::Active) {
        set_active(client, region, id).await?;
    }
    Ok(RegisteredCertificate {
        certificate_id: id.to_owned(),
        certificate_arn: description
            .certificate_arn()
            .ok_or_else(|| missing(IOT, region, DESCRIBE, "certificateArn"))?
            .to_owned(),
        created: false,
    })
}

/// Fetches the CA certificate of an ACM Private CA and makes it registered in
/// every region as JITR needs it: SNI_ONLY, ACTIVE, auto-registration on, and
/// no provisioning template (a template would be JITP, which activates every
/// certificate the CA signed without asking the registry; the regional
/// stack's topic rule sends the registration event to device-activation
/// instead). Everything is checked before the first call.
pub async fn ca(
    sdk: &SdkConfig,
    pca_arn: &str,
    pca_region: Option<&str>,
    regions: &[String],
) -> Result<CaSetup, SetupError> {
    let pca = PcaArn::parse(pca_arn)?;
    let pca_region = match pca_region {
        Some(region) if RegionName::try_from(region).is_err() => {
            return Err(SetupError::PcaRegion(region.to_owned()));
        }
        Some(region) => region.to_owned(),
        None => pca.region.clone(),
    };
    let regions = parse_regions(regions)?;

    let pem_text = pca_certificate(sdk, &pca, &pca_region).await?;
    let id = certificate_id(&pem_text, &format!("the certificate of {}", pca.arn))?;
    let mut registered = BTreeMap::new();
    for region in regions {
        let certificate = ensure_ca(&iot_client(sdk, &region), &region, &id, &pem_text).await?;
        registered.insert(region, certificate);
    }
    Ok(CaSetup {
        pca_arn: pca.arn,
        regions: registered,
    })
}

/// The CA's own certificate (PEM), from ACM PCA in `region`.
async fn pca_certificate(
    sdk: &SdkConfig,
    pca: &PcaArn,
    region: &str,
) -> Result<String, SetupError> {
    const OPERATION: &str = "GetCertificateAuthorityCertificate";
    let client = aws_sdk_acmpca::Client::from_conf(
        aws_sdk_acmpca::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .build(),
    );
    client
        .get_certificate_authority_certificate()
        .certificate_authority_arn(&pca.arn)
        .send()
        .await
        .map_err(|e| aws_error(PCA, region, OPERATION, e))?
        .certificate()
        .map(str::to_owned)
        .ok_or_else(|| missing(PCA, region, OPERATION, "Certificate"))
}

/// The CA registration in `region`, or None when the CA is not registered.
async fn describe_ca(
    client: &Client,
    region: &str,
    id: &str,
) -> Result<Option<DescribeCaCertificateOutput>, SetupError> {
    match client
        .describe_ca_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(found) => Ok(Some(found)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(aws_error(IOT, region, "DescribeCACertificate", e)),
    }
}

async fn ensure_ca(
    client: &Client,
    region: &str,
    id: &str,
    pem_text: &str,
) -> Result<RegisteredCa, SetupError> {
    if let Some(found) = describe_ca(client, region, id).await? {
        return repair_ca(client, region, id, &found).await;
    }
    const REGISTER: &str = "RegisterCACertificate";
    let registered = client
        .register_ca_certificate()
        .ca_certificate(pem_text)
        .certificate_mode(CertificateMode::SniOnly)
        .set_as_active(true)
        .allow_auto_registration(true)
        .send()
        .await;
    match registered {
        Ok(registered) => {
            let (certificate_id, certificate_arn) = registered_ids(
                region,
                REGISTER,
                registered.certificate_id(),
                registered.certificate_arn(),
            )?;
            Ok(RegisteredCa {
                certificate_id,
                certificate_arn,
                outcome: CaOutcome::Created,
                repaired: Vec::new(),
            })
        }
        // Registered by another run since the describe: converge on it.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            let found = describe_ca(client, region, id)
                .await?
                .ok_or_else(|| SetupError::Aws {
                    service: IOT,
                    region: region.to_owned(),
                    operation: REGISTER,
                    message: format!(
                        "ResourceAlreadyExists, yet DescribeCACertificate finds no {id}"
                    ),
                })?;
            repair_ca(client, region, id, &found).await
        }
        Err(e) => Err(aws_error(IOT, region, REGISTER, e)),
    }
}

/// Sets right, in one UpdateCACertificate, whatever of status,
/// auto-registration and registration config a found registration has wrong
/// (a template left from JITP is replaced by an empty registration config);
/// sends nothing when all three are right.
async fn repair_ca(
    client: &Client,
    region: &str,
    id: &str,
    found: &DescribeCaCertificateOutput,
) -> Result<RegisteredCa, SetupError> {
    const DESCRIBE: &str = "DescribeCACertificate";
    let description = found
        .certificate_description()
        .ok_or_else(|| missing(IOT, region, DESCRIBE, "certificateDescription"))?;
    let certificate_arn = description
        .certificate_arn()
        .ok_or_else(|| missing(IOT, region, DESCRIBE, "certificateArn"))?
        .to_owned();

    let mut update = client.update_ca_certificate().certificate_id(id);
    let mut repaired = Vec::new();
    if description.status() != Some(&CaCertificateStatus::Active) {
        update = update.new_status(CaCertificateStatus::Active);
        repaired.push("status");
    }
    if description.auto_registration_status() != Some(&AutoRegistrationStatus::Enable) {
        update = update.new_auto_registration_status(AutoRegistrationStatus::Enable);
        repaired.push("autoRegistrationStatus");
    }
    let template = template_of(found);
    if template.is_some() {
        update = update.registration_config(RegistrationConfig::builder().build());
        repaired.push("registrationConfig");
    }
    if !repaired.is_empty() {
        update
            .send()
            .await
            .map_err(|e| aws_error(IOT, region, "UpdateCACertificate", e))?;
    }
    // The API does not document an empty registration config as clearing
    // a template: read it back, and fail loudly if it is still there.
    if template.is_some() {
        let again = describe_ca(client, region, id)
            .await?
            .ok_or_else(|| missing(IOT, region, DESCRIBE, "the CA certificate"))?;
        if let Some(template) = template_of(&again) {
            return Err(SetupError::TemplateLeft {
                region: region.to_owned(),
                certificate_id: id.to_owned(),
                template,
            });
        }
    }
    Ok(RegisteredCa {
        certificate_id: id.to_owned(),
        certificate_arn,
        outcome: if repaired.is_empty() {
            CaOutcome::Left
        } else {
            CaOutcome::Repaired
        },
        repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    /// A registration that names a template, by name or by body, is one
    /// `setup ca` must clear and then see cleared.
    #[test]
    fn a_template_is_found_by_name_or_body() {
        let with = |config: Option<RegistrationConfig>| {
            DescribeCaCertificateOutput::builder()
                .set_registration_config(config)
                .build()
        };
        assert_eq!(template_of(&with(None)), None);
        assert_eq!(
            template_of(&with(Some(RegistrationConfig::builder().build()))),
            None
        );
        let named = RegistrationConfig::builder().template_name("jitp").build();
        assert_eq!(template_of(&with(Some(named))).as_deref(), Some("jitp"));
        let body = RegistrationConfig::builder().template_body("{}").build();
        assert!(template_of(&with(Some(body))).is_some());
    }

    #[test]
    fn a_pca_arn_names_its_region() {
        let pca = PcaArn::parse(ARN).unwrap();
        assert_eq!(pca.region, "eu-central-1");
        assert_eq!(pca.arn, ARN);
        let gov = "arn:aws-us-gov:acm-pca:us-gov-west-1:123456789012:certificate-authority/abc-1";
        assert_eq!(PcaArn::parse(gov).unwrap().region, "us-gov-west-1");
    }

    #[test]
    fn refuses_what_is_not_a_pca_arn_and_says_why() {
        for (arn, why) in [
            ("", "not an ARN"),
            ("certificate-authority/abc", "not an ARN"),
            (
                "arn::acm-pca:eu-west-1:123456789012:certificate-authority/a",
                "not an ARN",
            ),
            (
                "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
                "\"acm\" service",
            ),
            (
                "arn:aws:acm-pca::123456789012:certificate-authority/abc",
                "not a region",
            ),
            (
                "arn:aws:acm-pca:EU-WEST-1:123456789012:certificate-authority/abc",
                "not a region",
            ),
            (
                "arn:aws:acm-pca:eu-west-1:1234:certificate-authority/abc",
                "12-digit",
            ),
            (
                "arn:aws:acm-pca:eu-west-1:123456789012:template/abc",
                "certificate-authority/ID",
            ),
            (
                "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/",
                "not a certificate authority id",
            ),
            (
                "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/a/b",
                "not a certificate authority id",
            ),
        ] {
            let err = PcaArn::parse(arn).expect_err(arn).to_string();
            assert!(err.contains(why), "{arn}: {err}");
        }
    }
}
