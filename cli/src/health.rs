//! `geoprov failover check-health`, `refresh-health-checks` and `health`:
//! what is deployed, read against what Route 53 can evaluate.
//!
//! - `check-health` reads each region's health alarm (DescribeAlarms, in the
//!   alarm's region) and each health check (GetHealthCheck) and names every
//!   finding: an alarm Route 53 does not support (by its rule), a health
//!   check whose copy of the alarm's settings differs from the alarm's
//!   current ones (Route 53 copies them at CreateHealthCheck and again only
//!   on UpdateHealthCheck), a missing alarm or check, a check on another
//!   alarm or with another InsufficientDataHealthStatus than `Unhealthy`.
//! - `refresh-health-checks` sends UpdateHealthCheck with the same
//!   AlarmIdentifier for each check whose copy differs, and nothing for the
//!   others.
//! - `health` computes each health check's status at a time, as Route 53
//!   would, from the alarm's datapoints (GetMetricStatistics over the
//!   evaluation range) and the settings the check copied
//!   (route53_answer::health). It has no history: with `LastKnownStatus`,
//!   insufficient data reads as healthy (a check with no last status).

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::types::{Dimension, Statistic as CwStatistic};
use aws_sdk_route53::types::{AlarmIdentifier, CloudWatchRegion, HealthCheck};
use geoprov_failover::config::FailoverConfig;
use route53_answer::health::{
    self, AlarmConfiguration, AlarmFinding, Comparison, DataVerdict, Datapoint, HealthStatus,
    InsufficientData, MetricAlarm, Statistic,
};
use serde::Serialize;

use crate::error::CliError;

/// One thing wrong with a region's health path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub region: String,
    /// A rule name: one of [`AlarmFinding`]'s, or `NO_ALARM`, `NO_HEALTH_CHECK`,
    /// `OTHER_ALARM`, `INSUFFICIENT_DATA_STATUS`, `STALE_HEALTH_CHECK`.
    pub rule: String,
    pub message: String,
}

/// What `check-health` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    pub regions: usize,
    pub findings: Vec<Finding>,
}

/// What `refresh-health-checks` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    /// Per health check refreshed: the settings that differed.
    pub updated: BTreeMap<String, Vec<String>>,
    /// Health checks whose copy was already the alarm's.
    pub unchanged: Vec<String>,
}

/// A region's alarm and health check, as read.
struct Deployed {
    region: String,
    alarm_name: String,
    health_check_id: String,
    alarm: Option<MetricAlarm>,
    check: Option<HealthCheck>,
}

