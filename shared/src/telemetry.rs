//! Logs and metrics: JSON logs through tracing, a cold-start flag, and
//! CloudWatch Embedded Metric Format (EMF) lines on stdout.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every geoprov metric.
pub const NAMESPACE: &str = "geoprov";

static COLD_START: AtomicBool = AtomicBool::new(true);

/// `true` for the first invocation of this execution environment only.
pub fn take_cold_start() -> bool {
    COLD_START.swap(false, Ordering::Relaxed)
}

/// Logging for a Lambda function, as `lambda_runtime`'s default subscriber
/// has it: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (SAM `LoggingConfig:
/// {LogFormat: JSON}`), no timestamp (Lambda adds one), no target, and the
/// runtime's span per invocation carries the request id.
///
/// The level is `AWS_LAMBDA_LOG_LEVEL` (FATAL counts as ERROR), else
/// `RUST_LOG`, else INFO. `RUST_LOG` may also name levels by target
/// (`info,aws_smithy_runtime=debug`), when `AWS_LAMBDA_LOG_LEVEL` is unset; it
/// is read by `tracing_subscriber::filter::Targets`, not `EnvFilter`, so a
/// function does not carry a regex engine (span-field filters are not
/// supported). A value that does not parse, in whole, leaves INFO.
pub fn init_function_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = log_filter(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout);
    let layer = match json {
        true => layer.json().with_filter(filter).boxed(),
        false => layer.with_filter(filter).boxed(),
    };
    // A second initialisation (a test) keeps the first.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The filter of `init_function_logging`.
fn log_filter(
    lambda_level: Option<&str>,
    rust_log: Option<&str>,
) -> tracing_subscriber::filter::Targets {
    use std::str::FromStr;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let default = || Targets::new().with_default(LevelFilter::INFO);
    if let Some(level) = lambda_level {
        // Lambda's levels are TRACE..ERROR and FATAL; tracing has no FATAL.
        let level = match level.eq_ignore_ascii_case("fatal") {
            true => "error",
            false => level,
        };
        return LevelFilter::from_str(level)
            .map(|l| Targets::new().with_default(l))
            .unwrap_or_else(|_| default());
    }
    match rust_log {
        Some(directives) => Targets::from_str(directives).unwrap_or_else(|_| default()),
        None => default(),
    }
}

/// A CloudWatch metric unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF log line: metrics with their dimensions, plus properties that
/// CloudWatch keeps as searchable log fields.
#[derive(Debug, Clone)]
pub struct MetricLine {
    service: String,
    /// Whether `service` is a dimension of the metrics (a log field always).
    service_dimension: bool,
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, f64, Unit)>,
    properties: Map<String, Value>,
}

impl MetricLine {
    /// A line for `service`, which is always a dimension.
    pub fn new(service: &str) -> Self {
        MetricLine {
            service: service.to_owned(),
            service_dimension: true,
            dimensions: Vec::new(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// Leaves `service` out of the dimensions (it stays a log field): for a
    /// metric an alarm names by its other dimensions alone, such as the
    /// canary's `CanarySuccess` by `Region`.
    pub fn without_service_dimension(mut self) -> Self {
        self.service_dimension = false;
        self
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn metric(mut self, name: &str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name.to_owned(), value, unit));
        self
    }

    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The EMF document, stamped with `timestamp_ms`.
    pub fn render(&self, timestamp_ms: i64) -> Value {
        let mut dimension_names = Vec::new();
        if self.service_dimension {
            dimension_names.push(Value::from("service"));
        }
        dimension_names.extend(self.dimensions.iter().map(|(n, _)| Value::from(n.as_str())));
        let mut doc = self.properties.clone();
        doc.insert("service".into(), Value::from(self.service.as_str()));
        for (name, value) in &self.dimensions {
            doc.insert(name.clone(), Value::from(value.as_str()));
        }
        for (name, value, _) in &self.metrics {
            doc.insert(name.clone(), json!(value));
        }
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimension_names],
                    "Metrics": self.metrics.iter()
                        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        Value::Object(doc)
    }

    /// Writes the line to stdout, where Lambda hands it to CloudWatch.
    pub fn emit(&self) {
        self.emit_at(crate::clock::now_epoch_millis());
    }

    /// Writes the line stamped with `timestamp_ms`: the datapoint's time.
    pub fn emit_at(&self, timestamp_ms: i64) {
        println!("{}", self.render(timestamp_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_level_comes_from_lambda_then_rust_log_then_info() {
        use tracing::Level;
        use tracing_subscriber::filter::LevelFilter;
        let at = |f: &tracing_subscriber::filter::Targets, target: &str, level: Level| {
            f.would_enable(target, &level)
        };
        let f = log_filter(None, None);
        assert!(at(&f, "geoprov", Level::INFO) && !at(&f, "geoprov", Level::DEBUG));
        let f = log_filter(Some("debug"), Some("error"));
        assert!(at(&f, "geoprov", Level::DEBUG));
        let f = log_filter(Some("FATAL"), None);
        assert!(at(&f, "geoprov", Level::ERROR) && !at(&f, "geoprov", Level::WARN));
        let f = log_filter(Some("WARN"), None);
        assert!(!at(&f, "geoprov", Level::INFO) && at(&f, "geoprov", Level::WARN));
        let f = log_filter(None, Some("warn,aws_smithy_runtime=debug"));
        assert!(at(&f, "aws_smithy_runtime::client", Level::DEBUG));
        assert!(!at(&f, "hyper", Level::INFO));
        // What does not parse leaves INFO, never silence.
        let f = log_filter(Some("loud"), None);
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
        let f = log_filter(None, Some("=[{"));
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
    }

    #[test]
    fn renders_an_emf_document_with_service_and_dimensions() {
        let doc = MetricLine::new("pre-provisioning-hook")
            .dimension("Reason", "ALLOWED")
            .metric("ProvisioningDecision", 1.0, Unit::Count)
            .property("serialNumber", "SN-1")
            .render(1_700_000_000_000);
        assert_eq!(doc["service"], "pre-provisioning-hook");
        assert_eq!(doc["Reason"], "ALLOWED");
        assert_eq!(doc["ProvisioningDecision"], 1.0);
        assert_eq!(doc["serialNumber"], "SN-1");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "geoprov");
        assert_eq!(directive["Dimensions"], json!([["service", "Reason"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "ProvisioningDecision", "Unit": "Count"}])
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }

    #[test]
    fn a_line_without_the_service_dimension_keeps_service_as_a_field() {
        let doc = MetricLine::new("region-canary")
            .without_service_dimension()
            .dimension("Region", "eu-west-1")
            .metric("CanarySuccess", 1.0, Unit::Count)
            .render(1);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Region"]])
        );
        assert_eq!(doc["service"], "region-canary");
        assert_eq!(doc["Region"], "eu-west-1");
        assert_eq!(doc["CanarySuccess"], 1.0);
    }

    #[test]
    fn cold_start_is_reported_once() {
        // Other tests in this binary may have taken it; after one take it is false.
        let _ = take_cold_start();
        assert!(!take_cold_start());
    }
}
