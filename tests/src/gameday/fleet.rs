//! The fleet: one task a device, as its firmware behaves (docs/firmware.md).
//! A device resolves the global name for its country, provisions by claim
//! only if it has no certificate yet, connects, and holds its connection
//! (a PINGREQ a period); when the connection ends it resolves again and
//! reconnects with the same certificate, backing off with full jitter
//! between attempts. Every recheck period it resolves again, and moves when
//! the answer is another region (a resolver's cache expiring after the
//! record's TTL), which is how devices go home after a failback.
//!
//! What resolvers answer is the game day's to set ([`Fleet::set_answers`]):
//! the answer model over Route 53's records and health at that moment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use geoprov_device::provision::{ProvisionRequest, provision};
use geoprov_device::{Backoff, Device, DeviceError, Endpoint, Identity};

use super::REGIONS;

/// How a device gets its first certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// Fleet provisioning with the claim, a CSR of its factory key.
    Claim,
    /// A certificate the issuer made at the factory; JITR where it connects.
    Jitr,
}

/// One device of the game day's fleet.
pub struct DeviceSpec {
    pub serial: String,
    pub country: &'static str,
    pub route: Route,
    pub key_pem: String,
    /// A JITR device's certificate, from the issuer.
    pub certificate_pem: Option<String>,
}

/// What a device has done, as the game day reads it.
#[derive(Debug, Default, Clone)]
pub struct DeviceState {
    /// The region it is connected to now.
    pub connected_to: Option<&'static str>,
    /// Each time it was connected, and where.
    pub connections: Vec<(Instant, &'static str)>,
    /// Provisioning requests with the claim, and when.
    pub claim_uses: Vec<Instant>,
    /// Why its last attempt failed.
    pub last_error: Option<String>,
}

/// What every device task shares with the game day.
pub struct Fleet {
    answers: RwLock<BTreeMap<&'static str, Option<&'static str>>>,
    endpoints: BTreeMap<&'static str, Endpoint>,
    claim: Identity,
    pub states: Vec<Mutex<DeviceState>>,
    pub connected: BTreeMap<&'static str, AtomicUsize>,
    stop: AtomicBool,
    /// How often a connected device resolves the name again.
    recheck: Duration,
}

impl Fleet {
    pub fn new(
        devices: usize,
        endpoints: BTreeMap<&'static str, Endpoint>,
        claim: Identity,
        recheck: Duration,
    ) -> Self {
        Fleet {
            answers: RwLock::new(BTreeMap::new()),
            endpoints,
            claim,
            states: (0..devices)
                .map(|_| Mutex::new(DeviceState::default()))
                .collect(),
            connected: REGIONS
                .into_iter()
                .map(|r| (r, AtomicUsize::new(0)))
                .collect(),
            stop: AtomicBool::new(false),
            recheck,
        }
    }

    /// What resolvers answer each country from now on.
    pub fn set_answers(&self, answers: BTreeMap<&'static str, Option<&'static str>>) {
        *self.answers.write().expect("answers lock") = answers;
    }

    fn answer(&self, country: &str) -> Option<&'static str> {
        self.answers
            .read()
            .expect("answers lock")
            .get(country)
            .copied()
            .flatten()
    }

    /// Devices connected to each region now.
    pub fn connected_now(&self) -> BTreeMap<&'static str, usize> {
        self.connected
            .iter()
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Every one of `devices` is connected to `region` now.
    pub fn all_connected_to(&self, devices: &[usize], region: &str) -> bool {
        devices
            .iter()
            .all(|i| self.state(*i).connected_to == Some(region))
    }

    /// The last errors of devices not connected now, by error, with a count.
    pub fn errors(&self) -> BTreeMap<String, usize> {
        let mut errors = BTreeMap::new();
        for state in &self.states {
            let state = state.lock().expect("device state lock");
            if state.connected_to.is_none() {
                let e = state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "none yet".into());
                *errors.entry(e).or_default() += 1;
            }
        }
        errors
    }

    /// Every device task ends within a recheck period.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn state(&self, index: usize) -> std::sync::MutexGuard<'_, DeviceState> {
        self.states[index].lock().expect("device state lock")
    }
}

