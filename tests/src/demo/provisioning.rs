//! Phase 2, provisioning: each device in the region its location resolves to,
//! over MQTT with the claim (a key made by IoT, or a CSR of its factory
//! key), then connected with its new certificate; every decision checked
//! against the manifest and the audit trail. And an attacker with the claim
//! key.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::manifest::new_key;
use super::report::{Attempt, DeviceRecord};
use super::{
    Demo, Device, Env, PROVISIONING_PREFIX, Progress, RECORD, RegionEmulator, TABLE, WORKERS,
    claim_dir, devices_dir, expected_reason,
};
use crate::cli::Geoprov;

/// `geoprov device ...` against a region's emulator; shared by the
/// provisioning workers.
#[derive(Clone)]
pub struct DeviceCli {
    env: BTreeMap<&'static str, Env>,
    /// Each region's emulator: its MQTT address and its server CA's file.
    emulators: BTreeMap<&'static str, (String, String)>,
}

impl DeviceCli {
    pub fn new(
        env: &BTreeMap<&'static str, Env>,
        emulators: &BTreeMap<&'static str, RegionEmulator>,
    ) -> Self {
        let emulators = emulators
            .iter()
            .map(|(region, e)| {
                let ca = e.ca_file.to_str().expect("a UTF-8 path").to_owned();
                (*region, (e.emulator.mqtt.to_string(), ca))
            })
            .collect();
        DeviceCli {
            env: env.clone(),
            emulators,
        }
    }

