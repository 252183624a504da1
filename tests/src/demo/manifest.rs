//! The factory manifest: what each device is, where it is, and what must
//! happen to it; and its import into both regions' tables.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Demo, EU_COUNTRIES, NA_COUNTRIES, REGIONS, RESIDENCY_COUNTRY, target};

/// The kinds, in the order devices take them. Each has at least one device
/// from 10 devices on.
pub const KINDS: [&str; 10] = [
    "na",
    "na",
    "na",
    "eu-pinned",
    "eu-pinned",
    "na-blocked",
    "eu-blocked",
    "factory-key",
    "factory-key-mismatch",
    "na-late",
];

/// A device of the manifest.
pub struct Device {
    pub serial: String,
    pub kind: &'static str,
    pub country: &'static str,
    /// The key the device has (PKCS#8 PEM): its factory key, but for a
    /// factory-key-mismatch device, which presents another.
    pub key_pem: String,
    /// Its line of the manifest.
    pub profile: Value,
    /// Provisions with a CSR of its key (rather than a key made by IoT).
    pub csr: bool,
}

impl Device {
    /// The manifest records its factory key.
    pub fn has_factory_key(&self) -> bool {
        self.profile.get("publicKeySha256").is_some()
    }
}

/// A new P-256 key: (PKCS#8 PEM, hex SHA-256 of its SubjectPublicKeyInfo).
pub fn new_key() -> (String, String) {
    let key = crate::emulator::factory_key();
    (key.pem, key.spki_sha256)
}

/// The manifest of `devices` devices, countries drawn with `seed`.
pub fn manifest(devices: usize, seed: u64) -> Vec<Device> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..devices)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let mut short: String = kind.to_uppercase().replace('-', "");
            short.truncate(6);
            let serial = format!("SN-{short}-{i:04}");
            let na = kind.starts_with("na") || kind.starts_with("factory");
            let country = if na {
                NA_COUNTRIES[rng.usize(..NA_COUNTRIES.len())]
            } else {
                let drawn = EU_COUNTRIES[rng.usize(..EU_COUNTRIES.len())];
                match kind {
                    "eu-pinned" => RESIDENCY_COUNTRY,
                    _ => drawn,
                }
            };
            let status = if kind.contains("blocked") {
                "BLOCKED"
            } else {
                "ALLOWED"
            };
            let mut profile = json!({
                "serialNumber": serial,
                "status": status,
                "attributes": {"model": "X1", "firmware": "1.4.2"},
            });
            if kind.starts_with("eu") {
                profile["allowedRegions"] = json!(["eu-west-1"]);
            }
            // Half the devices provision with a CSR of their factory key,
            // which the manifest records and the hook checks; the others
            // take a key made by IoT, which no factory can record.
            let csr = kind.starts_with("factory") || i.is_multiple_of(2);
            let (mut key_pem, spki_sha256) = new_key();
            if csr {
                profile["publicKeySha256"] = json!(spki_sha256);
            }
            if kind == "factory-key-mismatch" {
                key_pem = new_key().0; // the device presents another key
            }
            Device {
                serial,
                kind,
                country,
                key_pem,
                profile,
                csr,
            }
        })
        .collect()
}

/// The reason the device's decision in `region` must give.
pub fn expected_reason(device: &Device, region: &str) -> &'static str {
    let kind = device.kind;
    if kind.contains("blocked") {
        "DEVICE_BLOCKED"
    } else if kind == "factory-key-mismatch" {
        "KEY_MISMATCH"
    } else if kind.starts_with("eu") && region != "eu-west-1" {
        "REGION_NOT_ALLOWED"
    } else {
        "ALLOWED"
    }
}

impl Demo {
    /// `geoprov registry import` of the manifest into each region's table.
    pub fn import_manifest(&self, devices: &[Device]) {
        let path = target().join("demo-manifest.jsonl");
        let lines: String = devices.iter().map(|d| format!("{}\n", d.profile)).collect();
        std::fs::write(&path, lines).expect("write the manifest");
        let path = path.to_str().expect("a UTF-8 path");
        for region in REGIONS {
            self.geoprov(region)
                .ok(&["registry", "import", "--regions", region, path]);
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for device in devices {
            *counts.entry(device.kind).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  manifest of {} devices imported into both tables: {}",
            devices.len(),
            counts.join(", ")
        );
    }
}
