//! `geoprov device`: a reference device. `provision` runs fleet provisioning
//! by claim and writes the device's certificate and key (mode 0600);
//! `connect` connects with a device certificate, retrying after JITR's first
//! drop, and reports what the policy allowed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use geoprov_device::provision::{ProvisionError, ProvisionRequest, provision};
use geoprov_device::{Device, DeviceError, Endpoint, Identity};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::print_json;

/// MQTT over TLS, as IoT serves it.
const MQTT_PORT: u16 = 8883;

#[derive(Debug, thiserror::Error)]
pub enum DeviceCommandError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} does not resolve to an address")]
    Resolve(String),
    #[error("the endpoint answered thing name {0:?}, which is not 1 to 128 of [a-zA-Z0-9:_-]")]
    ThingName(String),
    #[error("--parameter {0:?} is not NAME=VALUE")]
    Parameter(String),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

#[derive(Subcommand)]
pub enum Command {
    /// Provision by claim: connect with the claim as the provisioning client
    /// id (prefix + serial), get a certificate (made by IoT, or from a CSR
    /// with --csr), RegisterThing, and write the certificate and key (mode
    /// 0600) to --out-dir. Prints thingName, certificateId, region and
    /// deviceConfiguration (JSON).
    Provision(ProvisionArgs),
    /// Connect with a device certificate (retrying after JITR's first drop),
    /// subscribe to and publish on devices/<client id>/hello, and print what
    /// the policy allowed of each step (JSON).
    Connect(ConnectArgs),
}

/// The device calls no AWS API: it speaks MQTT to the endpoint.
pub async fn run(command: Command) -> Result<(), CliError> {
    let report = match command {
        Command::Provision(args) => provision_command(args).await?,
        Command::Connect(args) => connect_command(args).await?,
    };
    print_json(&report);
    Ok(())
}

/// Where the device connects.
#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// The global name: the SNI, and the name the server certificate must
    /// have.
    #[arg(long)]
    endpoint: String,
    /// Connect to this address instead of resolving --endpoint (local runs
    /// against geoprov-iot-emu).
    #[arg(long)]
    connect_to: Option<SocketAddr>,
    /// The CA certificate(s) that sign the server certificate (PEM).
    #[arg(long)]
    ca_file: PathBuf,
}

#[derive(Args, Debug)]
pub struct ProvisionArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    #[arg(long)]
    claim_cert: PathBuf,
    #[arg(long)]
    claim_key: PathBuf,
    #[arg(long)]
    serial: String,
    /// Send a CSR (CreateCertificateFromCsr): the key stays on the device.
    #[arg(long)]
    csr: bool,
    /// With --csr: the device's own key (PEM), such as the one the factory
    /// recorded; otherwise a new P-256 key.
    #[arg(long, requires = "csr")]
    key: Option<PathBuf>,
    #[arg(long, default_value = "geoprov-fleet")]
    template: String,
    /// The regional stacks' ProvisioningClientIdPrefix.
    #[arg(long, default_value = "prov-")]
    client_id_prefix: String,
    /// Connect with this client id instead of the prefix and the serial
    /// (to show what the claim policy and the hook do with another).
    #[arg(long)]
    client_id: Option<String>,
    /// A template parameter the device sends (repeat for several).
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// Where the device's certificate and key are written.
    #[arg(long)]
    out_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// By default the certificate's thing: the serial the certificate was
    /// provisioned for.
    #[arg(long)]
    client_id: String,
    /// Connection attempts: a JITR certificate is dropped on its first.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
}

