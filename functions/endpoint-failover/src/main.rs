//! Lambda entry point: configuration and clients once at cold start, then
//! every event to the failover.

use endpoint_failover::handler::Failover;
use geoprov_failover::alarms::SdkAlarms;
use geoprov_failover::config::{FunctionConfig, SDK_ATTEMPT_TIMEOUT, SDK_OPERATION_TIMEOUT};
use geoprov_failover::config_store;
use geoprov_failover::route53::{self, Retry, SdkRoute53};
use geoprov_failover::state::DynamoFailoverStore;
use geoprov_shared::config::Env;
use geoprov_shared::{aws, telemetry};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let settings = FunctionConfig::from_env(&Env::from_process()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = aws::load_sdk_config_with_timeouts(SDK_ATTEMPT_TIMEOUT, SDK_OPERATION_TIMEOUT)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let config = config_store::load(&settings.source, &sdk)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let retry = Retry {
        attempts: settings.bounds.route53_attempts,
        base: settings.bounds.route53_backoff,
        cap: std::time::Duration::from_secs(5),
    };
    let route53 = SdkRoute53::new(route53::client(&sdk), retry);
    let store = DynamoFailoverStore::new(
        aws::dynamodb_client(&sdk),
        settings.table_name,
        &config.record_name,
    );
    let alarms = SdkAlarms::new(&sdk, config.regions.keys());
    let failover = Failover::new(config, route53, store, alarms, settings.bounds);

    let failover = &failover;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(
            failover
                .handle(event.payload, &event.context.request_id)
                .await,
        )
    }))
    .await
}
