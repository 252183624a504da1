//! The game day's report: the goals judged, a table, a JSON file, and the
//! picture of devices connected per region over time
//! (`scripts/gameday_plot.py`, matplotlib, from the JSON).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::fleet::Fleet;
use super::{Args, EU, US};

/// Route 53 evaluates the canary's metric once a minute.
pub const MINUTE: f64 = 60.0;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seconds: f64,
    pub event: String,
}

/// Devices connected to each region at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub seconds: f64,
    pub connected: BTreeMap<String, usize>,
}

/// The re-homing of the devices us-east-1's loss disconnected.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rehome {
    pub devices: usize,
    /// Canary minutes until the health check turned unhealthy, at 60 s each
    /// (Route 53's evaluation on the canary's schedule).
    pub fault_to_unhealthy_seconds: f64,
    /// Measured: from the answers moving to this share of the devices
    /// connected in eu-west-1.
    pub answers_moved_to_p50_seconds: f64,
    pub answers_moved_to_p99_seconds: f64,
    pub answers_moved_to_all_seconds: f64,
    /// The game day's own clock, from the fault to the answers moving
    /// (simulated canary minutes run back to back).
    pub measured_fault_to_answers_moved_seconds: f64,
    /// Devices that never connected again within the phase.
    pub stranded: usize,
}

impl Rehome {
    pub fn measure(
        fleet: &Fleet,
        affected: &[usize],
        fault: Instant,
        moved: Instant,
        minutes: usize,
        fault_seconds: f64,
        moved_seconds: f64,
    ) -> Self {
        let times = first_connections(fleet, affected, fault, EU, moved);
        let (p50, p99, all) = percentiles(&times);
        Rehome {
            devices: affected.len(),
            fault_to_unhealthy_seconds: minutes as f64 * MINUTE,
            answers_moved_to_p50_seconds: p50,
            answers_moved_to_p99_seconds: p99,
            answers_moved_to_all_seconds: all,
            measured_fault_to_answers_moved_seconds: moved_seconds - fault_seconds,
            stranded: affected.len() - times.len(),
        }
    }
}

/// The moved devices going home after the failback.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failback {
    pub devices: usize,
    pub answers_back_to_p50_seconds: f64,
    pub answers_back_to_p99_seconds: f64,
    pub answers_back_to_all_seconds: f64,
    pub not_home: usize,
}

impl Failback {
    pub fn measure(fleet: &Fleet, affected: &[usize], back: Instant) -> Self {
        let times = first_connections(fleet, affected, back, US, back);
        let (p50, p99, all) = percentiles(&times);
        Failback {
            devices: affected.len(),
            answers_back_to_p50_seconds: p50,
            answers_back_to_p99_seconds: p99,
            answers_back_to_all_seconds: all,
            not_home: affected.len() - times.len(),
        }
    }
}

/// For each of `devices` that connected to `region` after `after`, the
/// seconds from `since` to its first such connection.
fn first_connections(
    fleet: &Fleet,
    devices: &[usize],
    after: Instant,
    region: &str,
    since: Instant,
) -> Vec<f64> {
    devices
        .iter()
        .filter_map(|i| {
            let state = fleet.states[*i].lock().expect("state");
            state
                .connections
                .iter()
                .find(|(at, r)| *at > after && *r == region)
                .map(|(at, _)| at.saturating_duration_since(since).as_secs_f64())
        })
        .collect()
}

/// p50, p99 and the largest of `times` (nearest rank); 0 for none.
pub fn percentiles(times: &[f64]) -> (f64, f64, f64) {
    if times.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[i - 1]
    };
    (rank(0.50), rank(0.99), sorted[sorted.len() - 1])
}

/// The quota units the failover and the failback spent beyond what
/// re-homing needs: a certificate creation or a RegisterThing not made by
/// a canary's probe (a claim used again), and auto-registrations beyond one
/// per re-homed device.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUse {
    /// Per region and quota: units spent from the fault to the end.
    pub spent: BTreeMap<String, BTreeMap<String, u64>>,
    /// Of those, the canaries' provisioning probes (a certificate creation
    /// and a RegisterThing each successful run).
    pub canary_probes: BTreeMap<String, u64>,
    pub extra: u64,
}

/// `geoprov plan`'s re-homing after losing us-east-1 (eu-west-1's share),
/// from the phase's start (the answers moving).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub all_seconds: f64,
    /// The arithmetic alone: units over rates.
    pub floor_seconds: f64,
    /// The fleet file the plan read.
    pub fleet_file: String,
}