fn cloudwatch(sdk: &SdkConfig, region: &str) -> aws_sdk_cloudwatch::Client {
    let config = aws_sdk_cloudwatch::config::Builder::from(sdk)
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

/// Route 53's API is in us-east-1 (its global endpoint).
fn route53(sdk: &SdkConfig) -> aws_sdk_route53::Client {
    let config = aws_sdk_route53::config::Builder::from(sdk)
        .region(aws_config::Region::new("us-east-1"))
        .build();
    aws_sdk_route53::Client::from_conf(config)
}

fn call_error(
    service: &'static str,
    operation: &'static str,
    region: &str,
) -> impl Fn(String) -> CliError + use<> {
    let region = region.to_owned();
    move |message| CliError::Health {
        service,
        operation,
        region: region.clone(),
        message,
    }
}

/// The alarm as DescribeAlarms shows it, in `region`; `None` when absent.
async fn describe_alarm(
    sdk: &SdkConfig,
    region: &str,
    name: &str,
) -> Result<Option<MetricAlarm>, CliError> {
    let out = cloudwatch(sdk, region)
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| {
            call_error("CloudWatch", "DescribeAlarms", region)(
                aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    Ok(out
        .metric_alarms()
        .iter()
        .find(|a| a.alarm_name() == Some(name))
        .map(|a| MetricAlarm {
            name: name.to_owned(),
            region: region.to_owned(),
            namespace: a.namespace().map(str::to_owned),
            metric_name: a.metric_name().map(str::to_owned),
            dimensions: a
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_owned(),
                        d.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            statistic: a.statistic().map(|s| s.as_str().to_owned()),
            extended_statistic: a.extended_statistic().map(str::to_owned),
            period: a.period().and_then(|p| u32::try_from(p).ok()),
            evaluation_periods: a.evaluation_periods().and_then(|p| u32::try_from(p).ok()),
            datapoints_to_alarm: a.datapoints_to_alarm().and_then(|p| u32::try_from(p).ok()),
            threshold: a.threshold(),
            comparison_operator: a.comparison_operator().map(|c| c.as_str().to_owned()),
            treat_missing_data: a.treat_missing_data().map(str::to_owned),
            metric_math: !a.metrics().is_empty(),
            threshold_metric_id: a.threshold_metric_id().map(str::to_owned),
        }))
}

async fn get_health_check(sdk: &SdkConfig, id: &str) -> Result<Option<HealthCheck>, CliError> {
    match route53(sdk)
        .get_health_check()
        .health_check_id(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.health_check().cloned()),
        Err(e) => match e.as_service_error() {
            Some(s) if s.is_no_such_health_check() => Ok(None),
            _ => Err(call_error("Route 53", "GetHealthCheck", "us-east-1")(
                aws_sdk_route53::error::DisplayErrorContext(e).to_string(),
            )),
        },
    }
}

/// What the health check copied of its alarm, as the evaluator reads it.
fn copied_configuration(check: &HealthCheck) -> Option<AlarmConfiguration> {
    let c = check.cloud_watch_alarm_configuration()?;
    let mut dimensions: Vec<(String, String)> = c
        .dimensions()
        .iter()
        .map(|d| (d.name().to_owned(), d.value().to_owned()))
        .collect();
    dimensions.sort();
    Some(AlarmConfiguration {
        evaluation_periods: u32::try_from(c.evaluation_periods()).ok()?,
        threshold: c.threshold(),
        comparison_operator: Comparison::parse(c.comparison_operator().as_str())?,
        period: u32::try_from(c.period()).ok()?,
        metric_name: c.metric_name().to_owned(),
        namespace: c.namespace().to_owned(),
        statistic: Statistic::parse(c.statistic().as_str())?,
        dimensions,
    })
}

async fn read_deployed(
    sdk: &SdkConfig,
    config: &FailoverConfig,
) -> Result<Vec<Deployed>, CliError> {
    let mut deployed = Vec::new();
    for (region, target) in &config.regions {
        deployed.push(Deployed {
            region: region.to_string(),
            alarm_name: target.alarm_name.clone(),
            health_check_id: target.health_check_id.clone(),
            alarm: describe_alarm(sdk, region.as_str(), &target.alarm_name).await?,
            check: get_health_check(sdk, &target.health_check_id).await?,
        });
    }
    Ok(deployed)
}

fn rule_of(finding: &AlarmFinding) -> String {
    serde_json::to_value(finding)
        .ok()
        .and_then(|v| v["rule"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The findings of one region, from what was read. Pure.
fn findings_of(d: &Deployed) -> Vec<Finding> {
    let finding = |rule: &str, message: String| Finding {
        region: d.region.clone(),
        rule: rule.to_owned(),
        message,
    };
    let mut found = Vec::new();
    match &d.alarm {
        None => found.push(finding(
            "NO_ALARM",
            format!("no alarm {} in {}", d.alarm_name, d.region),
        )),
        Some(alarm) => found.extend(
            health::check_alarm(alarm)
                .iter()
                .map(|f| finding(&rule_of(f), f.to_string())),
        ),
    }
    let Some(check) = &d.check else {
        found.push(finding(
            "NO_HEALTH_CHECK",
            format!("no health check {}", d.health_check_id),
        ));
        return found;
    };
    let config = check.health_check_config();
    let identifier = config.and_then(|c| c.alarm_identifier());
    let names_the_alarm =
        identifier.is_some_and(|a| a.name() == d.alarm_name && a.region().as_str() == d.region);
    if !names_the_alarm {
        found.push(finding(
            "OTHER_ALARM",
            format!(
                "health check {} reads {:?}, not {} in {}",
                d.health_check_id,
                identifier.map(|a| format!("{} in {}", a.name(), a.region().as_str())),
                d.alarm_name,
                d.region
            ),
        ));
    }
    let insufficient = config
        .and_then(|c| c.insufficient_data_health_status())
        .map(|s| s.as_str().to_owned());
    if insufficient.as_deref() != Some("Unhealthy") {
        found.push(finding(
            "INSUFFICIENT_DATA_STATUS",
            format!(
                "health check {}: InsufficientDataHealthStatus {:?}; geoprov needs Unhealthy, as the alarm treats missing data as breaching",
                d.health_check_id, insufficient
            ),
        ));
    }
    if let Some(message) = stale_copy(d, check) {
        found.push(finding("STALE_HEALTH_CHECK", message));
    }
    found
}

/// Why the health check's copy of its alarm's settings is stale, if it is:
/// it differs from the alarm's current settings, or there is none.
fn stale_copy(d: &Deployed, check: &HealthCheck) -> Option<String> {
    let current = d.alarm.as_ref().and_then(MetricAlarm::configuration)?;
    let Some(copied) = copied_configuration(check) else {
        return Some(format!(
            "health check {} holds no copy of the alarm's settings",
            d.health_check_id
        ));
    };
    let drift = health::config_drift(&copied, &current);
    (!drift.is_empty()).then(|| {
        format!(
            "health check {} copied other settings than the alarm has now ({}): run `geoprov failover refresh-health-checks`",
            d.health_check_id,
            drift.join("; ")
        )
    })
}

/// `geoprov failover check-health`.
pub async fn check_health(
    sdk: &SdkConfig,
    config: &FailoverConfig,
) -> Result<HealthReport, CliError> {
    let deployed = read_deployed(sdk, config).await?;
    Ok(HealthReport {
        regions: deployed.len(),
        findings: deployed.iter().flat_map(findings_of).collect(),
    })
}

/// `geoprov failover refresh-health-checks`.
pub async fn refresh_health_checks(
    sdk: &SdkConfig,
    config: &FailoverConfig,
) -> Result<Refreshed, CliError> {
    let deployed = read_deployed(sdk, config).await?;
    let mut refreshed = Refreshed {
        updated: BTreeMap::new(),
        unchanged: Vec::new(),
    };
    for d in &deployed {
        let (Some(check), Some(alarm)) = (&d.check, &d.alarm) else {
            continue;
        };
        // Only a check on the configured alarm is refreshed: one that reads
        // another alarm (OTHER_ALARM) is not silently repointed.
        let reads_it = check
            .health_check_config()
            .and_then(|c| c.alarm_identifier())
            .is_some_and(|a| a.name() == d.alarm_name && a.region().as_str() == d.region);
        if !reads_it {
            continue;
        }
        let Some(current) = alarm.configuration() else {
            continue;
        };
        let drift = match copied_configuration(check) {
            Some(copied) => health::config_drift(&copied, &current),
            None => vec!["no copy of the alarm's settings".to_owned()],
        };
        if drift.is_empty() {
            refreshed.unchanged.push(d.health_check_id.clone());
            continue;
        }
        let identifier = AlarmIdentifier::builder()
            .region(CloudWatchRegion::from(d.region.as_str()))
            .name(&d.alarm_name)
            .build()
            .map_err(|e| call_error("Route 53", "UpdateHealthCheck", "us-east-1")(e.to_string()))?;
        route53(sdk)
            .update_health_check()
            .health_check_id(&d.health_check_id)
            .alarm_identifier(identifier)
            .send()
            .await
            .map_err(|e| {
                call_error("Route 53", "UpdateHealthCheck", "us-east-1")(
                    aws_sdk_route53::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        refreshed.updated.insert(d.health_check_id.clone(), drift);
    }
    Ok(refreshed)
}

/// One region's health check at a time, as Route 53 computes it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionHealth {
    pub health_check_id: String,
    /// The datapoints of the evaluation range's periods, oldest first
    /// (`null`: none).
    pub periods: Vec<Option<f64>>,
    pub data: DataVerdict,
    pub status: HealthStatus,
}

/// What `geoprov failover health` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthAt {
    /// Epoch seconds.
    pub at: i64,
    pub regions: BTreeMap<String, RegionHealth>,
    /// The ids of the unhealthy checks (for `geoprov dns resolve --unhealthy`).
    pub unhealthy: Vec<String>,
}

/// `geoprov failover health --at`: each health check's status at `at`.
pub async fn health_at(
    sdk: &SdkConfig,
    config: &FailoverConfig,
    at: i64,
) -> Result<HealthAt, CliError> {
    let mut regions = BTreeMap::new();
    let mut unhealthy = Vec::new();
    for (region, target) in &config.regions {
        let region = region.as_str();
        let check = get_health_check(sdk, &target.health_check_id)
            .await?
            .ok_or_else(|| {
                call_error("Route 53", "GetHealthCheck", "us-east-1")(format!(
                    "no health check {}",
                    target.health_check_id
                ))
            })?;
        let copied = copied_configuration(&check).ok_or_else(|| {
            call_error("Route 53", "GetHealthCheck", "us-east-1")(format!(
                "health check {} has no CloudWatchAlarmConfiguration",
                target.health_check_id
            ))
        })?;
        let insufficient = check
            .health_check_config()
            .and_then(|c| c.insufficient_data_health_status())
            .and_then(|s| InsufficientData::parse(s.as_str()))
            // Route 53's default for a check created without one.
            .unwrap_or(InsufficientData::LastKnownStatus);
        let points = period_statistics(sdk, region, &copied, at).await?;
        // Each datapoint is already the period's statistic: evaluate them as
        // one value a period.
        let per_period = AlarmConfiguration {
            statistic: Statistic::Maximum,
            ..copied.clone()
        };
        let periods = health::period_values(
            per_period.statistic,
            per_period.period,
            health::evaluation_range(&per_period),
            &points,
            at,
        );
        let data = health::data_verdict(&per_period, &points, at);
        let status = health::health_status(&per_period, insufficient, &points, at, None);
        if status == HealthStatus::Unhealthy {
            unhealthy.push(target.health_check_id.clone());
        }
        regions.insert(
            region.to_owned(),
            RegionHealth {
                health_check_id: target.health_check_id.clone(),
                periods,
                data,
                status,
            },
        );
    }
    Ok(HealthAt {
        at,
        regions,
        unhealthy,
    })
}

/// The copied statistic of each period of the evaluated window before `at`.
async fn period_statistics(
    sdk: &SdkConfig,
    region: &str,
    config: &AlarmConfiguration,
    at: i64,
) -> Result<Vec<Datapoint>, CliError> {
    // The evaluation range, as the evaluator reads it.
    let period = i64::from(config.period.max(60));
    let end = at.div_euclid(period) * period;
    let start = end - period * i64::from(health::evaluation_range(config));
    let time = |s: i64| aws_sdk_cloudwatch::primitives::DateTime::from_secs(s);
    let mut request = cloudwatch(sdk, region)
        .get_metric_statistics()
        .namespace(&config.namespace)
        .metric_name(&config.metric_name)
        .start_time(time(start))
        .end_time(time(end))
        .period(config.period as i32)
        .statistics(CwStatistic::from(config.statistic.as_str()));
    for (name, value) in &config.dimensions {
        request = request.dimensions(Dimension::builder().name(name).value(value).build());
    }
    let out = request.send().await.map_err(|e| {
        call_error("CloudWatch", "GetMetricStatistics", region)(
            aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string(),
        )
    })?;
    Ok(out
        .datapoints()
        .iter()
        .filter_map(|d| {
            let value = match config.statistic {
                Statistic::Average => d.average(),
                Statistic::Minimum => d.minimum(),
                Statistic::Maximum => d.maximum(),
                Statistic::Sum => d.sum(),
                Statistic::SampleCount => d.sample_count(),
            }?;
            Some(Datapoint {
                at: d.timestamp()?.secs(),
                value,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regions the evaluator accepts for an alarm are the API model's
    /// `CloudWatchRegion`, which the SDK is generated from.
    #[test]
    fn the_alarm_regions_are_route53s() {
        let mut sdk: Vec<&str> = CloudWatchRegion::values().to_vec();
        let mut ours: Vec<&str> = health::ROUTE53_ALARM_REGIONS.to_vec();
        sdk.sort();
        ours.sort();
        assert_eq!(ours, sdk);
    }
}
