//! `geoprov failover check-health`, `refresh-health-checks` and `health`
//! against moto (its CLOUDWATCH_METRIC health checks patched in the launcher
//! to copy the alarm's settings as Route 53 does): an M-of-N alarm and a
//! stale health check are found, the stale check is refreshed and nothing
//! else is touched, and the status at a minute is computed from the
//! datapoints.

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StandardUnit, Statistic,
};
use geoprov_tests::cli::Geoprov;
use geoprov_tests::failover::{config_json, hosted_zone};
use geoprov_tests::{aws_env, moto, sdk_config, unique_table};
use serde_json::{Value, json};

async fn cloudwatch(region: &str) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_config(&moto().endpoint, region).await)
}

async fn route53() -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::new(&sdk_config(&moto().endpoint, "us-east-1").await)
}

/// The region's health alarm as the template makes it (`datapoints` of
/// `periods`: 1 of 1 is the template's).
async fn put_alarm(region: &str, name: &str, threshold: f64, datapoints: i32, periods: i32) {
    cloudwatch(region)
        .await
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("geoprov")
        .metric_name("CanaryFailuresInWindow")
        .dimensions(Dimension::builder().name("Region").value(region).build())
        .statistic(Statistic::Maximum)
        .period(60)
        .evaluation_periods(periods)
        .datapoints_to_alarm(datapoints)
        .threshold(threshold)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .treat_missing_data("breaching")
        .send()
        .await
        .unwrap();
}

async fn health_check_on(region: &str, alarm: &str) -> String {
    use aws_sdk_route53::types::{
        AlarmIdentifier, CloudWatchRegion, HealthCheckConfig, HealthCheckType,
        InsufficientDataHealthStatus,
    };
    let config = HealthCheckConfig::builder()
        .r#type(HealthCheckType::CloudwatchMetric)
        .alarm_identifier(
            AlarmIdentifier::builder()
                .region(CloudWatchRegion::from(region))
                .name(alarm)
                .build()
                .unwrap(),
        )
        .insufficient_data_health_status(InsufficientDataHealthStatus::Unhealthy)
        .build()
        .unwrap();
    route53()
        .await
        .create_health_check()
        .caller_reference(unique_table("hc"))
        .health_check_config(config)
        .send()
        .await
        .unwrap()
        .health_check()
        .unwrap()
        .id()
        .to_owned()
}

fn cli() -> Geoprov {
    Geoprov::new(aws_env(&moto().endpoint, "us-east-1"))
}

