//! A `CLOUDWATCH_METRIC` health check as Route 53 computes it, and the
//! CloudWatch alarm the endpoint failover reads beside it. Pure.
//!
//! What Route 53 documents, and this module follows:
//! - **It reads the data stream, not the alarm state.** "Route 53 monitors
//!   the data stream for the corresponding alarm instead of monitoring the
//!   alarm state" (Developer Guide, "How Amazon Route 53 determines whether a
//!   health check is healthy", <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-determining-health-of-endpoints.html>).
//!   So its verdict is a function of the datapoints and of the alarm's
//!   settings it copied ([`AlarmConfiguration`], the API's
//!   `CloudWatchAlarmConfiguration`: EvaluationPeriods, Threshold,
//!   ComparisonOperator, Period, MetricName, Namespace, Statistic,
//!   Dimensions, <https://docs.aws.amazon.com/Route53/latest/APIReference/API_CloudWatchAlarmConfiguration.html>).
//!   DatapointsToAlarm and TreatMissingData are not part of it.
//! - **What it supports** (API reference, `AlarmIdentifier`,
//!   <https://docs.aws.amazon.com/Route53/latest/APIReference/API_AlarmIdentifier.html>,
//!   and the Developer Guide's "Values that you specify when you create or
//!   update health checks", <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/health-checks-creating-values.html>):
//!   standard-resolution metrics; statistics Average, Minimum, Maximum, Sum
//!   and SampleCount, no extended statistics; no "M out of N" alarms; no
//!   metric math; the four comparison operators of
//!   `CloudWatchAlarmConfiguration`; an alarm in one of the regions
//!   `AlarmIdentifier.Region` lists. [`check_alarm`] refuses the rest, naming
//!   the rule.
//! - **Insufficient data** ("InsufficientDataHealthStatus", API reference
//!   `HealthCheckConfig`, <https://docs.aws.amazon.com/Route53/latest/APIReference/API_HealthCheckConfig.html>):
//!   when the data does not determine the state, the status is Healthy,
//!   Unhealthy, or the last known one (healthy for a check with none).
//! - **Settings are a copy**: taken at CreateHealthCheck and again only on
//!   UpdateHealthCheck (Developer Guide, "Updating CloudWatch alarm settings
//!   for a health check"); [`config_drift`] names what differs.
//!
//! Where the guides are silent, the model says what it assumes:
//! - the periods evaluated at time `t` are whole periods that ended at or
//!   before `t`, aligned to the period as CloudWatch aligns them;
//! - Route 53 reads the data stream as CloudWatch evaluates an alarm's data:
//!   within the evaluation range (more periods than EvaluationPeriods; its
//!   length is undocumented, the model takes [`EVALUATION_RANGE_EXTRA`]
//!   more), the most recent EvaluationPeriods periods with data decide;
//! - "enough information" means the verdict cannot change whatever the
//!   missing periods hold: with fewer periods of data than EvaluationPeriods,
//!   OK needs one that does not breach; anything else is insufficient data.
//!
//! The CloudWatch side ([`cloudwatch_state`]) follows the CloudWatch User
//! Guide's "Evaluating an alarm" and "Configuring how CloudWatch alarms
//! treat missing data" (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html>)
//! for `breaching` and `notBreaching`, the two treatments that decide every
//! period; `missing` and `ignore` look further back in ways the guide leaves
//! open and are not modelled.
//!
//! geoprov's invariant ([`verdicts_agree`]): for an alarm Route 53 supports
//! with TreatMissingData `breaching`, and a health check with
//! InsufficientDataHealthStatus `Unhealthy`, the alarm's state (what the
//! failover reads) and the health check's status (what Route 53 answers by)
//! are the same verdict for every series of datapoints and any evaluation
//! range both read alike. A late datapoint counts, on both sides, in the
//! period it names; a silence (a canary that stopped) keeps the last
//! verdict through the evaluation range and is then ALARM on one side and
//! insufficient data, so unhealthy, on the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The statistics Route 53 supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Statistic {
    Average,
    Minimum,
    Maximum,
    Sum,
    SampleCount,
}

impl Statistic {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "Average" => Statistic::Average,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            "Sum" => Statistic::Sum,
            "SampleCount" => Statistic::SampleCount,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Average => "Average",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
            Statistic::Sum => "Sum",
            Statistic::SampleCount => "SampleCount",
        }
    }

    /// The statistic of one period's values; `None` for a period without one.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        let first = *values.first()?;
        Some(match self {
            Statistic::Average => values.iter().sum::<f64>() / values.len() as f64,
            Statistic::Minimum => values.iter().copied().fold(first, f64::min),
            Statistic::Maximum => values.iter().copied().fold(first, f64::max),
            Statistic::Sum => values.iter().sum(),
            Statistic::SampleCount => values.len() as f64,
        })
    }
}

