//! The fleet, simulated: what IoT's rates cost once devices retry.
//!
//! The arithmetic of [`super`] (units over rate) is a floor: it assumes a
//! request arrives whenever a unit is free. A fleet does not ask that way.
//! A throttled CONNECT or auto-registration closes the connection, and the
//! device comes back after its backoff (capped exponential with full
//! jitter, uniform in `[0, min(cap, base·2ⁿ)]` after failure `n`); a JITR
//! device's first connection registers its certificate and is dropped, and
//! it gets in only on a later attempt after device activation has made the
//! certificate ACTIVE. The bucket idles while the devices sleep, and the
//! last ones wait out long backoffs: the game day measured re-homings 35 %
//! and 58 % longer than the floor.
//!
//! So each region of a phase is simulated, event by event, with seeded
//! randomness:
//! - each of IoT's rates is a token bucket holding one second of its rate
//!   (at least one token), as geoprov-iot-emu's;
//! - a JITR device's attempt takes a CONNECT unit and, while its
//!   certificate is unknown, an auto-registration unit; a registered
//!   certificate reaches device activation, a queue served at the lowest
//!   rate of its IoT calls (UpdateCertificate, CreateThing,
//!   AttachThingPrincipal), plus `activationSeconds`;
//! - a claim device takes a CONNECT unit, then a certificate creation and a
//!   RegisterThing on the same connection, each retried after the device's
//!   call backoff when throttled (up to `callRetries` times, then it starts
//!   over), then connects with its own certificate;
//! - a device going home (failback) needs one CONNECT;
//! - devices start as the phase starts them: powered on at
//!   `powerOnPerSecond` (onboarding); cut off by the fault
//!   `answersMoveAfterSeconds` before the answers move, retrying the lost
//!   region with backoff until then (re-homing); noticing the answer moved
//!   back within `recheckSeconds`, jittered ×[0.5, 1.5] (failback).
//!
//! Left out: the events device activation gets again for a certificate
//! still pending (the duplicates are cheap: one DescribeCertificate), the
//! functions' CPU, network round trips, DNS caching.
//!
//! A fleet larger than [`MAX_SIMULATED`] devices in a region is simulated
//! scaled down, devices and rates divided alike: the demand on each rate
//! per device stays the same, so the times do (a bucket's one-token
//! minimum aside).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

/// The most devices simulated in one region of a phase.
pub const MAX_SIMULATED: u64 = 5_000;

/// How devices behave (the fleet file's `behaviour`). The defaults are the
/// AWS IoT Device SDKs' reconnect backoff (1 s to 120 s) and geoprov's
/// reference device's call backoff (0.25 s to 4 s, 10 retries).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Behaviour {
    pub backoff_base_seconds: f64,
    pub backoff_cap_seconds: f64,
    pub call_backoff_base_seconds: f64,
    pub call_backoff_cap_seconds: f64,
    pub call_retries: u32,
    /// From a region's fault to the answers moving: the health check
    /// turning unhealthy, the failover's rewrite and the records' TTL.
    pub answers_move_after_seconds: f64,
    /// From a registration event to the certificate ACTIVE, beside the
    /// queue at its calls' rates.
    pub activation_seconds: f64,
    /// Devices powered on per second in an onboarding wave; none: all at once.
    pub power_on_per_second: Option<f64>,
    /// How often a connected device resolves the name again.
    pub recheck_seconds: f64,
    pub seed: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            backoff_base_seconds: 1.0,
            backoff_cap_seconds: 120.0,
            call_backoff_base_seconds: 0.25,
            call_backoff_cap_seconds: 4.0,
            call_retries: 10,
            answers_move_after_seconds: 120.0,
            activation_seconds: 1.0,
            power_on_per_second: None,
            recheck_seconds: 60.0,
            seed: 1,
        }
    }
}