/// The fleet's reconnect backoff: capped exponential with full jitter, as
/// the reference device's ([`Backoff::DEVICE`]) but from 2 s to 30 s, so
/// that a fleet of thousands retrying against one loaded machine (or a
/// throttled region) does not retry faster than it can be served. Every
/// attempt resolves the name again: a refused connection may mean the
/// answer has moved.
pub const FLEET_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(30),
};

/// One device's life until the fleet stops.
pub async fn run_device(fleet: Arc<Fleet>, index: usize, spec: Arc<DeviceSpec>) {
    let mut identity = spec.certificate_pem.as_ref().map(|pem| Identity {
        certificate_pem: pem.clone(),
        private_key_pem: spec.key_pem.clone(),
    });
    let mut failures = 0u32;
    while !fleet.stopped() {
        let Some(region) = fleet.answer(spec.country) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let endpoint = &fleet.endpoints[region];
        let held = match &identity {
            Some(identity) => {
                connect_and_hold(&fleet, index, &spec, endpoint, identity, region).await
            }
            None => {
                fleet.state(index).claim_uses.push(Instant::now());
                match provision(endpoint, &fleet.claim, &claim_request(&spec)).await {
                    Ok(provisioned) => {
                        identity = Some(provisioned.identity);
                        failures = 0;
                        continue;
                    }
                    Err(e) => {
                        fleet.state(index).last_error = Some(format!("provision in {region}: {e}"));
                        false
                    }
                }
            }
        };
        if held {
            failures = 0;
        } else {
            tokio::time::sleep(FLEET_BACKOFF.delay(failures)).await;
            failures = failures.saturating_add(1);
        }
    }
}

/// Provisioning by claim with a CSR of the factory key, by the hook's
/// client-id convention.
fn claim_request(spec: &DeviceSpec) -> ProvisionRequest {
    ProvisionRequest {
        client_id: format!("{}{}", crate::demo::PROVISIONING_PREFIX, spec.serial),
        template: "geoprov-fleet".into(),
        csr: true,
        serial: spec.serial.clone(),
        key_pem: Some(spec.key_pem.clone()),
        parameters: BTreeMap::from([("SerialNumber".into(), spec.serial.clone())]),
    }
}

/// Connects (a JITR certificate's first connection is dropped, and the
/// device comes back after its backoff) and holds the connection until it ends, the answer moves or
/// the fleet stops. True when it was connected.
async fn connect_and_hold(
    fleet: &Fleet,
    index: usize,
    spec: &DeviceSpec,
    endpoint: &Endpoint,
    identity: &Identity,
    region: &'static str,
) -> bool {
    let mut device = match Device::connect(endpoint, identity, &spec.serial).await {
        Ok(device) => device,
        Err(e) => {
            fleet.state(index).last_error =
                Some(format!("{:?} device, connect in {region}: {e}", spec.route));
            return false;
        }
    };
    {
        let mut state = fleet.state(index);
        state.connected_to = Some(region);
        state.connections.push((Instant::now(), region));
    }
    fleet.connected[region].fetch_add(1, Ordering::Relaxed);
    let moved = hold(fleet, &mut device, spec.country, region).await;
    fleet.connected[region].fetch_sub(1, Ordering::Relaxed);
    fleet.state(index).connected_to = None;
    if moved {
        device.disconnect().await;
    }
    true
}

/// Holds a connection; true when the device leaves it (the answer moved,
/// or the fleet stops), false when the broker ended it.
async fn hold(fleet: &Fleet, device: &mut Device, country: &str, region: &str) -> bool {
    loop {
        // Jittered, so that a fleet does not move in lockstep.
        let period = fleet.recheck.mul_f64(0.5 + fastrand::f64());
        match device.receive(period, |_| false).await {
            Ok(_) => {}
            Err(DeviceError::Timeout(..)) => {
                if fleet.stopped() || fleet.answer(country).is_some_and(|a| a != region) {
                    return true;
                }
                if device.ping().await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}
