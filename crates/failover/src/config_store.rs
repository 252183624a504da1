//! Reads and stores `FAILOVER_CONFIG` where `ConfigSource` says: inline, an
//! S3 object, or an SSM parameter. The function reads it once at cold start;
//! `geoprov failover config put` stores it after validating it.

use aws_config::SdkConfig;

use crate::config::{ConfigSource, FailoverConfig, FunctionConfigError};

/// SSM's standard tier holds up to 4 KB; the advanced tier up to 8 KB.
pub const SSM_STANDARD_LIMIT: usize = 4096;
pub const SSM_ADVANCED_LIMIT: usize = 8192;

fn unreadable(source: &ConfigSource, message: impl Into<String>) -> FunctionConfigError {
    FunctionConfigError::Unreadable {
        source_name: source.describe(),
        message: message.into(),
    }
}

/// An AWS call about `source` failed.
fn call_failed(source: &ConfigSource, err: impl std::error::Error) -> FunctionConfigError {
    unreadable(
        source,
        aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
    )
}

/// The configuration document, read and validated.
pub async fn load(
    source: &ConfigSource,
    sdk: &SdkConfig,
) -> Result<FailoverConfig, FunctionConfigError> {
    let text = match source {
        ConfigSource::Inline(text) => text.clone(),
        ConfigSource::S3 {
            bucket,
            key,
            expected_owner,
        } => {
            let object = aws_sdk_s3::Client::new(sdk)
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_expected_bucket_owner(expected_owner.clone())
                .send()
                .await
                .map_err(|e| call_failed(source, e))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| unreadable(source, e.to_string()))?
                .into_bytes();
            String::from_utf8(bytes.to_vec()).map_err(|_| unreadable(source, "is not UTF-8"))?
        }
        ConfigSource::Ssm { name } => aws_sdk_ssm::Client::new(sdk)
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| call_failed(source, e))?
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| unreadable(source, "the parameter has no value"))?,
    };
    Ok(FailoverConfig::from_json(&text)?)
}

/// Stores a document (already validated by the caller) where `source` says.
/// An SSM parameter over the standard tier's 4 KB goes to the advanced tier.
pub async fn put(
    source: &ConfigSource,
    text: &str,
    sdk: &SdkConfig,
) -> Result<(), FunctionConfigError> {
    match source {
        ConfigSource::Inline(_) => Err(unreadable(
            source,
            "an inline configuration is not stored anywhere",
        )),
        ConfigSource::S3 {
            bucket,
            key,
            expected_owner,
        } => aws_sdk_s3::Client::new(sdk)
            .put_object()
            .bucket(bucket)
            .set_expected_bucket_owner(expected_owner.clone())
            .key(key)
            .content_type("application/json")
            .body(text.as_bytes().to_vec().into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_failed(source, e)),
        ConfigSource::Ssm { name } => {
            if text.len() > SSM_ADVANCED_LIMIT {
                return Err(unreadable(
                    source,
                    format!(
                        "{} bytes is more than an SSM parameter holds ({SSM_ADVANCED_LIMIT}); use s3://bucket/key",
                        text.len()
                    ),
                ));
            }
            // Intelligent-Tiering: SSM keeps a parameter that fits the
            // standard tier there and moves a larger one to the advanced
            // tier. Asking for a tier by size fails once a document shrinks,
            // as an advanced parameter never goes back to standard.
            let tier = aws_sdk_ssm::types::ParameterTier::IntelligentTiering;
            aws_sdk_ssm::Client::new(sdk)
                .put_parameter()
                .name(name)
                .value(text)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .tier(tier)
                .overwrite(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| call_failed(source, e))
        }
    }
}