    /// `geoprov device <command> ...` against the emulator of `region`: its
    /// JSON, or what it said on failing.
    pub fn run(&self, region: &str, command: &str, args: &[&str]) -> Result<Value, String> {
        let (mqtt, ca) = &self.emulators[region];
        let mut full = vec![
            "device",
            command,
            "--endpoint",
            RECORD,
            "--connect-to",
            mqtt.as_str(),
            "--ca-file",
            ca.as_str(),
        ];
        full.extend_from_slice(args);
        let out = Geoprov::new(self.env[region].clone()).run(&full);
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("geoprov device prints JSON"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

/// What became of one device's provisioning.
#[derive(Debug)]
pub struct Outcome {
    pub allowed: bool,
    /// It used its topics with its new certificate (when allowed).
    pub connected: Option<bool>,
    pub certificate_id: Option<String>,
    pub error: Option<String>,
}

/// Writes a device's key (PKCS#8 PEM) to target/demo-devices/<name>.factory.key,
/// readable by its owner only; its path.
pub fn factory_key_file(name: &str, pem: &str) -> String {
    let path = devices_dir().join(format!("{name}.factory.key"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("create a key file");
    file.write_all(pem.as_bytes()).expect("write a key file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

fn path_text(path: &std::path::Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `geoprov device provision`'s arguments: `serial` with the demo's claim,
/// its files written under `out_dir`, then `extra`.
fn provision_args(serial: &str, out_dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let claim = claim_dir();
    let mut args = vec![
        "--claim-cert".to_owned(),
        path_text(&claim.join("claim.pem")),
        "--claim-key".to_owned(),
        path_text(&claim.join("claim.key")),
        "--serial".to_owned(),
        serial.to_owned(),
        "--out-dir".to_owned(),
        path_text(out_dir),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

/// Provisions `device` in `region` with the claim, then connects it with
/// its new certificate.
pub fn provision_one(cli: &DeviceCli, device: &Device, region: &str) -> Outcome {
    let key_file;
    let mut extra = vec![];
    if device.csr {
        key_file = factory_key_file(&device.serial, &device.key_pem);
        extra.extend_from_slice(&["--csr", "--key", key_file.as_str()]);
    }
    let args = provision_args(&device.serial, &devices_dir(), &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match cli.run(region, "provision", &args) {
        Ok(out) => {
            let text = |k: &str| out[k].as_str().unwrap_or_default().to_owned();
            // The device's first connection with its own certificate.
            let (certificate, key, thing) =
                (text("certificateFile"), text("keyFile"), text("thingName"));
            let args = [
                "--cert",
                certificate.as_str(),
                "--key",
                key.as_str(),
                "--client-id",
                thing.as_str(),
            ];
            let report = cli.run(region, "connect", &args);
            let connected = report.is_ok_and(|r| r["receive"] == "allowed");
            Outcome {
                allowed: true,
                connected: Some(connected),
                certificate_id: out["certificateId"].as_str().map(str::to_owned),
                error: None,
            }
        }
        Err(error) => Outcome {
            allowed: false,
            connected: None,
            certificate_id: None,
            error: Some(error),
        },
    }
}

impl Demo {
    /// Provisions `devices` (WORKERS at once), each in the region its
    /// country resolves to now, and checks each decision.
    pub fn provision(&mut self, devices: &[&Device], label: &str) {
        let countries: BTreeSet<&str> = devices.iter().map(|d| d.country).collect();
        let answers: BTreeMap<&str, String> = countries
            .into_iter()
            .map(|c| (c, self.resolve(c)))
            .collect();
        let mut progress = Progress::new(label, devices.len());
        let cli = self.devices.clone();
        let (cli, answers_ref, next) = (&cli, &answers, &AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            for _ in 0..WORKERS {
                let tx = tx.clone();
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(device) = devices.get(i) else { break };
                        let outcome = provision_one(cli, device, &answers_ref[device.country]);
                        if tx.send((i, outcome)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (i, outcome) in rx {
                let device = devices[i];
                self.check_device(device, &answers[device.country], &outcome);
                progress.step();
            }
        });
    }

    /// A device's decision against what the manifest says it must be.
    fn check_device(&mut self, device: &Device, region: &str, outcome: &Outcome) {
        let serial = &device.serial;
        let reason = self.audit_reason(region, serial);
        let expected = expected_reason(device, region);
        self.expect(
            reason == expected,
            format!("{serial} in {region}: {reason}, expected {expected}"),
        );
        self.expect(
            outcome.allowed == (expected == "ALLOWED"),
            format!("{serial}: {outcome:?}"),
        );
        if outcome.allowed {
            self.expect(
                outcome.connected == Some(true),
                format!("{serial}: provisioned but could not use its topics"),
            );
        }
        let record = DeviceRecord {
            kind: device.kind.to_owned(),
            country: device.country.to_owned(),
            region: region.to_owned(),
            csr: device.csr,
            allowed: outcome.allowed,
            connected: outcome.connected,
            reason,
            expected: expected.to_owned(),
        };
        self.report.devices.insert(serial.clone(), record);
    }

    /// The device's latest audit event's reason.
    pub fn audit_reason(&self, region: &str, serial: &str) -> String {
        let query = self.aws.dynamodb[region]
            .query()
            .table_name(TABLE)
            .key_condition_expression("pk = :pk AND begins_with(sk, :a)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("AUDIT#DEVICE#{serial}")))
            .expression_attribute_values(":a", AttributeValue::S("AUDIT#".into()))
            .send();
        let items = self.rt.block_on(query).expect("query the audit events");
        match items.items().last() {
            Some(item) => item
                .get("reason")
                .and_then(|r| r.as_s().ok())
                .cloned()
                .expect("an audit event's reason"),
            None => "(no audit event)".to_owned(),
        }
    }

    /// Someone who extracted the claim key from one device tries to
    /// provision as others, over MQTT like any device.
    pub fn attacker(&mut self, devices: &[&Device]) {
        let victim = devices
            .iter()
            .find(|d| d.kind == "factory-key")
            .expect("a factory-key device (10 devices or more)")
            .serial
            .clone();
        // The attacker's own device took a key made by IoT: no factory key
        // on record, so the client-id rule is the one that must refuse.
        let own = devices
            .iter()
            .find(|d| d.kind == "na" && !d.csr && self.report.devices[&d.serial].allowed)
            .expect("an allowed na device without a CSR")
            .serial
            .clone();
        let attacker_key = factory_key_file("attacker", &new_key().0);
        println!("  an attacker with the claim key:");
        let impersonated = format!("{PROVISIONING_PREFIX}{victim}");
        let attempts: [(String, &str, Vec<&str>); 4] = [
            (
                format!("provision {victim} with its own key"),
                &victim,
                vec!["--csr", "--key", attacker_key.as_str()],
            ),
            (
                "pick the thing group fleet-admins".to_owned(),
                &own,
                vec!["--parameter", "ThingGroupName=fleet-admins"],
            ),
            (
                format!("provision as prov-{victim}, serial {own}"),
                &own,
                vec!["--client-id", impersonated.as_str()],
            ),
            (
                format!("connect with {victim}'s own client id"),
                &own,
                vec!["--client-id", victim.as_str()],
            ),
        ];
        for (label, serial, extra) in attempts {
            self.attempt(label, serial, &extra);
        }
        for step in &self.report.attacker {
            let answer = if step.allowed { "ALLOWED" } else { "refused" };
            println!("    {:<45} {answer}: {}", step.attempt, step.reason);
        }
    }

    fn attempt(&mut self, label: String, serial: &str, extra: &[&str]) {
        let region = "us-east-1";
        let args = provision_args(serial, &devices_dir().join("attacker"), extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = self.devices.run(region, "provision", &args);
        let refused_at_connect =
            matches!(&result, Err(error) if error.contains("without a CONNACK"));
        let reason = if refused_at_connect {
            "CONNECT refused by the claim policy".to_owned()
        } else {
            self.audit_reason(region, serial)
        };
        self.expect(result.is_err(), format!("attacker: {label} was allowed"));
        self.report.attacker.push(Attempt {
            attempt: label,
            allowed: result.is_ok(),
            reason,
        });
    }
}