impl Behaviour {
    /// The first field that is not a usable value, if any.
    pub fn invalid(&self) -> Option<&'static str> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        [
            ("backoffBaseSeconds", positive(self.backoff_base_seconds)),
            (
                "backoffCapSeconds",
                positive(self.backoff_cap_seconds)
                    && self.backoff_cap_seconds >= self.backoff_base_seconds,
            ),
            (
                "callBackoffBaseSeconds",
                positive(self.call_backoff_base_seconds),
            ),
            (
                "callBackoffCapSeconds",
                positive(self.call_backoff_cap_seconds)
                    && self.call_backoff_cap_seconds >= self.call_backoff_base_seconds,
            ),
            (
                "answersMoveAfterSeconds",
                non_negative(self.answers_move_after_seconds),
            ),
            ("activationSeconds", non_negative(self.activation_seconds)),
            (
                "powerOnPerSecond",
                self.power_on_per_second.is_none_or(positive),
            ),
            ("recheckSeconds", positive(self.recheck_seconds)),
        ]
        .into_iter()
        .find(|(_, ok)| !ok)
        .map(|(name, _)| name)
    }
}

/// What a device must do to get working in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connect with a fleet-CA certificate unknown here: JITR.
    Jitr,
    /// Provision with the claim, then connect.
    Claim,
    /// Connect with a certificate ACTIVE here.
    Connect,
}

/// How a phase starts its devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    PowerOn,
    Fault,
    Recheck,
}

/// One region's rates for the simulation, per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub connect: f64,
    pub auto_registration: f64,
    pub create_certificate: f64,
    pub register_thing: f64,
    /// Device activation's throughput: the lowest rate of its IoT calls.
    pub activation: f64,
}

/// When the devices got working, from the phase's start, and what they
/// asked of each rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub all_seconds: f64,
    /// Requests per quota: granted, throttled (of the simulated devices,
    /// scaled back to the fleet).
    pub requests: BTreeMap<String, [u64; 2]>,
    /// Devices simulated (the fleet, or its scaled-down model).
    pub simulated_devices: u64,
}

#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: f64,
    granted: u64,
    throttled: u64,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: f64::NEG_INFINITY,
            granted: 0,
            throttled: 0,
        }
    }

    fn take(&mut self, now: f64) -> bool {
        if self.rate.is_infinite() {
            self.granted += 1;
            return true;
        }
        if self.last.is_finite() {
            self.tokens = (self.tokens + (now - self.last).max(0.0) * self.rate).min(self.capacity);
        }
        self.last = now;
        let granted = self.tokens >= 1.0;
        if granted {
            self.tokens -= 1.0;
            self.granted += 1;
        } else {
            self.throttled += 1;
        }
        granted
    }
}

/// Where a device is in its flow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// JITR: not yet registered here.
    Unregistered,
    /// JITR: registered, ACTIVE from this time on.
    Pending(f64),
    /// Claim: to connect with the claim.
    ClaimConnect,
    CreateCertificate,
    RegisterThing,
    /// To connect with its own certificate, ACTIVE here.
    OwnConnect,
}

#[derive(Debug, Clone)]
struct Device {
    step: Step,
    failures: u32,
    call_failures: u32,
}

/// A delay uniform in `[0, min(cap, base·2ⁿ)]` after failure `n` (from 0),
/// as geoprov's reference device draws it (`geoprov_device::Backoff`).
fn full_jitter(base: f64, cap: f64, failures: u32, rng: &mut fastrand::Rng) -> f64 {
    (base * 2f64.powi(failures.min(60) as i32)).min(cap) * rng.f64()
}

/// Microseconds, for the event queue's order.
fn micros(seconds: f64) -> i64 {
    (seconds * 1e6).round() as i64
}

