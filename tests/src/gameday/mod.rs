//! `make gameday`: a fleet loses its region, on this machine.
//!
//! The demo's control plane ([`crate::demo`]: moto, the functions, one
//! geoprov-iot-emu per region with IoT's rate quotas at `--quota-scale`,
//! the canaries, the health checks computed as Route 53 computes them, the
//! failover), with us-east-1's stack making the issuer IoT's certificate
//! provider, and a fleet of in-process devices ([`fleet`]) over three
//! locations: North America (us-east-1, then eu-west-1), the default
//! location (eu-west-1, then us-east-1) and Switzerland (eu-west-1 only,
//! residency). Half the devices of each location provision by claim, with
//! a CSR of their factory key; the others hold a certificate the issuer
//! made at the factory and are activated by JITR where they connect.
//!
//! 1. onboarding: every device provisions or is activated where its
//!    location is answered, and connects;
//! 2. failover: us-east-1 fails (its emulator refuses connections and ends
//!    the open ones, its canary fails); the canary's minutes turn its
//!    health check unhealthy, answers move, the failover rewrites the
//!    chains, and North America's devices reconnect through the global name
//!    to eu-west-1, where JITR registers their fleet-CA certificates and
//!    device activation activates them;
//! 3. failback: us-east-1 serves again, turns healthy, the failover puts it
//!    back after its hold, and devices go home at their next recheck.
//!
//! The canary's minutes are simulated (each a run of the real canary for
//! that minute's timestamp): the time to unhealthy is the minutes Route 53
//! takes on that schedule, 60 s each. Everything after the answers move is
//! measured. The report ([`report`]) is a table, a JSON file and a picture
//! of the devices connected to each region over time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use serde_json::{Value, json};

use crate::demo::health::{alarm_event, schedule_event};
use crate::demo::standup::Options;
use crate::demo::{
    ALARM_THRESHOLD, CANARY_WINDOW, Demo, FAILBACK_SECONDS, RESIDENCY_COUNTRY, target,
};
use crate::workspace_root;

pub mod fleet;
pub mod report;

use fleet::{DeviceSpec, FLEET_BACKOFF, Fleet, Route};
pub use report::Report;

pub const REGIONS: [&str; 2] = crate::demo::REGIONS;
const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
/// The countries devices are in: North America's, the default location's,
/// and Switzerland (residency).
const NA: [&str; 3] = ["US", "CA", "MX"];
const DEFAULT: [&str; 4] = ["DE", "FR", "IE", "ES"];

/// The three locations of the demo's failover configuration.
pub const LOCATIONS: [&str; 3] = [
    "US East IoT Global Endpoint",
    "Default IoT Global Endpoint",
    crate::demo::RESIDENCY_LOCATION,
];

/// What the game day takes.
#[derive(Debug, Clone)]
pub struct Args {
    pub devices: usize,
    /// IoT's published rates times this, in every emulator.
    pub quota_scale: f64,
    /// How long a phase may take before its devices count as stranded.
    pub phase_limit: Duration,
    /// How often a connected device resolves the name again.
    pub recheck: Duration,
    /// Devices powered on per second in the onboarding wave.
    pub launch_rate: f64,
    pub report: PathBuf,
    /// The picture; none draws none.
    pub picture: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            devices: 2000,
            quota_scale: 0.2,
            phase_limit: Duration::from_secs(900),
            recheck: Duration::from_secs(3),
            launch_rate: 5.0,
            report: target().join("gameday-report.json"),
            picture: Some(target().join("gameday.png")),
        }
    }
}

/// The location of the `i`th device's country.
pub fn country(i: usize) -> &'static str {
    match i % 10 {
        0..=4 => NA[i % NA.len()],
        5..=8 => DEFAULT[i % DEFAULT.len()],
        _ => RESIDENCY_COUNTRY,
    }
}