#[tokio::test]
async fn check_health_finds_an_m_of_n_alarm_and_a_stale_check_and_refresh_fixes_the_stale_one() {
    // Alarm names of their own: the tests of this binary share moto.
    let (us, eu) = ("us-west-2", "ap-southeast-2");
    let (us_alarm, eu_alarm) = (
        unique_table("geoprov-health-us"),
        unique_table("geoprov-health-eu"),
    );
    put_alarm(us, &us_alarm, 2.0, 1, 1).await;
    put_alarm(eu, &eu_alarm, 2.0, 1, 1).await;
    let us_check = health_check_on(us, &us_alarm).await;
    let eu_check = health_check_on(eu, &eu_alarm).await;
    let (zone_id, zone_name) = hosted_zone().await;
    let mut config = config_json(
        &zone_id,
        &zone_name,
        &[(us, us_check.as_str()), (eu, eu_check.as_str())],
        &[("Default", json!({"CountryCode": "*"}), &[eu, us])],
    );
    config["regions"][us]["alarmName"] = json!(us_alarm);
    config["regions"][eu]["alarmName"] = json!(eu_alarm);
    let file = std::env::temp_dir().join(unique_table("failover-config") + ".json");
    std::fs::write(&file, config.to_string()).unwrap();
    let file = file.to_str().unwrap();

    let clean = cli().ok(&["failover", "check-health", "--config", file]);
    assert_eq!(clean, json!({"regions": 2, "findings": []}));

    // A regional redeploy changes both alarms: us-west-2's into 2 of 5
    // (M-of-N), ap-southeast-2's threshold. Neither health check sees it.
    put_alarm(us, &us_alarm, 2.0, 2, 5).await;
    put_alarm(eu, &eu_alarm, 3.0, 1, 1).await;
    let out = cli().run(&["failover", "check-health", "--config", file]);
    assert!(!out.status.success(), "findings exit non-zero");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["region"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (eu.to_owned(), "STALE_HEALTH_CHECK".to_owned()),
            (us.to_owned(), "M_OUT_OF_N".to_owned()),
            (us.to_owned(), "STALE_HEALTH_CHECK".to_owned()),
        ],
        "{report:#}"
    );
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Threshold: health check 2, alarm 3")
    );

    // The M-of-N alarm is put back (1 of 1); both copies are stale now.
    put_alarm(us, &us_alarm, 2.0, 1, 1).await;
    let before = route53()
        .await
        .get_health_check()
        .health_check_id(&us_check)
        .send()
        .await
        .unwrap();
    let refreshed = cli().ok(&["failover", "refresh-health-checks", "--config", file]);
    assert_eq!(refreshed["unchanged"], json!([us_check]), "{refreshed:#}");
    let updated = refreshed["updated"].as_object().unwrap();
    assert_eq!(
        updated.len(),
        1,
        "only the check whose copy differs: {refreshed:#}"
    );
    assert!(updated.contains_key(&eu_check), "{refreshed:#}");
    let after = route53()
        .await
        .get_health_check()
        .health_check_id(&us_check)
        .send()
        .await
        .unwrap();
    assert_eq!(
        before.health_check().unwrap().health_check_version(),
        after.health_check().unwrap().health_check_version(),
        "us-west-2's copy already matched: not updated"
    );
    let copied = route53()
        .await
        .get_health_check()
        .health_check_id(&eu_check)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied
            .health_check()
            .unwrap()
            .cloud_watch_alarm_configuration()
            .unwrap()
            .threshold(),
        3.0
    );
    assert_eq!(
        cli().ok(&["failover", "check-health", "--config", file]),
        json!({"regions": 2, "findings": []})
    );
    let again = cli().ok(&["failover", "refresh-health-checks", "--config", file]);
    assert_eq!(again["updated"], json!({}));

    // The status at a minute, from the canary's datapoints: us-west-2's
    // window has 3 failures (>= 2), ap-southeast-2 none until its last
    // minute, which has no datapoint (insufficient data: unhealthy).
    let base = 1_796_040_000_i64; // a whole minute
    for (region, values) in [(us, [0.0, 3.0]), (eu, [0.0, 0.0])] {
        let data: Vec<MetricDatum> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                MetricDatum::builder()
                    .metric_name("CanaryFailuresInWindow")
                    .dimensions(Dimension::builder().name("Region").value(region).build())
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                        base + 60 * i as i64 + 5,
                    ))
                    .value(*v)
                    .unit(StandardUnit::Count)
                    .build()
            })
            .collect();
        cloudwatch(region)
            .await
            .put_metric_data()
            .namespace("geoprov")
            .set_metric_data(Some(data))
            .send()
            .await
            .unwrap();
    }
    let at = |minute: i64| (base + 60 * minute).to_string();
    let first = cli().ok(&["failover", "health", "--config", file, "--at", &at(1)]);
    assert_eq!(first["regions"][us]["status"], "HEALTHY", "{first:#}");
    assert_eq!(first["regions"][eu]["status"], "HEALTHY", "{first:#}");
    let second = cli().ok(&["failover", "health", "--config", file, "--at", &at(2)]);
    assert_eq!(second["regions"][us]["status"], "UNHEALTHY", "{second:#}");
    assert_eq!(
        second["regions"][us]["periods"],
        json!([null, null, null, 0.0, 3.0])
    );
    assert_eq!(second["unhealthy"], json!([us_check]));
    // Silence past the evaluation range (1 + 4 periods): no data.
    let third = cli().ok(&["failover", "health", "--config", file, "--at", &at(8)]);
    assert_eq!(
        third["regions"][eu]["data"], "INSUFFICIENT_DATA",
        "{third:#}"
    );
    assert_eq!(third["regions"][eu]["status"], "UNHEALTHY", "{third:#}");
    let _ = std::fs::remove_file(file);
}