/// The comparison operators of `CloudWatchAlarmConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    GreaterThanOrEqualToThreshold,
    GreaterThanThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

impl Comparison {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "GreaterThanOrEqualToThreshold" => Comparison::GreaterThanOrEqualToThreshold,
            "GreaterThanThreshold" => Comparison::GreaterThanThreshold,
            "LessThanThreshold" => Comparison::LessThanThreshold,
            "LessThanOrEqualToThreshold" => Comparison::LessThanOrEqualToThreshold,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            Comparison::GreaterThanThreshold => "GreaterThanThreshold",
            Comparison::LessThanThreshold => "LessThanThreshold",
            Comparison::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => value >= threshold,
            Comparison::GreaterThanThreshold => value > threshold,
            Comparison::LessThanThreshold => value < threshold,
            Comparison::LessThanOrEqualToThreshold => value <= threshold,
        }
    }
}

/// What a health check keeps of its alarm: `CloudWatchAlarmConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlarmConfiguration {
    pub evaluation_periods: u32,
    pub threshold: f64,
    pub comparison_operator: Comparison,
    /// Seconds.
    pub period: u32,
    pub metric_name: String,
    pub namespace: String,
    pub statistic: Statistic,
    /// (name, value), sorted by name.
    pub dimensions: Vec<(String, String)>,
}

/// A CloudWatch metric alarm as DescribeAlarms shows it: every setting the
/// health check copies, and those it does not but which decide whether
/// Route 53 supports the alarm, or whether the failover agrees with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricAlarm {
    pub name: String,
    /// The region the alarm is in (its `AlarmIdentifier.Region`).
    pub region: String,
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: Vec<(String, String)>,
    pub statistic: Option<String>,
    pub extended_statistic: Option<String>,
    pub period: Option<u32>,
    pub evaluation_periods: Option<u32>,
    pub datapoints_to_alarm: Option<u32>,
    pub threshold: Option<f64>,
    pub comparison_operator: Option<String>,
    pub treat_missing_data: Option<String>,
    /// Whether the alarm is on metric math (`Metrics` in DescribeAlarms).
    pub metric_math: bool,
    /// Whether the alarm's threshold is an anomaly detection band.
    pub threshold_metric_id: Option<String>,
}

/// The regions `AlarmIdentifier.Region` accepts (Route 53 API reference,
/// `AlarmIdentifier`). The CLI's tests compare it with the SDK's
/// `CloudWatchRegion`, which is generated from the same API model.
pub const ROUTE53_ALARM_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-isoe-west-1",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-west-1",
    "us-west-2",
];

/// Why an alarm cannot back a health check, or would make the failover and
/// Route 53 disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmFinding {
    /// Route 53: "M out of N" alarms are not supported.
    #[error(
        "{alarm}: DatapointsToAlarm {datapoints} of EvaluationPeriods {periods} is an M-out-of-N alarm, which Route 53 does not support"
    )]
    MOutOfN {
        alarm: String,
        datapoints: u32,
        periods: u32,
    },
    /// Route 53: metric math is not supported.
    #[error("{alarm}: an alarm on metric math, which Route 53 does not support")]
    MetricMath { alarm: String },
    /// Route 53: extended statistics (percentiles) are not supported.
    #[error(
        "{alarm}: statistic {statistic:?}; Route 53 supports Average, Minimum, Maximum, Sum and SampleCount only"
    )]
    Statistic { alarm: String, statistic: String },
    /// Route 53: high-resolution metrics are not supported.
    #[error(
        "{alarm}: a period of {period} s is high resolution; Route 53 supports standard resolution (a period of 60 s or a multiple)"
    )]
    HighResolution { alarm: String, period: u32 },
    /// Route 53: the four operators of `CloudWatchAlarmConfiguration` only.
    #[error(
        "{alarm}: comparison {operator:?} (anomaly detection) is not one of the four Route 53 supports"
    )]
    Comparison { alarm: String, operator: String },
    /// Route 53: the alarm's region must be one `AlarmIdentifier` lists.
    #[error("{alarm}: region {region} is not one Route 53 accepts for an alarm")]
    Region { alarm: String, region: String },
    /// A setting Route 53 needs is absent.
    #[error("{alarm}: no {field}")]
    Missing { alarm: String, field: &'static str },
    /// geoprov: with any other treatment of missing data the alarm's state
    /// and the health check's status can differ.
    #[error(
        "{alarm}: TreatMissingData {treatment:?}; geoprov needs \"breaching\", so that the alarm the failover reads and the health check (InsufficientDataHealthStatus Unhealthy) agree on a missing datapoint"
    )]
    TreatMissingData { alarm: String, treatment: String },
}

