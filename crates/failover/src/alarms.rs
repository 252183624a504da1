//! The health adapter: each region's health alarm, read with DescribeAlarms
//! in that alarm's own region, so no region depends on another (nor on
//! us-east-1) to be read.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_cloudwatch::Client;
use geoprov_shared::device::RegionName;

/// An alarm's state as CloudWatch holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmReading {
    /// OK, ALARM or INSUFFICIENT_DATA.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmError {
    #[error("no CloudWatch client for {0}")]
    NoClient(String),
    #[error("DescribeAlarms in {region} failed: {message}")]
    Call { region: String, message: String },
}

/// What the failover needs to read a region's health.
pub trait RegionAlarms {
    /// The state of `alarm` in `region`, or `None` when there is no such alarm.
    fn read(
        &self,
        region: &RegionName,
        alarm: &str,
    ) -> impl Future<Output = Result<Option<AlarmReading>, AlarmError>> + Send;
}

/// DescribeAlarms with one CloudWatch client per region.
#[derive(Debug, Clone)]
pub struct SdkAlarms {
    clients: BTreeMap<RegionName, Client>,
}

impl SdkAlarms {
    /// Clients for `regions`, each from the shared configuration with its
    /// own region (so its own endpoint).
    pub fn new<'a>(
        sdk: &aws_config::SdkConfig,
        regions: impl IntoIterator<Item = &'a RegionName>,
    ) -> Self {
        let clients = regions
            .into_iter()
            .map(|region| {
                let config = aws_sdk_cloudwatch::config::Builder::from(sdk)
                    .region(aws_config::Region::new(region.to_string()))
                    .build();
                (region.clone(), Client::from_conf(config))
            })
            .collect();
        SdkAlarms { clients }
    }
}

impl RegionAlarms for SdkAlarms {
    async fn read(
        &self,
        region: &RegionName,
        alarm: &str,
    ) -> Result<Option<AlarmReading>, AlarmError> {
        let client = self
            .clients
            .get(region)
            .ok_or_else(|| AlarmError::NoClient(region.to_string()))?;
        let output = client
            .describe_alarms()
            .alarm_names(alarm)
            .send()
            .await
            .map_err(|e| AlarmError::Call {
                region: region.to_string(),
                message: aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(output
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(alarm))
            .map(|a| AlarmReading {
                state: a
                    .state_value()
                    .map_or("INSUFFICIENT_DATA", |s| s.as_str())
                    .to_owned(),
            }))
    }
}