fn read(path: &Path) -> Result<String, DeviceCommandError> {
    std::fs::read_to_string(path).map_err(|source| DeviceCommandError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file readable by its owner only: a new file beside `path`,
/// created with mode 0600 and never through a link (O_EXCL), then renamed
/// over `path`. A rename replaces a link planted at `path` instead of
/// writing through it, and a reader sees the old file or the whole new one.
fn write_private(path: &Path, contents: &str) -> Result<(), DeviceCommandError> {
    let fail = |source| DeviceCommandError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(fail)
}

async fn endpoint(args: &EndpointArgs) -> Result<Endpoint, DeviceCommandError> {
    let address = match args.connect_to {
        Some(address) => address,
        None => tokio::net::lookup_host((args.endpoint.as_str(), MQTT_PORT))
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| DeviceCommandError::Resolve(args.endpoint.clone()))?,
    };
    Ok(Endpoint {
        server_name: args.endpoint.clone(),
        address,
        ca_pem: read(&args.ca_file)?,
    })
}

pub async fn provision_command(args: ProvisionArgs) -> Result<Value, DeviceCommandError> {
    let endpoint = endpoint(&args.endpoint).await?;
    let claim = Identity {
        certificate_pem: read(&args.claim_cert)?,
        private_key_pem: read(&args.claim_key)?,
    };
    let mut parameters = BTreeMap::new();
    parameters.insert("SerialNumber".to_owned(), args.serial.clone());
    for entry in &args.parameters {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| DeviceCommandError::Parameter(entry.clone()))?;
        parameters.insert(name.to_owned(), value.to_owned());
    }
    let key_pem = args.key.as_deref().map(read).transpose()?;
    let request = ProvisionRequest {
        client_id: args
            .client_id
            .clone()
            .unwrap_or_else(|| format!("{}{}", args.client_id_prefix, args.serial)),
        template: args.template.clone(),
        csr: args.csr,
        serial: args.serial.clone(),
        key_pem: key_pem.clone(),
        parameters,
    };
    let provisioned = provision(&endpoint, &claim, &request).await?;
    // The file names come from the thing name the endpoint answered: only
    // a thing name IoT allows, so nothing lands outside --out-dir.
    let name = &provisioned.thing_name;
    let valid = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
    if !valid {
        return Err(DeviceCommandError::ThingName(
            name.chars().take(64).collect(),
        ));
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|source| DeviceCommandError::Write {
        path: args.out_dir.clone(),
        source,
    })?;
    let certificate_file = args.out_dir.join(format!("{}.pem", provisioned.thing_name));
    let key_file = args.out_dir.join(format!("{}.key", provisioned.thing_name));
    write_private(&certificate_file, &provisioned.identity.certificate_pem)?;
    write_private(&key_file, &provisioned.identity.private_key_pem)?;
    Ok(json!({
        "thingName": provisioned.thing_name,
        "certificateId": provisioned.certificate_id,
        "region": provisioned.device_configuration.get("region"),
        "deviceConfiguration": provisioned.device_configuration,
        "certificateFile": certificate_file,
        "keyFile": key_file,
    }))
}

/// What the policy allowed of one step.
fn step<T>(outcome: &Result<T, DeviceError>) -> Value {
    match outcome {
        Ok(_) => json!("allowed"),
        Err(DeviceError::Closed(_)) | Err(DeviceError::SubscriptionRefused(_)) => json!("refused"),
        Err(e) => json!(format!("failed: {e}")),
    }
}

pub async fn connect_command(args: ConnectArgs) -> Result<Value, DeviceCommandError> {
    let endpoint = endpoint(&args.endpoint).await?;
    let identity = Identity {
        certificate_pem: read(&args.cert)?,
        private_key_pem: read(&args.key)?,
    };
    let (mut device, attempts) =
        Device::connect_retrying(&endpoint, &identity, &args.client_id, args.attempts).await?;
    let topic = format!("devices/{}/hello", args.client_id);
    let subscribed = device.subscribe(&[&topic]).await;
    let mut report =
        json!({"connected": true, "attempts": attempts, "subscribe": step(&subscribed)});
    if subscribed.is_err() {
        return Ok(report);
    }
    let published = device.publish(&topic, b"hello".to_vec()).await;
    report["publish"] = step(&published);
    if published.is_err() {
        return Ok(report);
    }
    let received = device.receive(Duration::from_secs(5), |t| t == topic).await;
    report["receive"] = step(&received);
    device.disconnect().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "geoprov-device-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A link planted where the key goes is replaced, never written
    /// through: the file it points to keeps its content and its mode.
    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = scratch("link");
        let victim = dir.join("victim");
        std::fs::write(&victim, "the operator's file").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let key = dir.join("SN-1.key");
        std::os::unix::fs::symlink(&victim, &key).unwrap();

        write_private(&key, "PRIVATE KEY").unwrap();

        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "the operator's file"
        );
        let victim_mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(victim_mode & 0o777, 0o644);
        let written = std::fs::symlink_metadata(&key).unwrap();
        assert!(
            written.file_type().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(written.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "PRIVATE KEY");
        // Nothing temporary is left beside it.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An existing key file of another mode is replaced by a 0600 one.
    #[test]
    fn an_existing_file_is_replaced_with_mode_0600() {
        let dir = scratch("existing");
        let key = dir.join("SN-1.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&key, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
