//! One probe of a region, within one budget: every step is bounded by what
//! is left of it, so a step that hangs is a failed step, never a function
//! timeout. The report names each step's outcome and latency, and the
//! first step that failed.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use geoprov_device::provision::{ProvisionRequest, provision};
use geoprov_device::{Device, Endpoint};
use geoprov_shared::telemetry::{MetricLine, Unit};
use serde::Serialize;

use crate::SERVICE;
use crate::config::ProvisioningProbe;
use crate::material::Material;

/// How long deleting the provisioning probe's thing and certificates may
/// take, after the budget: it must run even when provisioning spent it.
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(8);

/// How long the DISCONNECT may take.
const DISCONNECT_LIMIT: Duration = Duration::from_secs(1);

/// The steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Reading the canary's material and naming this region's endpoint.
    Setup,
    /// DNS of this region's endpoint.
    Resolve,
    /// TCP, TLS with SNI = the global name and the canary's certificate,
    /// CONNECT and its CONNACK.
    Connect,
    /// SUBSCRIBE to the run's topic, and its SUBACK.
    Subscribe,
    /// PUBLISH at QoS 1 on it, and its PUBACK.
    Publish,
    /// The broker delivering the message back.
    Echo,
    /// Fleet provisioning by claim with the reserved serial: connect with the
    /// claim, CreateCertificateFromCsr, RegisterThing (the hook's answer).
    Provision,
    /// Deleting what the provisioning probe made (not part of the verdict).
    Cleanup,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Setup => "setup",
            Step::Resolve => "resolve",
            Step::Connect => "connect",
            Step::Subscribe => "subscribe",
            Step::Publish => "publish",
            Step::Echo => "echo",
            Step::Provision => "provision",
            Step::Cleanup => "cleanup",
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    pub step: Step,
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub region: String,
    pub run_id: String,
    /// Devices can connect (and provision, when probed) here.
    pub success: bool,
    /// The first step that failed.
    pub failed_step: Option<Step>,
    pub elapsed_ms: f64,
    pub steps: Vec<StepResult>,
    /// The run's place in the canary's window, once recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowReading>,
}

/// The window after this run: what `CanaryFailuresInWindow` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReading {
    /// The run's epoch minute.
    pub minute: i64,
    pub size: u32,
    /// Failed or missing minutes of the window; `size` when the window
    /// could not be kept (fail closed).
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    pub fn new(region: &str, run_id: &str) -> Self {
        Report {
            region: region.to_owned(),
            run_id: run_id.to_owned(),
            success: false,
            failed_step: None,
            elapsed_ms: 0.0,
            steps: Vec::new(),
            window: None,
        }
    }

    fn record(&mut self, step: Step, latency: Duration, error: Option<String>) {
        if error.is_some() && step != Step::Cleanup && self.failed_step.is_none() {
            self.failed_step = Some(step);
        }
        self.steps.push(StepResult {
            step,
            ok: error.is_none(),
            latency_ms: millis(latency),
            error,
        });
    }

    /// A run that could not start: its setup failed.
    pub fn setup_failed(region: &str, run_id: &str, latency: Duration, error: String) -> Self {
        let mut report = Report::new(region, run_id);
        report.record(Step::Setup, latency, Some(error));
        report.elapsed_ms = millis(latency);
        report
    }

    pub fn step(&self, step: Step) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.step == step)
    }

    fn latency(&self, steps: &[Step]) -> Option<f64> {
        let found: Vec<&StepResult> = steps.iter().filter_map(|s| self.step(*s)).collect();
        (found.len() == steps.len() && found.iter().all(|s| s.ok))
            .then(|| found.iter().map(|s| s.latency_ms).sum())
    }

    /// TCP, TLS and CONNACK.
    pub fn connect_latency_ms(&self) -> Option<f64> {
        self.latency(&[Step::Connect])
    }

    /// From the PUBLISH to the message coming back.
    pub fn round_trip_latency_ms(&self) -> Option<f64> {
        self.latency(&[Step::Publish, Step::Echo])
    }

    pub fn provision_latency_ms(&self) -> Option<f64> {
        self.latency(&[Step::Provision])
    }

    /// The EMF line: `CanarySuccess` (0/1), `CanaryFailuresInWindow` (what
    /// the health alarm reads) and the latencies of the steps that
    /// succeeded, by `Region` alone (the dimension the alarm names).
    pub fn metric_line(&self) -> MetricLine {
        let mut line = MetricLine::new(SERVICE)
            .without_service_dimension()
            .dimension("Region", &self.region)
            .metric(
                "CanarySuccess",
                if self.success { 1.0 } else { 0.0 },
                Unit::Count,
            )
            .property("runId", self.run_id.as_str())
            .property("elapsedMs", self.elapsed_ms);
        for (name, value) in [
            ("ConnectLatency", self.connect_latency_ms()),
            ("RoundTripLatency", self.round_trip_latency_ms()),
            ("ProvisionLatency", self.provision_latency_ms()),
        ] {
            if let Some(value) = value {
                line = line.metric(name, value, Unit::Milliseconds);
            }
        }
        if let Some(window) = &self.window {
            line = line
                .metric(
                    "CanaryFailuresInWindow",
                    f64::from(window.failures),
                    Unit::Count,
                )
                .property("windowSize", window.size);
        }
        if let Some(step) = self.failed_step {
            line = line.property("failedStep", step.as_str());
        }
        if self.step(Step::Cleanup).is_some_and(|s| !s.ok) {
            line = line.metric("CanaryCleanupFailed", 1.0, Unit::Count);
        }
        line
    }

    /// One JSON log line per step, then the verdict.
    pub fn log(&self) {
        for s in &self.steps {
            tracing::info!(
                service = SERVICE,
                run_id = self.run_id,
                step = s.step.as_str(),
                ok = s.ok,
                latency_ms = s.latency_ms,
                error = s.error.as_deref().unwrap_or(""),
                "canary step"
            );
        }
        tracing::info!(
            service = SERVICE,
            run_id = self.run_id,
            success = self.success,
            failed_step = self.failed_step.map(Step::as_str).unwrap_or(""),
            elapsed_ms = self.elapsed_ms,
            "canary run"
        );
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A fresh run id: 16 hex digits.
pub fn run_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Deletes a thing and every certificate attached to it.
pub trait ThingRemover: Send + Sync {
    /// The certificates deleted; a thing that does not exist is `Ok(0)`.
    fn remove(&self, thing: &str) -> impl Future<Output = Result<u32, String>> + Send;
}

/// Where this region's IoT endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// What one probe needs.
pub struct ProbeInput<'a> {
    pub region: &'a str,
    pub run_id: &'a str,
    /// The global name: SNI, and the name the server certificate must hold.
    pub server_name: &'a str,
    pub target: &'a Target,
    pub material: &'a Material,
    pub provisioning: Option<&'a ProvisioningProbe>,
    pub budget: Duration,
}

