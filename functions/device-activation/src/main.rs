//! Lambda entry point: configuration and clients once at cold start, then
//! every registration event to the activator.

use device_activation::activation::Activator;
use device_activation::config::ActivationConfig;
use device_activation::iot::SdkRegistrar;
use geoprov_shared::config::Env;
use geoprov_shared::registry::DynamoRegistry;
use geoprov_shared::{aws, telemetry};
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let config = ActivationConfig::from_env(&Env::from_process()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = aws::load_sdk_config_with_timeouts(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(10),
    )
    .await
    .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let activator = Activator::new(
        config.devices.device_only_policy(),
        DynamoRegistry::new(aws::dynamodb_client(&sdk), config.table_name),
        SdkRegistrar::new(aws_sdk_iot::Client::new(&sdk)),
        config.thing_type,
        config.device_policy,
        config.fleet_ca_ids,
    );

    let activator = &activator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = activator
            .handle(event.payload, &event.context.request_id)
            .await?;
        serde_json::to_value(outcome).map_err(|e| {
            tracing::error!(error = %e, "the outcome could not be serialised");
            Diagnostic {
                error_type: "InternalError".to_owned(),
                error_message: "the outcome could not be serialised".to_owned(),
            }
        })
    }))
    .await
}
