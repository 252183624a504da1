//! One scheduled run as the function makes it: the material and the
//! endpoint (read once, then kept), the probe, the metric line and the log.

use std::time::Instant;

use aws_sdk_iot::error::DisplayErrorContext;
use tokio::sync::Mutex;

use crate::config::{CanaryConfig, MQTT_PORT};
use crate::material::MaterialCache;
use crate::probe::{self, ProbeInput, Report, Target, ThingRemover};

pub struct Canary<R> {
    config: CanaryConfig,
    material: MaterialCache,
    iot: aws_sdk_iot::Client,
    remover: R,
    target: Mutex<Option<Target>>,
}

impl<R: ThingRemover> Canary<R> {
    pub fn new(
        config: CanaryConfig,
        material: MaterialCache,
        iot: aws_sdk_iot::Client,
        remover: R,
    ) -> Self {
        let target = config
            .endpoint
            .clone()
            .map(|(host, port)| Target { host, port });
        Canary {
            config,
            material,
            iot,
            remover,
            target: Mutex::new(target),
        }
    }

    /// This region's endpoint: `CANARY_ENDPOINT`, else IoT's iot:Data-ATS
    /// endpoint (asked once).
    async fn target(&self) -> Result<Target, String> {
        let mut kept = self.target.lock().await;
        if let Some(target) = kept.as_ref() {
            return Ok(target.clone());
        }
        let answer = self
            .iot
            .describe_endpoint()
            .endpoint_type("iot:Data-ATS")
            .send()
            .await
            .map_err(|e| format!("IoT DescribeEndpoint: {}", DisplayErrorContext(e)))?;
        let host = answer
            .endpoint_address()
            .filter(|h| !h.is_empty())
            .ok_or("IoT DescribeEndpoint answered no endpointAddress")?;
        let target = Target {
            host: host.to_owned(),
            port: MQTT_PORT,
        };
        *kept = Some(target.clone());
        Ok(target)
    }

    /// Runs the probe once and reports it: the EMF line on stdout and one
    /// log line per step.
    pub async fn run_once(&self) -> Report {
        let report = self.probe_once().await;
        report.log();
        report.metric_line().emit();
        report
    }

    /// Runs the probe once.
    pub async fn probe_once(&self) -> Report {
        let started = Instant::now();
        let region = self.config.region.as_str();
        let run_id = probe::run_id();
        let setup = async {
            let material = self.material.get().await.map_err(|e| e.to_string())?;
            let target = self.target().await?;
            Ok::<_, String>((material, target))
        };
        match tokio::time::timeout(self.config.budget, setup).await {
            Ok(Ok((material, target))) => {
                let input = ProbeInput {
                    region,
                    run_id: &run_id,
                    server_name: &self.config.server_name,
                    target: &target,
                    material: &material,
                    provisioning: self.config.provisioning.as_ref(),
                    budget: self.config.budget.saturating_sub(started.elapsed()),
                };
                let mut report = probe::run(input, &self.remover).await;
                report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                report
            }
            Ok(Err(e)) => Report::setup_failed(region, &run_id, started.elapsed(), e),
            Err(_) => Report::setup_failed(
                region,
                &run_id,
                started.elapsed(),
                "the material and the endpoint were not read within the budget".into(),
            ),
        }
    }
}