/// Every reason the alarm cannot back a geoprov health check; empty when it
/// can. On success, [`MetricAlarm::configuration`] is what Route 53 copies.
pub fn check_alarm(alarm: &MetricAlarm) -> Vec<AlarmFinding> {
    let mut findings = Vec::new();
    statistic_findings(alarm, &mut findings);
    period_findings(alarm, &mut findings);
    comparison_findings(alarm, &mut findings);
    let name = || alarm.name.clone();
    if !alarm.metric_math && (alarm.namespace.is_none() || alarm.metric_name.is_none()) {
        findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "Namespace and MetricName",
        });
    }
    if !ROUTE53_ALARM_REGIONS.contains(&alarm.region.as_str()) {
        findings.push(AlarmFinding::Region {
            alarm: name(),
            region: alarm.region.clone(),
        });
    }
    let treatment = alarm.treat_missing_data.as_deref().unwrap_or("missing");
    if treatment != "breaching" {
        findings.push(AlarmFinding::TreatMissingData {
            alarm: name(),
            treatment: treatment.to_owned(),
        });
    }
    findings
}

/// What is measured: no metric math, and one of the statistics Route 53
/// copies.
fn statistic_findings(alarm: &MetricAlarm, findings: &mut Vec<AlarmFinding>) {
    let name = || alarm.name.clone();
    if alarm.metric_math {
        findings.push(AlarmFinding::MetricMath { alarm: name() });
    }
    if let Some(statistic) = &alarm.extended_statistic {
        findings.push(AlarmFinding::Statistic {
            alarm: name(),
            statistic: statistic.clone(),
        });
    }
    match (
        &alarm.statistic,
        &alarm.extended_statistic,
        alarm.metric_math,
    ) {
        (Some(s), _, _) if Statistic::parse(s).is_none() => {
            findings.push(AlarmFinding::Statistic {
                alarm: name(),
                statistic: s.clone(),
            })
        }
        (None, None, false) => findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "Statistic",
        }),
        _ => {}
    }
}

/// Over what time: a period of whole minutes, and N of N (no M out of N).
fn period_findings(alarm: &MetricAlarm, findings: &mut Vec<AlarmFinding>) {
    let name = || alarm.name.clone();
    match alarm.period {
        Some(period) if period < 60 || period % 60 != 0 => {
            findings.push(AlarmFinding::HighResolution {
                alarm: name(),
                period,
            })
        }
        None if !alarm.metric_math => findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "Period",
        }),
        _ => {}
    }
    match (alarm.evaluation_periods, alarm.datapoints_to_alarm) {
        (Some(periods), Some(datapoints)) if datapoints != periods => {
            findings.push(AlarmFinding::MOutOfN {
                alarm: name(),
                datapoints,
                periods,
            })
        }
        (None, _) => findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "EvaluationPeriods",
        }),
        _ => {}
    }
}

/// Against what: a static threshold and one of the comparisons Route 53
/// copies (no anomaly detection band).
fn comparison_findings(alarm: &MetricAlarm, findings: &mut Vec<AlarmFinding>) {
    let name = || alarm.name.clone();
    match &alarm.comparison_operator {
        Some(op) if Comparison::parse(op).is_none() => findings.push(AlarmFinding::Comparison {
            alarm: name(),
            operator: op.clone(),
        }),
        None => findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "ComparisonOperator",
        }),
        _ => {}
    }
    if alarm.threshold_metric_id.is_some() && alarm.comparison_operator.is_none() {
        findings.push(AlarmFinding::Comparison {
            alarm: name(),
            operator: "an anomaly detection band".into(),
        });
    }
    if alarm.threshold.is_none() && alarm.threshold_metric_id.is_none() {
        findings.push(AlarmFinding::Missing {
            alarm: name(),
            field: "Threshold",
        });
    }
}

impl MetricAlarm {
    /// What Route 53 copies of the alarm into the health check, when the
    /// alarm has every setting it needs (see [`check_alarm`] for whether
    /// Route 53 supports it).
    pub fn configuration(&self) -> Option<AlarmConfiguration> {
        let mut dimensions = self.dimensions.clone();
        dimensions.sort();
        Some(AlarmConfiguration {
            evaluation_periods: self.evaluation_periods?,
            threshold: self.threshold?,
            comparison_operator: Comparison::parse(self.comparison_operator.as_deref()?)?,
            period: self.period?,
            metric_name: self.metric_name.clone()?,
            namespace: self.namespace.clone()?,
            statistic: Statistic::parse(self.statistic.as_deref()?)?,
            dimensions,
        })
    }
}

