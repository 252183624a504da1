//! cert-issuer: mints device certificates from ACM Private CA (JITR devices, and IoT certificate-provider requests).
//!
//! `csr` is the pure CSR policy; `pca` (ACM PCA) and `ledger` (the issuance
//! ledger in DynamoDB) are the adapters behind small traits; `handler` checks
//! every request before anything reaches ACM PCA and issues through the ledger;
//! `provider` reads IoT's certificate-provider event, answered by the same
//! checks and ledger.

pub mod config;
pub mod csr;
pub mod handler;
pub mod ledger;
pub mod pca;
pub mod provider;
pub mod request;
pub mod response;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "cert-issuer";

/// Attempts of one ACM PCA call: throttling and transient errors are retried
/// with jittered exponential backoff (the SDK's standard mode).
pub const PCA_MAX_ATTEMPTS: u32 = 5;

/// Bounds of one DynamoDB attempt and of one DynamoDB operation (retries
/// included): a ledger or registry call that hangs fails the item, never the
/// invocation.
pub const DYNAMODB_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
pub const DYNAMODB_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A DynamoDB client whose every call is bounded.
pub fn dynamodb_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(DYNAMODB_ATTEMPT_TIMEOUT)
                .operation_timeout(DYNAMODB_OPERATION_TIMEOUT)
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The retry policy of the ACM PCA client.
pub fn pca_retry_config() -> aws_sdk_acmpca::config::retry::RetryConfig {
    aws_sdk_acmpca::config::retry::RetryConfig::standard()
        .with_max_attempts(PCA_MAX_ATTEMPTS)
        .with_initial_backoff(std::time::Duration::from_millis(100))
        .with_max_backoff(std::time::Duration::from_secs(5))
}

/// An ACM PCA client for the CA's region (the CA lives outside the
/// provisioning regions), from the shared SDK configuration.
pub fn pca_client(sdk: &aws_config::SdkConfig, region: &str) -> aws_sdk_acmpca::Client {
    let config = aws_sdk_acmpca::config::Builder::from(sdk)
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(pca_retry_config())
        .build();
    aws_sdk_acmpca::Client::from_conf(config)
}