/// The location (set identifier) a country is in.
pub fn location(country: &str) -> &'static str {
    if NA.contains(&country) {
        LOCATIONS[0]
    } else if country == RESIDENCY_COUNTRY {
        LOCATIONS[2]
    } else {
        LOCATIONS[1]
    }
}

/// The fleet: serials, countries, routes and factory keys; the manifest
/// lines for it.
fn fleet_specs(devices: usize) -> (Vec<DeviceSpec>, Vec<Value>) {
    let mut specs = Vec::with_capacity(devices);
    let mut manifest = Vec::with_capacity(devices);
    for i in 0..devices {
        let serial = format!("GD-{i:05}");
        let country = country(i);
        let route = if (i / 10) % 2 == 0 {
            Route::Claim
        } else {
            Route::Jitr
        };
        let (key_pem, spki_sha256) = crate::demo::manifest::new_key();
        let regions: Vec<&str> = if country == RESIDENCY_COUNTRY {
            vec![EU]
        } else {
            REGIONS.to_vec()
        };
        manifest.push(json!({
            "serialNumber": serial, "status": "ALLOWED", "allowedRegions": regions,
            "publicKeySha256": spki_sha256,
            "attributes": {"model": "X1", "firmware": "1.4.2"},
        }));
        specs.push(DeviceSpec {
            serial,
            country,
            route,
            key_pem,
            certificate_pem: None,
        });
    }
    (specs, manifest)
}

/// The whole game day; returns its report (its `failures` empty when every
/// goal was met).
pub fn run(args: &Args) -> Report {
    let moto = &crate::moto().endpoint;
    let scale = args.quota_scale.to_string();
    let options = Options {
        emulator_args: vec!["--quota-scale".into(), scale],
        provider_in: Some(US),
        environments: 4,
    };
    let demo_args = crate::demo::Args {
        devices: 0,
        jitr: 0,
        jitr_connect: 0,
        report: target().join("gameday-demo.json"),
        seed: 7,
    };
    let started = Instant::now();
    let mut demo = Demo::stand_up_with(demo_args, moto, &options);
    let mut report = Report::new(args);
    report.failures.append(&mut demo.failures);
    println!("\n2. the game day's fleet: {} devices", args.devices);
    let (mut specs, manifest) = fleet_specs(args.devices);
    import(&demo, &manifest);
    demo.register_fleet_ca();
    issue_factory_certificates(&demo, &mut specs, &mut report);
    let day = GameDay::start(&demo, specs, args);
    day.onboard(&mut demo, &mut report);
    day.failover(&mut demo, &mut report);
    day.failback(&mut demo, &mut report);
    report.prediction = predicted_rehome(
        &demo.plane.config_path,
        args,
        report.rehome.measured_fault_to_answers_moved_seconds,
    );
    day.finish(&mut demo, &mut report);
    report.total_seconds = started.elapsed().as_secs_f64();
    report.failures.append(&mut demo.failures);
    drop(demo.stop());
    report.print();
    report.write(&args.report);
    if let Some(picture) = &args.picture {
        report.draw(&args.report, picture);
    }
    report
}

/// `geoprov registry import` of the fleet into each region's table.
fn import(demo: &Demo, manifest: &[Value]) {
    let path = target().join("gameday-manifest.jsonl");
    let lines: String = manifest.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, lines).expect("write the manifest");
    let path = path.to_str().expect("a UTF-8 path");
    for region in REGIONS {
        demo.geoprov(region)
            .ok(&["registry", "import", "--regions", region, path]);
    }
}