/// The settings of a health check's copy that differ from the alarm's
/// current ones, by the API's field names; empty when they are the same.
pub fn config_drift(copied: &AlarmConfiguration, current: &AlarmConfiguration) -> Vec<String> {
    type Field = (&'static str, fn(&AlarmConfiguration) -> String);
    const FIELDS: [Field; 8] = [
        ("EvaluationPeriods", |c| c.evaluation_periods.to_string()),
        ("Threshold", |c| c.threshold.to_string()),
        ("ComparisonOperator", |c| {
            c.comparison_operator.as_str().into()
        }),
        ("Period", |c| c.period.to_string()),
        ("MetricName", |c| c.metric_name.clone()),
        ("Namespace", |c| c.namespace.clone()),
        ("Statistic", |c| c.statistic.as_str().into()),
        ("Dimensions", |c| {
            let mut d = c.dimensions.clone();
            d.sort();
            format!("{d:?}")
        }),
    ];
    FIELDS
        .iter()
        .filter_map(|(field, value)| {
            let (a, b) = (value(copied), value(current));
            (a != b).then(|| format!("{field}: health check {a}, alarm {b}"))
        })
        .collect()
}

/// One datapoint of the metric: epoch seconds and value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Datapoint {
    pub at: i64,
    pub value: f64,
}

/// What a series says of the alarm's state over the evaluated periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataVerdict {
    Ok,
    Alarm,
    InsufficientData,
}

/// `InsufficientDataHealthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InsufficientData {
    Healthy,
    Unhealthy,
    LastKnownStatus,
}

impl InsufficientData {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "Healthy" => InsufficientData::Healthy,
            "Unhealthy" => InsufficientData::Unhealthy,
            "LastKnownStatus" => InsufficientData::LastKnownStatus,
            _ => return None,
        })
    }
}

/// A health check's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
}

/// The statistic of each of the `periods` whole periods of `period` seconds
/// that ended at or before `at`, oldest first; `None` for a period without a
/// datapoint.
pub fn period_values(
    statistic: Statistic,
    period: u32,
    periods: u32,
    points: &[Datapoint],
    at: i64,
) -> Vec<Option<f64>> {
    let p = i64::from(period.max(1));
    let end = at.div_euclid(p) * p;
    let start = end - p * i64::from(periods);
    let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for point in points.iter().filter(|d| d.at >= start && d.at < end) {
        buckets
            .entry((point.at - start).div_euclid(p))
            .or_default()
            .push(point.value);
    }
    (0..i64::from(periods))
        .map(|i| buckets.get(&i).and_then(|v| statistic.of(v)))
        .collect()
}

/// How many periods back an evaluation looks for datapoints: CloudWatch
/// "attempts to retrieve a higher number of data points than the number
/// specified as Evaluation Periods" (the evaluation range; CloudWatch User
/// Guide, "How alarm state is evaluated when data is missing"). Its length
/// is not documented for a given period; the model takes
/// `EvaluationPeriods + EVALUATION_RANGE_EXTRA`, named as an assumption.
pub const EVALUATION_RANGE_EXTRA: u32 = 4;

/// The statistic of the periods that have a datapoint among the last
/// `range` whole periods before `at`, most recent first.
pub fn real_values(
    statistic: Statistic,
    period: u32,
    range: u32,
    points: &[Datapoint],
    at: i64,
) -> Vec<f64> {
    let mut values: Vec<f64> = period_values(statistic, period, range, points, at)
        .into_iter()
        .flatten()
        .collect();
    values.reverse();
    values
}

/// What the data stream says at `at`, as Route 53 reads it. Route 53
/// "monitors the data stream for the corresponding alarm": the model reads
/// it as CloudWatch evaluates an alarm's data (the evaluation range), with
/// the settings the check copied and nothing else, so no M-of-N and no
/// treatment of missing data:
/// - with at least EvaluationPeriods periods of data in the range, the most
///   recent EvaluationPeriods decide: ALARM when every one breaches, else OK;
/// - with fewer, OK when one of them does not breach (ALARM is impossible
///   whatever the missing ones hold), else insufficient data.
pub fn data_verdict(config: &AlarmConfiguration, points: &[Datapoint], at: i64) -> DataVerdict {
    data_verdict_in(config, evaluation_range(config), points, at)
}

/// The evaluation range, in periods, the model takes for `config`.
pub fn evaluation_range(config: &AlarmConfiguration) -> u32 {
    config.evaluation_periods + EVALUATION_RANGE_EXTRA
}