/// Simulates one region's devices of a phase.
pub fn simulate(
    cohorts: &[(u64, Kind)],
    start: Start,
    rates: &Rates,
    behaviour: &Behaviour,
) -> Outcome {
    let total: u64 = cohorts.iter().map(|(n, _)| n).sum();
    let scale = (total as f64 / MAX_SIMULATED as f64).max(1.0);
    let mut kinds = Vec::new();
    for (n, kind) in cohorts {
        let scaled = ((*n as f64 / scale).round() as u64).max(u64::from(*n > 0));
        kinds.extend(std::iter::repeat_n(*kind, scaled as usize));
    }
    let scale = if kinds.is_empty() {
        1.0
    } else {
        total as f64 / kinds.len() as f64
    };
    let mut rng = fastrand::Rng::with_seed(behaviour.seed);
    rng.shuffle(&mut kinds);
    let mut sim = Sim {
        connect: Bucket::new(rates.connect / scale),
        auto_registration: Bucket::new(rates.auto_registration / scale),
        create_certificate: Bucket::new(rates.create_certificate / scale),
        register_thing: Bucket::new(rates.register_thing / scale),
        activation_interval: scale / rates.activation,
        activation_free: f64::NEG_INFINITY,
        behaviour,
        queue: BinaryHeap::new(),
    };
    let mut devices = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let step = match kind {
            Kind::Jitr => Step::Unregistered,
            Kind::Claim => Step::ClaimConnect,
            Kind::Connect => Step::OwnConnect,
        };
        let (first, failures) = sim.first_attempt(start, i, scale, &mut rng);
        devices.push(Device {
            step,
            failures,
            call_failures: 0,
        });
        sim.queue.push(Reverse((micros(first), i)));
    }
    let mut done = Vec::with_capacity(devices.len());
    while let Some(Reverse((at, i))) = sim.queue.pop() {
        let now = at as f64 / 1e6;
        if let Some(next) = sim.attempt(&mut devices[i], now, &mut rng) {
            sim.queue.push(Reverse((micros(next), i)));
        } else {
            done.push(now.max(0.0));
        }
    }
    done.sort_by(f64::total_cmp);
    let at = |p: f64| -> f64 {
        if done.is_empty() {
            return 0.0;
        }
        let rank = ((p * done.len() as f64).ceil() as usize).clamp(1, done.len());
        done[rank - 1]
    };
    let counts = |b: &Bucket| {
        [
            (b.granted as f64 * scale).round() as u64,
            (b.throttled as f64 * scale).round() as u64,
        ]
    };
    let requests = [
        ("connect", counts(&sim.connect)),
        ("autoRegistration", counts(&sim.auto_registration)),
        ("createCertificate", counts(&sim.create_certificate)),
        ("registerThing", counts(&sim.register_thing)),
    ]
    .into_iter()
    .filter(|(_, [g, t])| g + t > 0)
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Outcome {
        p50_seconds: at(0.5),
        p99_seconds: at(0.99),
        all_seconds: at(1.0),
        requests,
        simulated_devices: kinds.len() as u64,
    }
}