/// The factory's certificates for the JITR devices: CSRs of their factory
/// keys to the issuer, in batches.
fn issue_factory_certificates(demo: &Demo, specs: &mut [DeviceSpec], report: &mut Report) {
    let started = Instant::now();
    let jitr: Vec<&mut DeviceSpec> = specs
        .iter_mut()
        .filter(|s| s.route == Route::Jitr)
        .collect();
    let mut issued = 0;
    for batch in jitr.into_iter().collect::<Vec<_>>().chunks_mut(100) {
        let requests: Vec<Value> = batch
            .iter()
            .map(|s| {
                let key = KeyPair::from_pem(&s.key_pem).expect("the factory key");
                json!({"serialNumber": s.serial, "validityDays": 90,
                       "csrPem": crate::demo::jitr::csr_pem(&s.serial, &key)})
            })
            .collect();
        let response = demo.stack.issuer.invoke(&json!({ "requests": requests }));
        let results = response["results"].as_array().cloned().unwrap_or_default();
        for (spec, result) in batch.iter_mut().zip(results) {
            if let Some(pem) = result["certificatePem"].as_str() {
                spec.certificate_pem = Some(pem.to_owned());
                issued += 1;
            } else {
                report.failures.push(format!(
                    "{}: the issuer made no certificate: {result}",
                    spec.serial
                ));
            }
        }
    }
    println!(
        "  the factory's certificates: {issued} issued in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The fleet's tasks, the sampler, and the runtime they run on.
struct GameDay {
    fleet: Arc<Fleet>,
    specs: Vec<Arc<DeviceSpec>>,
    runtime: tokio::runtime::Runtime,
    sampler: Option<std::thread::JoinHandle<Vec<report::Sample>>>,
    sampling: Arc<AtomicBool>,
    t0: Instant,
    limit: Duration,
    launch_rate: f64,
    /// When the region failed.
    fault_at: std::cell::Cell<Option<Instant>>,
}

impl GameDay {
    fn start(demo: &Demo, specs: Vec<DeviceSpec>, args: &Args) -> Self {
        let endpoints = REGIONS
            .into_iter()
            .map(|r| {
                let emulator = &demo.stack.emulators[r].emulator;
                (r, emulator.endpoint_named(crate::demo::RECORD))
            })
            .collect();
        let claim = claim_identity();
        let fleet = Arc::new(Fleet::new(specs.len(), endpoints, claim, args.recheck));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let t0 = Instant::now();
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let fleet = fleet.clone();
            let sampling = sampling.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    samples.push(report::Sample {
                        seconds: t0.elapsed().as_secs_f64(),
                        connected: fleet
                            .connected_now()
                            .into_iter()
                            .map(|(r, n)| (r.to_owned(), n))
                            .collect(),
                    });
                    std::thread::sleep(Duration::from_millis(250));
                }
                samples
            })
        };
        GameDay {
            fleet,
            specs: specs.into_iter().map(Arc::new).collect(),
            runtime,
            sampler: Some(sampler),
            sampling,
            t0,
            limit: args.phase_limit,
            launch_rate: args.launch_rate,
            fault_at: std::cell::Cell::new(None),
        }
    }

    /// What each country is answered now (the answer model over moto's
    /// records and the health checks), for the devices' resolvers.
    fn refresh_answers(&self, demo: &Demo) -> BTreeMap<&'static str, Option<&'static str>> {
        let mut answers = BTreeMap::new();
        for country in NA.iter().chain(&DEFAULT).chain([&RESIDENCY_COUNTRY]) {
            let answer = demo.resolve(country);
            answers.insert(*country, REGIONS.into_iter().find(|r| *r == answer));
        }
        self.fleet.set_answers(answers.clone());
        answers
    }

    fn at(&self, event: &str, report: &mut Report) -> f64 {
        let seconds = self.t0.elapsed().as_secs_f64();
        println!("  {seconds:>8.1} s  {event}");
        report.events.push(report::Event {
            seconds,
            event: event.to_owned(),
        });
        seconds
    }

    /// Waits until `done` holds or the phase limit passes.
    fn wait_for(&self, what: &str, done: impl Fn(&Fleet) -> bool) -> bool {
        let deadline = Instant::now() + self.limit;
        let mut last = Instant::now();
        while Instant::now() < deadline {
            if done(&self.fleet) {
                return true;
            }
            if last.elapsed() > Duration::from_secs(10) {
                println!(
                    "    waiting for {what}: connected {:?}; not connected, by last error: {:?}",
                    self.fleet.connected_now(),
                    self.fleet.errors()
                );
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn onboard(&self, demo: &mut Demo, report: &mut Report) {
        println!("\n3. onboarding");
        self.refresh_answers(demo);
        report
            .quotas
            .insert("before onboarding".into(), quotas(demo));
        let start = self.at("onboarding starts", report);
        // A wave powers on over time, as a factory's does.
        let gap = Duration::from_secs_f64(1.0 / self.launch_rate);
        for (i, spec) in self.specs.iter().enumerate() {
            self.runtime
                .spawn(fleet::run_device(self.fleet.clone(), i, spec.clone()));
            std::thread::sleep(gap);
        }
        let all = self.specs.len();
        let ok = self.wait_for("onboarding", |f| {
            f.connected_now().values().sum::<usize>() == all
        });
        let end = self.at("every device connected", report);
        report.onboarding_seconds = end - start;
        if !ok {
            report.failures.push(format!(
                "onboarding: {:?} of {all} connected after the phase limit",
                self.fleet.connected_now()
            ));
        }
        report
            .quotas
            .insert("after onboarding".into(), quotas(demo));
        report.onboarded = self
            .fleet
            .connected_now()
            .into_iter()
            .map(|(r, n)| (r.to_owned(), n))
            .collect();
    }

    fn failover(&self, demo: &mut Demo, report: &mut Report) {
        println!("\n4. failover: us-east-1 fails");
        let affected: Vec<usize> = (0..self.specs.len())
            .filter(|i| self.fleet.states[*i].lock().expect("state").connected_to == Some(US))
            .collect();
        let fault = self.at(
            "fault: us-east-1 refuses connections and ends the open ones",
            report,
        );
        let fault_instant = Instant::now();
        self.fault_at.set(Some(fault_instant));
        demo.set_faults(US, true);
        let minutes = demo.canary_until(&[(US, "UNHEALTHY")]);
        count_probes(&minutes, report);
        report.detection_minutes = minutes.len();
        self.at(
            &format!(
                "health check unhealthy after {} canary minutes",
                minutes.len()
            ),
            report,
        );
        let answers = self.refresh_answers(demo);
        let moved = self.at("answers moved (Route 53 answers by health)", report);
        let moved_instant = Instant::now();
        if answers.get("US").copied().flatten() != Some(EU) {
            report.failures.push(format!(
                "after the fault North America is answered {answers:?}"
            ));
        }
        let invoked = Instant::now();
        let failover = demo.stack.failover.invoke(&alarm_event(US, "ALARM"));
        report.failover_seconds = invoked.elapsed().as_secs_f64();
        if failover["errors"].as_array().is_some_and(|e| !e.is_empty()) {
            report
                .failures
                .push(format!("failover on ALARM: {}", failover["errors"]));
        }
        self.refresh_answers(demo);
        self.at("the failover took us-east-1 out of the chains", report);
        let fleet = &self.fleet;
        let ok = self.wait_for("the re-homed devices", |f| {
            f.all_connected_to(&affected, EU)
        });
        self.at("every affected device connected again", report);
        report.rehome = report::Rehome::measure(
            fleet,
            &affected,
            fault_instant,
            moved_instant,
            minutes.len(),
            fault,
            moved,
        );
        if !ok {
            report
                .failures
                .push("failover: devices stranded after the phase limit".into());
        }
        report.quotas.insert("after failover".into(), quotas(demo));
        report.affected = affected;
    }

    fn failback(&self, demo: &mut Demo, report: &mut Report) {
        println!("\n5. failback: us-east-1 serves again");
        self.at("us-east-1 serves again", report);
        demo.set_faults(US, false);
        let minutes = demo.canary_until(&[(US, "HEALTHY")]);
        count_probes(&minutes, report);
        report.recovery_minutes = minutes.len();
        self.at(
            &format!(
                "health check healthy after {} canary minutes",
                minutes.len()
            ),
            report,
        );
        for _ in 0..2 {
            demo.stack.failover.invoke(&alarm_event(US, "OK"));
        }
        std::thread::sleep(Duration::from_secs(FAILBACK_SECONDS));
        let answer = demo.stack.failover.invoke(&schedule_event(None));
        if answer["errors"].as_array().is_some_and(|e| !e.is_empty()) {
            report
                .failures
                .push(format!("failover on failback: {}", answer["errors"]));
        }
        let answers = self.refresh_answers(demo);
        let back = Instant::now();
        self.at(
            "the failover put us-east-1 back: North America is answered us-east-1",
            report,
        );
        if answers.get("US").copied().flatten() != Some(US) {
            report.failures.push(format!(
                "after failback North America is answered {answers:?}"
            ));
        }
        let affected = report.affected.clone();
        let ok = self.wait_for("devices going home", |f| f.all_connected_to(&affected, US));
        self.at("every re-homed device home again", report);
        report.failback = report::Failback::measure(&self.fleet, &affected, back);
        if !ok {
            report
                .failures
                .push("failback: devices not home after the phase limit".into());
        }
        report.quotas.insert("after failback".into(), quotas(demo));
    }

    fn finish(mut self, demo: &mut Demo, report: &mut Report) {
        let fault = self.fault_at.get().unwrap_or_else(Instant::now);
        report.claim_uses_after_onboarding = self
            .fleet
            .states
            .iter()
            .map(|s| {
                let state = s.lock().expect("state");
                state.claim_uses.iter().filter(|at| **at > fault).count()
            })
            .sum();
        report.stranded = (0..self.specs.len())
            .filter(|i| {
                self.fleet.states[*i]
                    .lock()
                    .expect("state")
                    .connected_to
                    .is_none()
            })
            .count();
        report.audit = audit_events(demo, &self.specs, &report.affected);
        self.fleet.stop();
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            report.samples = sampler.join().unwrap_or_default();
        }
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        report.judge();
    }
}

/// The canary runs that provisioned or tried to (a certificate creation
/// and a RegisterThing each at most), per region.
fn count_probes(minutes: &[crate::demo::report::CanaryMinute], report: &mut Report) {
    for minute in minutes {
        for (region, run) in &minute.regions {
            // A run that reached provisioning spent its units there.
            if run.success || run.failed_step.as_deref() == Some("provision") {
                *report.canary_successes.entry(region.clone()).or_default() += 1;
            }
        }
    }
}

/// The claim's certificate and key, as `geoprov setup claim` wrote them.
fn claim_identity() -> geoprov_device::Identity {
    let dir = crate::demo::claim_dir();
    geoprov_device::Identity {
        certificate_pem: std::fs::read_to_string(dir.join("claim.pem")).expect("the claim"),
        private_key_pem: std::fs::read_to_string(dir.join("claim.key")).expect("the claim key"),
    }
}

/// Each region's quota counters (the emulator's `GET /quotas`).
fn quotas(demo: &Demo) -> BTreeMap<String, Value> {
    REGIONS
        .into_iter()
        .map(|r| (r.to_owned(), demo.stack.emulators[r].emulator.quotas()))
        .collect()
}

/// The re-homed devices by the decisions about them in eu-west-1's table.
fn audit_events(
    demo: &Demo,
    specs: &[Arc<DeviceSpec>],
    affected: &[usize],
) -> BTreeMap<usize, usize> {
    use geoprov_shared::registry::DynamoRegistry;
    let client = demo.aws.dynamodb[EU].clone();
    let registry = DynamoRegistry::new(client, crate::demo::TABLE);
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    demo.rt.block_on(async {
        for i in affected {
            let serial = geoprov_shared::device::SerialNumber::try_from(specs[*i].serial.as_str())
                .expect("a serial");
            // The decisions that let a device work there: activations, and
            // provisionings (a claim used again). The issuer's events for
            // the factory's certificates are in this table too.
            let events = registry
                .audit_events(&serial)
                .await
                .map(|events| {
                    events
                        .iter()
                        .filter(|e| {
                            ["JITR_ACTIVATION", "PROVISIONING_DECISION"].contains(&e.kind.as_str())
                        })
                        .count()
                })
                .unwrap_or(0);
            *counts.entry(events).or_default() += 1;
        }
    });
    counts
}

/// The workspace's plot script.
pub fn plot_script() -> PathBuf {
    workspace_root().join("scripts/gameday_plot.py")
}

/// The game day's rates for `geoprov plan`: the emulator's four at `scale`,
/// and the calls it does not throttle (device activation's, made to moto)
/// unbounded.
pub fn plan_quotas(scale: f64) -> Value {
    let published = geoprov_failover::plan::published_rates();
    let mut quotas = serde_json::Map::new();
    for (name, rate) in published {
        let emulated = [
            "connect",
            "autoRegistration",
            "createCertificate",
            "registerThing",
        ];
        let rate = if emulated.contains(&name.as_str()) {
            rate * scale
        } else {
            1.0e9
        };
        quotas.insert(name, json!(rate));
    }
    Value::Object(quotas)
}

/// What `geoprov plan` predicts for the re-homing after losing us-east-1,
/// for the game day's fleet, rates and device behaviour, with the answers
/// moving `answers_moved_after` seconds after the fault (as measured).
pub fn predicted_rehome(
    demo_config: &std::path::Path,
    args: &Args,
    answers_moved_after: f64,
) -> report::Prediction {
    let mut per_location: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..args.devices {
        *per_location.entry(location(country(i))).or_default() += 1;
    }
    let locations: serde_json::Map<String, Value> = per_location
        .into_iter()
        .map(|(l, n)| (l.to_owned(), json!({"devices": n, "route": "jitr"})))
        .collect();
    let behaviour = json!({
        "backoffBaseSeconds": FLEET_BACKOFF.base.as_secs_f64(),
        "backoffCapSeconds": FLEET_BACKOFF.cap.as_secs_f64(),
        "answersMoveAfterSeconds": answers_moved_after.max(0.0),
        "recheckSeconds": args.recheck.as_secs_f64(),
        "powerOnPerSecond": args.launch_rate,
    });
    let fleet = json!({"locations": locations, "quotas": plan_quotas(args.quota_scale),
                       "behaviour": behaviour});
    let path = target().join(format!("gameday-fleet-{}.json", args.devices));
    std::fs::write(&path, fleet.to_string()).expect("write the fleet file");
    let plan = crate::cli::Geoprov::new(crate::aws_env("http://127.0.0.1:9", US)).ok(&[
        "plan",
        "--config",
        demo_config.to_str().expect("a UTF-8 path"),
        "--fleet",
        path.to_str().expect("a UTF-8 path"),
        "--json",
    ]);
    let region = plan
        .as_array()
        .and_then(|phases| {
            phases
                .iter()
                .find(|p| p["name"] == format!("rehome after losing {US}"))
        })
        .and_then(|p| p["regions"].get(0))
        .cloned()
        .unwrap_or_default();
    let get = |field: &str| region[field].as_f64().unwrap_or(f64::NAN);
    report::Prediction {
        p50_seconds: get("p50Seconds"),
        p99_seconds: get("p99Seconds"),
        all_seconds: get("seconds"),
        floor_seconds: get("floorSeconds"),
        fleet_file: path.display().to_string(),
    }
}

/// The alarm's threshold and the canary's window, for the report.
pub const HEALTH_WINDOW: (u32, u32) = (ALARM_THRESHOLD, CANARY_WINDOW);
