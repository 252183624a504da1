//! Phase 3, JITR: devices send CSRs of their own keys (their factory keys, where
//! the manifest records one) to the cert issuer; every certificate is
//! verified against the CA; the CA is registered in both regions for JITR,
//! and some devices connect with their issued certificates (dropped once,
//! activated by device-activation, then connected).

use std::time::Instant;

use rcgen::{KeyPair, PublicKeyData};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::provisioning::factory_key_file;
use super::report::{Certificates, JitrConnection};
use super::{Demo, Device, PCA_REGION, Progress, REGIONS, devices_dir, round};

/// A CSR for `serial` (its common name) signed with `key`.
pub fn csr_pem(serial: &str, key: &KeyPair) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, serial);
    params
        .serialize_request(key)
        .expect("a CSR")
        .pem()
        .expect("PEM")
}

/// The certificate was issued directly by the CA (its issuer the CA's
/// subject, its signature the CA's), for `key` and `serial`.
fn verified(ca_der: &[u8], certificate_pem: &str, key: &KeyPair, serial: &str) -> bool {
    let Ok(block) = pem::parse(certificate_pem) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(block.contents()),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
        && cert.public_key().raw == key.subject_public_key_info().as_slice()
        && common_name == Some(serial)
}

impl Demo {
    /// The issuer's batch for the first `--jitr` of `devices`, every
    /// certificate verified; the CA registered; the first `--jitr-connect`
    /// connected.
    pub fn jitr(&mut self, devices: &[&Device]) {
        let chosen = &devices[..self.args.jitr.min(devices.len())];
        // The issuer binds a recorded factory key: a device asks with it.
        let keys: Vec<KeyPair> = chosen
            .iter()
            .map(|d| {
                if d.has_factory_key() {
                    KeyPair::from_pem(&d.key_pem).expect("the factory key")
                } else {
                    KeyPair::generate().expect("a P-256 key")
                }
            })
            .collect();
        let requests: Vec<Value> = chosen
            .iter()
            .zip(&keys)
            .map(|(d, key)| {
                json!({"serialNumber": d.serial, "validityDays": 90,
                       "csrPem": csr_pem(&d.serial, key)})
            })
            .collect();
        let started = Instant::now();
        let response = self.stack.issuer.invoke(&json!({ "requests": requests }));
        let elapsed = started.elapsed().as_secs_f64();
        let results = response["results"].as_array().cloned().unwrap_or_default();
        self.verify_certificates(chosen, &keys, &results, elapsed);

        // The CA in both regions, auto-registration and no template (JITR);
        // then devices connect with their issued certificates.
        let setup = self.register_fleet_ca();
        println!("  CA registered for JITR: {setup}");
        self.jitr_connect(chosen, &keys, &results);
    }

    /// The fleet CA in both regions, auto-registration on and no template
    /// (JITR): `geoprov setup ca`'s report.
    pub fn register_fleet_ca(&self) -> Value {
        self.geoprov("us-east-1").ok(&[
            "setup",
            "ca",
            "--pca-arn",
            &self.plane.pki.ca.arn,
            "--pca-region",
            PCA_REGION,
            "--regions",
            &REGIONS.join(","),
        ])
    }

    fn verify_certificates(
        &mut self,
        chosen: &[&Device],
        keys: &[KeyPair],
        results: &[Value],
        elapsed: f64,
    ) {
        let ca = pem::parse(&self.plane.pki.ca.certificate_pem).expect("the CA's PEM");
        let mut count = 0;
        let mut progress = Progress::new("verify certificates", results.len());
        for ((device, key), result) in chosen.iter().zip(keys).zip(results) {
            let serial = &device.serial;
            let ok = result["certificatePem"]
                .as_str()
                .is_some_and(|pem| verified(ca.contents(), pem, key, serial));
            count += usize::from(ok);
            self.expect(
                ok,
                format!(
                    "{serial}: no certificate verified against the CA: {}",
                    result["error"]
                ),
            );
            progress.step();
        }
        self.report.certificates = Certificates {
            requested: chosen.len(),
            issued: results
                .iter()
                .filter(|r| r.get("certificatePem").is_some())
                .count(),
            verified: count,
            batch_seconds: round(elapsed, 2),
        };
    }

    fn jitr_connect(&mut self, chosen: &[&Device], keys: &[KeyPair], results: &[Value]) {
        let mut connections = Vec::new();
        let pairs = chosen.iter().zip(keys).zip(results);
        for ((device, key), result) in pairs.take(self.args.jitr_connect) {
            let serial = &device.serial;
            let Some(pem) = result["certificatePem"].as_str() else {
                continue;
            };
            let certificate = devices_dir().join(format!("{serial}.jitr.pem"));
            std::fs::write(&certificate, pem).expect("write the certificate");
            let certificate = certificate.to_str().expect("a UTF-8 path").to_owned();
            let key_file = factory_key_file(&format!("{serial}.jitr"), &key.serialize_pem());
            let region = self.resolve(device.country);
            let args = [
                "--cert",
                certificate.as_str(),
                "--key",
                key_file.as_str(),
                "--client-id",
                serial.as_str(),
                "--attempts",
                "8",
            ];
            let report = self.devices.run(&region, "connect", &args);
            let attempts = report.as_ref().ok().and_then(|r| r["attempts"].as_u64());
            let connected = report
                .as_ref()
                .is_ok_and(|r| r["receive"] == "allowed" && attempts.unwrap_or(0) >= 2);
            let shown = match &report {
                Ok(r) => r.to_string(),
                Err(e) => e.clone(),
            };
            self.expect(
                connected,
                format!("{serial}: JITR connection in {region}: {shown}"),
            );
            connections.push(JitrConnection {
                serial: serial.clone(),
                region,
                connected,
                attempts,
            });
        }
        let connected = connections.iter().filter(|c| c.connected).count();
        println!(
            "  JITR: {connected} of {} devices connected with issued certificates (each dropped once, then activated by device-activation)",
            connections.len()
        );
        self.report.jitr_connections = connections;
    }
}