fn data_verdict_in(
    config: &AlarmConfiguration,
    range: u32,
    points: &[Datapoint],
    at: i64,
) -> DataVerdict {
    let n = config.evaluation_periods as usize;
    let real = real_values(
        config.statistic,
        config.period,
        range.max(config.evaluation_periods),
        points,
        at,
    );
    let breach = |v: &f64| config.comparison_operator.breaches(*v, config.threshold);
    if real.len() >= n && n > 0 {
        match real[..n].iter().all(breach) {
            true => DataVerdict::Alarm,
            false => DataVerdict::Ok,
        }
    } else if real.iter().any(|v| !breach(v)) {
        DataVerdict::Ok
    } else {
        DataVerdict::InsufficientData
    }
}

/// The health check's status at `at`, given its status before (for
/// `LastKnownStatus`; `None` for a check that has none).
pub fn health_status(
    config: &AlarmConfiguration,
    insufficient: InsufficientData,
    points: &[Datapoint],
    at: i64,
    last_known: Option<HealthStatus>,
) -> HealthStatus {
    match data_verdict(config, points, at) {
        DataVerdict::Ok => HealthStatus::Healthy,
        DataVerdict::Alarm => HealthStatus::Unhealthy,
        DataVerdict::InsufficientData => match insufficient {
            InsufficientData::Healthy => HealthStatus::Healthy,
            InsufficientData::Unhealthy => HealthStatus::Unhealthy,
            InsufficientData::LastKnownStatus => last_known.unwrap_or(HealthStatus::Healthy),
        },
    }
}

/// One step of a health check's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStep {
    pub at: i64,
    pub data: DataVerdict,
    pub status: HealthStatus,
}

/// The health check's status at each of `times` (ascending), the last known
/// status carried from one to the next.
pub fn timeline(
    config: &AlarmConfiguration,
    insufficient: InsufficientData,
    points: &[Datapoint],
    times: impl IntoIterator<Item = i64>,
) -> Vec<HealthStep> {
    let mut last_known = None;
    let mut steps = Vec::new();
    for at in times {
        let data = data_verdict(config, points, at);
        let status = health_status(config, insufficient, points, at, last_known);
        if data != DataVerdict::InsufficientData {
            last_known = Some(status);
        }
        steps.push(HealthStep { at, data, status });
    }
    steps
}

/// A CloudWatch alarm's state, as the failover reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// Why [`cloudwatch_state`] cannot say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotModelled {
    #[error("TreatMissingData {0:?} is not modelled (only breaching and notBreaching)")]
    TreatMissingData(String),
    #[error("the alarm lacks a setting the model needs")]
    Incomplete,
}

/// The state of a metric alarm at `at` from its datapoints (CloudWatch User
/// Guide, "Evaluating an alarm"): of the last EvaluationPeriods periods, a
/// missing one counts as breaching (`breaching`) or not (`notBreaching`);
/// ALARM when at least DatapointsToAlarm breach, else OK.
pub fn cloudwatch_state(
    alarm: &MetricAlarm,
    points: &[Datapoint],
    at: i64,
) -> Result<AlarmState, NotModelled> {
    let config = alarm.configuration().ok_or(NotModelled::Incomplete)?;
    let missing_breaches = match alarm.treat_missing_data.as_deref() {
        Some("breaching") => true,
        Some("notBreaching") => false,
        other => {
            return Err(NotModelled::TreatMissingData(
                other.unwrap_or("missing").to_owned(),
            ));
        }
    };
    cloudwatch_state_in(
        &config,
        alarm,
        missing_breaches,
        evaluation_range(&config),
        points,
        at,
    )
}

/// CloudWatch's evaluation over `range` periods: with at least
/// EvaluationPeriods periods of data in the range, the most recent ones
/// decide and the treatment of missing data "is not needed and is ignored";
/// with fewer, the missing ones are filled by the treatment.
fn cloudwatch_state_in(
    config: &AlarmConfiguration,
    alarm: &MetricAlarm,
    missing_breaches: bool,
    range: u32,
    points: &[Datapoint],
    at: i64,
) -> Result<AlarmState, NotModelled> {
    let n = config.evaluation_periods as usize;
    let m = alarm
        .datapoints_to_alarm
        .unwrap_or(config.evaluation_periods) as usize;
    let real = real_values(
        config.statistic,
        config.period,
        range.max(config.evaluation_periods),
        points,
        at,
    );
    let breach = |v: &&f64| config.comparison_operator.breaches(**v, config.threshold);
    let breaching = match real.len() >= n {
        true => real[..n].iter().filter(breach).count(),
        false => {
            let filled = match missing_breaches {
                true => n - real.len(),
                false => 0,
            };
            real.iter().filter(breach).count() + filled
        }
    };
    Ok(match breaching >= m {
        true => AlarmState::Alarm,
        false => AlarmState::Ok,
    })
}

