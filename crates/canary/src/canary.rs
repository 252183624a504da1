//! One scheduled run as the function makes it: the material and the
//! endpoint (read once, then kept), the probe, the metric line and the log.

use std::time::Instant;

use aws_sdk_iot::error::DisplayErrorContext;
use tokio::sync::Mutex;

/// How long keeping the window may take, after the probe and its cleanup.
pub const WINDOW_LIMIT: std::time::Duration = std::time::Duration::from_secs(6);

use crate::config::{CanaryConfig, MQTT_PORT};
use crate::material::MaterialCache;
use crate::probe::{self, ProbeInput, Report, Target, ThingRemover, WindowReading};
use crate::window::{self, WindowStore};

pub struct Canary<R, W> {
    config: CanaryConfig,
    material: MaterialCache,
    iot: aws_sdk_iot::Client,
    remover: R,
    window: W,
    target: Mutex<Option<Target>>,
}

impl<R: ThingRemover, W> Canary<R, W> {
    /// A canary with `window` where it keeps its window: a [`WindowStore`]
    /// for scheduled runs, `()` for a probe alone (`geoprov canary run`).
    pub fn new(
        config: CanaryConfig,
        material: MaterialCache,
        iot: aws_sdk_iot::Client,
        remover: R,
        window: W,
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
            window,
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

impl<R: ThingRemover, W: WindowStore> Canary<R, W> {
    /// Runs the probe once for `minute` (epoch minute), records its verdict
    /// in the window, and reports it: the EMF line stamped with the minute
    /// on stdout, and one log line per step.
    pub async fn run_once(&self, minute: i64) -> Report {
        let mut report = self.probe_once().await;
        let region = self.config.region.as_str();
        let size = self.config.window;
        let recorded = tokio::time::timeout(
            WINDOW_LIMIT,
            window::record_run(&self.window, region, minute, report.success, size),
        )
        .await
        .unwrap_or_else(|_| {
            Err(window::WindowError::Call {
                operation: "record",
                message: "not done within its limit".into(),
            })
        });
        report.window = Some(match recorded {
            Ok(failures) => WindowReading {
                minute,
                size,
                failures,
                error: None,
            },
            Err(e) => WindowReading {
                minute,
                size,
                failures: size,
                error: Some(e.to_string()),
            },
        });
        report.log();
        report.metric_line().emit_at(minute * 60_000);
        report
    }
}