/// Runs `future` until `deadline`; its error, or the deadline passing, is
/// the step's error.
async fn bounded<T, E: Display>(
    deadline: Instant,
    future: impl Future<Output = Result<T, E>>,
) -> (Result<T, String>, Duration) {
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    let result = match tokio::time::timeout(left, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within what was left of the run's budget ({} ms)",
            left.as_millis()
        )),
    };
    (result, started.elapsed())
}

/// Records the outcome of a step; `Some(value)` when it succeeded.
fn take<T>(report: &mut Report, step: Step, outcome: (Result<T, String>, Duration)) -> Option<T> {
    let (result, latency) = outcome;
    match result {
        Ok(value) => {
            report.record(step, latency, None);
            Some(value)
        }
        Err(e) => {
            report.record(step, latency, Some(e));
            None
        }
    }
}

/// The probe: every step within `input.budget`, then the cleanup of the
/// provisioning probe within [`CLEANUP_LIMIT`].
pub async fn run<R: ThingRemover>(input: ProbeInput<'_>, remover: &R) -> Report {
    let started = Instant::now();
    let mut report = Report::new(input.region, input.run_id);
    probe(&input, started + input.budget, &mut report).await;
    // With the provisioning probe on, the serial's thing and certificates
    // go whatever the run did, those of earlier runs included (a run that
    // failed before provisioning may follow one cut off after it).
    if let Some(probe) = input.provisioning {
        let cleaned = bounded(
            Instant::now() + CLEANUP_LIMIT,
            remover.remove(probe.serial.as_str()),
        )
        .await;
        take(&mut report, Step::Cleanup, cleaned);
    }
    report.success = report.failed_step.is_none();
    report.elapsed_ms = millis(started.elapsed());
    report
}

