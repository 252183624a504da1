//! Test fixtures: a failover configuration of given regions and locations,
//! each region with an endpoint, a health check and an alarm of its own.

use geoprov_shared::device::RegionName;
use route53_answer::GeoLocation;

use crate::config::{FailoverConfig, Location, RegionTarget};

pub fn region(name: &str) -> RegionName {
    RegionName::try_from(name).expect("a region name")
}

/// A region's IoT endpoint, as IoT names them.
pub fn endpoint(region: &str) -> String {
    format!("abc-ats.iot.{region}.amazonaws.com")
}

/// `locations` are (set identifier, geolocation, preference).
pub fn config(regions: &[&str], locations: &[(&str, GeoLocation, &[&str])]) -> FailoverConfig {
    FailoverConfig {
        hosted_zone_id: "Z1".into(),
        record_name: "global.iot.example.com".into(),
        ttl: 60,
        regions: regions
            .iter()
            .map(|r| {
                (
                    region(r),
                    RegionTarget {
                        endpoint: endpoint(r),
                        health_check_id: format!("hc-{r}"),
                        alarm_name: format!("alarm-{r}"),
                    },
                )
            })
            .collect(),
        locations: locations
            .iter()
            .map(|(id, geo, preference)| Location {
                set_identifier: (*id).into(),
                geo_location: geo.clone(),
                preference: preference.iter().map(|r| region(r)).collect(),
            })
            .collect(),
        fail_after: 1,
        recover_after: 1,
        min_change_interval_seconds: 60,
        unknown_counts_as_unhealthy: true,
        max_event_age_seconds: 300,
    }
}