/// geoprov's invariant at one instant: the failover's reading of the alarm
/// (ALARM unhealthy, OK healthy) and Route 53's status of the health check
/// are the same. `None` when the alarm's state is not modelled.
pub fn verdicts_agree(
    alarm: &MetricAlarm,
    insufficient: InsufficientData,
    points: &[Datapoint],
    at: i64,
) -> Option<bool> {
    let config = alarm.configuration()?;
    verdicts_agree_in(alarm, insufficient, evaluation_range(&config), points, at)
}

/// The same, for an evaluation range of `range` periods on both sides
/// (the range is not documented: the invariant must hold for any).
pub fn verdicts_agree_in(
    alarm: &MetricAlarm,
    insufficient: InsufficientData,
    range: u32,
    points: &[Datapoint],
    at: i64,
) -> Option<bool> {
    let config = alarm.configuration()?;
    let missing_breaches = match alarm.treat_missing_data.as_deref() {
        Some("breaching") => true,
        Some("notBreaching") => false,
        _ => return None,
    };
    let state = cloudwatch_state_in(&config, alarm, missing_breaches, range, points, at).ok()?;
    let failover_healthy = state == AlarmState::Ok;
    let route53_healthy = match data_verdict_in(&config, range, points, at) {
        DataVerdict::Ok => true,
        DataVerdict::Alarm => false,
        DataVerdict::InsufficientData => insufficient == InsufficientData::Healthy,
    };
    Some(failover_healthy == route53_healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The alarm geoprov deploys: the canary's failures in its window, 1 of 1.
    fn geoprov_alarm() -> MetricAlarm {
        MetricAlarm {
            name: "geoprov-health-eu-west-1".into(),
            region: "eu-west-1".into(),
            namespace: Some("geoprov".into()),
            metric_name: Some("CanaryFailuresInWindow".into()),
            dimensions: vec![("Region".into(), "eu-west-1".into())],
            statistic: Some("Maximum".into()),
            period: Some(60),
            evaluation_periods: Some(1),
            datapoints_to_alarm: Some(1),
            threshold: Some(2.0),
            comparison_operator: Some("GreaterThanOrEqualToThreshold".into()),
            treat_missing_data: Some("breaching".into()),
            ..Default::default()
        }
    }

    fn point(minute: i64, value: f64) -> Datapoint {
        Datapoint {
            at: minute * 60 + 5,
            value,
        }
    }

    #[test]
    fn the_deployed_alarm_is_one_route53_supports() {
        assert_eq!(check_alarm(&geoprov_alarm()), vec![]);
    }

    /// "Route 53 doesn't support ... 'M out of N' alarms" (Values that you
    /// specify when you create or update health checks).
    #[test]
    fn an_m_of_n_alarm_is_refused_by_name() {
        let alarm = MetricAlarm {
            evaluation_periods: Some(5),
            datapoints_to_alarm: Some(2),
            ..geoprov_alarm()
        };
        assert_eq!(
            check_alarm(&alarm),
            vec![AlarmFinding::MOutOfN {
                alarm: alarm.name.clone(),
                datapoints: 2,
                periods: 5
            }]
        );
        // N of N is not M of N.
        let n_of_n = MetricAlarm {
            datapoints_to_alarm: Some(5),
            ..alarm
        };
        assert_eq!(check_alarm(&n_of_n), vec![]);
    }

    /// "Statistics: Average, Minimum, Maximum, Sum, and SampleCount. Extended
    /// statistics aren't supported." and "Standard-resolution metrics.
    /// High-resolution metrics aren't supported." (AlarmIdentifier).
    #[test]
    fn extended_statistics_high_resolution_metric_math_and_bands_are_refused() {
        let base = geoprov_alarm();
        let p99 = MetricAlarm {
            statistic: None,
            extended_statistic: Some("p99".into()),
            ..base.clone()
        };
        assert!(matches!(
            check_alarm(&p99).as_slice(),
            [AlarmFinding::Statistic { statistic, .. }] if statistic == "p99"
        ));
        let fast = MetricAlarm {
            period: Some(10),
            ..base.clone()
        };
        assert!(matches!(
            check_alarm(&fast).as_slice(),
            [AlarmFinding::HighResolution { period: 10, .. }]
        ));
        let math = MetricAlarm {
            metric_math: true,
            namespace: None,
            metric_name: None,
            statistic: None,
            period: None,
            ..base.clone()
        };
        assert!(matches!(
            check_alarm(&math).as_slice(),
            [AlarmFinding::MetricMath { .. }]
        ));
        let band = MetricAlarm {
            comparison_operator: Some("LessThanLowerOrGreaterThanUpperThreshold".into()),
            threshold: None,
            threshold_metric_id: Some("ad1".into()),
            ..base.clone()
        };
        assert!(matches!(
            check_alarm(&band).as_slice(),
            [AlarmFinding::Comparison { .. }]
        ));
        let elsewhere = MetricAlarm {
            region: "xx-nowhere-1".into(),
            ..base.clone()
        };
        assert!(matches!(
            check_alarm(&elsewhere).as_slice(),
            [AlarmFinding::Region { .. }]
        ));
        let ignoring = MetricAlarm {
            treat_missing_data: Some("ignore".into()),
            ..base
        };
        assert!(matches!(
            check_alarm(&ignoring).as_slice(),
            [AlarmFinding::TreatMissingData { .. }]
        ));
    }

    #[test]
    fn each_comparison_operator_at_its_boundary() {
        use Comparison::*;
        assert!(GreaterThanOrEqualToThreshold.breaches(2.0, 2.0));
        assert!(!GreaterThanThreshold.breaches(2.0, 2.0));
        assert!(GreaterThanThreshold.breaches(2.000_001, 2.0));
        assert!(!LessThanThreshold.breaches(1.0, 1.0));
        assert!(LessThanThreshold.breaches(0.999, 1.0));
        assert!(LessThanOrEqualToThreshold.breaches(1.0, 1.0));
        assert!(!LessThanOrEqualToThreshold.breaches(1.000_001, 1.0));
        for op in [
            GreaterThanOrEqualToThreshold,
            GreaterThanThreshold,
            LessThanThreshold,
            LessThanOrEqualToThreshold,
        ] {
            assert_eq!(Comparison::parse(op.as_str()), Some(op));
        }
    }

    #[test]
    fn statistics_of_a_period() {
        let v = [1.0, 3.0, 2.0];
        assert_eq!(Statistic::Average.of(&v), Some(2.0));
        assert_eq!(Statistic::Minimum.of(&v), Some(1.0));
        assert_eq!(Statistic::Maximum.of(&v), Some(3.0));
        assert_eq!(Statistic::Sum.of(&v), Some(6.0));
        assert_eq!(Statistic::SampleCount.of(&v), Some(3.0));
        assert_eq!(Statistic::Maximum.of(&[]), None);
    }

    /// "Route 53 monitors the data stream for the corresponding alarm instead
    /// of monitoring the alarm state": the most recent whole periods with
    /// data decide, within the evaluation range ("CloudWatch attempts to
    /// retrieve a higher number of data points than the number specified as
    /// Evaluation Periods"); a stream with no data in the range is
    /// insufficient data, which InsufficientDataHealthStatus maps.
    #[test]
    fn the_health_check_follows_the_last_periods_with_data_and_maps_a_silence() {
        let config = geoprov_alarm().configuration().unwrap();
        let points = [point(10, 0.0), point(11, 2.0), point(13, 1.0)];
        let at = |minute: i64, second: i64| minute * 60 + second;
        // During minute 11, the last whole period is minute 10: 0 failures.
        assert_eq!(data_verdict(&config, &points, at(11, 30)), DataVerdict::Ok);
        assert_eq!(
            data_verdict(&config, &points, at(12, 0)),
            DataVerdict::Alarm
        );
        // Minute 12 has no datapoint: minute 11's still decides.
        assert_eq!(
            data_verdict(&config, &points, at(13, 0)),
            DataVerdict::Alarm
        );
        assert_eq!(data_verdict(&config, &points, at(14, 0)), DataVerdict::Ok);
        // Silence past the evaluation range (1 + 4 periods): no data.
        let silent = at(14 + i64::from(EVALUATION_RANGE_EXTRA) + 1, 0);
        assert_eq!(
            data_verdict(&config, &points, silent),
            DataVerdict::InsufficientData
        );
        let status =
            |insufficient, last| health_status(&config, insufficient, &points, silent, last);
        assert_eq!(
            status(InsufficientData::Unhealthy, Some(HealthStatus::Healthy)),
            HealthStatus::Unhealthy
        );
        assert_eq!(
            status(InsufficientData::Healthy, Some(HealthStatus::Unhealthy)),
            HealthStatus::Healthy
        );
        // "LastKnownStatus: ... For new health checks that have no last known
        // status, the status for the health check is healthy."
        assert_eq!(
            status(
                InsufficientData::LastKnownStatus,
                Some(HealthStatus::Unhealthy)
            ),
            HealthStatus::Unhealthy
        );
        assert_eq!(
            status(InsufficientData::LastKnownStatus, None),
            HealthStatus::Healthy
        );
        let steps = timeline(
            &config,
            InsufficientData::LastKnownStatus,
            &points,
            [at(11, 0), at(12, 0), at(14, 0), silent],
        );
        let statuses: Vec<_> = steps.iter().map(|s| s.status).collect();
        use HealthStatus::*;
        assert_eq!(statuses, vec![Healthy, Unhealthy, Healthy, Healthy]);
    }

    /// N of N over several periods: ALARM needs every period present and
    /// breaching; one good period is OK whatever the gaps hold.
    #[test]
    fn several_periods_need_every_one_to_alarm() {
        let config = AlarmConfiguration {
            evaluation_periods: 3,
            ..geoprov_alarm().configuration().unwrap()
        };
        let bad = [point(1, 5.0), point(2, 5.0), point(3, 5.0)];
        assert_eq!(data_verdict(&config, &bad, 4 * 60), DataVerdict::Alarm);
        let gap = [point(1, 5.0), point(3, 5.0)];
        assert_eq!(
            data_verdict(&config, &gap, 4 * 60),
            DataVerdict::InsufficientData
        );
        let one_good = [point(1, 5.0), point(3, 0.0)];
        assert_eq!(data_verdict(&config, &one_good, 4 * 60), DataVerdict::Ok);
        assert_eq!(
            data_verdict(&config, &[], 4 * 60),
            DataVerdict::InsufficientData
        );
    }

    #[test]
    fn a_copy_that_differs_names_each_field() {
        let copied = geoprov_alarm().configuration().unwrap();
        let current = AlarmConfiguration {
            threshold: 3.0,
            evaluation_periods: 2,
            ..copied.clone()
        };
        assert_eq!(config_drift(&copied, &copied), Vec::<String>::new());
        let drift = config_drift(&copied, &current);
        assert_eq!(drift.len(), 2, "{drift:?}");
        assert!(drift[0].starts_with("EvaluationPeriods"));
        assert!(drift[1].starts_with("Threshold"));
    }

    /// Why M-of-N is refused: an alarm in ALARM that Route 53's copy calls
    /// healthy. 2 of 5 with one good minute among five.
    #[test]
    fn an_m_of_n_alarm_and_route53_disagree() {
        let alarm = MetricAlarm {
            metric_name: Some("CanarySuccess".into()),
            statistic: Some("Minimum".into()),
            evaluation_periods: Some(5),
            datapoints_to_alarm: Some(2),
            threshold: Some(1.0),
            comparison_operator: Some("LessThanThreshold".into()),
            ..geoprov_alarm()
        };
        let points: Vec<_> = [1.0, 1.0, 1.0, 0.0, 0.0]
            .iter()
            .enumerate()
            .map(|(i, v)| point(i as i64, *v))
            .collect();
        assert_eq!(
            cloudwatch_state(&alarm, &points, 5 * 60),
            Ok(AlarmState::Alarm)
        );
        assert_eq!(
            verdicts_agree(&alarm, InsufficientData::Unhealthy, &points, 5 * 60),
            Some(false)
        );
    }

    fn series() -> impl Strategy<Value = Vec<Option<f64>>> {
        // A datapoint per minute, or none; values around the threshold.
        proptest::collection::vec(
            proptest::option::weighted(0.8, (0u8..=6).prop_map(f64::from)),
            1..40,
        )
    }

    fn points_of(series: &[Option<f64>]) -> Vec<Datapoint> {
        series
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| point(i as i64, v)))
            .collect()
    }

    proptest! {
        /// The invariant: for the deployed alarm, the failover's reading of
        /// the alarm state and Route 53's health check agree at every minute
        /// of every series, gaps and silences included, whatever the
        /// evaluation range (undocumented) as long as both read the same.
        #[test]
        fn the_failover_and_route53_agree_on_every_series(series in series(), extra in 0u32..8) {
            let alarm = geoprov_alarm();
            let points = points_of(&series);
            for minute in 0..=series.len() as i64 + 10 {
                prop_assert_eq!(
                    verdicts_agree_in(&alarm, InsufficientData::Unhealthy, 1 + extra, &points, minute * 60),
                    Some(true)
                );
            }
        }

        /// The same for every N-of-N alarm with missing data breaching:
        /// whatever the window, comparison and threshold.
        #[test]
        fn every_supported_alarm_agrees(
            series in series(),
            periods in 1u32..=5,
            threshold in 0u8..=6,
            op in 0usize..4,
        ) {
            let ops = ["GreaterThanOrEqualToThreshold", "GreaterThanThreshold",
                       "LessThanThreshold", "LessThanOrEqualToThreshold"];
            let alarm = MetricAlarm {
                evaluation_periods: Some(periods),
                datapoints_to_alarm: Some(periods),
                threshold: Some(f64::from(threshold)),
                comparison_operator: Some(ops[op].into()),
                ..geoprov_alarm()
            };
            prop_assert!(check_alarm(&alarm).is_empty());
            let points = points_of(&series);
            for minute in 0..=series.len() as i64 + 10 {
                prop_assert_eq!(
                    verdicts_agree(&alarm, InsufficientData::Unhealthy, &points, minute * 60),
                    Some(true)
                );
            }
        }
    }
}