struct Sim<'a> {
    connect: Bucket,
    auto_registration: Bucket,
    create_certificate: Bucket,
    register_thing: Bucket,
    /// Seconds between activations, and when the next may start.
    activation_interval: f64,
    activation_free: f64,
    behaviour: &'a Behaviour,
    queue: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Sim<'_> {
    fn backoff(&self, failures: u32, rng: &mut fastrand::Rng) -> f64 {
        let b = self.behaviour;
        full_jitter(b.backoff_base_seconds, b.backoff_cap_seconds, failures, rng)
    }

    fn call_backoff(&self, failures: u32, rng: &mut fastrand::Rng) -> f64 {
        let b = self.behaviour;
        full_jitter(
            b.call_backoff_base_seconds,
            b.call_backoff_cap_seconds,
            failures,
            rng,
        )
    }

    /// The device's first attempt in the region, and its failures so far.
    fn first_attempt(
        &self,
        start: Start,
        i: usize,
        scale: f64,
        rng: &mut fastrand::Rng,
    ) -> (f64, u32) {
        match start {
            Start::PowerOn => match self.behaviour.power_on_per_second {
                Some(rate) => (i as f64 * scale / rate, 0),
                None => (0.0, 0),
            },
            // Cut off by the fault, the device retries the lost region
            // until the answers move.
            Start::Fault => {
                let mut at = -self.behaviour.answers_move_after_seconds;
                let mut failures = 0;
                while at < 0.0 {
                    at += self.backoff(failures, rng);
                    failures += 1;
                }
                (at, failures)
            }
            Start::Recheck => (self.behaviour.recheck_seconds * (0.5 + rng.f64()), 0),
        }
    }

    /// One attempt of `device` at `now`: when it tries again, or None when
    /// it is working.
    fn attempt(&mut self, device: &mut Device, now: f64, rng: &mut fastrand::Rng) -> Option<f64> {
        let connected = match device.step {
            Step::Unregistered | Step::Pending(_) | Step::ClaimConnect | Step::OwnConnect => {
                self.connect.take(now)
            }
            Step::CreateCertificate | Step::RegisterThing => true,
        };
        let outcome = if !connected {
            Err(())
        } else {
            match device.step {
                Step::Unregistered => {
                    if self.auto_registration.take(now) {
                        let start = now.max(self.activation_free);
                        self.activation_free = start + self.activation_interval;
                        device.step =
                            Step::Pending(self.activation_free + self.behaviour.activation_seconds);
                    }
                    // Registered or not, the connection is dropped.
                    Err(())
                }
                Step::Pending(active) if now >= active => Ok(None),
                Step::Pending(_) => Err(()),
                Step::ClaimConnect => {
                    device.step = Step::CreateCertificate;
                    device.call_failures = 0;
                    Ok(Some(now))
                }
                Step::CreateCertificate => self.call(device, now, rng, Step::RegisterThing),
                Step::RegisterThing => self.call(device, now, rng, Step::OwnConnect),
                Step::OwnConnect => Ok(None),
            }
        };
        match outcome {
            Ok(next) => {
                if next.is_none() {
                    device.failures = 0;
                }
                next
            }
            Err(()) => {
                let next = now + self.backoff(device.failures, rng);
                device.failures = device.failures.saturating_add(1);
                Some(next)
            }
        }
    }

    /// A provisioning call on the claim's connection: the next step now,
    /// the same call after the call backoff, or the connection given up.
    fn call(
        &mut self,
        device: &mut Device,
        now: f64,
        rng: &mut fastrand::Rng,
        next: Step,
    ) -> Result<Option<f64>, ()> {
        let bucket = match device.step {
            Step::CreateCertificate => &mut self.create_certificate,
            _ => &mut self.register_thing,
        };
        if bucket.take(now) {
            device.step = next;
            device.call_failures = 0;
            return Ok(Some(now));
        }
        device.call_failures += 1;
        if device.call_failures > self.behaviour.call_retries {
            device.step = Step::ClaimConnect;
            return Err(());
        }
        Ok(Some(now + self.call_backoff(device.call_failures - 1, rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rates(connect: f64, auto_registration: f64) -> Rates {
        Rates {
            connect,
            auto_registration,
            create_certificate: 15.0,
            register_thing: 10.0,
            activation: f64::INFINITY,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_answer() {
        let b = Behaviour::default();
        let a = simulate(&[(300, Kind::Jitr)], Start::Fault, &rates(25.0, 0.75), &b);
        assert_eq!(
            a,
            simulate(&[(300, Kind::Jitr)], Start::Fault, &rates(25.0, 0.75), &b)
        );
        assert_eq!(a.simulated_devices, 300);
        assert_eq!(
            a.requests["autoRegistration"][0], 300,
            "one registration each"
        );
    }

    #[test]
    fn retries_cost_more_than_the_floor_and_less_without_backoff_idle() {
        // 100 JITR devices at 0.75 auto-registrations per second: the floor
        // is 133 s. With the game day's 2-30 s backoff the bucket idles
        // while devices sleep, and the last wait out their backoff.
        let b = Behaviour {
            backoff_base_seconds: 2.0,
            backoff_cap_seconds: 30.0,
            ..Behaviour::default()
        };
        let out = simulate(&[(100, Kind::Jitr)], Start::Fault, &rates(25.0, 0.75), &b);
        assert!(
            out.all_seconds > 133.0 && out.all_seconds < 133.0 * 2.0,
            "{out:?}"
        );
        assert!(out.p50_seconds < out.p99_seconds && out.p99_seconds <= out.all_seconds);
        // A CONNECT per attempt: many more than the floor's two per device.
        assert!(out.requests["connect"][0] > 200, "{out:?}");
    }

    #[test]
    fn a_claim_device_spends_a_certificate_and_a_thing_each_and_connects_twice() {
        let b = Behaviour::default();
        let r = Rates {
            register_thing: 2.0,
            ..rates(500.0, 15.0)
        };
        let out = simulate(&[(40, Kind::Claim)], Start::PowerOn, &r, &b);
        assert_eq!(out.requests["registerThing"][0], 40);
        assert!(out.requests["registerThing"][1] > 0, "throttled on the way");
        // A device that gives up after its call retries starts over, with
        // a new certificate and a new connection.
        let restarts = out.requests["createCertificate"][0] - 40;
        assert_eq!(out.requests["connect"][0], 80 + restarts);
        // 40 RegisterThing at 2 per second (one token at first): about 20 s.
        assert!(out.all_seconds >= 19.0 && out.all_seconds < 40.0, "{out:?}");
    }

    #[test]
    fn failback_is_a_connect_each_within_the_recheck() {
        let b = Behaviour {
            recheck_seconds: 3.0,
            ..Behaviour::default()
        };
        let out = simulate(
            &[(100, Kind::Connect)],
            Start::Recheck,
            &rates(500.0, 15.0),
            &b,
        );
        assert_eq!(out.requests["connect"], [100, 0]);
        assert!(out.all_seconds <= 4.5 && out.all_seconds >= 1.5, "{out:?}");
    }

    #[test]
    fn a_large_fleet_is_simulated_scaled_down_with_the_same_times() {
        let b = Behaviour::default();
        let small = simulate(
            &[(4_000, Kind::Jitr)],
            Start::Fault,
            &rates(500.0, 15.0),
            &b,
        );
        let large = simulate(
            &[(40_000, Kind::Jitr)],
            Start::Fault,
            &rates(5_000.0, 150.0),
            &b,
        );
        assert_eq!(large.simulated_devices, MAX_SIMULATED);
        let ratio = large.all_seconds / small.all_seconds;
        assert!((0.85..1.15).contains(&ratio), "{small:?} {large:?}");
        assert_eq!(large.requests["autoRegistration"][0], 40_000);
    }

    #[test]
    fn invalid_behaviour_names_its_field() {
        let b = Behaviour {
            backoff_cap_seconds: 0.5,
            ..Behaviour::default()
        };
        assert_eq!(b.invalid(), Some("backoffCapSeconds"));
        assert_eq!(Behaviour::default().invalid(), None);
        let b = Behaviour {
            power_on_per_second: Some(0.0),
            ..Behaviour::default()
        };
        assert_eq!(b.invalid(), Some("powerOnPerSecond"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The simulation never beats the arithmetic: every device needs its
        /// units, at the rates.
        #[test]
        fn never_faster_than_the_floor(devices in 1u64..400, connect in 1.0f64..200.0,
                                       registration in 0.5f64..30.0, seed in 0u64..1000) {
            let b = Behaviour { seed, ..Behaviour::default() };
            let out = simulate(&[(devices, Kind::Jitr)], Start::Fault, &rates(connect, registration), &b);
            let burst = registration.max(1.0);
            let floor = (devices as f64 - burst) / registration;
            prop_assert!(out.all_seconds + 1e-6 >= floor, "{out:?} floor {floor}");
            prop_assert_eq!(out.requests["autoRegistration"][0], devices);
        }
    }
}
