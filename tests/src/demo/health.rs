//! The canaries' clock: one scheduled run of each region's canary a
//! simulated minute, its datapoint in CloudWatch, each health check's status
//! as Route 53 computes it, and the alarm the failover reads; the events
//! EventBridge sends the functions.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StateValue};
use serde_json::{Value, json};

use super::report::{CanaryMinute, MinuteRegion};
use super::{
    ALARM_THRESHOLD, CANARY_WINDOW, Demo, REGIONS, now_rfc3339, rfc3339, unix_now, unix_secs,
};

/// The simulated minutes, and what each region's alarm and health check
/// are at the end of the last one.
pub struct Clock {
    /// The next minute a canary runs for (epoch minutes).
    pub minute: i64,
    pub alarm: BTreeMap<&'static str, String>,
    pub health: BTreeMap<&'static str, String>,
    /// The failover has built the record tree: resolvers get answers.
    pub tree_built: bool,
}

impl Clock {
    /// From two hours ago (CloudWatch takes datapoints of the past).
    pub fn new() -> Self {
        Clock {
            minute: unix_secs() / 60 - 120,
            alarm: REGIONS
                .into_iter()
                .map(|r| (r, "INSUFFICIENT_DATA".to_owned()))
                .collect(),
            health: REGIONS
                .into_iter()
                .map(|r| (r, "UNHEALTHY".to_owned()))
                .collect(),
            tree_built: false,
        }
    }

