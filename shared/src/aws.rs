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

/// The shared configuration with timeouts on every attempt and operation of
/// every client made from it, so no call can hang an invocation.
pub async fn load_sdk_config_with_timeouts(
    attempt: std::time::Duration,
    operation: std::time::Duration,
) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation)
                .build(),
        )
        .load()
        .await
}
