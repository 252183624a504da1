//! AWS SDK configuration: the standard chain and nothing else.
//!
//! Region, credentials and endpoints come from the environment, so
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_DYNAMODB`, ...) points every client
//! at a local emulator without a code path of its own.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the shared SDK configuration once, at cold start.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// A DynamoDB client from the shared configuration.
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
