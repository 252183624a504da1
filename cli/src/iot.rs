//! IoT clients for the regions an operator names, from the one SDK
//! configuration.

use aws_config::{Region, SdkConfig};
use aws_sdk_iot::Client;

/// An IoT client for `region`; everything else as `sdk` says.
pub fn iot_client(sdk: &SdkConfig, region: &str) -> Client {
    Client::from_conf(
        aws_sdk_iot::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}