    /// The regions whose Route 53 health check is unhealthy, as Route 53
    /// computes it from the canary's datapoints (`geoprov failover health`).
    pub fn down(&self) -> Vec<&'static str> {
        self.health
            .iter()
            .filter(|(_, status)| status.as_str() == "UNHEALTHY")
            .map(|(region, _)| *region)
            .collect()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Demo {
    /// Canary minutes until each region's health check is as `wanted`.
    pub fn canary_until(&mut self, wanted: &[(&str, &str)]) -> Vec<CanaryMinute> {
        let reached = |clock: &Clock| wanted.iter().all(|(r, w)| clock.health[*r] == *w);
        let mut minutes = Vec::new();
        while !reached(&self.clock) && minutes.len() < 2 * CANARY_WINDOW as usize {
            minutes.push(self.canary_minute());
        }
        let ok = reached(&self.clock);
        let health = format!("{:?}", self.clock.health);
        self.expect(
            ok,
            format!("the health checks never became {wanted:?}: {health}"),
        );
        minutes
    }

    /// One simulated minute: each region's canary runs once for it, and
    /// CloudWatch files its datapoint. moto extracts no metric from a log,
    /// so the demo puts the line's CanaryFailuresInWindow at the line's
    /// minute. Then, at the end of the minute, each health check's status as
    /// Route 53 computes it (`geoprov failover health`, the evaluator on
    /// moto's datapoints and the settings the check copied), and the alarm
    /// state the failover reads: a 1-of-1 alarm whose data is breaching
    /// (>= M) or missing is ALARM, which moto does not evaluate, so the demo
    /// sets it. The two must agree (the invariant the evaluator's proptests
    /// prove); the demo checks it every minute.
    pub fn canary_minute(&mut self) -> CanaryMinute {
        let minute = self.clock.minute;
        let mut regions = BTreeMap::new();
        for region in REGIONS {
            regions.insert(region.to_owned(), self.canary_run(region));
        }
        self.clock.minute += 1;
        self.read_health(&mut regions);
        let (north_america, europe) = if self.clock.tree_built {
            (Some(self.resolve("US")), Some(self.resolve("DE")))
        } else {
            (None, None)
        };
        let cells: Vec<String> = REGIONS
            .iter()
            .map(|r| {
                let v = &regions[*r];
                let run = if v.success {
                    "ok".to_owned()
                } else {
                    format!("failed at {}", v.failed_step.as_deref().unwrap_or("None"))
                };
                let failures = v
                    .failures_in_window
                    .map_or_else(|| "None".to_owned(), |f| f.to_string());
                let health = v.health.to_lowercase();
                format!("{r}: {run}, {failures} of {CANARY_WINDOW} failed -> {health}")
            })
            .collect();
        let answers = match (&north_america, &europe) {
            (Some(na), Some(eu)) => format!("; NA -> {na}, EU -> {eu}"),
            _ => "; no record tree yet".to_owned(),
        };
        println!("  minute {minute}: {}{answers}", cells.join("; "));
        CanaryMinute {
            minute,
            regions,
            north_america,
            europe,
        }
    }

    /// The region's canary run for the current minute, its datapoint, and
    /// the alarm set as its data says.
    fn canary_run(&mut self, region: &'static str) -> MinuteRegion {
        let minute = self.clock.minute;
        let report = self.stack.canaries[region].invoke(&schedule_event(Some(minute)));
        let failures = report["window"]["failures"].as_u64();
        if let Some(failures) = failures {
            let value = failures as f64;
            let datum = MetricDatum::builder()
                .metric_name("CanaryFailuresInWindow")
                .dimensions(Dimension::builder().name("Region").value(region).build())
                .value(value)
                .unit(StandardUnit::Count)
                .timestamp(DateTime::from_secs(minute * 60 + 1))
                .build();
            let put = self.aws.cloudwatch[region]
                .put_metric_data()
                .namespace("geoprov")
                .metric_data(datum)
                .send();
            self.rt.block_on(put).expect("put the canary's datapoint");
        }
        let breaching = failures.is_none_or(|f| f >= u64::from(ALARM_THRESHOLD));
        let state = if breaching { "ALARM" } else { "OK" };
        if self.clock.alarm[region] != state {
            self.set_alarm(region, state);
        }
        MinuteRegion {
            success: truthy(&report["success"]),
            failed_step: report["failedStep"].as_str().map(str::to_owned),
            failures_in_window: failures,
            alarm: state.to_owned(),
            health: String::new(),
        }
    }

    /// Each health check's status at the end of the minute, checked against
    /// the alarm.
    fn read_health(&mut self, regions: &mut BTreeMap<String, MinuteRegion>) {
        let at = (self.clock.minute * 60).to_string();
        let config = self.plane.config_path.to_str().expect("a UTF-8 path");
        let health = self
            .geoprov("us-east-1")
            .ok(&["failover", "health", "--config", config, "--at", &at]);
        let minute = self.clock.minute;
        for region in REGIONS {
            let status = health["regions"][region]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.clock.health.insert(region, status.clone());
            if let Some(cell) = regions.get_mut(region) {
                cell.health.clone_from(&status);
            }
            let alarm = self.clock.alarm[region].clone();
            let agree = (status == "UNHEALTHY") == (alarm == "ALARM");
            self.expect(
                agree,
                format!(
                    "minute {minute}: {region}'s alarm {alarm} and its health check {status} disagree"
                ),
            );
        }
    }

    pub fn set_alarm(&mut self, region: &'static str, state: &str) {
        self.clock.alarm.insert(region, state.to_owned());
        let set = self.aws.cloudwatch[region]
            .set_alarm_state()
            .alarm_name(format!("geoprov-health-{region}"))
            .state_value(StateValue::from(state))
            .state_reason("geoprov demo")
            .send();
        self.rt.block_on(set).expect("set the alarm's state");
    }
}

/// Python's truth of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// CloudWatch's alarm state change event, to the failover.
pub fn alarm_event(region: &str, state: &str) -> Value {
    let previous = if state == "ALARM" { "OK" } else { "ALARM" };
    json!({
        "version": "0", "id": format!("demo-{state}-{}", unix_now()),
        "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
        "account": "123456789012", "time": now_rfc3339(), "region": region, "resources": [],
        "detail": {"alarmName": format!("geoprov-health-{region}"), "state": {"value": state},
                   "previousState": {"value": previous}},
    })
}

/// EventBridge's scheduled event, for the epoch minute `minute` or now.
pub fn schedule_event(minute: Option<i64>) -> Value {
    let at = minute.map_or_else(now_rfc3339, |m| rfc3339(m * 60));
    json!({
        "version": "0", "id": format!("demo-schedule-{}", unix_now()),
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": at, "region": "us-east-1", "resources": [], "detail": {},
    })
}