impl Default for Prediction {
    fn default() -> Self {
        Prediction {
            p50_seconds: f64::NAN,
            p99_seconds: f64::NAN,
            all_seconds: f64::NAN,
            floor_seconds: f64::NAN,
            fleet_file: String::new(),
        }
    }
}

/// Everything the game day found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub devices: usize,
    pub quota_scale: f64,
    pub recheck_seconds: f64,
    pub onboarding_seconds: f64,
    pub onboarded: BTreeMap<String, usize>,
    pub detection_minutes: usize,
    pub recovery_minutes: usize,
    /// The failover function's ALARM invocation, end to end.
    pub failover_seconds: f64,
    pub rehome: Rehome,
    pub failback: Failback,
    /// `geoprov plan`'s re-homing after losing us-east-1, for this fleet,
    /// these rates and the devices' backoff; and how far the measurement
    /// (100 % re-homed) is from it.
    pub prediction: Prediction,
    pub prediction_error: f64,
    pub claim_uses_after_onboarding: usize,
    pub quota_use: QuotaUse,
    /// Re-homed devices by the number of audit events they have in
    /// eu-west-1 (the goal: all at 1).
    pub audit: BTreeMap<usize, usize>,
    pub stranded: usize,
    #[serde(skip)]
    pub affected: Vec<usize>,
    /// Canary runs that provisioned, per region, from the fault on.
    pub canary_successes: BTreeMap<String, u64>,
    pub quotas: BTreeMap<String, BTreeMap<String, Value>>,
    pub events: Vec<Event>,
    pub samples: Vec<Sample>,
    pub total_seconds: f64,
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(args: &Args) -> Self {
        Report {
            devices: args.devices,
            quota_scale: args.quota_scale,
            recheck_seconds: args.recheck.as_secs_f64(),
            onboarding_seconds: 0.0,
            onboarded: BTreeMap::new(),
            detection_minutes: 0,
            recovery_minutes: 0,
            failover_seconds: 0.0,
            rehome: Rehome::default(),
            failback: Failback::default(),
            prediction: Prediction::default(),
            prediction_error: f64::NAN,
            claim_uses_after_onboarding: 0,
            quota_use: QuotaUse::default(),
            audit: BTreeMap::new(),
            stranded: 0,
            affected: Vec::new(),
            canary_successes: BTreeMap::new(),
            quotas: BTreeMap::new(),
            events: Vec::new(),
            samples: Vec::new(),
            total_seconds: 0.0,
            failures: Vec::new(),
        }
    }

    /// The quota units spent from `from` to `to` (snapshots of `GET /quotas`).
    fn spent(&self, from: &str, to: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut spent = BTreeMap::new();
        let (Some(a), Some(b)) = (self.quotas.get(from), self.quotas.get(to)) else {
            return spent;
        };
        for (region, after) in b {
            let mut by_quota = BTreeMap::new();
            if let Some(quotas) = after["quotas"].as_object() {
                for (name, q) in quotas {
                    let before = a[region]["quotas"][name]["spent"].as_u64().unwrap_or(0);
                    let now = q["spent"].as_u64().unwrap_or(0);
                    by_quota.insert(name.clone(), now.saturating_sub(before));
                }
            }
            spent.insert(region.clone(), by_quota);
        }
        spent
    }

    /// The goals, each a failure when missed.
    pub fn judge(&mut self) {
        let spent = self.spent("after onboarding", "after failback");
        let mut extra = 0;
        for (region, by_quota) in &spent {
            let probes = self.canary_successes.get(region).copied().unwrap_or(0);
            for quota in ["createCertificate", "registerThing"] {
                extra += by_quota
                    .get(quota)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(probes);
            }
        }
        let rehomed = self.rehome.devices - self.rehome.stranded;
        let registered = spent
            .get(EU)
            .and_then(|q| q.get("autoRegistration"))
            .copied()
            .unwrap_or(0);
        extra += registered.saturating_sub(rehomed as u64);
        self.quota_use = QuotaUse {
            spent,
            canary_probes: self.canary_successes.clone(),
            extra,
        };
        let predicted = self.prediction.all_seconds;
        if predicted.is_finite() && predicted > 0.0 {
            self.prediction_error =
                (self.rehome.answers_moved_to_all_seconds - predicted) / predicted;
        }
        let mut goals = vec![
            (
                self.claim_uses_after_onboarding == 0,
                format!(
                    "{} claim uses after onboarding",
                    self.claim_uses_after_onboarding
                ),
            ),
            (
                self.quota_use.extra == 0,
                format!("{} extra quota units", self.quota_use.extra),
            ),
            (
                self.stranded == 0 && self.rehome.stranded == 0,
                format!(
                    "{} stranded, {} never re-homed",
                    self.stranded, self.rehome.stranded
                ),
            ),
            (
                self.failback.not_home == 0,
                format!(
                    "{} re-homed devices not home after failback",
                    self.failback.not_home
                ),
            ),
            (
                self.rehome.devices > 0,
                "no device was connected to us-east-1 when it failed".to_owned(),
            ),
        ];
        let audited_once = self.audit.keys().all(|&k| k == 1);
        goals.push((
            audited_once,
            format!(
                "audit events per re-homed device: {:?} (events: devices)",
                self.audit
            ),
        ));
        for (ok, what) in goals {
            if !ok {
                self.failures.push(what);
            }
        }
    }

    /// The table.
    pub fn print(&self) {
        let r = &self.rehome;
        let f = &self.failback;
        let rows: Vec<(String, String)> = vec![
            (
                "devices (locations 3, regions 2)".into(),
                self.devices.to_string(),
            ),
            (
                "quota scale (IoT's published rates x)".into(),
                self.quota_scale.to_string(),
            ),
            (
                "onboarding, every device connected".into(),
                secs(self.onboarding_seconds),
            ),
            (
                "connected after onboarding".into(),
                format!("{:?}", self.onboarded),
            ),
            (
                "devices us-east-1's loss disconnected".into(),
                r.devices.to_string(),
            ),
            (
                "fault -> health check unhealthy (canary minutes x 60 s)".into(),
                secs(r.fault_to_unhealthy_seconds),
            ),
            (
                "answers moved -> p50 re-homed".into(),
                secs(r.answers_moved_to_p50_seconds),
            ),
            (
                "answers moved -> p99 re-homed".into(),
                secs(r.answers_moved_to_p99_seconds),
            ),
            (
                "answers moved -> 100 % re-homed".into(),
                secs(r.answers_moved_to_all_seconds),
            ),
            (
                "fault -> 100 % re-homed (Route 53's minutes + measured)".into(),
                secs(r.fault_to_unhealthy_seconds + r.answers_moved_to_all_seconds),
            ),
            (
                "geoprov plan: p50 / p99 / 100 % re-homed".into(),
                format!(
                    "{} / {} / {}",
                    secs(self.prediction.p50_seconds),
                    secs(self.prediction.p99_seconds),
                    secs(self.prediction.all_seconds)
                ),
            ),
            (
                "geoprov plan: the quotas' floor (units over rates)".into(),
                secs(self.prediction.floor_seconds),
            ),
            (
                "measured vs predicted".into(),
                format!("{:+.1} %", self.prediction_error * 100.0),
            ),
            (
                "failover function on ALARM".into(),
                secs(self.failover_seconds),
            ),
            (
                "claim uses after onboarding (goal 0)".into(),
                self.claim_uses_after_onboarding.to_string(),
            ),
            (
                "extra quota units (goal 0)".into(),
                self.quota_use.extra.to_string(),
            ),
            (
                "audit events per re-homed device (events: devices)".into(),
                format!("{:?}", self.audit),
            ),
            (
                "stranded (goal 0)".into(),
                (self.stranded + r.stranded).to_string(),
            ),
            (
                "failback: answers back -> p50 / p99 / 100 % home".into(),
                format!(
                    "{} / {} / {}",
                    secs(f.answers_back_to_p50_seconds),
                    secs(f.answers_back_to_p99_seconds),
                    secs(f.answers_back_to_all_seconds)
                ),
            ),
            ("game day, wall clock".into(), secs(self.total_seconds)),
        ];
        println!("\n| measure | value |\n|---|---:|");
        for (k, v) in rows {
            println!("| {k} | {v} |");
        }
        if self.failures.is_empty() {
            println!("\nevery goal met");
        } else {
            println!("\n{} goals missed:", self.failures.len());
            for f in &self.failures {
                println!("  - {f}");
            }
        }
    }

    pub fn write(&self, path: &Path) {
        let text = serde_json::to_string_pretty(self).expect("the report is JSON");
        std::fs::write(path, text).expect("write the report");
        println!("report: {}", path.display());
    }

    /// The picture, drawn from the JSON report.
    pub fn draw(&self, report: &Path, picture: &Path) {
        let drawn = Command::new(crate::python())
            .arg(super::plot_script())
            .arg(report)
            .arg(picture)
            .status();
        match drawn {
            Ok(status) if status.success() => println!("picture: {}", picture.display()),
            other => println!("no picture: {other:?}"),
        }
    }
}

fn secs(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("{seconds:.1} s")
    } else {
        "n/a".into()
    }
}