async fn probe(input: &ProbeInput<'_>, deadline: Instant, report: &mut Report) {
    let target = (input.target.host.clone(), input.target.port);
    let resolved = bounded(deadline, async {
        tokio::net::lookup_host(target)
            .await
            .map_err(|e| format!("{}: {e}", input.target.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", input.target.host))
    })
    .await;
    let Some(address) = take(report, Step::Resolve, resolved) else {
        return;
    };
    let endpoint = Endpoint {
        server_name: input.server_name.to_owned(),
        address,
        ca_pem: input.material.ca_pem.clone(),
    };
    // A client id of its own per run: two probes at once (the schedule and
    // `geoprov canary run`) never take each other's session.
    let client_id = crate::client_id(input.region, input.run_id);
    let connected = bounded(
        deadline,
        Device::connect(&endpoint, &input.material.device, &client_id),
    )
    .await;
    let Some(mut device) = take(report, Step::Connect, connected) else {
        return;
    };
    let topic = crate::topic(input.region, input.run_id);
    let subscribed = bounded(deadline, device.subscribe(&[&topic])).await;
    if take(report, Step::Subscribe, subscribed).is_none() {
        return;
    }
    let payload = serde_json::json!({"runId": input.run_id, "region": input.region}).to_string();
    let published = bounded(deadline, device.publish(&topic, payload.clone())).await;
    if take(report, Step::Publish, published).is_none() {
        return;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let echoed = bounded(deadline, async {
        let message = device.receive(left, |t| t == topic).await?;
        if message.payload.as_ref() == payload.as_bytes() {
            Ok(())
        } else {
            Err(geoprov_device::DeviceError::Protocol(
                "the message on the run's topic is not the one published".into(),
            ))
        }
    })
    .await;
    if take(report, Step::Echo, echoed).is_none() {
        return;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(DISCONNECT_LIMIT.min(left), device.disconnect()).await;

    if let Some(probe) = input.provisioning {
        provision_probe(input, probe, &endpoint, deadline, report).await;
    }
}

/// The optional last step: fleet provisioning by claim with the reserved
/// canary serial, as a device would.
async fn provision_probe(
    input: &ProbeInput<'_>,
    probe: &ProvisioningProbe,
    endpoint: &Endpoint,
    deadline: Instant,
    report: &mut Report,
) {
    let provisioned = bounded(deadline, async {
        let (claim, key) = input.material.provisioning.as_ref().ok_or(
            "CANARY_PROVISIONING is on but the claim or the provisioning key is missing \
             (run geoprov setup canary with --claim-dir)",
        )?;
        let request = ProvisionRequest {
            client_id: probe.client_id.clone(),
            template: probe.template.clone(),
            csr: true,
            serial: probe.serial.to_string(),
            key_pem: Some(key.clone()),
            parameters: BTreeMap::from([("SerialNumber".into(), probe.serial.to_string())]),
        };
        let done = provision(endpoint, claim, &request)
            .await
            .map_err(|e| e.to_string())?;
        if done.thing_name != probe.serial.as_str() {
            return Err(format!(
                "the template named the thing {:?}, not the canary serial",
                done.thing_name
            ));
        }
        Ok::<_, String>(())
    })
    .await;
    take(report, Step::Provision, provisioned);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_line_has_success_and_the_latencies_of_the_steps_that_succeeded() {
        let mut report = Report::new("eu-west-1", "r1");
        report.record(Step::Resolve, Duration::from_millis(1), None);
        report.record(Step::Connect, Duration::from_millis(20), None);
        report.record(Step::Subscribe, Duration::from_millis(2), None);
        report.record(Step::Publish, Duration::from_millis(3), None);
        report.record(Step::Echo, Duration::from_millis(4), None);
        report.success = report.failed_step.is_none();
        let doc = report.metric_line().render(0);
        assert_eq!(doc["CanarySuccess"], 1.0);
        assert_eq!(doc["ConnectLatency"], 20.0);
        assert_eq!(doc["RoundTripLatency"], 7.0);
        assert!(doc.get("ProvisionLatency").is_none());
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Region"]])
        );
    }

    #[test]
    fn the_first_failed_step_is_named_and_a_failed_cleanup_does_not_fail_the_run() {
        let mut report = Report::new("eu-west-1", "r1");
        report.record(Step::Resolve, Duration::ZERO, None);
        report.record(Step::Connect, Duration::ZERO, Some("refused".into()));
        assert_eq!(report.failed_step, Some(Step::Connect));
        let doc = report.metric_line().render(0);
        assert_eq!(doc["CanarySuccess"], 0.0);
        assert_eq!(doc["failedStep"], "connect");
        assert!(doc.get("ConnectLatency").is_none());

        let mut cleanup_only = Report::new("eu-west-1", "r2");
        cleanup_only.record(Step::Cleanup, Duration::ZERO, Some("denied".into()));
        assert_eq!(cleanup_only.failed_step, None);
        assert_eq!(
            cleanup_only.metric_line().render(0)["CanaryCleanupFailed"],
            1.0
        );
    }
}
